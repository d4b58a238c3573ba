"""Data page: open an image folder, a video or a caption file and see what is in it.

Listing is fast and happens first; checking every file (header parse, the engine's
`check_image`) runs in chunks on a worker thread with a progress bar, and thumbnails decode
lazily for visible items only. Files that fail either step are listed as unreadable.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.gui import jobs
from app.gui.errors import show_error
from app.gui.file_filters import VIDEO_FILTER
from app.gui.paths import Settings
from app.gui.thumbs import THUMB, ThumbGrid, ThumbItem
from app.gui.widgets import Page, info_label, std_icon, to_qimage

SPLIT_NAMES = {"train", "val", "valid", "validation", "test"}
CAPTION_FILTER = "Caption tables (*.tsv *.csv *.txt);;All files (*)"
CHECK_CHUNK = 64
VIDEO_THUMBS = 48


@dataclass
class Listing:
    kind: str  # "images" | "video" | "captions"
    path: Path
    items: list[ThumbItem]
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


def list_image_folder(root: Path) -> Listing:
    from engine.data import list_images
    from engine.errors import UserError

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
        items.append(
            ThumbItem(
                key=str(p),
                label=c.split("/")[-1] if c else p.stem,
                tooltip=f"{p}\nclass: {c or '(none)'}",
                path=str(p),
                data={"class": c},
            )
        )
    items = interleave(items)
    hint = ""
    if split_layout:
        first = sorted(tops)[0]
        hint = f"This folder holds splits ({', '.join(sorted(tops))}). Train on one split, e.g. {root / first}, to keep its class labels."
    n_cls = len([c for c in classes if c])
    info = f"{len(files)} images" + (
        f" in {n_cls} classes" if n_cls else ", unlabelled (no class folders)"
    )
    return Listing("images", root, items, classes, info, train_hint=hint)


def interleave(items: list[ThumbItem]) -> list[ThumbItem]:
    """One image of each class in turn, so the first screenful shows the whole dataset."""
    by_class: dict[str, list[ThumbItem]] = {}
    for it in items:
        by_class.setdefault(it.data.get("class", ""), []).append(it)
    if len(by_class) < 2:
        return items
    out, queues = [], list(by_class.values())
    for i in range(max(len(q) for q in queues)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def list_video(path: Path) -> Listing:
    """Evenly spaced frames as thumbnails. PyAV or frame folders only: decord stays out of the
    GUI process (it is known to crash next to Qt)."""
    from video.io import open_video

    reader = open_video(
        path, size=THUMB, backend="folder" if path.is_dir() else "pyav", on_error="warn"
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
        img = to_qimage(fr)
        t = f"{i / fps:.1f}s" if fps else f"#{i}"
        items.append(
            ThumbItem(
                key=f"{path}#{i}",
                label=f"frame {i} · {t}",
                tooltip=f"{path}\nframe {i}",
                path=str(path),
                loader=lambda img=img: img,
            )
        )
    dur = f", {n / fps:.1f} s at {fps:.1f} fps" if fps else ""
    info = f"{n} frames, {w}x{h}{dur}"
    return Listing("video", path, items, Counter(), info, bad)


def list_captions(path: Path) -> Listing:
    from multimodal.data import read_captions

    cs = read_captions(path, skip_bad=True)
    items, classes = [], Counter()
    for r in cs.records:
        c = cs.classes[r.label] if cs.classes and r.label >= 0 else ""
        classes[c] += 1
        items.append(
            ThumbItem(
                key=f"{r.path}|{len(items)}",
                label=r.caption[:40],
                tooltip=f"{r.path}\n“{r.caption}”",
                path=str(r.path),
                data={"class": c, "caption": r.caption},
            )
        )
    info = (
        f"{len(cs.records)} captioned images ({len({r.path for r in cs.records})} distinct files)"
    )
    bad = (
        [("(rows)", f"{cs.skipped} rows skipped: missing image or empty caption")]
        if cs.skipped
        else []
    )
    return Listing("captions", path, items, classes, info, bad)


SOURCE = "source"  # run_in_thread key: the open source's listing and checks


class DataPage(Page):
    """Browse a dataset before training on it."""

    train_requested = Signal(str)  # data path: "Train on this data" button

    def __init__(self, settings: Settings, parent: QWidget | None = None):
        super().__init__(
            "Data",
            "Open a folder of images (class sub-folders become labels), a video, or a caption file, and check what the models will see.",
            parent,
        )
        self.settings = settings
        self.listing: Listing | None = None
        self.bad: list[tuple[str, str]] = []
        self._check_pos = 0
        self._checking = False

        bar = QHBoxLayout()
        self.open_folder_btn = QPushButton("Open image folder…")
        self.open_folder_btn.setIcon(std_icon(self, "SP_DirOpenIcon"))
        self.open_video_btn = QPushButton("Open video…")
        self.open_video_btn.setIcon(std_icon(self, "SP_MediaPlay"))
        self.open_captions_btn = QPushButton("Open caption file…")
        self.open_captions_btn.setIcon(std_icon(self, "SP_FileDialogDetailedView"))
        self.recent = QComboBox()
        self.recent.setMinimumWidth(280)
        self.recent.setPlaceholderText("Recent…")
        for w in (self.open_folder_btn, self.open_video_btn, self.open_captions_btn):
            bar.addWidget(w)
        bar.addStretch(1)
        bar.addWidget(QLabel("Recent:"))
        bar.addWidget(self.recent)
        self.outer.addLayout(bar)

        split = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        top = QHBoxLayout()
        self.path_label = info_label("Nothing open yet.", muted=True)
        self.class_filter = QComboBox()
        self.class_filter.setMinimumWidth(160)
        self.class_filter.currentIndexChanged.connect(self._apply_filter)
        top.addWidget(self.path_label, 1)
        top.addWidget(QLabel("Show:"))
        top.addWidget(self.class_filter)
        ll.addLayout(top)
        self.grid = ThumbGrid()
        self.grid.thumbs.failed.connect(self._thumb_failed)
        ll.addWidget(self.grid, 1)
        split.addWidget(left)

        side = QWidget()
        side.setMinimumWidth(300)
        side.setMaximumWidth(420)
        sl = QVBoxLayout(side)
        sl.setContentsMargins(0, 0, 0, 0)
        box = QGroupBox("Summary")
        bl = QVBoxLayout(box)
        self.summary = info_label("Open something to see its contents.")
        self.hint = info_label("", muted=True)
        self.check_bar = QProgressBar()
        self.check_bar.setFormat("checking files %v / %m")
        self.check_bar.hide()
        bl.addWidget(self.summary)
        bl.addWidget(self.hint)
        bl.addWidget(self.check_bar)
        sl.addWidget(box)
        cbox = QGroupBox("Classes")
        cl = QVBoxLayout(cbox)
        self.class_table = QTableWidget(0, 2)
        self.class_table.setHorizontalHeaderLabels(["class", "images"])
        self.class_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.class_table.verticalHeader().hide()
        self.class_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        cl.addWidget(self.class_table)
        sl.addWidget(cbox, 2)
        ubox = QGroupBox("Unreadable files")
        ul = QVBoxLayout(ubox)
        self.bad_label = info_label("none found", muted=True)
        self.bad_list = QListWidget()
        ul.addWidget(self.bad_label)
        ul.addWidget(self.bad_list)
        sl.addWidget(ubox, 1)
        self.train_btn = QPushButton("Train on this data  →")
        self.train_btn.setObjectName("primary")
        self.train_btn.setEnabled(False)
        sl.addWidget(self.train_btn)
        split.addWidget(side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        self.outer.addWidget(split, 1)

        self.open_folder_btn.clicked.connect(self._browse_folder)
        self.open_video_btn.clicked.connect(lambda: self._browse_file("video", VIDEO_FILTER))
        self.open_captions_btn.clicked.connect(
            lambda: self._browse_file("captions", CAPTION_FILTER)
        )
        self.recent.activated.connect(self._open_recent)
        self.train_btn.clicked.connect(
            lambda: self.listing and self.train_requested.emit(str(self.listing.path))
        )
        self._refresh_recent()

    # ---- opening ------------------------------------------------------------------------
    def _refresh_recent(self) -> None:
        self.recent.clear()
        for kind, label in (("folders", "folder"), ("videos", "video"), ("captions", "captions")):
            for p in self.settings.recent(kind):
                self.recent.addItem(f"{label}: {p}", (kind, p))
        self.recent.setCurrentIndex(-1)

    def _open_recent(self, i: int) -> None:
        kind, p = self.recent.itemData(i)
        self.open_path(p, {"folders": "images", "videos": "video", "captions": "captions"}[kind])

    def _browse_folder(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Open image folder", self._start_dir())
        if p:
            self.open_path(p, "images")

    def _browse_file(self, kind: str, flt: str) -> None:
        p, _ = QFileDialog.getOpenFileName(
            self, "Open video" if kind == "video" else "Open caption file", self._start_dir(), flt
        )
        if p:
            self.open_path(p, kind)

    def _start_dir(self) -> str:
        recent = self.settings.recent("folders")
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def open_path(self, path: str | Path, kind: str | None = None) -> None:
        """Open a source; kind is guessed when None (folder of frames is a video)."""
        path = Path(path).expanduser()
        if kind is None:
            kind = guess_kind(path)
        self.listing = None
        self.bad = []
        self._checking = False
        self.check_bar.hide()
        self.grid.thumbs.set_items([])
        self.path_label.setText(f"Reading {path} …")
        self.summary.setText("Listing files…")
        self.hint.setText("")
        self.train_btn.setEnabled(False)
        fn = {"images": list_image_folder, "video": list_video, "captions": list_captions}[kind]
        # latest-only: opening another source drops this one's listing and file checks
        jobs.run_in_thread(lambda: fn(path), self._listed, self._failed, self, key=SOURCE)

    def _failed(self, e: BaseException) -> None:
        self._checking = False
        self.check_bar.hide()
        self.path_label.setText("Nothing open.")
        self.summary.setText("Could not open this source.")
        show_error(self, e, "data page")

    def _listed(self, listing: Listing) -> None:
        self.listing = listing
        self.settings.add_recent(
            {"images": "folders", "video": "videos", "captions": "captions"}[listing.kind],
            listing.path,
        )
        self._refresh_recent()
        self.path_label.setText(str(listing.path))
        self.hint.setText(listing.train_hint)
        self.bad = list(listing.bad)
        self.class_filter.blockSignals(True)
        self.class_filter.clear()
        self.class_filter.addItem(f"All ({len(listing.items)})", None)
        for c, n in sorted(listing.classes.items()):
            if c:
                self.class_filter.addItem(f"{c} ({n})", c)
        self.class_filter.blockSignals(False)
        self.class_table.setRowCount(0)
        for c, n in sorted(listing.classes.items()):
            if not c:
                continue
            r = self.class_table.rowCount()
            self.class_table.insertRow(r)
            self.class_table.setItem(r, 0, QTableWidgetItem(c))
            it = QTableWidgetItem(str(n))
            it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.class_table.setItem(r, 1, it)
        self.grid.thumbs.set_items(listing.items)
        self.train_btn.setEnabled(listing.kind in ("images", "captions"))
        self._update_summary()
        if listing.kind == "images":
            self._check_pos = 0
            self.check_bar.setRange(0, len(listing.items))
            self.check_bar.setValue(0)
            self.check_bar.show()
            self._checking = True
            self._check_next()

    # ---- checking every file in chunks (progress, cancellable by opening something else) ---
    def _check_next(self) -> None:
        if self.listing is None:
            return
        items = self.listing.items[self._check_pos : self._check_pos + CHECK_CHUNK]
        if not items:
            self.check_bar.hide()
            self._checking = False
            self._update_summary()
            return
        paths = [it.path for it in items]

        def check():
            from engine.data import check_image

            return [(p, r) for p in paths if (r := check_image(Path(p)))]

        def done(bad):
            self._check_pos += len(items)
            self.check_bar.setValue(self._check_pos)
            for p, r in bad:
                self._add_bad(p, r)
            self._check_next()

        jobs.run_in_thread(check, done, self._failed, self, key=SOURCE)

    @property
    def checking(self) -> bool:
        return self._checking

    def _thumb_failed(self, key: str) -> None:
        it = self.grid.thumbs.items[self.grid.thumbs.row_of[key]]
        self._add_bad(it.path, "cannot decode the image data")

    def _add_bad(self, path: str, reason: str) -> None:
        if any(p == path for p, _ in self.bad):
            return
        self.bad.append((path, reason))
        self._update_summary()

    def _update_summary(self) -> None:
        if self.listing is None:
            return
        lst = self.listing
        kind = {"images": "Image folder", "video": "Video", "captions": "Caption file"}[lst.kind]
        self.summary.setText(f"<b>{kind}</b><br>{lst.info}")
        self.bad_list.clear()
        for p, r in self.bad:
            self.bad_list.addItem(f"{Path(p).name}: {r}")
        if self.bad:
            self.bad_label.setText(f"{len(self.bad)} file(s) will be skipped:")
        else:
            self.bad_label.setText(
                "none so far (still checking)" if self.checking else "none: every file opened"
            )

    def _apply_filter(self) -> None:
        if self.listing is None:
            return
        c = self.class_filter.currentData()
        items = (
            self.listing.items
            if c is None
            else [it for it in self.listing.items if it.data.get("class") == c]
        )
        self.grid.thumbs.set_items(items)

    def shutdown(self) -> None:
        jobs.cancel_pending(self, SOURCE)
        self.grid.thumbs.shutdown()


def guess_kind(path: Path) -> str:
    """Video files are videos, other files caption tables, folders image folders (a DAVIS
    frame folder opens as a video from the Video page)."""
    from video.io import VIDEO_EXTS

    if path.is_file():
        return "video" if path.suffix.lower() in VIDEO_EXTS else "captions"
    return "images"
