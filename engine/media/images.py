"""The image reader: Pillow decode, EXIF orientation, any mode to RGB, square crops.

Every reader of photos (image folders, frame folders, the photo index, query images) goes
through here, so a file decodes to the same pixels wherever it is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from engine.errors import UserError


def first_line(e: BaseException, limit: int = 120) -> str:
    """One line naming the problem (the exception type when it says nothing)."""
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:limit]


def check_image(path: Path) -> str | None:
    """Cheap validity check (no pixel decoding): None if the header parses, else the reason."""
    try:
        if Path(path).stat().st_size == 0:
            return "empty file"
        with Image.open(path) as im:
            if im.width < 1 or im.height < 1:
                return "zero-sized image"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return first_line(e)
    return None


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB for any mode; transparent pixels are composited on white (what a viewer shows);
    16-bit and float images are scaled to 8 bits."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale PNG / TIFF / PGM
        arr = np.asarray(im, dtype=np.float64)
        arr = arr / max(1.0, 65535.0 if arr.max() > 255 else 255.0) * 255.0
        return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
    if im.mode == "F":  # PFM / float TIFF: [0, 1] (or [0, 255]) intensities
        arr = np.nan_to_num(np.asarray(im, dtype=np.float64))
        arr = arr * 255.0 if arr.max(initial=0) <= 1.0 else arr
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")


def read_rgb(path: str | Path) -> np.ndarray:
    """The whole image as uint8 [H, W, 3] RGB, EXIF orientation applied. Raises on bad files."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(to_rgb(im), dtype=np.uint8)


def square(im: Image.Image, size: int) -> Tensor:
    """Shorter side resized to `size` (antialiased), centre-cropped: uint8 [3, size, size]."""
    if im.mode != "RGB":
        im = to_rgb(im)
    w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    arr = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def decode_image(path: str | Path, size: int) -> Tensor:
    """Open, apply EXIF orientation, convert to RGB, resize the shorter side to `size` and
    centre-crop (the geometry of open_clip's eval transform too). Returns uint8 [3, size, size];
    multi-frame files (GIF, TIFF) give their first frame. Raises on unreadable files."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale that still covers size
        return square(ImageOps.exif_transpose(im), size)


def load_images(paths: Sequence[str | Path], size: int) -> Tensor:
    """Decode a list of images to uint8 [N, 3, size, size] (for visualisation and evaluation);
    a file that cannot be read raises UserError naming it."""
    out = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise UserError(f"{p}: image not found")
        try:
            out.append(decode_image(p, size))
        except Exception as e:  # noqa: BLE001 - any decoder failure is the file's fault
            raise UserError(f"{p}: cannot read image ({first_line(e)})") from None
    if not out:
        return torch.empty(0, 3, size, size, dtype=torch.uint8)
    return torch.stack(out)
