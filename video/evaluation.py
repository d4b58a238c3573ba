"""Clip-level evaluation of video SSL models: label retrieval, kNN and a linear probe on a
labelled folder of clips (root/<class>/<video or frame folder>), e.g. the sample's motion clips."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engine.errors import UserError


@torch.no_grad()
def evaluate_clip_features(method, dataset, k: int = 5, linear_epochs: int = 100) -> dict[str, Any]:
    """Even items are the gallery / probe training set, odd items the queries (with one uniform
    clip per video and videos sorted by class, both halves hold every class)."""
    from engine.evaluation.knn import knn_accuracy
    from engine.evaluation.linear import linear_probe_accuracy

    if not dataset.classes:
        raise UserError(
            f"{dataset.root}: clips need class folders (root/<class>/<video>) for this evaluation"
        )
    feats, labels = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        feats.append(method.clip_embedding(item["clip"][None]).float().cpu())
        labels.append(int(item["label"]))
    x, y = F.normalize(torch.cat(feats), dim=1), torch.tensor(labels)
    tr, te = torch.arange(0, len(y), 2), torch.arange(1, len(y), 2)
    n_cls = len(dataset.classes)
    top1 = (y[tr][(x[te] @ x[tr].t()).argmax(1)] == y[te]).float().mean().item()
    knn = knn_accuracy(x[tr], y[tr], x[te], y[te], k=min(k, len(tr)), temperature=0.07)
    with torch.enable_grad():
        lin = linear_probe_accuracy(x[tr], y[tr], x[te], y[te], n_cls, epochs=linear_epochs, lr=0.1)
    return {
        "retrieval_top1": top1,
        "knn_top1": knn["top1"],
        "linear_top1": lin["top1"],
        "chance": 1.0 / n_cls,
        "clips": len(y),
        "classes": n_cls,
    }
