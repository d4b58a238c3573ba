"""The Data page's state, Qt-free: what an image folder, a video or a caption file holds (the
folder scan, class counts, train/val split hint, the samples to show), the file check in
chunks, and the unreadable files found by the check or by thumbnail decoding.

The page only turns samples into thumbnails (decoding is Qt's) and renders; it never keeps a
copy of the state. Events: `listed(listing)` when a source's listing arrives, `changed()` when
the unreadable files or the checking state change.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.gui.sessions.events import Event
from engine.errors import UserError

SPLIT_NAMES = {"train", "val", "valid", "validation", "test"}
CHECK_CHUNK = 64
VIDEO_THUMBS = 48
TITLES = {"images": "Image folder", "video": "Video", "captions": "Caption file"}
# source kind <-> the Settings recent list it goes to, and its label there
RECENT = {"images": ("folders", "folder"), "video": ("videos", "video"), "captions": ("captions", "captions")}  # fmt: skip
DECODE_FAILED = "cannot decode the image data"


@dataclass
class Sample:
    """One thumbnail: an image file, a video frame (decoded already) or a caption row."""

    key: str  # unique: path, path#frame, path|row
    label: str = ""
    tooltip: str = ""
    path: str = ""
    data: dict = field(default_factory=dict)  # class, caption
    frame: Any = None  # numpy HxWx3 uint8 for video frames; image files decode from path


@dataclass
class Listing:
    kind: str  # "images" | "video" | "captions"
    path: Path
    items: list[Sample]
    classes: Counter = field(default_factory=Counter)
    info: str = ""
    bad: list[tuple[str, str]] = field(default_factory=list)
    train_hint: str = ""


def class_of(rel_parts: tuple[str, ...], all_in_folders: bool, split_layout: bool) -> str:
    """The engine's rule (top folder = class when every image is in one), shown as split/class
    when the top folders are train/val splits."""
    if not all_in_folders:
        return ""
    if split_layout and len(rel_parts) > 2:
        return f"{rel_parts[0]}/{rel_parts[1]}"
    return rel_parts[0]


def interleave(items: list[Sample]) -> list[Sample]:
    """One image of each class in turn, so the first screenful shows the whole dataset."""
    by_class: dict[str, list[Sample]] = {}
    for it in items:
        by_class.setdefault(it.data.get("class", ""), []).append(it)
    if len(by_class) < 2:
        return items
    out, queues = [], list(by_class.values())
    for i in range(max(len(q) for q in queues)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def list_image_folder(root: Path) -> Listing:
    from engine.data import list_images

    if not root.is_dir():
        raise UserError(f"{root}: folder not found")
    files = list_images(root)
    if not files:
        raise UserError(f"{root}: no images found (jpg, jpeg, png, webp, bmp, tif)")
    parts = [p.relative_to(root).parts for p in files]
    in_folders = all(len(t) > 1 for t in parts)
    tops = {t[0] for t in parts}
    split_layout = in_folders and tops <= SPLIT_NAMES
    items, classes = [], Counter()
    for p, t in zip(files, parts):
        c = class_of(t, in_folders, split_layout)
        classes[c] += 1
        label = c.split("/")[-1] if c else p.stem
        tip = f"{p}\nclass: {c or '(none)'}"
        items.append(Sample(str(p), label, tip, str(p), {"class": c}))
    hint = ""
    if split_layout:
        first = sorted(tops)[0]
        hint = f"This folder holds splits ({', '.join(sorted(tops))}). Train on one split, e.g. {root / first}, to keep its class labels."
    n_cls = len([c for c in classes if c])
    info = f"{len(files)} images" + (
        f" in {n_cls} classes" if n_cls else ", unlabelled (no class folders)"
    )
    return Listing("images", root, interleave(items), classes, info, train_hint=hint)


def list_video(path: Path, size: int = 112) -> Listing:
    """Evenly spaced frames at thumbnail `size`. PyAV or frame folders only: decord stays out of the GUI process
    (it is known to crash next to Qt)."""
    from video.io import open_video

    reader = open_video(
        path, size=size, backend="folder" if path.is_dir() else "pyav", on_error="warn"
    )
    try:
        n, fps, (h, w) = reader.num_frames, reader.fps, reader.orig_size
        idx = sorted(
            {round(i * (n - 1) / max(1, VIDEO_THUMBS - 1)) for i in range(min(n, VIDEO_THUMBS))}
        )
        frames = reader.frames(idx)
        bad = [(f"frame {i}", "could not be decoded") for i in reader.bad_frames]
    finally:
        reader.close()
    items = []
    for i, fr in zip(idx, frames):
        t = f"{i / fps:.1f}s" if fps else f"#{i}"
        items.append(
            Sample(f"{path}#{i}", f"frame {i} · {t}", f"{path}\nframe {i}", str(path), frame=fr)
        )
    dur = f", {n / fps:.1f} s at {fps:.1f} fps" if fps else ""
    return Listing("video", path, items, Counter(), f"{n} frames, {w}x{h}{dur}", bad)


def list_captions(path: Path) -> Listing:
    from multimodal.data import read_captions

    cs = read_captions(path, skip_bad=True)
    items, classes = [], Counter()
    for r in cs.records:
        c = cs.classes[r.label] if cs.classes and r.label >= 0 else ""
        classes[c] += 1
        items.append(
            Sample(
                f"{r.path}|{len(items)}",
                r.caption[:40],
                f"{r.path}\n“{r.caption}”",
                str(r.path),
                {"class": c, "caption": r.caption},
            )
        )
    n_files = len({r.path for r in cs.records})
    info = f"{len(cs.records)} captioned images ({n_files} distinct files)"
    skipped = f"{cs.skipped} rows skipped: missing image or empty caption"
    bad = [("(rows)", skipped)] if cs.skipped else []
    return Listing("captions", path, items, classes, info, bad)


LISTERS: dict[str, Callable[[Path], Listing]] = {
    "images": list_image_folder,
    "video": list_video,
    "captions": list_captions,
}


def guess_kind(path: Path) -> str:
    """Video files are videos, other files caption tables, folders image folders (a DAVIS
    frame folder opens as a video from the Video page)."""
    from video.io import VIDEO_EXTS

    if path.is_file():
        return "video" if path.suffix.lower() in VIDEO_EXTS else "captions"
    return "images"


def list_source(path: Path, kind: str, thumb_size: int = 112) -> Listing:
    """The listing of one source (the work: a worker thread runs it); video frames are
    decoded at the thumbnails' size."""
    return list_video(path, thumb_size) if kind == "video" else LISTERS[kind](path)


def check_files(paths: list[str]) -> list[tuple[str, str]]:
    """(path, reason) for each file the engine cannot read (the work of one chunk)."""
    from engine.data import check_image

    return [(p, r) for p in paths if (r := check_image(Path(p)))]


class DataSession:
    """settings: anything with recent(kind) / add_recent(kind, path) (app.gui.paths.Settings)."""

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings
        self.listing: Listing | None = None
        self.bad: list[tuple[str, str]] = []
        self.checking = False
        self.checked = 0  # files of the listing checked so far
        self.listed = Event()  # (listing)
        self.changed = Event()  # unreadable files or checking state

    # ---- opening --------------------------------------------------------------------------
    def open(self, path: str | Path, kind: str | None = None) -> tuple[Path, str]:
        """Forget the open source; the path and kind to list (kind guessed when None)."""
        path = Path(path).expanduser()
        kind = kind or guess_kind(path)
        if kind not in LISTERS:
            raise UserError(f"unknown kind of source '{kind}' (images, video or captions)")
        self.listing, self.bad, self.checking, self.checked = None, [], False, 0
        return path, kind

    def set_listing(self, listing: Listing) -> None:
        self.listing = listing
        self.bad = list(listing.bad)
        self.checked = 0
        self.checking = listing.kind == "images"  # every image file is checked in chunks
        if self.settings is not None:
            self.settings.add_recent(RECENT[listing.kind][0], listing.path)
        self.listed.emit(listing)

    def failed(self) -> None:
        self.checking = False

    def recent_entries(self) -> list[tuple[str, tuple[str, str]]]:
        """(text, (source kind, path)) of the recent sources, folders first."""
        if self.settings is None:
            return []
        return [
            (f"{label}: {p}", (kind, p))
            for kind, (recent, label) in RECENT.items()
            for p in self.settings.recent(recent)
        ]

    def start_dir(self) -> str:
        recent = self.settings.recent("folders") if self.settings is not None else []
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    # ---- checking every file in chunks --------------------------------------------------
    def next_chunk(self) -> list[str]:
        """The next files to check; [] when every file is checked (checking ends)."""
        if self.listing is None or not self.checking:
            return []
        chunk = [s.path for s in self.listing.items[self.checked : self.checked + CHECK_CHUNK]]
        if not chunk:
            self.checking = False
            self.changed.emit()
        return chunk

    def chunk_checked(self, n: int, bad: list[tuple[str, str]]) -> None:
        self.checked += n
        for p, r in bad:
            self.add_bad(p, r)

    def add_bad(self, path: str, reason: str = DECODE_FAILED) -> None:
        """A file that will be skipped (once each, whichever step found it first)."""
        if any(p == path for p, _ in self.bad):
            return
        self.bad.append((path, reason))
        self.changed.emit()

    # ---- what the page shows --------------------------------------------------------------
    @property
    def can_train(self) -> bool:
        return self.listing is not None and self.listing.kind in ("images", "captions")

    def summary_html(self) -> str:
        lst = self.listing
        return f"<b>{TITLES[lst.kind]}</b><br>{lst.info}" if lst is not None else ""

    def bad_title(self) -> str:
        if self.bad:
            return f"{len(self.bad)} file(s) will be skipped:"
        return "none so far (still checking)" if self.checking else "none: every file opened"

    def bad_lines(self) -> list[str]:
        return [f"{Path(p).name}: {r}" for p, r in self.bad]

    def class_counts(self) -> list[tuple[str, int]]:
        """(class, files) of the labelled classes, by name."""
        if self.listing is None:
            return []
        return [(c, n) for c, n in sorted(self.listing.classes.items()) if c]

    def filter_choices(self) -> list[tuple[str, str | None]]:
        """(text, class) for the "Show:" picker; class None shows everything."""
        if self.listing is None:
            return []
        everything = [(f"All ({len(self.listing.items)})", None)]
        return everything + [(f"{c} ({n})", c) for c, n in self.class_counts()]

    def samples(self, cls: str | None = None) -> list[Sample]:
        if self.listing is None:
            return []
        items = self.listing.items
        return items if cls is None else [s for s in items if s.data.get("class") == cls]
