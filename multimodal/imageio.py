"""Photos and video key frames the way CLIP preprocessing expects them, read through
`engine.media` (the one table of extensions, walker and decoders below every layer).

Decoding returns uint8 [3, S, S]: shorter side resized to S then centre-cropped (the geometry of
open_clip's eval transform); normalisation happens batched on the device.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from PIL import Image

from engine.media.files import is_video_file as is_video
from engine.media.files import walk
from engine.media.images import decode_image as load_image
from engine.media.images import square

__all__ = ["is_video", "load_image", "video_key_frames", "walk_files"]


def walk_files(paths: Iterable[str | Path], videos: bool = False) -> list[Path]:
    """All photo (and optionally video) files under `paths`, absolute, sorted, hidden skipped."""
    return walk([Path(p).expanduser().resolve() for p in paths], videos=videos)


def video_key_frames(
    path: str | Path, size: int, max_frames: int = 16
) -> list[tuple[float, torch.Tensor]]:
    """(time in seconds, uint8 [3,S,S]) for up to `max_frames` key frames, evenly spread."""
    from engine.media.video import open_video

    with open_video(path, backend="pyav") as r:
        return [(t, square(Image.fromarray(f), size)) for t, f in r.keyframes(max_frames)]
