"""Shared evaluation plumbing: labelled splits, cached features, result tables and JSON."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from engine.errors import UserError
from engine.features import FeatureExtractor
from engine.run import RunDir


@dataclass
class Splits:
    train: Dataset
    val: Dataset
    num_classes: int
    classes: list[str]


def labelled_splits(
    train_dir: str, val_dir: str | None, image_size: int, val_fraction: float = 0.2, seed: int = 0
) -> Splits:
    """Train/val image folders; with no val folder, a deterministic stratified hold-out."""
    from engine.data import ImageFolderDataset

    train = ImageFolderDataset(train_dir, load_size=image_size)
    if not train.classes:
        raise UserError(f"{train_dir}: evaluation needs labels, i.e. one sub-folder per class")
    if val_dir:
        val = ImageFolderDataset(val_dir, load_size=image_size)
        if val.classes != train.classes:
            raise UserError(
                f"{val_dir}: class folders differ from {train_dir} ({val.classes[:5]} vs {train.classes[:5]})"
            )
        return Splits(train, val, len(train.classes), list(train.classes))
    targets = torch.as_tensor(train.targets)
    g = torch.Generator().manual_seed(seed)
    tr_idx, va_idx = [], []
    for c in range(len(train.classes)):
        idx = torch.nonzero(targets == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)].tolist()
        n_val = max(1, int(round(len(idx) * val_fraction)))
        va_idx += idx[:n_val]
        tr_idx += idx[n_val:]
    return Splits(
        Subset(train, tr_idx), Subset(train, va_idx), len(train.classes), list(train.classes)
    )


def cached_features(
    extractor: FeatureExtractor, dataset: Dataset, batch_size: int = 256, num_workers: int = 2
) -> tuple[torch.Tensor, torch.Tensor]:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return extractor.embed_loader(loader)


def write_result(source: Any, name: str, result: dict[str, Any]) -> Path | None:
    """eval/<name>.json inside the run the model came from, when it came from one."""
    run = RunDir.of(source)
    return run.write_result(name, result) if run else None


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join(
        [line, sep] + ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    )
