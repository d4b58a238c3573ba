"""Search page: index a photo folder with a CLIP model, then search it by text or by a photo.

Indexing (new or changed files only) runs `selfsup index` in a child process, followed through
its --events stream (progress, cancel); an interrupted index resumes next time (multimodal.index
keeps finished chunks). Queries run in a worker thread with the index's own model, loaded once
and kept.
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.gui import jobs
from app.gui.errors import show_error
from app.gui.file_filters import IMAGE_FILTER
from app.gui.jobs import CliJob
from app.gui.paths import Settings, data_dir, recent_models
from app.gui.sessions.search import OPEN_CLIP_MODELS, SearchSession
from app.gui.sessions.search import default_index_dir as sessions_default_index_dir
from app.gui.thumbs import ThumbGrid, ThumbItem
from app.gui.widgets import ImageView, Page, PathPicker, flush_layout, info_label, std_icon
from engine.errors import UserError


def default_index_dir(folder: str | Path) -> Path:
    """One index per photo folder in the user's data folder, unless the user picks another."""
    return sessions_default_index_dir(folder, data_dir())


def clip_runs(settings: Settings) -> list[str]:
    """Recent runs whose model embeds images and text in one space (photo search)."""
    return [p for p in recent_models(settings, "image_text") if Path(p).is_dir()]


SEARCH = "search"  # run_in_thread key: a newer query drops an older one's hits


class SearchPage(Page):
    title = "Search"
    hint = "Index a folder of photos once, then find pictures by describing them, or drop a photo to find similar ones. Everything stays on this computer."

    def __init__(self, settings: Settings, parent: QWidget | None = None):
        super().__init__(settings, parent)
        self.session = SearchSession()
        self.job = CliJob(self, kill_after_s=5)
        self.job.event.connect(self._on_event)
        self.job.finished.connect(self._on_finished)
        self.setAcceptDrops(True)

        box = QGroupBox("1 · Index")
        g = QGridLayout(box)
        self.folder_picker = PathPicker(
            settings, "folders", "dir", placeholder="folder of photos (searched recursively)"
        )
        self.model_combo = QComboBox()
        self.model_combo.setEditable(True)
        self.model_combo.setToolTip(
            "a CLIP run folder trained here, or an open_clip model name (pretrained weights need the network once)"
        )
        self.model_btn = QPushButton()
        self.model_btn.setIcon(std_icon(self, "SP_DirOpenIcon"))
        self.model_btn.setToolTip("choose a CLIP run folder")
        self.weights = QLineEdit()
        self.weights.setPlaceholderText("weights: open_clip tag or file (optional)")
        self.weights.setToolTip(
            "pretrained weights for an open_clip model name: a tag such as 'openai' (downloaded once) or a local file"
        )
        self.weights.setMaximumWidth(300)
        self.index_picker = PathPicker(
            settings, "indexes", "dir", placeholder="where the index is stored (automatic)"
        )
        self.build_btn = QPushButton("Build / update index")
        self.build_btn.setObjectName("primary")
        self.build_btn.setIcon(std_icon(self, "SP_BrowserReload"))
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setIcon(std_icon(self, "SP_MediaStop"))
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.index_info = info_label(
            "No index yet: choose a photo folder and build one.", muted=True
        )
        g.addWidget(QLabel("photos"), 0, 0)
        g.addWidget(self.folder_picker, 0, 1, 1, 2)
        g.addWidget(QLabel("model"), 1, 0)
        mrow = QHBoxLayout()
        mrow.addWidget(self.model_combo, 1)
        mrow.addWidget(self.model_btn)
        mrow.addWidget(self.weights)
        g.addLayout(mrow, 1, 1, 1, 2)
        g.addWidget(QLabel("index"), 2, 0)
        g.addWidget(self.index_picker, 2, 1, 1, 2)
        brow = QHBoxLayout()
        brow.addWidget(self.build_btn)
        brow.addWidget(self.cancel_btn)
        brow.addWidget(self.progress, 1)
        g.addLayout(brow, 3, 0, 1, 3)
        g.addWidget(self.index_info, 4, 0, 1, 3)
        g.setColumnStretch(1, 1)
        self.outer.addWidget(box)

        qbox = QGroupBox("2 · Search")
        ql = QHBoxLayout(qbox)
        self.query = QLineEdit()
        self.query.setPlaceholderText(
            "Describe what you are looking for, e.g. “a striped shape”  ·  or drop a photo anywhere on this page"
        )
        self.query.setClearButtonEnabled(True)
        self.search_btn = QPushButton("Search")
        self.search_btn.setObjectName("primary")
        self.search_btn.setIcon(std_icon(self, "SP_FileDialogContentsView"))
        self.image_btn = QPushButton("Search by photo…")
        self.image_btn.setIcon(std_icon(self, "SP_FileIcon"))
        self.k_spin = QSpinBox()
        self.k_spin.setRange(1, 500)
        self.k_spin.setValue(24)
        self.k_spin.setPrefix("top ")
        ql.addWidget(self.query, 1)
        ql.addWidget(self.k_spin)
        ql.addWidget(self.search_btn)
        ql.addWidget(self.image_btn)
        self.outer.addWidget(qbox)

        split = QSplitter(Qt.Orientation.Horizontal)
        left = QWidget()
        ll = flush_layout(left)
        self.results_label = info_label("", muted=True)
        ll.addWidget(self.results_label)
        self.grid = ThumbGrid(label_lines=2)
        self.grid.activated_item.connect(self.preview)
        ll.addWidget(self.grid, 1)
        split.addWidget(left)
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(8, 0, 0, 0)
        self.large = ImageView(min_size=240)
        self.large_caption = info_label("Click a result to see it large.", muted=True)
        rl.addWidget(self.large, 1)
        rl.addWidget(self.large_caption)
        split.addWidget(right)
        split.setSizes([820, 420])
        self.outer.addWidget(split, 1)

        self.folder_picker.chosen.connect(self._folder_chosen)
        self.index_picker.chosen.connect(lambda _p: self.refresh_index_info())
        self.model_btn.clicked.connect(self._browse_model)
        self.build_btn.clicked.connect(self.build_index)
        self.cancel_btn.clicked.connect(self.cancel)
        self.search_btn.clicked.connect(self.search_text)
        self.query.returnPressed.connect(self.search_text)
        self.image_btn.clicked.connect(self._browse_image)
        self._refresh_models()
        self._update_state()

    # ---- index -------------------------------------------------------------------------------
    def _refresh_models(self) -> None:
        current = self.model_combo.currentText()
        self.model_combo.clear()
        for p in clip_runs(self.settings):
            self.model_combo.addItem(p)
        for name in OPEN_CLIP_MODELS:  # open_clip tags: downloaded once when online
            self.model_combo.addItem(name)
        self.model_combo.lineEdit().setPlaceholderText(
            "a CLIP run folder (train one with method “clip”), or open_clip:MODEL/TAG"
        )
        self.model_combo.setCurrentText(current)

    def _browse_model(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "CLIP run folder", str(Path.home()))
        if p:
            self.model_combo.setCurrentText(p)

    def _folder_chosen(self, folder: str) -> None:
        if not self.index_picker.path() or not self._index_matches(folder):
            self.index_picker.set_path(str(default_index_dir(folder)), emit=False)
        self.refresh_index_info()

    def _index_matches(self, folder: str) -> bool:
        try:
            roots = json.loads((Path(self.index_picker.path()) / "index.json").read_text()).get(
                "roots", []
            )
        except (OSError, ValueError):
            return False
        return str(Path(folder).expanduser().resolve()) in roots

    def set_index(self, index_dir: str | Path) -> None:
        self.index_picker.set_path(str(index_dir), emit=False)
        self.refresh_index_info()

    def refresh_index_info(self) -> None:
        from multimodal.index import describe_model

        d = Path(self.index_picker.path()) if self.index_picker.path() else None
        if d is None or not (d / "index.json").exists():
            self.index_info.setText(
                "No index here yet: press “Build / update index”."
                if d
                else "No index yet: choose a photo folder and build one."
            )
            self._update_state()
            return
        try:
            meta = json.loads((d / "index.json").read_text())
            roots = ", ".join(meta.get("roots", []))
            errs = ""
            from multimodal.index import Index

            n_err = len(Index(d).errors)
            errs = f" · {n_err} unreadable file(s)" if n_err else ""
            self.index_info.setText(
                f"{meta.get('count', 0)} embeddings of {roots} · model: {describe_model(meta.get('model', {}))}{errs}"
            )
            if not self.folder_picker.path() and meta.get("roots"):
                self.folder_picker.set_path(meta["roots"][0], emit=False)
        except Exception as e:  # noqa: BLE001 - a damaged index is reported, not fatal
            from app.gui.errors import one_line

            self.index_info.setText(f"cannot read this index: {one_line(e)}")
        self._update_state()

    def build_index(self) -> None:
        folder = self.folder_picker.path()
        index_dir = Path(
            self.index_picker.path() or (default_index_dir(folder) if folder else "")
        ).expanduser()
        model, weights = self.model_combo.currentText().strip(), self.weights.text().strip()
        try:
            args = self.session.index_command(folder, index_dir, model, weights)
        except UserError as e:
            show_error(self, e)
            return
        self.index_picker.set_path(str(index_dir), emit=False)
        index_dir.mkdir(parents=True, exist_ok=True)
        self.folder_picker.remember()
        self.progress.setRange(0, 0)
        self.index_info.setText("starting…")
        self.job.start(args, events=index_dir.parent / f".{index_dir.name}-events.jsonl")
        self._update_state()

    def is_active(self) -> bool:
        return self.job.is_running()

    def cancel(self) -> None:
        if self.job.is_running():
            self.index_info.setText("cancelling… (finished parts are kept and reused next time)")
            self.job.kill()

    def _on_event(self, e: dict) -> None:
        if e.get("type") != "progress":
            return
        if e.get("total"):
            self.progress.setRange(0, int(e["total"]))
            self.progress.setValue(int(e["done"]))
            self.index_info.setText(f"{e.get('stage', '')}: {e['done']} / {e['total']} files")
        else:
            self.index_info.setText(e.get("stage", ""))

    def _on_finished(self, code: int, message: str) -> None:
        cancelled = self.job.stopping
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if code == 0 else 0)
        if cancelled:
            self.index_info.setText(
                "indexing cancelled; finished parts are kept and reused next time"
            )
        elif code != 0:
            self.index_info.setText("indexing failed")
            show_error(self, message, "index")
        else:
            self.settings.add_recent("indexes", self.index_picker.path())
            self.index_picker.refresh_recent()
            self.refresh_index_info()
            extra = self.session.update_summary(self.job.result or {})
            self.index_info.setText(self.index_info.text() + extra)
        self._update_state()

    # ---- queries -----------------------------------------------------------------------------
    def search_text(self) -> None:
        text = self.query.text().strip()
        if not text:
            show_error(self, "type what you are looking for first")
            return
        self._search(text=text)

    def _browse_image(self) -> None:
        p, _ = QFileDialog.getOpenFileName(
            self, "Search by photo", self.folder_picker.path() or str(Path.home()), IMAGE_FILTER
        )
        if p:
            self.search_image(p)

    def search_image(self, path: str | Path) -> None:
        self._search(image=str(path))

    def _search(self, text: str | None = None, image: str | None = None) -> None:
        index_dir = self.index_picker.path()
        if not self.session.can_search(index_dir):
            show_error(self, "build an index first (step 1), then search it")
            return
        k = self.k_spin.value()
        what = f"“{text}”" if text else f"photos like {Path(image).name}"
        self.results_label.setText(f"searching {what}…")
        if image:
            self.large.set_image(_load_qimage(image))
            self.large_caption.setText(f"query photo: {image}")
        jobs.run_in_thread(
            lambda: self.session.search(index_dir, text, image, k),
            lambda hits: self._results(what, hits),
            self._failed,
            self,
            key=SEARCH,
        )

    @property
    def searching(self) -> bool:
        return self.results_label.text().startswith("searching")

    def _failed(self, e: BaseException) -> None:
        self.results_label.setText("")
        show_error(self, e, "search")

    @property
    def hits(self) -> list:
        return self.session.hits

    def _results(self, what: str, hits: list) -> None:
        summary = self.session.set_hits(what, hits)
        items = []
        for h in hits:
            name = Path(h.path).name + (f" @{h.frame:.1f}s" if h.frame >= 0 else "")
            items.append(
                ThumbItem(
                    key=f"{h.path}#{h.frame}",
                    label=f"{h.score:.3f}\n{name}",
                    tooltip=f"{h.path}\nscore {h.score:.4f}",
                    path=h.path,
                    data={"hit": h},
                )
            )
        self.grid.thumbs.set_items(items)
        self.results_label.setText(summary)
        if items and not what.startswith("photos like"):
            self.preview(items[0])

    def preview(self, item: ThumbItem) -> None:
        h = item.data.get("hit")
        self.large.set_image(_load_qimage(item.path))
        self.large_caption.setText(
            f"#{h.rank} · score {h.score:.4f}\n{item.path}" if h else item.path
        )

    # ---- drag and drop -----------------------------------------------------------------------
    def dragEnterEvent(self, e) -> None:
        if e.mimeData().hasUrls() and any(u.isLocalFile() for u in e.mimeData().urls()):
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:
        files = [u.toLocalFile() for u in e.mimeData().urls() if u.isLocalFile()]
        if files:
            e.acceptProposedAction()
            self.search_image(files[0])

    def _update_state(self) -> None:
        running = self.job.is_running()
        self.build_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        self.folder_picker.setEnabled(not running)
        self.index_picker.setEnabled(not running)

    def shutdown(self) -> None:
        jobs.cancel_pending(self, SEARCH)
        self.grid.thumbs.shutdown()
        if self.job.is_running():
            self.job.kill()
            self.job.wait(3000)


def _load_qimage(path: str | Path):
    from PySide6.QtGui import QImageReader

    r = QImageReader(str(path))
    r.setAutoTransform(True)
    return r.read()
