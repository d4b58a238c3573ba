"""Image folders as datasets: decode + resize in DataLoader workers, nothing random here.

The random augmentation runs later, batched on the training device (`engine.augment`), so an
item is just the decoded image at a fixed `load_size` as uint8. Two geometries:
- evaluation / features (default): shorter side resized with PIL's antialiased filter, then
  centre-cropped square;
- training (`whole=True`, the registered "images" dataset): the *whole* image resized to
  load_size x load_size, its original size in the item as `"hw": tensor([H, W])`, so the
  method's random-resized-crop (`Method.make_views`) samples crops over the whole image at its
  true aspect ratio (a centre square would never show the image's edges).

A user's folder is messy: files are checked cheaply when the dataset is built (PIL parses the
header) and bad ones are skipped with one counted warning; a file that still fails to decode
later (e.g. truncated image data) is replaced by the next good index so a long run never dies
on one file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from engine.errors import UserError
from engine.media.files import IMAGE_EXTS, is_image_file, walk
from engine.media.images import check_image, decode_image, first_line, load_images, to_rgb
from engine.registry import register_dataset

__all__ = [  # the image-file names callers import from here (the reader is engine.media)
    "ImageFolderDataset", "check_image", "decode_image", "decode_whole", "default_load_size",
    "is_image_file", "list_images", "load_images",
]  # fmt: skip


def list_images(root: Path) -> list[Path]:
    """All image files under root, recursively, sorted; hidden files and folders are skipped."""
    return walk([root])


def decode_whole(path: str | Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole image (EXIF orientation applied, RGB) resized to size x size, antialiased, and
    its size before that as int64 [H, W] (after orientation; JPEG draft scaling keeps the
    aspect). Returns (uint8 [3, size, size], hw)."""
    with Image.open(path) as im:
        im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale still >= size both ways
        im = to_rgb(ImageOps.exif_transpose(im))
        w, h = im.size
        im = im.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
        arr = np.asarray(im, dtype=np.uint8)
    image = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()
    return image, torch.tensor([h, w], dtype=torch.long)


class ImageFolderDataset(Dataset):
    """Images under `root`, recursively. Labelled when every image sits inside a class folder
    (root/<class>/.../x.jpg), unlabelled (label -1) otherwise. labels: "auto" | True | False.
    whole: items are the whole image stretched to a square plus its size "hw" (training);
    default False: the centre square (evaluation, features)."""

    def __init__(
        self,
        root: str | Path,
        load_size: int = 32,
        labels: str | bool = "auto",
        whole: bool = False,
    ):
        self.root = Path(root).expanduser()
        self.load_size = int(load_size)
        self.whole = bool(whole)
        if not self.root.exists():
            raise UserError(f"{self.root}: folder not found")
        if not self.root.is_dir():
            raise UserError(f"{self.root}: not a folder")
        candidates = list_images(self.root)
        if not candidates:
            raise UserError(
                f"{self.root}: no images found (looked for {len(IMAGE_EXTS)} image types: "
                f"{', '.join(IMAGE_EXTS[:12])}, ...)"
            )
        good, bad = [], []
        for p in candidates:
            reason = check_image(p)
            (bad if reason else good).append((p, reason))
        if bad:
            first = "; ".join(f"{p.name}: {r}" for p, r in bad[:3])
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            _warn(f"{self.root}: skipped {len(bad)} unreadable image file(s) ({first}{more})")
        if not good:
            raise UserError(f"{self.root}: none of the {len(bad)} image files could be read")
        self.files: list[Path] = [p for p, _ in good]
        self.skipped: list[Path] = [p for p, _ in bad]
        self.bad_files: list[Path] = []  # files that failed later, at decode time
        self._bad_idx: set[int] = set()
        self.classes, self.targets = self._labels(labels)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def _labels(self, labels: str | bool) -> tuple[list[str], list[int]]:
        tops = [p.relative_to(self.root).parts for p in self.files]
        in_folders = all(len(parts) > 1 for parts in tops)
        if labels not in ("auto", True, False):
            raise UserError(f"labels must be 'auto', True or False, got {labels!r}")
        if labels is True and not in_folders:
            loose = next(self.root / parts[0] for parts in tops if len(parts) == 1)
            raise UserError(f"{loose}: image outside a class folder; expected root/<class>/image")
        if labels is False or not in_folders:
            return [], [-1] * len(self.files)
        classes = sorted({parts[0] for parts in tops})
        if set(classes) <= {"train", "val", "valid", "validation", "test"} and len(classes) > 1:
            _warn(
                f"{self.root}: the class folders are named {', '.join(classes)}; "
                f"pass one split (e.g. {self.root / classes[0]}) to use its class folders"
            )
        idx = {c: i for i, c in enumerate(classes)}
        return classes, [idx[parts[0]] for parts in tops]

    @property
    def labelled(self) -> bool:
        return bool(self.classes)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.files)
        i = int(index) % n
        for _ in range(n):
            if i not in self._bad_idx:
                try:
                    item: dict[str, Any] = {}
                    if self.whole:
                        item["image"], item["hw"] = decode_whole(self.files[i], self.load_size)
                    else:
                        item["image"] = decode_image(self.files[i], self.load_size)
                    item["label"] = torch.tensor(self.targets[i], dtype=torch.long)
                    item["index"] = i
                    return item
                except Exception as e:  # noqa: BLE001 - never kill a run over one file
                    self._bad_idx.add(i)
                    self.bad_files.append(self.files[i])
                    _warn(
                        f"{self.files[i]}: cannot decode ({first_line(e)}); using another image "
                        f"instead ({len(self.bad_files)} bad file(s) so far)"
                    )
            i = (i + 1) % n  # deterministic substitute: the next good file
        raise UserError(f"{self.root}: none of the {n} images could be decoded")

    def __repr__(self) -> str:
        kind = f"{len(self.classes)} classes" if self.labelled else "unlabelled"
        crop = "whole image" if self.whole else "centre crop"
        return f"ImageFolderDataset({str(self.root)!r}, {len(self)} images, {kind}, {self.load_size}px, {crop})"


def _warn(msg: str) -> None:
    warnings.warn(msg, UserWarning, stacklevel=3)


def default_load_size(image_size: int) -> int:
    """Decode a bit larger than the training crop (224 -> 255, like the usual 256) so random
    crops have room; at <64 px (CIFAR-like) images are used at their own size."""
    return round(image_size * 1.14) if image_size >= 64 else int(image_size)


register_dataset(  # training: whole images, the method crops them at their true aspect
    "images",
    lambda cfg: ImageFolderDataset(
        cfg.data, load_size=default_load_size(cfg.image_size), whole=True
    ),
)
