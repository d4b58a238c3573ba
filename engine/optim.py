"""Optimisers (SGD, AdamW, LARS) and the warm-up + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from engine.config import OptimConfig
from engine.errors import UserError


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) as used by SimCLR/BYOL/Barlow Twins:
    SGD with momentum whose step is scaled by trust_coef * ||w|| / ||g + wd w|| per tensor.
    Groups with `lars_exclude=True` (biases, norms) get plain SGD without weight decay. With
    `clip` the scaled rate is capped at the scheduled lr instead (solo-learn's clip_lr)."""

    def __init__(
        self,
        params,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        trust_coef: float = 1e-3,
        clip: bool = False,
    ):
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                weight_decay=weight_decay,
                trust_coef=trust_coef,
                clip=clip,
                lars_exclude=False,
            ),
        )

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                if not g["lars_exclude"]:
                    d = d.add(p, alpha=g["weight_decay"])
                    w_norm, d_norm = torch.norm(p), torch.norm(d)
                    trust = torch.where(
                        (w_norm > 0) & (d_norm > 0),
                        g["trust_coef"] * w_norm / d_norm,
                        torch.ones_like(w_norm),
                    )
                    if g["clip"]:  # step = min(lr, trust) x d rather than lr x trust x d
                        trust = (trust / max(g["lr"], 1e-12)).clamp(max=1.0)
                    d = d.mul(trust)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = torch.clone(d).detach()
                else:
                    buf.mul_(g["momentum"]).add_(d)
                p.add_(buf, alpha=-g["lr"])
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay (and no LARS adaptation) on biases, norm weights and 1-d tokens; the
    model's `constant_lr_groups` (by name prefix) in groups of their own, split the same way and
    marked `constant`: the trainer and the methods' schedules leave their lr and wd alone."""
    constant = getattr(model, "constant_lr_groups", {})
    split: dict[tuple[str, bool], list] = {}  # (prefix or "", decayed) -> params
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        prefix = next((k for k in constant if name.startswith(k)), "")
        tokens = name.endswith(("cls_token", "mask_token", "pos_embed"))
        split.setdefault((prefix, not (p.ndim <= 1 or tokens)), []).append(p)
    groups = [
        {"params": split.get(("", True), []), "weight_decay": weight_decay, "lars_exclude": False},
        {"params": split.get(("", False), []), "weight_decay": 0.0, "lars_exclude": True},
    ]
    for (prefix, decayed), params in split.items():
        if prefix:
            wd = constant[prefix].get("weight_decay", weight_decay) if decayed else 0.0
            groups.append(
                {"params": params, "lr": constant[prefix]["lr"], "weight_decay": wd,
                 "lars_exclude": not decayed, "constant": True}
            )  # fmt: skip
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    for g in groups:  # what per-group schedules (Method.on_step_start) start from
        if not g.get("constant"):
            g.update(peak_lr=lr, base_weight_decay=g["weight_decay"], min_lr_ratio=cfg.min_lr_ratio)
    if cfg.optimizer == "sgd":
        for g in groups:
            g.pop("lars_exclude")
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        for g in groups:
            g.pop("lars_exclude")
        # (0.9, 0.999) as DINO, iBOT and MoCo v3; a model may ask for others (MAE: 0.95)
        return torch.optim.AdamW(groups, lr=lr, betas=getattr(model, "adam_betas", (0.9, 0.999)))
    if cfg.optimizer == "lars":
        return LARS(
            groups, lr=lr, momentum=cfg.momentum, trust_coef=cfg.lars_trust, clip=cfg.lars_clip
        )
    raise UserError(f"unknown optimizer '{cfg.optimizer}'; choose one of: sgd, adamw, lars")


def cosine_schedule(base: float, final: float, step: int, total_steps: int) -> float:
    """DINO's cosine_scheduler without warm-up: `base` at step 0 to `final` at the end."""
    t = min(step, total_steps) / max(1, total_steps)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * t))


def schedule_groups(
    optimizer: torch.optim.Optimizer,
    step: int,
    total_steps: int,
    warmup_steps: int,
    lr_horizon: int = 0,
    weight_decay_end: float | None = None,
) -> None:
    """The ViT recipes' per-step schedules (DINO, iBOT, MOCA, SPOT), on every group but the
    `constant` ones: lr by linear warm-up then cosine over `lr_horizon` steps (0: the run);
    with weight_decay_end, each decayed group's weight decay on a cosine from its base to it."""
    for g in optimizer.param_groups:
        if g.get("constant"):
            continue
        if "peak_lr" in g:
            horizon = lr_horizon or total_steps
            g["lr"] = lr_at(step, horizon, warmup_steps, g["peak_lr"], g.get("min_lr_ratio", 0.0))
        base = g.get("base_weight_decay", g["weight_decay"])
        if weight_decay_end is not None and base > 0:
            g["weight_decay"] = cosine_schedule(base, weight_decay_end, step, total_steps)


def lr_at(
    step: int, total_steps: int, warmup_steps: int, peak: float, min_ratio: float = 0.0
) -> float:
    """Linear warm-up to `peak`, then cosine decay to `peak * min_ratio`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))
