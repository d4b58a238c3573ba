"""Image-caption data: a TSV/CSV table, a folder of images with .txt captions, or class folders.

Every source becomes a list of `CaptionRecord(path, caption, label)`; `CaptionDataset` decodes
images in DataLoader workers (uint8 [3, S, S]) and tokenizes captions with the open_clip
tokenizer, so the training step only moves tensors.
"""

from __future__ import annotations

import csv
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from engine.config import TrainConfig, make_config
from engine.errors import UserError
from engine.media.files import IMAGE_EXTS
from engine.registry import register_dataset
from multimodal.config import ClipConfig
from multimodal.imageio import load_image
from multimodal.models import get_tokenizer

CLASS_TEMPLATE = "a photo of a {}."


@dataclass
class CaptionRecord:
    path: Path
    caption: str
    label: int = -1  # class index for class-folder data, -1 otherwise


@dataclass
class CaptionSet:
    records: list[CaptionRecord]
    classes: list[str]  # class names when built from class folders, else []
    skipped: int = 0


def read_captions(
    source: str | Path,
    image_key: str = "filepath",
    caption_key: str = "title",
    separator: str = "",
    skip_bad: bool = False,
) -> CaptionSet:
    """Read any supported caption source; bad rows raise UserError naming the row, or are
    skipped (and counted, with one warning) when `skip_bad`."""
    source = Path(source).expanduser()
    if source.is_file():
        return _read_table(source, image_key, caption_key, separator, skip_bad)
    if not source.is_dir():
        raise UserError(f"{source}: no such caption file or folder")
    images = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    if not images:
        raise UserError(f"{source}: no images found")
    if any(p.with_suffix(".txt").is_file() for p in images):
        return _read_sidecars(source, images, skip_bad)
    return _read_class_folders(source)


def _warn_skipped(source: Path, skipped: int, total: int) -> None:
    if skipped:
        warnings.warn(
            f"{source}: skipped {skipped} of {total} caption rows (missing image or empty caption)",
            stacklevel=3,
        )


def _read_table(
    path: Path, image_key: str, caption_key: str, separator: str, skip_bad: bool
) -> CaptionSet:
    sep = separator or ("," if path.suffix.lower() == ".csv" else "\t")
    sep = "\t" if sep in ("\\t", "tab") else sep
    records, skipped, total = [], 0, 0
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter=sep)
            cols = reader.fieldnames or []
            for key, flag in ((image_key, "image-key"), (caption_key, "caption-key")):
                if key not in cols:
                    raise UserError(
                        f"{path}: no column '{key}' (columns: {', '.join(cols) or 'none'}); set --{flag}"
                    )
            for line, row in enumerate(reader, start=2):
                total += 1
                rel, caption = (
                    (row.get(image_key) or "").strip(),
                    " ".join((row.get(caption_key) or "").split()),
                )
                image = (path.parent / rel).resolve() if rel else None
                problem = (
                    "empty image path"
                    if image is None
                    else "empty caption"
                    if not caption
                    else f"image not found: {rel}"
                    if not image.is_file()
                    else ""
                )
                if problem:
                    if not skip_bad:
                        raise UserError(
                            f"{path}:{line}: {problem} (pass --skip-bad true to skip such rows)"
                        )
                    skipped += 1
                    continue
                records.append(CaptionRecord(image, caption))
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(
            f"{path}: not a readable {'CSV' if sep == ',' else 'TSV'} caption file ({e})"
        ) from None
    if not records:
        raise UserError(f"{path}: no usable caption rows")
    _warn_skipped(path, skipped, total)
    return CaptionSet(records, [], skipped)


def _read_sidecars(root: Path, images: list[Path], skip_bad: bool) -> CaptionSet:
    """photo.jpg + photo.txt; each non-empty line of the .txt is one caption of the photo."""
    records, skipped = [], 0
    for img in images:
        txt = img.with_suffix(".txt")
        lines = []
        if txt.is_file():
            lines = [
                " ".join(s.split())
                for s in txt.read_text(encoding="utf-8", errors="replace").splitlines()
            ]
            lines = [s for s in lines if s]
        if not lines:
            if not skip_bad:
                why = "empty caption file" if txt.is_file() else "no caption file"
                raise UserError(
                    f"{txt}: {why} for {img.name} (pass --skip-bad true to skip such images)"
                )
            skipped += 1
            continue
        records.extend(CaptionRecord(img, s) for s in lines)
    if not records:
        raise UserError(f"{root}: no usable captions")
    _warn_skipped(root, skipped, len(images))
    return CaptionSet(records, [], skipped)


def class_caption(name: str, template: str = CLASS_TEMPLATE) -> str:
    return template.format(name.replace("_", " ").replace("-", " ").strip())


def _read_class_folders(root: Path) -> CaptionSet:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    records = []
    for label, name in enumerate(classes):
        for img in sorted((root / name).rglob("*")):
            if img.suffix.lower() in IMAGE_EXTS and img.is_file():
                records.append(CaptionRecord(img.resolve(), class_caption(name), label))
    if not records:
        raise UserError(
            f"{root}: images must sit in class folders (root/<class>/*.jpg) or have a .txt caption beside them"
        )
    return CaptionSet(records, classes)


class CaptionDataset(Dataset):
    """{"image": uint8 [3,S,S], "text": int64 [context], "label": int64, "index": int64}."""

    def __init__(self, records: list[CaptionRecord], image_size: int, tokenizer: Any):
        self.records, self.image_size, self.tokenizer = records, image_size, tokenizer

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        r = self.records[i]
        try:
            image = load_image(r.path, self.image_size)
        except (OSError, ValueError, SyntaxError) as e:
            raise UserError(f"{r.path}: cannot decode image ({e})") from None
        text = self.tokenizer([r.caption])[0].long()
        return {
            "image": image,
            "text": text,
            "label": torch.tensor(r.label),
            "index": torch.tensor(i),
        }


def build_caption_dataset(cfg: TrainConfig) -> CaptionDataset:
    """The registered builder for data kind "captions" (the CLIP method's data)."""
    m: ClipConfig = make_config(ClipConfig, cfg.method_args)
    caps = read_captions(cfg.data, m.image_key, m.caption_key, m.separator, m.skip_bad)
    return CaptionDataset(caps.records, cfg.image_size, get_tokenizer(m.model, m.pretrained))


register_dataset("captions", build_caption_dataset)
