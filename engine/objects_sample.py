"""A small deterministic multi-object image set with per-object masks, for object-centric
learning (slot attention, SPOT) and its FG-ARI / mBO evaluation, without downloads.

Each 64x64 image holds 2-4 objects (circle, square, triangle, star, ellipse) of random size,
position, rotation and two-colour smooth-noise texture over a textured background (colour
gradient + smooth noise + grain, as the shapes sample in engine/sample.py). Objects are painted
in order, so later ones occlude earlier ones; every object keeps at least MIN_VISIBLE visible
pixels. The instance mask is a PNG of the same size: 0 = background, 1..K = objects in painting
order, each pixel labelled by the object painted last over it (coverage above one half of the
pixel). Each image is seeded by (split, index), so any subset can be regenerated bit-for-bit.

Layout: assets/sample/objects/images/{train,val}/obj_<split>_<NNN>.jpg
        assets/sample/objects/masks/{train,val}/obj_<split>_<NNN>.png
Train on `images/train` (a flat folder: unlabelled); evaluate on the val split
(`selfsup eval slots --data assets/sample/objects`).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from engine.checkpoint import atomic_write
from engine.sample import SIZE, _background, _colour, _noise_fill, sample_root

SPLITS = {"train": 200, "val": 40}
SEED = 20250301
SHAPES = ("circle", "square", "triangle", "star", "ellipse")
MIN_OBJECTS, MAX_OBJECTS = 2, 4
MIN_VISIBLE = 40  # pixels of each object left visible after occlusion
_SS = 4  # supersampling for antialiased edges
_QUALITY = 92


def objects_root(root: str | Path | None = None) -> Path:
    """assets/sample/objects (or <root>/objects)."""
    return Path(root or sample_root()) / "objects"


def sample_pairs(
    root: str | Path | None = None, splits: dict[str, int] | None = None
) -> list[tuple[Path, Path]]:
    """(image, mask) paths of every item of the sample."""
    base = objects_root(root)
    return [
        (
            base / "images" / split / f"obj_{split}_{i:03d}.jpg",
            base / "masks" / split / f"obj_{split}_{i:03d}.png",
        )
        for split, n in (splits or SPLITS).items()
        for i in range(n)
    ]


def ensure_objects_sample(
    root: str | Path | None = None, splits: dict[str, int] | None = None
) -> Path:
    """Write whatever items are missing (image and mask together) and return the objects
    folder. Existing files are left alone; regeneration is deterministic."""
    for img_path, mask_path in sample_pairs(root, splits):
        if img_path.is_file() and mask_path.is_file():
            continue
        split = img_path.parent.name
        index = int(img_path.stem.rsplit("_", 1)[1])
        img, mask = render(split, index)
        jpg, png = _encode(img, "JPEG"), _encode(mask, "PNG")
        atomic_write(mask_path, lambda tmp, d=png: Path(tmp).write_bytes(d))
        atomic_write(img_path, lambda tmp, d=jpg: Path(tmp).write_bytes(d))
    return objects_root(root)


def _encode(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        Image.fromarray(arr).save(buf, format="JPEG", quality=_QUALITY, optimize=True)
    else:
        Image.fromarray(arr, mode="L").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def render(split: str, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image [64, 64, 3], uint8 instance mask [64, 64]) fully determined by (split,
    index)."""
    rng = np.random.default_rng([SEED, list(SPLITS).index(split), index])
    img = _background(rng, _colour(rng), _colour(rng))
    bg_mean = img.reshape(-1, 3).mean(0)
    labels = np.zeros((SIZE, SIZE), np.uint8)
    want = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    colours: list[np.ndarray] = [bg_mean]
    k = 0
    for _attempt in range(60):
        if k == want:
            break
        cover = _object_cover(rng)
        hard = cover > 0.5
        after = np.where(hard, k + 1, labels)
        # every object painted so far (and this one) must stay visible enough
        if any((after == j).sum() < MIN_VISIBLE for j in range(1, k + 2)):
            continue
        a = _distinct_colour(rng, colours)
        b = _distinct_colour(rng, [a], min_dist=0.25)
        colours.append(a)
        fill = _noise_fill(rng, a, b)
        img = img * (1 - cover[..., None]) + fill * cover[..., None]
        labels = after.astype(np.uint8)
        k += 1
    img = img + rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), labels


def _distinct_colour(
    rng: np.random.Generator, others: list[np.ndarray], min_dist: float = 0.4
) -> np.ndarray:
    for _ in range(50):
        c = _colour(rng)
        if all(np.linalg.norm(c - o) >= min_dist for o in others):
            return c
    return _colour(rng)


def _object_cover(rng: np.random.Generator) -> np.ndarray:
    """Antialiased coverage [64, 64] in [0, 1] of one random shape."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    r = rng.uniform(0.1, 0.19) * SIZE
    cx, cy = rng.uniform(r, SIZE - r, 2)
    rot = rng.uniform(0, 2 * math.pi)
    canvas = Image.new("L", (SIZE * _SS, SIZE * _SS), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "circle":
        draw.ellipse([(cx - r) * _SS, (cy - r) * _SS, (cx + r) * _SS, (cy + r) * _SS], fill=255)
    else:
        if shape == "ellipse":
            ts = np.linspace(0, 2 * math.pi, 48, endpoint=False)
            pol = [(r * 1.25 * math.cos(t), r * 0.6 * math.sin(t)) for t in ts]
        elif shape == "square":
            pol = [(r * math.cos(a), r * math.sin(a)) for a in np.arange(4) * math.pi / 2 + 0.785]
        elif shape == "triangle":
            pol = [(1.2 * r * math.cos(a), 1.2 * r * math.sin(a)) for a in np.arange(3) * 2.094]
        else:  # star
            pol = [
                ((1.2 if i % 2 == 0 else 0.5) * r * math.cos(i * math.pi / 5),
                 (1.2 if i % 2 == 0 else 0.5) * r * math.sin(i * math.pi / 5))
                for i in range(10)
            ]  # fmt: skip
        c, s = math.cos(rot), math.sin(rot)
        pts = [((cx + c * x - s * y) * _SS, (cy + s * x + c * y) * _SS) for x, y in pol]
        draw.polygon(pts, fill=255)
    small = canvas.resize((SIZE, SIZE), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def read_mask(path: str | Path) -> np.ndarray:
    """An instance mask PNG as int64 [H, W] (0 = background, 1..K objects)."""
    return np.asarray(Image.open(path), dtype=np.int64)


if __name__ == "__main__":  # python -m engine.objects_sample [root]: regenerate what is missing
    import sys

    print(ensure_objects_sample(sys.argv[1] if len(sys.argv) > 1 else None))
