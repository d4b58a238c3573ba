"""Object discovery metrics for slot models: FG-ARI and mBO against ground-truth object masks.

The protocol of DINOSAUR / SPOT (their ocl_metrics.py, from the object-centric-learning
framework): a model's soft slot masks [K, h, w] are resized bilinearly to the ground truth's
resolution and turned into one label per pixel by argmax over the slots; then
- FG-ARI: the adjusted Rand index between predicted and true labels over the foreground pixels
  only (true label > 0). When both partitions put every foreground pixel in one cluster, or every
  pixel in its own, ARI's denominator is 0 and the score is 1 (OCLF's convention);
- mBO (mean best overlap): for each ground-truth object, the best IoU over the predicted masks;
  averaged over the image's objects, then over images. Background is not an object.
Both are averaged over images. DAVIS frames hold one object each, so only mBO is meaningful
there (FG-ARI of a single true cluster is 1 or 0, so it is not reported).

Data: the objects sample (engine/objects_sample.py: images/<split>/x.jpg + masks/<split>/x.png,
0 = background, 1..K objects) or a DAVIS folder (JPEGImages/480p/<seq>/*.jpg +
Annotations/480p/<seq>/*.png, 0 / 255); DAVIS frames and masks are centre-cropped square like
the model's inputs (engine.media.images.square).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.errors import UserError

# ----------------------------------------------------------------------------- metrics


def fg_ari(pred: torch.Tensor, true: torch.Tensor) -> float:
    """FG-ARI of one image: pred and true are integer labels of the same shape (any), true 0 is
    background and ignored. Pair-counting ARI (Hubert & Arabie) over the foreground pixels."""
    pred, true = pred.reshape(-1).long(), true.reshape(-1).long()
    fg = true > 0
    p, t = pred[fg], true[fg]
    n = p.numel()
    if n == 0:
        return 1.0  # no foreground: both partitions trivial (OCLF gives 1 as well)
    _, p = torch.unique(p, return_inverse=True)
    _, t = torch.unique(t, return_inverse=True)
    table = torch.zeros(int(t.max()) + 1, int(p.max()) + 1, dtype=torch.float64)
    table.index_put_((t, p), torch.ones(n, dtype=torch.float64), accumulate=True)
    a, b = table.sum(1), table.sum(0)
    index = (table * (table - 1)).sum()
    a_pairs, b_pairs = (a * (a - 1)).sum(), (b * (b - 1)).sum()
    expected = a_pairs * b_pairs / max(n * (n - 1), 1)
    maximum = (a_pairs + b_pairs) / 2
    denominator = maximum - expected
    if denominator <= 0:
        return 1.0
    return float((index - expected) / denominator)


def best_overlaps(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """For each ground-truth object (true labels 1..max that occur), the best IoU over the
    predicted segments (pred labels). float64 [objects]."""
    pred, true = pred.reshape(-1).long(), true.reshape(-1).long()
    objects = [int(v) for v in torch.unique(true) if v > 0]
    segments = torch.unique(pred)
    out = torch.zeros(len(objects), dtype=torch.float64)
    for i, obj in enumerate(objects):
        t = true == obj
        best = 0.0
        for s in segments:
            q = pred == s
            inter = (t & q).sum().item()
            if inter:
                best = max(best, inter / (t | q).sum().item())
        out[i] = best
    return out


def mbo(pred: torch.Tensor, true: torch.Tensor) -> float:
    """Mean best overlap of one image (NaN when it has no object)."""
    b = best_overlaps(pred, true)
    return float(b.mean()) if b.numel() else float("nan")


def labels_from_masks(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Soft slot masks [B, K, h, w] -> one slot index per pixel [B, H, W]: bilinear resize to
    the ground truth's size, then argmax over the slots (DINOSAUR / SPOT's evaluation)."""
    up = F.interpolate(masks.float(), size=size, mode="bilinear", align_corners=False)
    return up.argmax(1)


def score_batch(masks: torch.Tensor, true: torch.Tensor, ari: bool = True) -> dict[str, list]:
    """Per-image FG-ARI and mBO of soft masks [B, K, h, w] against labels [B, H, W]."""
    pred = labels_from_masks(masks, tuple(true.shape[-2:]))
    out: dict[str, list] = {"mbo": [mbo(p, t) for p, t in zip(pred, true)]}
    if ari:
        out["fg_ari"] = [fg_ari(p, t) for p, t in zip(pred, true)]
    return out


# ----------------------------------------------------------------------------- data


def objects_items(root: str | Path, split: str = "val") -> list[tuple[Path, Path]]:
    """(image, mask) pairs of an objects-sample-layout folder's split."""
    root = Path(root)
    images = sorted((root / "images" / split).glob("*.jpg")) + sorted(
        (root / "images" / split).glob("*.png")
    )
    pairs = [(p, root / "masks" / split / (p.stem + ".png")) for p in images]
    pairs = [(i, m) for i, m in pairs if m.is_file()]
    if not pairs:
        raise UserError(f"{root}: no images with masks under images/{split} and masks/{split}")
    return pairs


def davis_items(root: str | Path, every: int = 8) -> list[tuple[Path, Path]]:
    """(frame, mask) pairs of a DAVIS folder, every `every`-th annotated frame per sequence."""
    root = Path(root)
    ann = root / "Annotations"
    ann = ann / "480p" if (ann / "480p").is_dir() else ann
    jpg = root / "JPEGImages"
    jpg = jpg / "480p" if (jpg / "480p").is_dir() else jpg
    pairs = []
    for seq in sorted(p for p in ann.iterdir() if p.is_dir()) if ann.is_dir() else []:
        masks = sorted(seq.glob("*.png"))
        for m in masks[:: max(1, every)]:
            img = jpg / seq.name / (m.stem + ".jpg")
            if img.is_file():
                pairs.append((img, m))
    if not pairs:
        raise UserError(f"{root}: no DAVIS frames with masks (JPEGImages/480p, Annotations/480p)")
    return pairs


def data_kind(root: str | Path) -> str:
    """ "objects" (images/ + masks/) or "davis" (JPEGImages/ + Annotations/)."""
    root = Path(root)
    if (root / "masks").is_dir() and (root / "images").is_dir():
        return "objects"
    if (root / "Annotations").is_dir() and (root / "JPEGImages").is_dir():
        return "davis"
    if not root.exists():
        raise UserError(f"{root}: folder not found")
    raise UserError(
        f"{root}: neither an objects sample (images/ + masks/) nor a DAVIS folder "
        "(JPEGImages/ + Annotations/)"
    )


def square_labels(path: Path, size: int, binary: bool) -> torch.Tensor:
    """A mask centre-cropped square like engine.media.images.square, resized (nearest) to
    size: int64 [size, size]; binary (DAVIS): every non-zero pixel is object 1."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., 0]
    arr = (arr > 0).astype(np.uint8) if binary else arr.astype(np.uint8)
    im = Image.fromarray(arr, mode="L")
    w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    im = im.resize((nw, nh), Image.Resampling.NEAREST)
    left, top = (nw - size) // 2, (nh - size) // 2
    out = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.int64)
    return torch.from_numpy(out.copy())


# ----------------------------------------------------------------------------- evaluation


def evaluate_slots(
    extractor: Any,
    data: str | Path,
    split: str = "val",
    mask_size: int = 0,
    every: int = 8,
    batch_size: int = 32,
) -> dict[str, Any]:
    """FG-ARI and mBO (objects sample) or mBO (DAVIS) of a slot extractor (engine.methods.slots:
    `masks(images) -> [B, K, h, w]`, `image_size`). mask_size: the resolution the metrics are
    computed at (default: the objects sample's own 64 px; 128 px for DAVIS)."""
    from engine.media.images import load_images

    kind = data_kind(data)
    if kind == "objects":
        items = objects_items(data, split)
        with Image.open(items[0][1]) as im:
            size = mask_size or min(im.size)
    else:
        items = davis_items(data, every)
        size = mask_size or 128
    scores: dict[str, list] = {"mbo": [], "fg_ari": []}
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        images = load_images([p for p, _ in chunk], extractor.image_size)
        true = torch.stack([square_labels(m, size, kind == "davis") for _, m in chunk])
        masks = extractor.masks(images).cpu()
        for k, v in score_batch(masks, true, ari=kind == "objects").items():
            scores[k] += v
    mbos = [v for v in scores["mbo"] if v == v]
    result: dict[str, Any] = {
        "data": str(data),
        "kind": kind,
        "images": len(items),
        "mask_size": size,
        "slots": int(getattr(extractor, "num_slots", 0)),
        "mbo": float(np.mean(mbos)) if mbos else float("nan"),
    }
    if kind == "objects":
        result["split"] = split
        result["fg_ari"] = float(np.mean(scores["fg_ari"]))
    else:
        result["every"] = every
    return result
