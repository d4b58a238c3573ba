"""Features page: what did the model learn? Attention heads, PCA of patch features, nearest
neighbours, an embedding scatter plot and (object-centric models) slot masks, for a checkpoint
and a folder of images.

The heavy part (loading the model, embedding a few hundred images) runs once in a worker
thread (app.gui.features_model); sliders and selections re-render from the cached arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSlider,
    QSpinBox,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.gui import jobs
from app.gui.errors import show_error
from app.gui.features_model import (
    SLOT_MASKS,
    FeatureSet,
    comparison_panels,
    default_images_for,
    embedding_2d,
    slot_panels,
    slots_note,
)
from app.gui.paths import Settings, published_models
from app.gui.sessions.features import FeaturesSession
from app.gui.widgets import (
    Page,
    PanelGrid,
    PathPicker,
    flush_layout,
    info_label,
    std_icon,
    to_qimage,
)
from engine.errors import UserError

MODEL_FILTER = "Models (*.pt *.pth *.safetensors);;All files (*)"
CELL = 150
THUMB = 64  # a slot's soft mask on the Slots tab
K_NEIGHBOURS = 6


FEATURES, EMBEDDING = "features", "embedding"  # run_in_thread keys (latest-only)


class FeaturesPage(Page):
    title = "Features"
    hint = "Pick a trained model (a run folder, checkpoint or exported .safetensors) and a folder of images to see where it looks and what it groups together."

    def __init__(self, settings: Settings, parent: QWidget | None = None):
        super().__init__(settings, parent)
        self.session = FeaturesSession()

        box = QGroupBox("Model and images")
        g = QGridLayout(box)
        self.model_picker = PathPicker(
            settings, "runs", "dir", placeholder="run folder (or choose a file →)"
        )
        self.model_file_btn = QPushButton("File…")
        self.model_file_btn.setIcon(std_icon(self, "SP_FileIcon"))
        self.model_file_btn.clicked.connect(self._browse_model_file)
        self.published = self._published_combo("Published model…")
        self.published.activated.connect(
            lambda i: i > 0 and self.model_picker.set_path(self.published.itemData(i))
        )
        self.compare = self._published_combo("Compare with… (none)")
        self.compare.setEditable(True)  # a run folder or file path typed in works too
        self.compare.setToolTip(
            "a second model shown beside the first on the same images (Compare tab): e.g. a model trained here against dino:vits16"
        )
        self.images_picker = PathPicker(
            settings, "folders", "dir", placeholder="folder of images, class sub-folders = labels"
        )
        self.size_spin = QSpinBox()
        self.size_spin.setRange(0, 512)
        self.size_spin.setSingleStep(16)
        self.size_spin.setSpecialValueText("auto")
        self.size_spin.setToolTip(
            "image size for the attention and PCA maps (auto = twice the training size); neighbours and the scatter plot use the model's own input size"
        )
        self.n_spin = QSpinBox()
        self.n_spin.setRange(1, 32)
        self.n_spin.setValue(8)
        self.n_spin.setToolTip("how many images to show in the attention and PCA views")
        self.compute_btn = QPushButton("Compute")
        self.compute_btn.setObjectName("primary")
        self.compute_btn.setIcon(std_icon(self, "SP_MediaPlay"))
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(160)
        self.busy.hide()
        self.summary = info_label("", muted=True)
        g.addWidget(QLabel("model"), 0, 0)
        g.addWidget(self.model_picker, 0, 1)
        g.addWidget(self.model_file_btn, 0, 2)
        g.addWidget(self.published, 0, 3)
        g.addWidget(QLabel("images"), 1, 0)
        g.addWidget(self.images_picker, 1, 1, 1, 2)
        g.addWidget(self.compare, 1, 3)
        opts = QHBoxLayout()
        opts.addWidget(QLabel("map size"))
        opts.addWidget(self.size_spin)
        opts.addWidget(QLabel("images shown"))
        opts.addWidget(self.n_spin)
        opts.addStretch(1)
        opts.addWidget(self.busy)
        opts.addWidget(self.compute_btn)
        g.addLayout(opts, 2, 0, 1, 4)
        g.addWidget(self.summary, 3, 0, 1, 4)
        g.setColumnStretch(1, 1)
        self.outer.addWidget(box)

        self.tabs = QTabWidget()
        self.tabs.addTab(self._attention_tab(), "Attention")
        self.tabs.addTab(self._pca_tab(), "PCA of patches")
        self.tabs.addTab(self._neighbours_tab(), "Nearest neighbours")
        self.tabs.addTab(self._embedding_tab(), "Embedding")
        self.slots_index = self.tabs.addTab(self._slots_tab(), "Slots")
        self.tabs.addTab(self._compare_tab(), "Compare")
        self.outer.addWidget(self.tabs, 1)

        self.compute_btn.clicked.connect(self.compute)
        self.session.computed.connect(self._computed)
        self.session.embedded.connect(self._embedded)
        self.model_picker.chosen.connect(self._model_chosen)

    # ---- tabs ----------------------------------------------------------------------------
    def _strip(self) -> QListWidget:
        s = QListWidget()
        s.setViewMode(QListWidget.ViewMode.IconMode)
        s.setFlow(QListWidget.Flow.LeftToRight)
        s.setWrapping(False)
        s.setIconSize(QSize(64, 64))
        s.setFixedHeight(104)
        s.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        s.setSpacing(4)
        s.setMovement(QListWidget.Movement.Static)
        return s

    def _scroll(self, w: QWidget) -> QScrollArea:
        sc = QScrollArea()
        sc.setWidgetResizable(True)
        sc.setWidget(w)
        return sc

    def _published_combo(self, first: str) -> QComboBox:
        c = QComboBox()
        c.addItem(first, "")
        for label, name in published_models():
            c.addItem(label, name)
        return c

    # ---- the session's state, as the tests and the main window read it ---------------------
    @property
    def fs(self) -> FeatureSet | None:
        return self.session.fs

    @property
    def other(self) -> FeatureSet | None:
        return self.session.other

    @property
    def _xy(self) -> np.ndarray | None:
        return self.session.xy

    def compare_source(self) -> str:
        """The second model: a listed published model, or whatever path or name was typed."""
        text, i = self.compare.currentText().strip(), self.compare.currentIndex()
        if i > 0 and text == self.compare.itemText(i):
            return self.compare.itemData(i)
        return "" if text == self.compare.itemText(0) else text

    def _compare_tab(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        self.cmp_note = info_label(
            "Choose a second model in “Compare with…” and press Compute: each row shows one image, where each model looks and the PCA of its patch features.",
            muted=True,
        )
        self.cmp_grid = PanelGrid(CELL - 20)
        lay.addWidget(self.cmp_note)
        lay.addWidget(self._scroll(self.cmp_grid), 1)
        return w

    def _noted_tab(self, note: str) -> tuple[QWidget, QVBoxLayout, QHBoxLayout, QLabel]:
        """A tab's widget, its layout, a top row and the note that starts it."""
        w = QWidget()
        lay = QVBoxLayout(w)
        top = QHBoxLayout()
        label = info_label(note, muted=True)
        top.addWidget(label, 1)
        return w, lay, top, label

    def _slots_tab(self) -> QWidget:
        w, lay, top, self.slot_note = self._noted_tab(
            "Compute an object-centric model (a slot model) to see how its slots split each image into objects."
        )
        self.slot_which_label = QLabel("masks")
        self.slot_which = QComboBox()
        self.slot_which.setToolTip(
            "the decoder's masks (what the papers evaluate) or slot attention's own (which slot each patch went to)"
        )
        self.slot_which.currentIndexChanged.connect(self._render_slots)
        top.addWidget(self.slot_which_label)
        top.addWidget(self.slot_which)
        lay.addLayout(top)
        self.slot_list = QWidget()
        self.slot_rows_layout = flush_layout(self.slot_list)
        self.slot_rows_layout.addStretch(1)
        self.slot_rows: list[QWidget] = []  # one per shown image
        lay.addWidget(self._scroll(self.slot_list), 1)
        return w

    def _attention_tab(self) -> QWidget:
        w, lay, top, self.att_note = self._noted_tab(
            "Compute to see the last-layer [CLS] attention of each head (ViT) or the activation energy of each stage (ResNet)."
        )
        self.mass_label = QLabel("keep 60% of attention mass")
        self.mass_slider = QSlider(Qt.Orientation.Horizontal)
        self.mass_slider.setRange(5, 95)
        self.mass_slider.setValue(60)
        self.mass_slider.setFixedWidth(200)
        self.mass_slider.valueChanged.connect(self._render_attention)
        top.addWidget(self.mass_label)
        top.addWidget(self.mass_slider)
        lay.addLayout(top)
        self.att_strip = self._strip()
        self.att_strip.currentRowChanged.connect(self._render_attention)
        lay.addWidget(self.att_strip)
        self.att_grid = PanelGrid(CELL)
        lay.addWidget(self._scroll(self.att_grid), 1)
        return w

    def _pca_tab(self) -> QWidget:
        w, lay, top, _ = self._noted_tab(
            "One PCA over the patches of all shown images: the first component separates object from background, the next three are shown as colours, so matching parts get matching colours across images."
        )
        self.pca_bg = QCheckBox("remove background")
        self.pca_bg.setChecked(True)
        self.pca_thr_label = QLabel("threshold 0.0")
        self.pca_thr = QSlider(Qt.Orientation.Horizontal)
        self.pca_thr.setRange(-20, 20)
        self.pca_thr.setValue(0)
        self.pca_thr.setFixedWidth(160)
        self.pca_thr.setToolTip("background cut on the first component, in standard deviations")
        for wd in (self.pca_bg, self.pca_thr_label, self.pca_thr):
            top.addWidget(wd)
        self.pca_bg.toggled.connect(self._render_pca)
        self.pca_thr.valueChanged.connect(self._render_pca)
        lay.addLayout(top)
        self.pca_grid = PanelGrid(CELL - 20)
        lay.addWidget(self._scroll(self.pca_grid), 1)
        return w

    def _neighbours_tab(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        self.nn_note = info_label(
            "Pick a query image: its nearest neighbours by the model's features (top row) and by raw pixels (bottom row). Green border = same class as the query.",
            muted=True,
        )
        lay.addWidget(self.nn_note)
        self.nn_strip = self._strip()
        self.nn_strip.currentRowChanged.connect(self._render_neighbours)
        lay.addWidget(self.nn_strip)
        self.nn_grid = PanelGrid(CELL - 30)
        lay.addWidget(self._scroll(self.nn_grid), 1)
        return w

    def _embedding_tab(self) -> QWidget:
        w = QWidget()
        lay = QHBoxLayout(w)
        left = QVBoxLayout()
        top = QHBoxLayout()
        self.emb_method = QComboBox()
        self.emb_method.addItem("PCA", "pca")
        self.emb_method.addItem("t-SNE", "tsne")
        self.emb_method.currentIndexChanged.connect(self._compute_embedding)
        self.emb_note = info_label(
            "Every image is a dot, coloured by its class; hover a dot to see the image.", muted=True
        )
        top.addWidget(QLabel("projection"))
        top.addWidget(self.emb_method)
        top.addWidget(self.emb_note, 1)
        left.addLayout(top)
        self.emb_plot = pg.PlotWidget()
        self.emb_plot.hideAxis("left")
        self.emb_plot.hideAxis("bottom")
        self.emb_plot.setAspectLocked(False)
        self.emb_legend = self.emb_plot.addLegend(offset=(10, 10))
        self.scatter = pg.ScatterPlotItem(size=9, pen=pg.mkPen("w", width=0.5), hoverable=True)
        self.emb_plot.addItem(self.scatter)
        self.scatter.sigHovered.connect(self._hovered)
        left.addWidget(self.emb_plot, 1)
        lay.addLayout(left, 1)
        side = QVBoxLayout()
        self.hover_view = QLabel()
        self.hover_view.setFixedSize(160, 160)
        self.hover_view.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.hover_view.setStyleSheet(
            "background: white; border: 1px solid #d9dde3; border-radius: 6px;"
        )
        self.hover_caption = info_label("hover a point", muted=True)
        self.hover_caption.setFixedWidth(160)
        side.addWidget(self.hover_view)
        side.addWidget(self.hover_caption)
        side.addStretch(1)
        lay.addLayout(side)
        return w

    # ---- inputs --------------------------------------------------------------------------
    def _browse_model_file(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        p, _ = QFileDialog.getOpenFileName(
            self, "Model file", self.model_picker.path() or str(Path.home()), MODEL_FILTER
        )
        if p:
            self.model_picker.set_path(p)

    def _model_chosen(self, path: str) -> None:
        if not self.images_picker.path():
            guess = default_images_for(path)
            if guess:
                self.images_picker.set_path(guess, emit=False)

    def set_source(self, path: str | Path) -> None:
        """Another page points here (a finished run, `selfsup gui RUN_DIR`)."""
        self.model_picker.set_path(str(path), emit=False)
        guess = default_images_for(path)
        if guess:
            self.images_picker.set_path(guess, emit=False)

    def compute(self) -> None:
        try:
            self.session.request(
                self.model_picker.path(), self.compare_source(), self.images_picker.path()
            )
        except UserError as e:
            show_error(self, e)
            return
        jobs.cancel_pending(self, EMBEDDING)  # the scatter of the previous features
        size, n = self.size_spin.value(), self.n_spin.value()
        self.busy.show()
        self.compute_btn.setEnabled(False)
        self.summary.setText("Loading the model and embedding the images…")
        jobs.run_in_thread(
            lambda: self.session.compute(size, n),
            self.session.set_features,
            self._failed,
            self,
            key=FEATURES,
        )

    @property
    def computing(self) -> bool:
        return not self.compute_btn.isEnabled()

    def _failed(self, e: BaseException) -> None:
        self.busy.hide()
        self.compute_btn.setEnabled(True)
        self.summary.setText("")
        show_error(self, e, "features")

    def _computed(self, fs: FeatureSet, _other: FeatureSet | None) -> None:
        self.busy.hide()
        self.compute_btn.setEnabled(True)
        if Path(self.model_picker.path()).is_dir():
            self.model_picker.remember()
        self.images_picker.remember()
        self.summary.setText(self.session.summary())
        for strip in (self.att_strip, self.nn_strip):
            strip.blockSignals(True)
            strip.clear()
            for i in fs.chosen:
                it = QListWidgetItem(
                    QIcon(QPixmap.fromImage(to_qimage(fs.rgb(i)))), fs.label_name(i)
                )
                strip.addItem(it)
            strip.setCurrentRow(0)
            strip.blockSignals(False)
        self.mass_slider.setVisible(fs.is_vit)  # ResNet maps have no attention mass to keep
        self.mass_label.setVisible(fs.is_vit)
        self._render_attention()
        self._render_pca()
        self._render_neighbours()
        self._fill_slot_choices()
        self._render_comparison()
        self._compute_embedding()

    def _render_comparison(self) -> None:
        a, b = self.fs, self.other
        if a is None or b is None:
            self.cmp_grid.set_panels([], cols=5)
            return
        self.cmp_note.setText(
            f"A = {a.source} ({a.arch}) · B = {b.source} ({b.arch}), the same {len(a.chosen)} images at {a.map_size}px. Where each model looks (attention, or a ResNet's activation energy) and the first three principal components of its patch features as colours."
        )
        self.cmp_grid.set_panels(comparison_panels(a, b, CELL - 20), cols=5)

    # ---- rendering -----------------------------------------------------------------------
    def _render_attention(self) -> None:
        from engine.visualize import mass_mask
        from engine.visualize.figures import heat_overlay, mask_overlay, resize

        fs = self.fs
        mass = self.mass_slider.value() / 100
        self.mass_label.setText(f"keep {int(mass * 100)}% of attention mass")
        if fs is None:
            return
        row = max(0, self.att_strip.currentRow())
        img = resize(fs.rgb(fs.chosen[row]), CELL)
        if fs.is_vit:
            heads, mean = fs.attention["heads"][row], fs.attention["mean"][row]
            keep = mass_mask(torch.from_numpy(mean), mass).numpy()
            vmax = float(heads.max())
            kept = float((mean * keep).sum() / max(mean.sum(), 1e-12))
            panels = [
                (img, "image"),
                (heat_overlay(img, mean, 0, float(mean.max())), "mean of heads"),
                (mask_overlay(img, keep), f"kept {kept:.0%} of attention"),
            ]
            panels += [
                (heat_overlay(img, heads[h], 0, vmax, alpha=0.8), f"head {h}")
                for h in range(heads.shape[0])
            ]
            self.att_note.setText(
                f"Last-layer [CLS] attention, {heads.shape[0]} heads on a {mean.shape[0]}x{mean.shape[1]} patch grid. Bright = where the model looks; the mask keeps the fewest patches holding the chosen share of attention."
            )
        elif fs.stages:
            panels = [(img, "image")] + [
                (
                    heat_overlay(img, m[row], 0.0, 1.0, alpha=0.7),
                    f"stage {s + 1} ({m.shape[-2]}x{m.shape[-1]})",
                )
                for s, m in enumerate(fs.stages)
            ]
            self.att_note.setText(
                f"{fs.arch} has no attention heads: these are activation-energy maps (sum of squared activations) of each stage, a ResNet's equivalent. Train a ViT (vit_tiny) to see attention heads."
            )
        else:
            panels = [(img, "image")]
            self.att_note.setText(
                "This backbone has neither attention heads nor ResNet stages to show."
            )
        self.att_grid.set_panels(panels, cols=6)

    def _render_pca(self) -> None:
        from engine.visualize import pca_images
        from engine.visualize.figures import resize

        fs = self.fs
        thr = self.pca_thr.value() / 10
        self.pca_thr_label.setText(f"threshold {thr:+.1f}")
        self.pca_thr.setEnabled(self.pca_bg.isChecked())
        if fs is None:
            return
        rgb, _fg = pca_images(
            fs.dense, threshold=thr, foreground="auto" if self.pca_bg.isChecked() else "all"
        )
        cell = CELL - 20
        cols = min(8, len(fs.chosen))
        panels = []
        for start in range(0, len(fs.chosen), cols):
            idx = list(range(start, min(start + cols, len(fs.chosen))))
            panels += [
                (resize(fs.rgb(fs.chosen[j]), cell), fs.label_name(fs.chosen[j])) for j in idx
            ]
            panels += [(np.zeros((cell, cell, 3), np.uint8), "")] * (cols - len(idx))
            panels += [
                (
                    resize((rgb[j] * 255 + 0.5).astype(np.uint8), cell, nearest=True),
                    f"PCA {rgb.shape[1]}x{rgb.shape[2]}",
                )
                for j in idx
            ]
            panels += [(np.zeros((cell, cell, 3), np.uint8), "")] * (cols - len(idx))
        self.pca_grid.set_panels(panels, cols=cols)

    def _fill_slot_choices(self) -> None:
        fs = self.fs
        has = fs.slots is not None
        self.tabs.setTabEnabled(self.slots_index, has)
        self.tabs.setTabToolTip(self.slots_index, "" if has else fs.slots_hint)
        if not has and self.tabs.currentIndex() == self.slots_index:
            self.tabs.setCurrentIndex(0)
        self.slot_which.blockSignals(True)
        self.slot_which.clear()
        for which in fs.slot_masks:
            self.slot_which.addItem(SLOT_MASKS.get(which, "masks"), which)
        self.slot_which.blockSignals(False)
        both = len(fs.slot_masks) > 1
        self.slot_which.setVisible(both)
        self.slot_which_label.setVisible(both)
        self._render_slots()

    def _render_slots(self) -> None:
        fs = self.fs
        for r in self.slot_rows:
            r.hide()  # gone now, not at the next turn of the event loop
            r.setParent(None)
            r.deleteLater()
        self.slot_rows = []
        if fs is None:
            return
        if fs.slots is None:
            self.slot_note.setText(fs.slots_hint)
            return
        which = self.slot_which.currentData() or next(iter(fs.slot_masks), "")
        self.slot_note.setText(slots_note(fs, which))
        for row in range(len(fs.chosen)):
            big, small = slot_panels(fs, row, which, CELL, THUMB)
            w = QWidget()
            lay = flush_layout(w, QHBoxLayout)
            images, masks = PanelGrid(CELL), PanelGrid(THUMB)
            images.set_panels(big, cols=len(big))
            masks.set_panels(small, cols=min(len(small), 8))
            lay.addWidget(images)
            lay.addWidget(masks, 1)
            self.slot_rows_layout.insertWidget(len(self.slot_rows), w)
            self.slot_rows.append(w)

    def _render_neighbours(self) -> None:
        from engine.visualize import nearest_neighbours
        from engine.visualize.figures import GREEN, RED, resize

        fs = self.fs
        if fs is None:
            return
        row = max(0, self.nn_strip.currentRow())
        q = fs.chosen[row]
        cell = CELL - 30
        exclude = torch.tensor([q])
        panels, rates = [], {}
        for kind, feats in (("features", fs.emb), ("pixels", fs.pix)):
            idx, sim = nearest_neighbours(feats[q : q + 1], feats, K_NEIGHBOURS, exclude)
            panels.append((resize(fs.rgb(q), cell), f"query: {fs.label_name(q)}"))
            same = 0
            for j in range(idx.shape[1]):
                n = int(idx[0, j])
                border = None
                if fs.classes:
                    ok = int(fs.labels[n]) == int(fs.labels[q])
                    same += ok
                    border = GREEN if ok else RED
                panels.append(
                    (
                        resize(fs.rgb(n), cell),
                        f"{float(sim[0, j]):.2f} · {fs.label_name(n)}",
                        border,
                    )
                )
            rates[kind] = same / max(1, idx.shape[1])
        labels = ["by model features", "by raw pixels"]
        if fs.classes:
            labels = [
                f"{labels[0]}\n{rates['features']:.0%} same class",
                f"{labels[1]}\n{rates['pixels']:.0%} same class",
            ]
        self.nn_grid.set_panels(panels, cols=K_NEIGHBOURS + 1, row_labels=labels)

    def _compute_embedding(self) -> None:
        method = self.emb_method.currentData()
        fs = self.session.want_embedding(method)
        if fs is None:
            return
        self.emb_note.setText("computing t-SNE…" if method == "tsne" else "")
        jobs.run_in_thread(
            lambda: embedding_2d(fs, method),
            lambda xy: self.session.set_embedding(method, xy),
            self._failed,
            self,
            key=EMBEDDING,
        )

    def _embedded(self, method: str, xy: np.ndarray) -> None:
        from engine.visualize.figures import PALETTE

        fs = self.fs
        self.scatter.clear()
        self.emb_legend.clear()
        spots = []
        for i in range(len(xy)):
            lab = int(fs.labels[i])
            col = PALETTE[lab % len(PALETTE)] if lab >= 0 else (150, 150, 150)
            spots.append(
                {
                    "pos": (float(xy[i, 0]), float(xy[i, 1])),
                    "brush": pg.mkBrush(*col, 220),
                    "data": i,
                }
            )
        self.scatter.addPoints(spots)
        for j, name in enumerate(fs.classes[:20]):
            item = pg.ScatterPlotItem(
                size=9, brush=pg.mkBrush(*PALETTE[j % len(PALETTE)]), pen=None
            )
            self.emb_legend.addItem(item, name)
        self.emb_plot.autoRange()
        what = "t-SNE" if method == "tsne" else "first two principal components"
        self.emb_note.setText(
            f"{len(xy)} images, {what} of the normalised features; hover a dot to see the image."
        )

    def _hovered(self, _item, points, _ev=None) -> None:
        if self.fs is None or points is None or len(points) == 0:
            return
        i = int(points[0].data())
        self.show_point(i)

    def show_point(self, i: int) -> None:
        fs = self.fs
        pm = QPixmap.fromImage(to_qimage(fs.rgb(i))).scaled(
            150, 150, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
        )
        self.hover_view.setPixmap(pm)
        self.hover_caption.setText(f"{fs.label_name(i)}\n{Path(fs.files[i]).name}")

    # ---- app plumbing ----------------------------------------------------------------------
    def is_active(self) -> bool:
        return False  # only short thread work here; nothing to stop on close

    def cancel(self) -> None:
        jobs.cancel_pending(self, FEATURES, EMBEDDING)
        self.busy.hide()
        self.compute_btn.setEnabled(True)

    def shutdown(self) -> None:
        jobs.cancel_pending(self, FEATURES, EMBEDDING)
