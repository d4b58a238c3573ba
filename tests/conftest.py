"""Shared fixtures: small synthetic image folders written on the fly, and paths to shared data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# the user's cache folder (method catalog, probes): a fresh one per test session, not ~/.cache
os.environ.setdefault("SELFSUP_CACHE", tempfile.mkdtemp(prefix="selfsup-cache-"))
# --precision auto measures the CPU, and under load the measurement moves: tests pin fp32 (the
# probe's own tests unset this)
os.environ.setdefault("SELFSUP_PRECISION", "fp32")
# tests that ask for bf16 would otherwise compile each tiny backbone (25 s); test_compile covers it
os.environ.setdefault("SELFSUP_COMPILE", "off")
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def write_shapes_folder(root: Path, per_class: int = 12, size: int = 32, seed: int = 0) -> Path:
    """Class folders whose classes differ in shape and texture, not only colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for name in ["disc", "stripes", "checker"]:
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = rng.uniform(0.2, 1.0, 3)
            cx, cy, r = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65), rng.uniform(0.2, 0.35)
            if name == "disc":
                m = ((xx - cx) ** 2 + (yy - cy) ** 2) < r * r
            elif name == "stripes":
                m = np.sin((xx + rng.uniform()) * 6 * np.pi) > 0
            else:
                m = (np.floor(xx * 6 + rng.uniform()) + np.floor(yy * 6 + rng.uniform())) % 2 == 0
            img = np.where(m[..., None], colour, 1 - colour) + rng.normal(0, 0.05, (size, size, 3))
            Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8)).save(d / f"{i:03d}.png")
    return root


@pytest.fixture
def shapes_dir(tmp_path: Path) -> Path:
    return write_shapes_folder(tmp_path / "shapes")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} is absent (real datasets live beside the project, not in it)")
    return SHARED_DATA
