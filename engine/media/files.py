"""Which files are photos and which are videos, and the one walker that finds them.

One table per kind, used by every reader (image folders, frame folders, the photo index):

- `IMAGE_EXTS`: every extension Pillow (the image decoder) registers *and can open here*:
  formats whose plugin is only a stub (HDF5, GRIB, BUFR, WMF off Windows) or can only save
  (PDF, Palm) are left out, as are formats whose codec this Pillow was built without (JPEG 2000,
  WebP, AVIF) and PostScript without Ghostscript. So .jp2, .pnm/.pbm/.pgm/.ppm, .qoi, .psd ...
  photos are found wherever Pillow reads them.
- `VIDEO_EXTS`: containers PyAV's FFmpeg demuxes (.mpg/.mpeg are videos even though Pillow also
  registers them for MPEG stills).

`.gif` is an image: Pillow decodes it and readers take its first frame (an animated GIF in a
photo folder is searched and trained on as the picture it opens on). `open_video` still opens a
.gif passed to it explicitly (PyAV decodes it), but walkers never list it as a video.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

VIDEO_EXTS: tuple[str, ...] = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv", ".wmv", ".flv",
    ".3gp", ".mts", ".m2ts",
)  # fmt: skip

# formats that need an optional part of Pillow: (features kind, name)
_NEEDS = {
    "JPEG": ("codec", "jpg"),
    "JPEG2000": ("codec", "jpg_2000"),
    "WEBP": ("module", "webp"),
    "AVIF": ("module", "avif"),
    "PNG": ("codec", "zlib"),
}


def _pillow_image_exts() -> tuple[str, ...]:
    from PIL import Image, ImageFile, features

    Image.init()  # load every plugin so the registry is complete
    ok: dict[str, bool] = {}

    def opens(fmt: str) -> bool:
        if fmt not in ok:
            factory = Image.OPEN.get(fmt, (None,))[0]
            if fmt == "MPO":  # opened by the JPEG plugin, registered for saving only
                factory = Image.OPEN.get("JPEG", (None,))[0]
            good = factory is not None and not (
                isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile)
            )
            kind, name = _NEEDS.get(fmt, (None, None))
            if good and kind is not None:
                try:
                    good = bool(features.check(name))
                except (ValueError, OSError):
                    good = False
            if good and fmt == "EPS":
                from PIL import EpsImagePlugin

                good = bool(EpsImagePlugin.has_ghostscript())
            ok[fmt] = good
        return ok[fmt]

    exts = {e.lower() for e, fmt in Image.registered_extensions().items() if opens(fmt)}
    return tuple(sorted(exts - set(VIDEO_EXTS)))


IMAGE_EXTS: tuple[str, ...] = _pillow_image_exts()
_IMAGE, _VIDEO = frozenset(IMAGE_EXTS), frozenset(VIDEO_EXTS)


def is_image_file(path: str | Path) -> bool:
    p = Path(path)
    return p.suffix.lower() in _IMAGE and not p.name.startswith(".")


def is_video_file(path: str | Path) -> bool:
    p = Path(path)
    return p.suffix.lower() in _VIDEO and not p.name.startswith(".")


def walk(paths: Iterable[str | Path], images: bool = True, videos: bool = False) -> list[Path]:
    """Image (and/or video) files under `paths`, recursively, sorted, without duplicates.

    A path that is a file is kept when its extension matches. Names starting with "." (files and
    folders) are skipped. Folder symlinks are not followed (no cycles); file symlinks are listed
    even when dangling, so the caller's stat or decode reports them like any unreadable file.
    Paths come back joined onto the given ones (resolve the roots first for absolute paths).
    """
    exts = (_IMAGE if images else frozenset()) | (_VIDEO if videos else frozenset())
    out: set[Path] = set()
    for root in paths:
        root = Path(root)
        if not root.is_dir():
            if root.suffix.lower() in exts:
                out.add(root)
            continue
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            out.update(
                Path(folder, f)
                for f in files
                if not f.startswith(".") and os.path.splitext(f)[1].lower() in exts
            )
    return sorted(out)


def natural_key(name: str) -> list:
    """'frame2' before 'frame10'."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_frame_files(folder: str | Path) -> list[Path]:
    """The images directly inside a frame folder, in natural order (hidden files skipped)."""
    files = [p for p in Path(folder).iterdir() if is_image_file(p) and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


def is_frame_folder(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and any(is_image_file(p) for p in path.iterdir())
