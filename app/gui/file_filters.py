"""File-dialog filters built from engine.media's extension tables (Qt-free), so what a dialog
offers is exactly what the loaders accept: .gif is an image everywhere, never a video."""

from __future__ import annotations

from engine.media import IMAGE_EXTS, VIDEO_EXTS


def _filter(label: str, exts: tuple[str, ...]) -> str:
    pats = " ".join(f"*{e}" for e in sorted(set(exts)))
    return f"{label} ({pats});;All files (*)"


def video_filter() -> str:
    """Qt name filter of every video container engine.media.open_video reads as a video."""
    return _filter("Videos", VIDEO_EXTS)


def image_filter() -> str:
    """Qt name filter of every image extension engine.media decodes."""
    return _filter("Images", IMAGE_EXTS)


VIDEO_FILTER = video_filter()
IMAGE_FILTER = image_filter()
