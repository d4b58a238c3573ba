"""The main window: a sidebar of pages (Data, Train, Features, Video, Search) over a stack."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QWidget,
)

from app.gui.errors import show_error
from app.gui.icons import page_icon
from app.gui.paths import Settings, log_path
from app.gui.widgets import flush_layout
from engine.run import RunDir

PAGES = [
    ("data", "Data"),
    ("train", "Train"),
    ("features", "Features"),
    ("video", "Video"),
    ("search", "Search"),
]


class MainWindow(QMainWindow):
    def __init__(self, settings: Settings | None = None):
        super().__init__()
        from app.gui.pages.data import DataPage
        from app.gui.pages.features import FeaturesPage
        from app.gui.pages.search import SearchPage
        from app.gui.pages.train import TrainPage
        from app.gui.pages.video import VideoPage

        self.settings = settings or Settings()
        self.setWindowTitle("Selfsup Studio")
        self.resize(1360, 860)
        self._closing_after_stop = False
        self.close_box: QMessageBox | None = None

        self.data_page = DataPage(self.settings)
        self.train_page = TrainPage(self.settings)
        self.features_page = FeaturesPage(self.settings)
        self.video_page = VideoPage(self.settings)
        self.search_page = SearchPage(self.settings)
        self.pages = {
            "data": self.data_page,
            "train": self.train_page,
            "features": self.features_page,
            "video": self.video_page,
            "search": self.search_page,
        }

        central = QWidget()
        lay = flush_layout(central, QHBoxLayout)
        lay.setSpacing(0)
        side = QWidget()
        side.setFixedWidth(190)
        side.setStyleSheet("background: #1e2430;")
        sl = flush_layout(side)
        brand = QLabel("Selfsup Studio")
        brand.setObjectName("brand")
        sl.addWidget(brand)
        sub = QLabel("See what self-supervised models learn from your own data.")
        sub.setWordWrap(True)
        sub.setStyleSheet("color: #98a2b3; padding: 0 14px 12px 18px; font-size: 11px;")
        sl.addWidget(sub)
        self.sidebar = QListWidget()
        self.sidebar.setObjectName("sidebar")
        self.sidebar.setIconSize(QSize(22, 22))
        self.stack = QStackedWidget()
        for key, title in PAGES:
            item = QListWidgetItem(page_icon(key), title)
            item.setData(Qt.ItemDataRole.UserRole, key)
            self.sidebar.addItem(item)
            self.stack.addWidget(self.pages[key])
        sl.addWidget(self.sidebar, 1)
        foot = QLabel(f"log: {log_path().name}")
        foot.setToolTip(str(log_path()))
        foot.setStyleSheet("color: #667085; padding: 8px 14px; font-size: 10px;")
        sl.addWidget(foot)
        lay.addWidget(side)
        lay.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.sidebar.currentRowChanged.connect(self.stack.setCurrentIndex)
        self.sidebar.setCurrentRow(0)
        self.statusBar().showMessage("Ready")

        # cross-page links
        self.data_page.train_requested.connect(self._train_on)
        self.train_page.open_features.connect(self._features_for)
        self.train_page.run_finished.connect(
            lambda run, st: self.statusBar().showMessage(f"run {Path(run).name}: {st}", 8000)
        )

        for i, (key, _t) in enumerate(PAGES):
            act = QAction(self)
            act.setShortcut(QKeySequence(f"Ctrl+{i + 1}"))
            act.triggered.connect(lambda _=False, k=key: self.show_page(k))
            self.addAction(act)

    def show_page(self, key: str) -> None:
        self.sidebar.setCurrentRow([k for k, _t in PAGES].index(key))

    def current_page(self) -> str:
        return PAGES[self.sidebar.currentRow()][0]

    def open_path(self, path: str | Path) -> None:
        """`selfsup gui PATH`: a run folder opens on the Train page; anything else on Data."""
        p = Path(path).expanduser()
        try:
            if p.is_dir() and RunDir(p).exists():
                self.train_page.open_run(p)
                self.features_page.set_source(p)
                self.show_page("train")
            elif p.exists():
                self.data_page.open_path(p)
                self.show_page("data")
            else:
                from engine.errors import UserError

                raise UserError(f"{p}: no such run folder, image folder or file")
        except Exception as e:  # noqa: BLE001 - shown as a one-line dialog
            show_error(self, e, "open")

    def _train_on(self, data: str) -> None:
        listing = self.data_page.listing
        if listing is not None and listing.kind == "captions":
            self.train_page.select_method("clip")  # captioned images train CLIP
        self.train_page.data_picker.set_path(data, emit=False)
        self.show_page("train")

    def _features_for(self, run: str) -> None:
        self.features_page.set_source(run)
        self.show_page("features")

    # ---- closing while work is running --------------------------------------------------------
    def busy_jobs(self) -> list[str]:
        out = []
        if self.train_page.is_active():
            out.append("a training run")
        if self.video_page.is_active():
            out.append("a propagation")
        if self.search_page.is_active():
            out.append("an indexing job")
        return out

    def closeEvent(self, event: QCloseEvent) -> None:
        busy = self.busy_jobs()
        if busy and not self._closing_after_stop:
            event.ignore()
            self._ask_stop(busy)
            return
        for page in self.pages.values():
            if hasattr(page, "shutdown"):
                page.shutdown()
        event.accept()

    def _ask_stop(self, busy: list[str]) -> None:
        """Non-blocking question; 'Stop and quit' stops the jobs cleanly (training saves a
        checkpoint), then closes the window."""
        if self.close_box is not None:
            return
        box = QMessageBox(
            QMessageBox.Icon.Question,
            "Work in progress",
            f"{' and '.join(busy).capitalize()} is still running. Stop it and quit? A stopped training run can be resumed later.",
            QMessageBox.StandardButton.NoButton,
            self,
        )
        stop = box.addButton("Stop and quit", QMessageBox.ButtonRole.AcceptRole)
        box.addButton("Keep working", QMessageBox.ButtonRole.RejectRole)
        box.setObjectName("closeDialog")
        self.close_box = box

        def answered(_=0):
            self.close_box = None
            if box.clickedButton() is stop:
                self.stop_all_and_close()
            box.deleteLater()

        box.finished.connect(answered)
        box.open()

    def stop_all_and_close(self) -> None:
        self.statusBar().showMessage("Stopping background work (saving a checkpoint)…")
        self.train_page.stop()
        self.video_page.cancel()
        self.search_page.cancel()
        self._closing_after_stop = True
        self._wait_then_close()

    def _wait_then_close(self) -> None:
        if self.busy_jobs():
            QTimer.singleShot(100, self._wait_then_close)
            return
        self.close()
