"""Captions for the generated sample images (assets/sample/images/{train,val}/<class>/*.jpg).

The sample's colours and positions are random and not recorded, so the only thing a caption
can truthfully say is the class: each image gets one row per sentence template (five captions
an image, as Flickr8k/COCO), all naming its class. With one template picked per image, the
template was a label the picture does not show, and the tiny CLIP learnt it by heart (training
loss far below the class-level floor, retrieval at chance); with every template on every image
the only thing to learn is the class word, which is what zero-shot and text search ask. Paths are relative to the caption file, as open_clip's csv
loader expects: assets/sample/captions/{train,val}.tsv.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from engine.checkpoint import atomic_write

CAPTION_TEMPLATES = (
    "a photo of a {}.",
    "a {} on a noisy background.",
    "a picture of a {}.",
    "a drawing of a {}.",
    "an image of a {}.",
)


def captions_dir(sample: str | Path) -> Path:
    return Path(sample) / "captions"


def write_sample_captions(sample: str | Path) -> dict[str, Path]:
    """(Re)write captions/{train,val}.tsv for every image under sample/images/<split>/<class>/."""
    sample = Path(sample)
    out_dir = captions_dir(sample)
    written = {}
    for split_dir in sorted(p for p in (sample / "images").iterdir() if p.is_dir()):
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t", lineterminator="\n")
        w.writerow(["filepath", "title"])
        for cls in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for img in sorted(cls.glob("*.jpg")):
                rel = Path(os.path.relpath(img, out_dir)).as_posix()
                for template in CAPTION_TEMPLATES:
                    w.writerow([rel, template.format(cls.name)])
        path = out_dir / f"{split_dir.name}.tsv"
        text = buf.getvalue()
        if not path.is_file() or path.read_text() != text:
            atomic_write(path, lambda tmp, t=text: Path(tmp).write_text(t))
        written[split_dir.name] = path
    return written


def ensure_sample_captions() -> dict[str, Path]:
    """The sample images (generated if missing) and their caption files."""
    from engine.sample import ensure_sample

    images = ensure_sample()
    return write_sample_captions(images.parent)


def ensure_training_captions(root: str | Path, per_class: int) -> Path:
    """A larger training split of the same generator under root (images/train, its first 60
    pictures per class are the committed sample's, bit for bit; missing ones are rendered, about
    4 ms each) and its caption file: root/captions/train.tsv."""
    from engine.sample import ensure_sample

    images = ensure_sample(root, {"train": per_class})
    return write_sample_captions(images.parent)["train"]
