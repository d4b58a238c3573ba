"""Data page: open an image folder, a video or a caption file and see what is in it.

Listing is fast and happens first; checking every file (header parse, the engine's
`check_image`) runs in chunks on a worker thread with a progress bar, and thumbnails decode
lazily for visible items only. Files that fail either step are listed as unreadable.
The listing, counts and checks live in `app.gui.sessions.data.DataSession` (Qt-free); this
page renders them and turns samples into thumbnails.
"""

from __future__ import annotations

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
from app.gui.sessions.data import DataSession, Listing, Sample, check_files, list_source
from app.gui.thumbs import THUMB, ThumbGrid, ThumbItem
from app.gui.widgets import Page, flush_layout, info_label, std_icon, to_qimage

CAPTION_FILTER = "Caption tables (*.tsv *.csv *.txt);;All files (*)"
SOURCE = "source"  # run_in_thread key: the open source's listing and checks


def thumb_item(s: Sample) -> ThumbItem:
    """A sample as the grid shows it: image files decode lazily, video frames are converted."""
    loader = None if s.frame is None else (lambda f=s.frame: to_qimage(f))
    return ThumbItem(s.key, s.label, s.tooltip, s.path, loader, s.data)


class DataPage(Page):
    """Browse a dataset before training on it."""

    title = "Data"
    hint = "Open a folder of images (class sub-folders become labels), a video, or a caption file, and check what the models will see."

    train_requested = Signal(str)  # data path: "Train on this data" button

    def __init__(self, settings: Settings, parent: QWidget | None = None):
        super().__init__(settings, parent)
        self.session = DataSession(settings)
        self.session.listed.connect(self._listed)
        self.session.changed.connect(self._update_summary)
        self.thumb_items: list[ThumbItem] = []

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
        ll = flush_layout(left)
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
        sl = flush_layout(side)
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

    @property
    def listing(self) -> Listing | None:
        return self.session.listing

    @property
    def bad(self) -> list[tuple[str, str]]:
        return self.session.bad

    @property
    def checking(self) -> bool:
        return self.session.checking

    # ---- opening ------------------------------------------------------------------------
    def _refresh_recent(self) -> None:
        self.recent.clear()
        for text, data in self.session.recent_entries():
            self.recent.addItem(text, data)
        self.recent.setCurrentIndex(-1)

    def _open_recent(self, i: int) -> None:
        kind, p = self.recent.itemData(i)
        self.open_path(p, kind)

    def _browse_folder(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Open image folder", self.session.start_dir())
        if p:
            self.open_path(p, "images")

    def _browse_file(self, kind: str, flt: str) -> None:
        title = "Open video" if kind == "video" else "Open caption file"
        p, _ = QFileDialog.getOpenFileName(self, title, self.session.start_dir(), flt)
        if p:
            self.open_path(p, kind)

    def open_path(self, path: str | Path, kind: str | None = None) -> None:
        """Open a source; kind is guessed when None (folder of frames is a video)."""
        path, kind = self.session.open(path, kind)
        self.check_bar.hide()
        self.thumb_items = []
        self.grid.thumbs.set_items([])
        self.path_label.setText(f"Reading {path} …")
        self.summary.setText("Listing files…")
        self.hint.setText("")
        self.train_btn.setEnabled(False)
        # latest-only: opening another source drops this one's listing and file checks
        jobs.run_in_thread(
            lambda: list_source(path, kind, THUMB),
            self.session.set_listing,
            self._failed,
            self,
            key=SOURCE,
        )

    def _failed(self, e: BaseException) -> None:
        self.session.failed()
        self.check_bar.hide()
        self.path_label.setText("Nothing open.")
        self.summary.setText("Could not open this source.")
        show_error(self, e, "data page")

    def _listed(self, listing: Listing) -> None:
        self._refresh_recent()
        self.path_label.setText(str(listing.path))
        self.hint.setText(listing.train_hint)
        self.class_filter.blockSignals(True)
        self.class_filter.clear()
        for text, cls in self.session.filter_choices():
            self.class_filter.addItem(text, cls)
        self.class_filter.blockSignals(False)
        self.class_table.setRowCount(0)
        for r, (c, n) in enumerate(self.session.class_counts()):
            self.class_table.insertRow(r)
            self.class_table.setItem(r, 0, QTableWidgetItem(c))
            it = QTableWidgetItem(str(n))
            it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.class_table.setItem(r, 1, it)
        self.thumb_items = [thumb_item(s) for s in listing.items]
        self.grid.thumbs.set_items(self.thumb_items)
        self.train_btn.setEnabled(self.session.can_train)
        self._update_summary()
        if self.session.checking:
            self.check_bar.setRange(0, len(listing.items))
            self.check_bar.setValue(0)
            self.check_bar.show()
            self._check_next()

    # ---- checking every file in chunks (progress, cancellable by opening something else) ---
    def _check_next(self) -> None:
        paths = self.session.next_chunk()
        if not paths:
            self.check_bar.hide()
            return

        def done(bad):
            self.session.chunk_checked(len(paths), bad)
            self.check_bar.setValue(self.session.checked)
            self._check_next()

        jobs.run_in_thread(lambda: check_files(paths), done, self._failed, self, key=SOURCE)

    def _thumb_failed(self, key: str) -> None:
        self.session.add_bad(self.grid.thumbs.items[self.grid.thumbs.row_of[key]].path)

    def _update_summary(self) -> None:
        if self.listing is None:
            return
        self.summary.setText(self.session.summary_html())
        self.bad_list.clear()
        self.bad_list.addItems(self.session.bad_lines())
        self.bad_label.setText(self.session.bad_title())

    def _apply_filter(self) -> None:
        cls = self.class_filter.currentData()
        keep = {s.key for s in self.session.samples(cls)}
        self.grid.thumbs.set_items([t for t in self.thumb_items if t.key in keep])

    def shutdown(self) -> None:
        jobs.cancel_pending(self, SOURCE)
        self.grid.thumbs.shutdown()
