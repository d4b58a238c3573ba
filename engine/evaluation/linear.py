"""Linear probe on frozen, cached features (the standard SSL protocol, scaled to small data)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def train_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """SGD + cosine on standardised features; returns (classifier, mean, std) for applying it."""
    g = torch.Generator().manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    x = (train_x - mean) / std
    clf = nn.Linear(x.shape[1], num_classes)
    torch.manual_seed(seed)
    nn.init.zeros_(clf.bias)
    nn.init.normal_(clf.weight, std=0.01)
    opt = torch.optim.SGD(clf.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    steps_per_epoch = max(1, (x.shape[0] + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(0, x.shape[0], batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(clf(x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return clf, mean, std


def holdout_split(
    y: torch.Tensor, fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (fit, holdout) of a seeded split of the training set, `fraction` of each class
    held out (at least one image where a class has two or more)."""
    g = torch.Generator().manual_seed(seed)
    fit, hold = [], []
    for c in torch.unique(y):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) > 1 else 0
        hold.append(idx[:k])
        fit.append(idx[k:])
    return torch.cat(fit).sort().values, torch.cat(hold).sort().values


def _accuracy(clf, mean, std, x, y) -> float:
    return (clf((x - mean) / std).argmax(1) == y).float().mean().item()


@torch.no_grad()
def linear_probe_accuracy(
    train_x,
    train_y,
    val_x,
    val_y,
    num_classes: int,
    epochs: int = 100,
    lr: float = 0.1,
    weight_decay: float = 0.0,
    holdout: float = 0.2,
) -> dict[str, float]:
    """The weight decay is chosen on a held-out `holdout` fraction of the *training* set (a small
    sweep, the usual protocol), then the probe is retrained on the whole training set with it
    and evaluated once on the validation set: the reported accuracy never picks a
    hyper-parameter. Returns top1 (validation), the chosen weight_decay and each candidate's
    held-out accuracy."""
    fit, hold = holdout_split(train_y, holdout)
    results: dict[str, float] = {}
    for wd in sorted({weight_decay, 0.0, 1e-4, 1e-3}):
        if len(hold) == 0:
            break
        with torch.enable_grad():
            clf, mean, std = train_linear_probe(
                train_x[fit], train_y[fit], num_classes, epochs, lr, wd
            )
        results[f"holdout_top1_wd{wd:g}"] = _accuracy(clf, mean, std, train_x[hold], train_y[hold])
    best = max(results, key=results.get, default=f"holdout_top1_wd{weight_decay:g}")
    chosen = float(best.removeprefix("holdout_top1_wd"))
    with torch.enable_grad():
        clf, mean, std = train_linear_probe(train_x, train_y, num_classes, epochs, lr, chosen)
    top1 = _accuracy(clf, mean, std, val_x, val_y)
    return {"top1": top1, "weight_decay": chosen, **results, "epochs": epochs, "lr": lr}
