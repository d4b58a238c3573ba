"""Video page: annotate any frame, propagate through the video, correct, scrub and export.

Paint objects (each its DAVIS colour) or load a palette PNG; place and drag keypoints; every
frame you mark becomes a keyframe (a correction of a propagated frame starts from its propagated
mask). Pick the features (Lab colour, or any model) and the mode (forward, blend, backward);
propagation runs `selfsup propagate --keyframes` in a child process in the video's own output
folder, followed through its --events stream (progress, cancel), so a correction recomputes only
the frames it governs and a cancelled run continues. The timeline bar under the slider shows
done / pending frames, keyframes, the frames the last run recomputed and where the mask area
jumps. Exports (DAVIS PNGs, COCO, FFV1 mask videos, keypoints CSV, overlay video) are the
command's --export, copied into a folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QIcon, QPixmap
from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSlider,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.gui import jobs
from app.gui.config_form import DataclassForm
from app.gui.errors import show_error
from app.gui.file_filters import VIDEO_FILTER
from app.gui.jobs import CliJob
from app.gui.mask_canvas import MaskCanvas, palette
from app.gui.paths import Settings, data_dir, published_models, recent_models
from app.gui.sessions.video import EXPORT_FORMATS, MODES, VideoSession, object_ids
from app.gui.video_model import LoadedVideo, load_video, resolve_source
from app.gui.widgets import Page, TimelineBar, flush_layout, info_label, std_icon

MASK_FILTER = "Masks (*.png);;All files (*)"
MODEL_FILTER = "Models (*.pt *.pth *.safetensors);;All files (*)"
PROP_SKIP = ("norm_mask", "batch_frames", "tile")
LOAD = "load"  # run_in_thread key: opening another video drops the previous load
PROP_TIPS = {
    "n_last": "context: the keyframe plus this many previous frames",
    "topk": "affinities kept per position",
    "radius": "search window half-size in feature cells (0 = whole frame)",
    "temperature": "softmax temperature of the affinities",
    "short_side": "resize frames so the shorter side is this before features (0 = keep)",
}
MODE_TIPS = {
    "forward": "from each keyframe forward to the next one",
    "blend": "between two keyframes, forward and backward passes mixed by distance",
    "backward": "from each keyframe backward to the previous one",
}


def colour_icon(obj: int) -> QIcon:
    pm = QPixmap(14, 14)
    pm.fill(QColor(*[int(v) for v in palette()[obj % 256]]))
    return QIcon(pm)


class VideoPage(Page):
    """Renders a VideoSession and forwards input to it; the session holds the state."""

    title = "Video"
    hint = "Mark objects on any frame (paint a mask or place keypoints), let a model carry them through the video, then correct any frame and propagate again."

    def __init__(self, settings: Settings, parent: QWidget | None = None):
        super().__init__(settings, parent)
        self.session = VideoSession(data_dir() / "propagation")
        self.session.video_changed.connect(self._render_video)
        self.session.keyframes_changed.connect(self._render_keyframes)
        self.session.result_changed.connect(self._render_result)
        self.job = CliJob(self, kill_after_s=5)
        self.job.event.connect(self._on_event)
        self.job.finished.connect(self._on_finished)
        self.last_export: dict[str, list[Path]] = {}  # {format: files} of the last export

        self.outer.addLayout(self._open_bar())
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._viewer())
        split.addWidget(self._controls())
        split.setStretchFactor(0, 1)
        split.setSizes([850, 420])
        self.outer.addWidget(split, 1)

        self.play_timer = QTimer(self)
        self.play_timer.timeout.connect(self._next_frame)
        self._connect()
        self._set_objects([1])
        self._refresh_features()
        self._refresh_recent()
        self._update_state()

    # ---- the session's state, as the tests and the main window read it ---------------------
    @property
    def video(self) -> LoadedVideo | None:
        return self.session.video

    @property
    def result(self) -> dict:
        return self.session.result

    @property
    def result_dir(self) -> Path | None:
        return self.session.result_dir

    # ---- layout ----------------------------------------------------------------------------
    def _open_bar(self) -> QHBoxLayout:
        bar = QHBoxLayout()
        self.open_btn = QPushButton("Open video…")
        self.open_btn.setIcon(std_icon(self, "SP_MediaPlay"))
        self.open_davis_btn = QPushButton("Open DAVIS / frames folder…")
        self.open_davis_btn.setIcon(std_icon(self, "SP_DirOpenIcon"))
        self.seq_combo = QComboBox()
        self.seq_combo.setMinimumWidth(140)
        self.seq_combo.hide()
        self.recent = QComboBox()
        self.recent.setMinimumWidth(260)
        self.recent.setPlaceholderText("Recent…")
        self.info = info_label("", muted=True)
        for w, stretch in ((self.open_btn, 0), (self.open_davis_btn, 0), (self.seq_combo, 0)):
            bar.addWidget(w, stretch)
        bar.addWidget(self.info, 1)
        bar.addWidget(QLabel("Recent:"))
        bar.addWidget(self.recent)
        return bar

    def _viewer(self) -> QWidget:
        left = QWidget()
        ll = flush_layout(left)
        self.canvas = MaskCanvas()
        ll.addWidget(self.canvas, 1)
        tl = QGridLayout()
        tl.setHorizontalSpacing(8)
        tl.setVerticalSpacing(2)
        self.play_btn = QPushButton()
        self.play_btn.setIcon(std_icon(self, "SP_MediaPlay"))
        self.play_btn.setCheckable(True)
        self.play_btn.setFixedWidth(40)
        self.timeline = QSlider(Qt.Orientation.Horizontal)
        self.timeline.setRange(0, 0)
        self.frame_label = QLabel("frame – / –")
        self.frame_label.setMinimumWidth(150)
        self.timeline_bar = TimelineBar()  # under the slider, frame for frame
        tl.addWidget(self.play_btn, 0, 0)
        tl.addWidget(self.timeline, 0, 1)
        tl.addWidget(self.frame_label, 0, 2)
        tl.addWidget(self.timeline_bar, 1, 1)
        tl.setColumnStretch(1, 1)
        ll.addLayout(tl)
        bl = QHBoxLayout()
        self.prev_key_btn = QPushButton("◀ keyframe")
        self.prev_key_btn.setToolTip("the previous keyframe")
        self.next_key_btn = QPushButton("keyframe ▶")
        self.next_key_btn.setToolTip("the next keyframe")
        self.suspicious_btn = QPushButton("Next suspicious frame")
        self.suspicious_btn.setToolTip(
            "jump to the next frame where an object's mask area changes abruptly (look there first)"
        )
        self.legend = info_label(
            "green: propagated · amber: to do · white: keyframe · blue: last run · red: area jumps",
            muted=True,
        )
        bl.addWidget(self.prev_key_btn)
        bl.addWidget(self.next_key_btn)
        bl.addWidget(self.suspicious_btn)
        bl.addWidget(self.legend, 1)
        ll.addLayout(bl)
        return left

    def _controls(self) -> QWidget:
        outer = QScrollArea()
        outer.setWidgetResizable(True)
        outer.setMinimumWidth(410)
        outer.setMaximumWidth(460)
        outer.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(8, 0, 4, 0)
        lay.addWidget(self._annotation_box())
        lay.addWidget(self._propagation_box())
        lay.addWidget(self._results_box())
        lay.addStretch(1)
        outer.setWidget(w)
        return outer

    def _tool_row(self) -> QHBoxLayout:
        tools = QHBoxLayout()
        self.tool_group = QButtonGroup(self)
        self.tool_buttons: dict[str, QPushButton] = {}
        for mode, text, tip in (
            ("brush", "Brush", "paint the selected object (right button erases)"),
            ("erase", "Erase", "erase any object"),
            (
                "point",
                "Keypoint",
                "click to place a keypoint of the selected object; right-click removes one",
            ),
        ):
            b = QPushButton(text)
            b.setCheckable(True)
            b.setToolTip(tip)
            self.tool_group.addButton(b)
            self.tool_buttons[mode] = b
            tools.addWidget(b)
            b.clicked.connect(lambda _=False, m=mode: self.set_tool(m))
        self.tool_buttons["brush"].setChecked(True)
        return tools

    def _annotation_box(self) -> QGroupBox:
        ann = QGroupBox("1 · Mark objects (any frame becomes a keyframe)")
        al = QVBoxLayout(ann)
        al.addLayout(self._tool_row())
        form = QFormLayout()
        objs = QHBoxLayout()
        self.object_combo = QComboBox()
        self.add_obj_btn = QPushButton("+ object")
        self.add_obj_btn.setToolTip("add another object with its own colour")
        objs.addWidget(self.object_combo, 1)
        objs.addWidget(self.add_obj_btn)
        form.addRow("object", objs)
        self.brush_slider = QSlider(Qt.Orientation.Horizontal)
        self.brush_slider.setRange(1, 60)
        self.brush_slider.setValue(8)
        form.addRow("brush size", self.brush_slider)
        al.addLayout(form)
        row = QHBoxLayout()
        self.load_mask_btn = QPushButton("Load mask PNG…")
        self.load_mask_btn.setToolTip("a palette PNG as this frame's mask")
        self.gt_btn = QPushButton("Use ground truth")
        self.gt_btn.setToolTip("this frame's annotation from the DAVIS folder")
        self.clear_btn = QPushButton("Clear")
        self.clear_btn.setToolTip(
            "erase every mark on this frame (it stays a keyframe: nothing here)"
        )
        for b in (self.load_mask_btn, self.gt_btn, self.clear_btn):
            row.addWidget(b)
        al.addLayout(row)
        krow = QHBoxLayout()
        self.remove_key_btn = QPushButton("Remove keyframe")
        self.remove_key_btn.setToolTip("this frame is propagated again instead of annotated")
        self.clear_keys_btn = QPushButton("Remove all")
        self.clear_keys_btn.setToolTip("remove every keyframe")
        krow.addWidget(self.remove_key_btn)
        krow.addWidget(self.clear_keys_btn)
        krow.addStretch(1)
        al.addLayout(krow)
        self.ann_label = info_label("", muted=True)
        al.addWidget(self.ann_label)
        return ann

    def _propagation_box(self) -> QGroupBox:
        prop = QGroupBox("2 · Propagate")
        pl = QVBoxLayout(prop)
        pf = QFormLayout()
        self.features_combo = QComboBox()
        self.features_combo.setToolTip(
            "what the frames are compared with: raw Lab colour needs no model; a trained model usually tracks better"
        )
        pf.addRow("features", self.features_combo)
        self.mode_combo = QComboBox()
        for m in MODES:
            self.mode_combo.addItem(m, m)
            self.mode_combo.setItemData(
                self.mode_combo.count() - 1, MODE_TIPS[m], Qt.ItemDataRole.ToolTipRole
            )
        self.mode_combo.setToolTip("; ".join(f"{m}: {t}" for m, t in MODE_TIPS.items()))
        pf.addRow("mode", self.mode_combo)
        pl.addLayout(pf)
        from video.propagation import PropagationConfig

        self.prop_form = DataclassForm(PropagationConfig, skip=PROP_SKIP)
        for k, t in PROP_TIPS.items():
            if k in self.prop_form.widgets:
                self.prop_form.widgets[k].setToolTip(t)
        self.advanced_btn = QPushButton("Advanced settings ▸")
        self.advanced_btn.setCheckable(True)
        self.advanced_btn.setFlat(True)
        self.advanced_btn.setToolTip(
            "the propagation protocol's parameters (DINO's DAVIS defaults)"
        )
        pl.addWidget(self.advanced_btn)
        pl.addWidget(self.prop_form)
        self.prop_form.hide()
        brow = QHBoxLayout()
        self.propagate_btn = QPushButton("Propagate")
        self.propagate_btn.setObjectName("primary")
        self.propagate_btn.setIcon(std_icon(self, "SP_MediaPlay"))
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setIcon(std_icon(self, "SP_MediaStop"))
        brow.addWidget(self.propagate_btn)
        brow.addWidget(self.cancel_btn)
        pl.addLayout(brow)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        pl.addWidget(self.progress)
        self.prop_label = info_label("", muted=True)
        pl.addWidget(self.prop_label)
        return prop

    def _results_box(self) -> QGroupBox:
        res = QGroupBox("3 · Results")
        rl = QVBoxLayout(res)
        self.jf_label = QLabel("Propagate to see the masks on every frame.")
        self.jf_label.setWordWrap(True)
        rl.addWidget(self.jf_label)
        of = QFormLayout()
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 255)
        self.opacity.setValue(130)
        of.addRow("mask opacity", self.opacity)
        rl.addLayout(of)
        grid = QFormLayout()
        self.export_checks: dict[str, QCheckBox] = {}
        row: QHBoxLayout | None = None
        for i, (fmt, label) in enumerate(EXPORT_FORMATS.items()):
            if i % 2 == 0:
                row = QHBoxLayout()
                grid.addRow(row)
            cb = QCheckBox(label)
            cb.setChecked(fmt in ("png", "coco"))
            self.export_checks[fmt] = cb
            row.addWidget(cb)
        rl.addLayout(grid)
        er = QHBoxLayout()
        self.export_btn = QPushButton("Export to folder…")
        self.export_btn.setToolTip(
            "runs the propagation's exports for the current keyframes and copies the files"
        )
        er.addWidget(self.export_btn)
        er.addStretch(1)
        rl.addLayout(er)
        return res

    def _connect(self) -> None:
        self.play_btn.toggled.connect(self._play)
        self.timeline.valueChanged.connect(self.show_frame)
        self.open_btn.clicked.connect(self._browse_video)
        self.open_davis_btn.clicked.connect(self._browse_folder)
        self.seq_combo.activated.connect(
            lambda _i: (
                self.video and self.open(self.video.source.davis_root, self.seq_combo.currentText())
            )
        )
        self.recent.activated.connect(lambda i: self.open(self.recent.itemData(i)))
        self.canvas.edited.connect(self._annotation_changed)
        self.add_obj_btn.clicked.connect(self._add_object)
        self.object_combo.currentIndexChanged.connect(
            lambda _i: setattr(self.canvas, "current", int(self.object_combo.currentData() or 1))
        )
        self.brush_slider.valueChanged.connect(lambda v: setattr(self.canvas, "brush", v))
        self.load_mask_btn.clicked.connect(self._browse_mask)
        self.gt_btn.clicked.connect(self.use_ground_truth)
        self.clear_btn.clicked.connect(self.canvas.clear)
        self.remove_key_btn.clicked.connect(lambda: self.remove_keyframe())
        self.clear_keys_btn.clicked.connect(self.clear_keyframes)
        self.timeline_bar.seek.connect(self.timeline.setValue)
        self.suspicious_btn.clicked.connect(self.next_suspicious)
        self.prev_key_btn.clicked.connect(lambda: self._step_keyframe(-1))
        self.next_key_btn.clicked.connect(lambda: self._step_keyframe(1))
        self.mode_combo.currentIndexChanged.connect(
            lambda _i: setattr(self.session, "mode", self.mode_combo.currentData())
        )
        self.advanced_btn.toggled.connect(self._toggle_advanced)
        self.propagate_btn.clicked.connect(self.propagate)
        self.cancel_btn.clicked.connect(self.cancel)
        self.export_btn.clicked.connect(self._export)
        self.opacity.valueChanged.connect(self._opacity_changed)
        self.features_combo.activated.connect(self._features_activated)

    def _toggle_advanced(self, on: bool) -> None:
        self.prop_form.setVisible(on)
        self.advanced_btn.setText("Advanced settings ▾" if on else "Advanced settings ▸")

    # ---- opening ---------------------------------------------------------------------------
    def _refresh_recent(self) -> None:
        self.recent.clear()
        for p in self.settings.recent("videos"):
            self.recent.addItem(p, p)
        self.recent.setCurrentIndex(-1)

    def _refresh_features(self) -> None:
        current = self.features_combo.currentData()
        self.features_combo.clear()
        self.features_combo.addItem("Lab colour (no model)", "lab")
        for p in recent_models(self.settings, "dense"):
            self.features_combo.addItem(f"model: {Path(p).name}", p)
        for label, name in published_models():  # DINO's features track objects (the paper's use)
            self.features_combo.addItem(label, name)
        self.features_combo.addItem("Choose a model…", "__choose__")
        i = self.features_combo.findData(current)
        self.features_combo.setCurrentIndex(max(0, i))

    def _features_activated(self, i: int) -> None:
        if self.features_combo.itemData(i) != "__choose__":
            return
        p, _ = QFileDialog.getOpenFileName(
            self, "Model for the features", str(Path.home()), MODEL_FILTER
        )
        if p:
            self.set_features(p)
        else:
            self.features_combo.setCurrentIndex(0)

    def set_features(self, source: str) -> None:
        """Lab colour ("lab") or a run folder / checkpoint / export to compute features with."""
        if source != "lab":
            self.settings.add_recent("runs" if Path(source).is_dir() else "checkpoints", source)
        self.features_combo.blockSignals(True)
        self._refresh_features()
        i = self.features_combo.findData(str(Path(source).resolve()) if source != "lab" else "lab")
        if i < 0:
            self.features_combo.insertItem(1, f"model: {Path(source).name}", source)
            i = 1
        self.features_combo.setCurrentIndex(i)
        self.features_combo.blockSignals(False)

    def _browse_video(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Open video", str(Path.home()), VIDEO_FILTER)
        if p:
            self.open(p)

    def _browse_folder(self) -> None:
        p = QFileDialog.getExistingDirectory(
            self, "DAVIS folder (with JPEGImages/) or a folder of frames", str(Path.home())
        )
        if p:
            self.open(p)

    def open(self, path: str | Path, sequence: str | None = None) -> None:
        if self.job.is_running():
            show_error(self, "a propagation is running; cancel it before opening another video")
            return
        try:
            src = resolve_source(path, sequence)
        except Exception as e:  # noqa: BLE001 - shown as a one-line dialog
            show_error(self, e, "video")
            return
        self.info.setText(f"Reading {src.frames.name} …")
        jobs.run_in_thread(
            lambda: load_video(src),
            lambda v: self._loaded(v, path),
            self._load_failed,
            self,
            key=LOAD,
        )

    @property
    def loading(self) -> bool:
        return jobs.is_pending(self, LOAD)

    def _load_failed(self, e: BaseException) -> None:
        self.info.setText("")
        show_error(self, e, "video")

    def _loaded(self, video: LoadedVideo, opened: str | Path) -> None:
        self.settings.add_recent("videos", opened)
        self._refresh_recent()
        self.session.set_video(video)  # -> _render_video

    def _render_video(self) -> None:
        video = self.session.video
        src = video.source
        self.seq_combo.blockSignals(True)
        self.seq_combo.clear()
        self.seq_combo.addItems(list(src.sequences))
        self.seq_combo.setCurrentText(src.name)
        self.seq_combo.setVisible(len(src.sequences) > 1)
        self.seq_combo.blockSignals(False)
        self.info.setText(self.session.describe())
        self.mode_combo.setCurrentIndex(max(0, self.mode_combo.findData(self.session.mode)))
        objs = set()
        for kf in self.session.keyframes.values():
            objs |= object_ids(kf.ids) | {p[2] for p in kf.points.values()}
        self._set_objects(sorted(objs) or [1])
        self.timeline.blockSignals(True)
        self.timeline.setRange(0, max(0, video.num_frames - 1))
        self.timeline.setValue(0)
        self.timeline.blockSignals(False)
        self.timeline_bar.set_model(self.session.timeline_model())
        self.show_frame(0)
        if self.session.has_result:  # an earlier session's work on this video
            self._render_result()
        else:
            self.jf_label.setText("Propagate to see the masks on every frame.")
            self.prop_label.setText("")
        self.progress.setValue(0)
        self._update_state()

    # ---- annotation ------------------------------------------------------------------------
    @property
    def frame_index(self) -> int:
        return self.timeline.value()

    def set_tool(self, mode: str) -> None:
        self.tool_buttons[mode].setChecked(True)
        self.canvas.mode = mode

    def _set_objects(self, ids: list[int]) -> None:
        cur = self.object_combo.currentData()
        self.object_combo.blockSignals(True)
        self.object_combo.clear()
        for i in sorted(set(ids) | {1}):
            self.object_combo.addItem(colour_icon(i), f"object {i}", i)
        j = self.object_combo.findData(cur)
        self.object_combo.setCurrentIndex(max(0, j))
        self.object_combo.blockSignals(False)
        self.canvas.current = int(self.object_combo.currentData() or 1)

    def _add_object(self) -> None:
        ids = [self.object_combo.itemData(i) for i in range(self.object_combo.count())]
        new = max(ids) + 1
        self._set_objects([*ids, new])
        self.object_combo.setCurrentIndex(self.object_combo.findData(new))

    def _browse_mask(self) -> None:
        p, _ = QFileDialog.getOpenFileName(
            self,
            f"Mask of frame {self.frame_index + 1}",
            str(self.video.source.frames.parent if self.video else Path.home()),
            MASK_FILTER,
        )
        if p:
            self.load_mask(p)

    def load_mask(self, path: str | Path) -> None:
        """A palette PNG (at the video's size) as the current frame's mask."""
        from video.masks import read_mask

        if self.video is None:
            show_error(self, "open a video first")
            return
        try:
            ids, _pal = read_mask(path, size=self.video.size)
        except Exception as e:  # noqa: BLE001
            show_error(self, e, "mask")
            return
        t = self.frame_index
        self.session.set_keyframe_mask(t, ids)
        self.show_frame(t)
        self._set_objects(sorted(object_ids(ids) | set(self._object_list())))

    def _object_list(self) -> list[int]:
        return [self.object_combo.itemData(i) for i in range(self.object_combo.count())]

    def use_ground_truth(self) -> None:
        p = self.session.ground_truth_mask(self.frame_index)
        if p is None:
            show_error(
                self,
                "this frame has no ground-truth annotation (DAVIS Annotations folder)"
                if self.session.has_ground_truth
                else "this video has no ground-truth annotations (DAVIS Annotations folder)",
            )
            return
        self.load_mask(p)

    def _annotation_changed(self) -> None:
        if self.video is None or self.canvas.frame is None or self.canvas.mode == "view":
            return
        self.session.edit(self.frame_index, self.canvas.ids, list(self.canvas.points))
        self._update_state()

    def annotation(self) -> tuple[np.ndarray | None, list]:
        """The marks on the frame shown (what the canvas holds)."""
        return self.canvas.ids, list(self.canvas.points)

    def remove_keyframe(self, t: int | None = None) -> None:
        t = self.frame_index if t is None else t
        if self.session.remove_keyframe(t) and t == self.frame_index:
            self.show_frame(t)

    def clear_keyframes(self) -> None:
        self.session.clear_keyframes()
        self.show_frame(self.frame_index)

    def _render_keyframes(self) -> None:
        """The timeline and the labels; the canvas already shows the edit that caused it."""
        self.timeline_bar.set_model(self.session.timeline_model())
        self._update_state()

    def _step_keyframe(self, direction: int) -> None:
        t, ks = self.frame_index, sorted(self.session.keyframes)
        nxt = [k for k in ks if k > t] if direction > 0 else [k for k in ks if k < t][::-1]
        if nxt:
            self.timeline.setValue(nxt[0])

    def next_suspicious(self) -> int | None:
        """Jump to the next frame whose mask area jumps (the timeline's look_first)."""
        t = self.session.next_flagged(self.frame_index)
        if t is not None:
            self.timeline.setValue(t)
        return t

    # ---- timeline --------------------------------------------------------------------------
    def show_frame(self, t: int) -> None:
        v = self.video
        if v is None:
            return
        self.frame_label.setText(self.session.frame_text(t))
        frame = self.session.frame(t)
        ids, pts = self.session.marks_at(t, frame.shape[:2])
        self.canvas.set_frame(frame, ids, pts)
        self.canvas.mode = next(m for m, b in self.tool_buttons.items() if b.isChecked())
        self.timeline_bar.set_current(t)
        self._update_state()

    def _play(self, on: bool) -> None:
        self.play_btn.setIcon(std_icon(self, "SP_MediaPause" if on else "SP_MediaPlay"))
        if on and self.video is not None:
            self.play_timer.start(int(1000 / max(1.0, min(60.0, self.video.fps or 24))))
        else:
            self.play_timer.stop()

    def _next_frame(self) -> None:
        if self.video is None:
            return
        self.timeline.setValue((self.timeline.value() + 1) % self.video.num_frames)

    def _opacity_changed(self, v: int) -> None:
        self.canvas.alpha = v
        self.canvas._refresh_overlay()

    # ---- propagation (`selfsup propagate` child process) ----------------------------------------
    def _command(self, exports: list[str]) -> list[str] | None:
        """The propagate command line of the current keyframes (None after showing why not)."""
        v = self.video
        if v is None:
            show_error(self, "open a video first")
            return None
        if self.job.is_running():
            return None
        problem = self.session.problem()
        if problem:
            show_error(self, problem)
            return None
        try:
            self.prop_form.values()  # a bad value is shown here, not by the child
        except Exception as e:  # noqa: BLE001
            show_error(self, e)
            return None
        return self.session.propagate_args(
            self.features_combo.currentData() or "lab",
            self.prop_form.changed_values(),
            exports=exports,
        )

    def propagate(self) -> None:
        """Run the keyframes through the video (only what changed since the last run)."""
        args = self._command(["png"])
        if args is None:
            return
        self._start_job("propagate", args, self.session.pending_out / "events.jsonl")
        self.prop_label.setText("starting…")
        self.timeline_bar.set_model(self.session.timeline_model())

    def _start_job(self, kind: str, args: list[str], events: Path) -> None:
        self.session.job_kind = kind
        self.progress.setRange(0, 0)
        self.job.start(args, events=events)
        self._update_state()

    def is_active(self) -> bool:
        return self.job.is_running()

    def cancel(self) -> None:
        """Stop after the current frame (what is done stays; Propagate continues from there)."""
        if self.job.is_running():
            self.prop_label.setText("cancelling…")
            self.job.stop()

    def _on_event(self, e: dict) -> None:
        if e.get("type") != "progress":
            return
        total = int(e.get("total") or 0)
        if total:
            self.progress.setRange(0, total)
            self.progress.setValue(int(e["done"]))
        self.prop_label.setText(self.session.progress_text(e))

    def _on_finished(self, code: int, message: str) -> None:
        kind, cancelled = self.session.job_kind, self.job.stopping
        export_to, self.session.export_to = self.session.export_to, None
        self.session.job_kind = ""
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if code == 0 and not cancelled else 0)
        self._update_state()
        out = self.session.pending_out
        if cancelled or code != 0:
            if cancelled and code == 0 and out is not None and (out / "result.json").exists():
                self.session.load_result(out)  # the frames done before the stop
            self.prop_label.setText(
                self.session.finished_text(cancelled)
                + (": Propagate continues where it stopped" if cancelled else "")
            )
            if not cancelled:
                show_error(self, message, kind)
            return
        self.show_result(out)
        if kind == "export" and export_to is not None:
            folder, formats = export_to
            try:
                written = self.session.copy_exports(folder, formats)
            except OSError as e:
                show_error(self, e, "export")
                return
            self.last_export = written
            self.prop_label.setText(self.session.exports_text(written, folder))

    def show_result(self, out: str | Path) -> None:
        """Load a finished propagation (masks, keypoints, timeline, J&F) onto the timeline."""
        self.session.load_result(out)  # -> _render_result

    def _render_result(self) -> None:
        line, text = self.session.summary()
        self.prop_label.setText(line)
        self.prop_label.setToolTip(str(self.session.result_dir))
        self.jf_label.setText(text)
        self.timeline_bar.set_model(self.session.timeline_model())
        if self.video is not None:
            self.show_frame(self.frame_index)
        self._update_state()

    # ---- export ----------------------------------------------------------------------------
    def export_formats(self) -> list[str]:
        return [f for f, cb in self.export_checks.items() if cb.isChecked()]

    def _export(self) -> None:
        if self.video is None:
            return
        folder = QFileDialog.getExistingDirectory(
            self, "Export the results to folder", str(Path.home())
        )
        if folder:
            self.export(folder)

    def export(self, folder: str | Path, formats: list[str] | None = None) -> None:
        """Each format (DAVIS PNGs, COCO JSON, FFV1 mask videos, keypoints CSV, overlay video)
        of the current keyframes: the propagate command's --export (nothing recomputed when
        the keyframes are as propagated), then copied into folder."""
        formats = list(formats if formats is not None else self.export_formats())
        if not formats:
            show_error(self, "tick at least one format to export")
            return
        args = self._command(formats)
        if args is None:
            return
        self.session.export_to = (Path(folder), formats)
        self._start_job("export", args, self.session.pending_out / "events.jsonl")
        self.prop_label.setText("exporting…")

    def export_masks(self, folder: str | Path) -> Path:
        """The loaded result's masks in DAVIS layout: <folder>/<sequence>/00000.png ..."""
        dest = self.session.export_masks(folder)
        self.prop_label.setText(f"exported to {dest}")
        return dest

    # ---- state -----------------------------------------------------------------------------
    def _update_state(self) -> None:
        running = self.job.is_running()
        has_video = self.video is not None
        t = self.frame_index
        self.ann_label.setText(self.session.keyframes_text(t) if has_video else "")
        for w in (self.propagate_btn, self.load_mask_btn, self.clear_btn, self.export_btn):
            w.setEnabled(has_video and not running)
        for w in (self.open_btn, self.open_davis_btn, self.mode_combo):
            w.setEnabled(not running)
        self.remove_key_btn.setEnabled(not running and self.session.is_keyframe(t))
        self.clear_keys_btn.setEnabled(not running and bool(self.session.keyframes))
        ks = sorted(self.session.keyframes)
        self.prev_key_btn.setEnabled(any(k < t for k in ks))
        self.next_key_btn.setEnabled(any(k > t for k in ks))
        self.suspicious_btn.setEnabled(bool(self.session.timeline.get("look_first")))
        self.gt_btn.setEnabled(not running and self.session.has_ground_truth)
        self.cancel_btn.setEnabled(running)

    def shutdown(self) -> None:
        jobs.cancel_pending(self, LOAD)
        self.play_timer.stop()
        if self.job.is_running():
            self.job.kill()
            self.job.wait(3000)
