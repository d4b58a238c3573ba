"""Train page: pick data and a method, set hyper-parameters, start/stop/resume, watch curves.

Training is `selfsup train ...` in a child process (app.gui.jobs.CliJob); the page only reads
the run directory the trainer writes (events.jsonl, via EventTail on a timer), so a run started
from a terminal can be watched the same way and the window never waits on training. The command
line, start/resume decisions, curves, status and the runs table live in the Qt-free
`app.gui.sessions.train.TrainSession`; this page renders them and runs the child process.
"""

from __future__ import annotations

from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.gui import jobs
from app.gui.config_form import DataclassForm
from app.gui.errors import show_error
from app.gui.jobs import CliJob, cli_command
from app.gui.paths import Settings, data_dir, default_runs_root
from app.gui.sessions.knn import class_folders
from app.gui.sessions.train import (
    DEFAULT_METHOD,
    TrainSession,
    backbone_names,
    method_choices,
    shows_in_log,
)
from app.gui.style import CURVE_COLOURS, MUTED
from app.gui.widgets import Page, PathPicker, flush_layout, info_label, std_icon
from engine.config import OptimConfig, TrainConfig
from engine.errors import UserError

TRAIN_SKIP = ("data", "method", "backbone", "run_dir")
STATUS_COLOURS = {
    "running": "#2f6fed",
    "done": "#027a48",
    "stopped": "#b54708",
    "failed": "#b42318",
    "interrupted": "#b54708",
    "new": MUTED,
}


class TrainPage(Page):
    title = "Train"
    hint = "Choose data and a self-supervised method, then start. Training runs in the background; curves update live and a stopped run can be resumed."
    run_finished = Signal(str, str)  # run dir, status
    open_features = Signal(str)  # run dir: "Inspect features" button

    def __init__(self, settings: Settings, parent: QWidget | None = None):
        super().__init__(settings, parent)
        self.job = CliJob(self)
        self.job.output.connect(self._on_output)
        self.job.finished.connect(self._on_finished)
        self.session = TrainSession(self.job.is_running)
        self.session.watching.connect(self._clear_plots)
        self.method_form: DataclassForm | None = None
        self._shown_backbone = ""  # the default the picker shows; "" before a method is chosen
        self._recipe_backbone = ""  # the backbone whose recipe the optimiser form shows
        self.knn = self.session.knn
        self.knn.changed.connect(self._render_knn)
        self.knn_job = CliJob(self)
        self.knn_job.finished.connect(self._knn_finished)

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._build_form())
        split.addWidget(self._build_monitor())
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([430, 900])
        self.outer.addWidget(split, 1)

        self.timer = QTimer(self)
        self.timer.setInterval(250)
        self.timer.timeout.connect(self._poll)
        self.timer.start()
        self._populate_methods()
        self.refresh_runs()

    # ---- layout ---------------------------------------------------------------------------
    def _build_form(self) -> QWidget:
        outer = QWidget()
        outer.setMinimumWidth(380)
        outer.setMaximumWidth(520)
        ol = flush_layout(outer)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        body = QWidget()
        bl = QVBoxLayout(body)
        bl.setContentsMargins(0, 0, 8, 0)

        data_box = QGroupBox("1 · Data")
        dl = QVBoxLayout(data_box)
        self.data_picker = PathPicker(
            self.settings,
            "folders",
            "dir",
            placeholder="folder of images (or videos / caption file, by method)",
        )
        dl.addWidget(self.data_picker)
        bl.addWidget(data_box)

        m_box = QGroupBox("2 · Method")
        ml = QFormLayout(m_box)
        self.method_combo = QComboBox()
        self.method_combo.currentIndexChanged.connect(self._method_changed)
        self.method_desc = info_label("", muted=True)
        self.backbone_combo = QComboBox()
        self.backbone_combo.setEditable(True)
        self.backbone_combo.addItems(backbone_names())
        self.backbone_combo.currentTextChanged.connect(self._backbone_changed)
        ml.addRow("method", self.method_combo)
        ml.addRow("", self.method_desc)
        ml.addRow("backbone", self.backbone_combo)
        bl.addWidget(m_box)

        t_box = QGroupBox("3 · Training")
        tl = QVBoxLayout(t_box)
        self.train_form = DataclassForm(TrainConfig, skip=TRAIN_SKIP)
        self.train_form.changed.connect(self._train_form_changed)
        tl.addWidget(self.train_form)
        bl.addWidget(t_box)
        o_box = QGroupBox("Optimiser")
        olay = QVBoxLayout(o_box)
        self.optim_form = DataclassForm(OptimConfig)
        olay.addWidget(self.optim_form)
        bl.addWidget(o_box)
        self.method_box = QGroupBox("Method options")
        self.method_box_layout = QVBoxLayout(self.method_box)
        bl.addWidget(self.method_box)

        r_box = QGroupBox("Run")
        rl = QFormLayout(r_box)
        self.run_name = QLineEdit()
        self.run_name.setPlaceholderText("automatic: <method>-<date>-<time>")
        root_row = QHBoxLayout()
        self.runs_root = QLineEdit(str(self.settings.pref("runs_root") or default_runs_root()))
        browse = QPushButton("…")
        browse.setFixedWidth(32)
        browse.clicked.connect(self._browse_root)
        root_row.addWidget(self.runs_root)
        root_row.addWidget(browse)
        rl.addRow("name", self.run_name)
        rl.addRow("runs folder", root_row)
        bl.addWidget(r_box)
        bl.addStretch(1)
        scroll.setWidget(body)
        ol.addWidget(scroll, 1)

        buttons = QHBoxLayout()
        self.start_btn = QPushButton("Start training")
        self.start_btn.setObjectName("primary")
        self.start_btn.setIcon(std_icon(self, "SP_MediaPlay"))
        self.stop_btn = QPushButton("Stop")
        self.stop_btn.setIcon(std_icon(self, "SP_MediaStop"))
        self.resume_btn = QPushButton("Resume selected")
        self.resume_btn.setIcon(std_icon(self, "SP_BrowserReload"))
        for b in (self.start_btn, self.stop_btn, self.resume_btn):
            buttons.addWidget(b)
        ol.addLayout(buttons)
        self.start_btn.clicked.connect(self.start)
        self.stop_btn.clicked.connect(self.stop)
        self.resume_btn.clicked.connect(self.resume_selected)
        self.runs_root.editingFinished.connect(self._root_changed)
        return outer

    def _build_monitor(self) -> QWidget:
        w = QWidget()
        lay = QVBoxLayout(w)
        lay.setContentsMargins(8, 0, 0, 0)
        status = QGroupBox("Progress")
        sl = QVBoxLayout(status)
        head = QHBoxLayout()
        self.run_label = QLabel("No run yet")
        self.run_label.setStyleSheet("font-weight: 600; font-size: 14px;")
        self.status_label = QLabel("")
        head.addWidget(self.run_label, 1)
        head.addWidget(self.status_label)
        sl.addLayout(head)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        sl.addWidget(self.progress)
        self.stats_label = info_label(
            "Start a run, or pick one from the list below to see its curves.", muted=True
        )
        sl.addWidget(self.stats_label)
        self.command_label = QLabel("")
        self.command_label.setObjectName("muted")
        self.command_label.setWordWrap(True)
        self.command_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.command_label.setStyleSheet("font-family: monospace; font-size: 11px;")
        sl.addWidget(self.command_label)
        lay.addWidget(status)

        plots = QSplitter(Qt.Orientation.Vertical)
        self.loss_plot = pg.PlotWidget(title="Loss")
        self.loss_plot.setLabel("bottom", "step")
        self.loss_plot.showGrid(x=True, y=True, alpha=0.15)
        self.loss_plot.addLegend(offset=(-10, 10))
        self.lr_plot = pg.PlotWidget(title="Learning rate")
        self.lr_plot.setLabel("bottom", "step")
        self.lr_plot.showGrid(x=True, y=True, alpha=0.15)
        self.lr_curve = self.lr_plot.plot([], [], pen=pg.mkPen("#667085", width=2))
        self.loss_curves: dict[str, pg.PlotDataItem] = {}
        plots.addWidget(self.loss_plot)
        plots.addWidget(self.lr_plot)
        plots.setSizes([300, 140])

        runs_box = QGroupBox("Runs")
        rl = QVBoxLayout(runs_box)
        self.runs_tree = QTreeWidget()
        self.runs_tree.setHeaderLabels(["run", "method", "backbone", "status", "step", "loss"])
        self.runs_tree.setRootIsDecorated(False)
        self.runs_tree.setAlternatingRowColors(True)
        head = self.runs_tree.header()
        head.setStretchLastSection(False)
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in range(1, 6):
            head.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        self.runs_tree.itemSelectionChanged.connect(self._run_selected)
        rl.addWidget(self.runs_tree)
        rb = QHBoxLayout()
        refresh = QPushButton("Refresh")
        refresh.setIcon(std_icon(self, "SP_BrowserReload"))
        refresh.clicked.connect(self.refresh_runs)
        self.inspect_btn = QPushButton("Inspect features →")
        self.inspect_btn.clicked.connect(
            lambda: self.watched and self.open_features.emit(str(self.watched))
        )
        rb.addWidget(refresh)
        rb.addStretch(1)
        rb.addWidget(self.inspect_btn)
        rl.addLayout(rb)
        rl.addWidget(self._build_knn_check())
        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(300)
        self.log_view.setPlaceholderText("Output of the training process appears here.")
        self.log_view.setStyleSheet("font-family: monospace; font-size: 11px;")

        bottom = QSplitter(Qt.Orientation.Horizontal)
        bottom.addWidget(runs_box)
        log_box = QGroupBox("Log")
        ll = QVBoxLayout(log_box)
        ll.addWidget(self.log_view)
        bottom.addWidget(log_box)
        bottom.setSizes([680, 260])
        vs = QSplitter(Qt.Orientation.Vertical)
        vs.addWidget(plots)
        vs.addWidget(bottom)
        vs.setSizes([460, 260])
        lay.addWidget(vs, 1)
        self._update_buttons()
        return w

    def _build_knn_check(self) -> QWidget:
        """'Check features': kNN of the selected run against the same network, untrained."""
        box = QWidget()
        kl = QVBoxLayout(box)
        kl.setContentsMargins(0, 4, 0, 0)
        row = QHBoxLayout()
        self.knn_val = PathPicker(
            self.settings,
            "folders",
            "dir",
            placeholder="validation folder with class sub-folders (optional)",
        )
        self.knn_btn = QPushButton("Check features (kNN vs random init)")
        self.knn_btn.setToolTip(
            "selfsup eval knn --baseline: does the trained network separate the classes of the "
            "training data (or the validation folder) better than the same network with random weights?"
        )
        row.addWidget(self.knn_val, 1)
        row.addWidget(self.knn_btn)
        kl.addLayout(row)
        self.knn_label = info_label("", muted=True)
        self.knn_label.setWordWrap(True)
        kl.addWidget(self.knn_label)
        self.knn_btn.clicked.connect(self.check_features)
        self.knn_val.chosen.connect(lambda p: self.knn.set_val(p))
        self.knn_val.combo.lineEdit().editingFinished.connect(
            lambda: self.knn.set_val(self.knn_val.path())
        )
        return box

    @property
    def curves(self):
        return self.session.curves

    @property
    def active_run(self) -> Path | None:
        return self.session.active_run

    @property
    def watched(self) -> Path | None:
        return self.session.watched

    # ---- kNN check -----------------------------------------------------------------------------
    def _scan_knn_folders(self) -> None:
        todo = self.knn.folders_to_scan()
        if not todo:
            return
        jobs.run_in_thread(
            lambda: {f: class_folders(f) for f in todo},
            self.knn.scanned,
            lambda e: self.knn.scanned({f: [] for f in todo}),
            self,
            key="knn-scan",
        )

    def _render_knn(self) -> None:
        self._scan_knn_folders()
        self.knn_btn.setEnabled(self.knn.can_run and not self.knn_job.is_running())
        self.knn_label.setText(self.knn.status_text())
        v = self.knn.result
        colour = "" if v is None else ("#027a48" if v.better else "#b42318")
        self.knn_label.setStyleSheet(f"color: {colour};" if colour else "")

    def check_features(self) -> None:
        if self.knn_job.is_running() or not self.knn.can_run:
            return
        args = self.knn.args()
        events = data_dir() / "knn-check" / f"{self.knn.run.name}.jsonl"
        events.parent.mkdir(parents=True, exist_ok=True)
        self.log_view.appendPlainText("$ " + " ".join(cli_command(args)))
        self.knn_job.start(args, events=events)
        self.knn.started()

    def _knn_finished(self, code: int, message: str) -> None:
        self.knn.finished(code, message, self.knn_job.result)

    # ---- method and form ---------------------------------------------------------------------
    def _populate_methods(self) -> None:
        self.method_combo.blockSignals(True)
        self.method_combo.clear()
        for text, name in method_choices():
            self.method_combo.addItem(text, name)
        self.method_combo.blockSignals(False)
        self.method_combo.setCurrentIndex(max(0, self.method_combo.findData(DEFAULT_METHOD)))
        self._method_changed()

    def select_method(self, name: str) -> None:
        i = self.method_combo.findData(name)
        if i < 0:
            raise UserError(f"unknown method '{name}'")
        self.method_combo.setCurrentIndex(i)

    def _method_changed(self) -> None:
        name = self.method_combo.currentData()
        if not name:
            return
        spec = self.session.set_method(name)
        self.method_desc.setText(self.session.description())
        backbone = self.session.default_backbone(self._image_size())
        self.train_form.set_defaults(self.session.defaults(self.train_form.widgets, backbone))
        if self.method_form is not None:
            self.method_box_layout.removeWidget(self.method_form)
            self.method_form.deleteLater()
        self.method_form = DataclassForm(spec.config_cls)
        self._shown_backbone = backbone
        self._show_recipe(backbone)
        self.backbone_combo.setCurrentText(backbone)
        self.method_box_layout.addWidget(self.method_form)
        self.method_box.setTitle(f"{spec.name} options")
        self.method_box.setVisible(bool(self.method_form.widgets))
        data = self.session.data_input()
        picker = self.data_picker
        picker.kind, picker.mode, picker.file_filter = data.recent, data.mode, data.file_filter
        picker.combo.lineEdit().setPlaceholderText(data.placeholder)
        picker.refresh_recent()

    def _image_size(self) -> int:
        w = self.train_form.widgets.get("image_size")
        return int(w.value()) if w is not None else TrainConfig.image_size

    def _train_form_changed(self) -> None:
        """Follow the default backbone as the image size moves across 32 px (resnet18_w32 at
        or below for the two-view ResNet methods), unless the user picked another one."""
        if not self._shown_backbone:
            return
        default = self.session.default_backbone(self._image_size())
        if self.backbone_combo.currentText() == self._shown_backbone != default:
            self.backbone_combo.setCurrentText(default)
        self._shown_backbone = default

    def _show_recipe(self, backbone: str) -> None:
        """Optimiser and method defaults of the method's recipe for this backbone (DINO and
        MoCo v3 train resnet18_w32 with a LARS recipe, their ViTs with AdamW)."""
        self._recipe_backbone = backbone
        self.optim_form.set_defaults(self.session.defaults(self.optim_form.widgets, backbone))
        if self.method_form is not None:
            self.method_form.set_defaults(self.session.method_defaults(backbone))

    def _backbone_changed(self, backbone: str) -> None:
        recipe = self.session.spec.recipe if self.session.spec else None
        if recipe and recipe(backbone.strip()) != recipe(self._recipe_backbone):
            self._show_recipe(backbone.strip())

    def _root(self) -> Path:
        return Path(self.runs_root.text().strip() or default_runs_root()).expanduser()

    def build_args(self) -> tuple[list[str], Path]:
        """The `selfsup train` command line for the form (TrainSession.command)."""
        forms = [self.train_form, self.optim_form, self.method_form]
        changed = [kv for f in forms if f is not None for kv in f.changed_values().items()]
        return self.session.command(
            self.data_picker.path(),
            self._root(),
            self.run_name.text().strip(),
            self.backbone_combo.currentText().strip(),
            changed,
        )

    # ---- actions -----------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.session.check_idle()
            args, run_dir = self.build_args()
        except UserError as e:
            show_error(self, e)
            return
        self.data_picker.remember()
        self._launch(args, run_dir)

    def resume_selected(self) -> None:
        run = self.selected_run()
        if run is None:
            show_error(self, "select a run in the list to resume")
            return
        self.resume(run)

    def resume(self, run_dir: str | Path) -> None:
        try:
            args = self.session.resume_command(run_dir)
        except UserError as e:
            show_error(self, e)
            return
        self._launch(args, Path(run_dir).expanduser())

    def _launch(self, args: list[str], run_dir: Path) -> None:
        self.log_view.clear()
        self.command_label.setText("$ " + " ".join(cli_command(args)))
        self.session.launched(run_dir)
        self._redraw()
        self.status_label.setText(self._status_html("starting"))
        self.job.start(args)
        self.settings.add_recent("runs", run_dir)
        self._update_buttons()

    def stop(self) -> None:
        if self.job.is_running():
            self.status_label.setText(self._status_html("stopping", "saving a checkpoint…"))
            self.job.stop()
            self._update_buttons()

    def is_active(self) -> bool:
        return self.job.is_running()

    # ---- watching a run ------------------------------------------------------------------------
    def watch(self, run_dir: str | Path) -> None:
        """Show this run's curves; new events keep arriving through the timer."""
        self.session.watch(run_dir)
        self._redraw()
        self._update_buttons()

    def _clear_plots(self, run: Path) -> None:
        for c in self.loss_curves.values():
            self.loss_plot.removeItem(c)
        self.loss_curves.clear()
        legend = self.loss_plot.plotItem.legend
        if legend is not None:
            legend.clear()
        self.lr_curve.setData([], [])
        self.run_label.setText(run.name)

    def _poll(self) -> None:
        """Timer: redraw only when the run wrote something new."""
        new = self.session.poll()
        if new:
            self._redraw()
        if new == "appeared":
            self.refresh_runs(select=self.watched)  # the new run's folder exists now

    def _redraw(self) -> None:
        c = self.curves
        for i, (k, pts) in enumerate(
            sorted(c.losses.items(), key=lambda kv: (kv[0] != "loss", kv[0]))
        ):
            curve = self.loss_curves.get(k)
            if curve is None:
                pen = pg.mkPen(
                    CURVE_COLOURS[i % len(CURVE_COLOURS)], width=2.5 if k == "loss" else 1.5
                )
                curve = self.loss_plot.plot(
                    [], [], pen=pen, name=k, symbol="o" if len(pts) < 30 else None, symbolSize=4
                )
                self.loss_curves[k] = curve
            curve.setData([p[0] for p in pts], [p[1] for p in pts])
        self.lr_curve.setData([p[0] for p in c.lr], [p[1] for p in c.lr])
        m = self.session.monitor(self.job.stopping)
        self.progress.setRange(0, max(1, m.total))
        self.progress.setValue(min(m.step, max(1, m.total)))
        self.progress.setFormat(m.bar_format)
        if m.status:
            self.status_label.setText(self._status_html(m.status))
        if m.stats is not None:
            self.stats_label.setText(m.stats)
        if m.stats_tip is not None:
            self.stats_label.setToolTip(m.stats_tip)

    def _status_html(self, status: str, extra: str = "") -> str:
        colour = STATUS_COLOURS.get(status, MUTED)
        return f"<span style='color:{colour}; font-weight:600'>● {status}</span>" + (
            f" <span style='color:{MUTED}'>{extra}</span>" if extra else ""
        )

    # ---- child process ------------------------------------------------------------------------
    def _on_output(self, line: str) -> None:
        if shows_in_log(line):
            self.log_view.appendPlainText(line)

    def _on_finished(self, code: int, message: str) -> None:
        self._poll()
        run = self.active_run
        ended = self.session.finish(self.job.stopping, message)
        self._update_buttons()
        if ended is None:
            return
        status, error, hint = ended
        if error:
            show_error(self, error, "training")
        self.status_label.setText(self._status_html(status, hint))
        self.stats_label.setText(self.session.finished_text(status))
        self.refresh_runs(select=run)
        self.session.select_for_knn(self.selected_run())
        self.run_finished.emit(str(run), status)

    # ---- runs list ------------------------------------------------------------------------------
    def refresh_runs(self, select: Path | None = None) -> None:
        select = select or self.watched
        self.runs_tree.blockSignals(True)
        self.runs_tree.clear()
        chosen = None
        for row in self.session.runs(self._root(), self.settings.recent("runs")):
            cols = [row.name, row.method, row.backbone, row.status, row.step, row.loss]
            it = QTreeWidgetItem(cols)
            it.setData(0, Qt.ItemDataRole.UserRole, str(row.path))
            it.setToolTip(0, str(row.path))
            it.setForeground(3, pg.mkColor(STATUS_COLOURS.get(row.status, MUTED)))
            if row.message:
                it.setToolTip(3, row.message)
            self.runs_tree.addTopLevelItem(it)
            if select is not None and row.path.resolve() == Path(select).resolve():
                chosen = it
        self.runs_tree.blockSignals(False)
        if chosen is not None:
            self.runs_tree.setCurrentItem(chosen)
        self._update_buttons()

    def selected_run(self) -> Path | None:
        it = self.runs_tree.currentItem()
        return Path(it.data(0, Qt.ItemDataRole.UserRole)) if it is not None else None

    def _run_selected(self) -> None:
        run = self.selected_run()
        if run is not None and run != self.watched:
            self.watch(run)
            self.command_label.setText("")
        self._update_buttons()
        self.session.select_for_knn(run)

    def open_run(self, run_dir: str | Path) -> None:
        """`selfsup gui RUN_DIR`: show that run (its folder becomes the runs folder)."""
        run_dir, cfg = self.session.open_run(run_dir)
        self.runs_root.setText(str(run_dir.parent))
        self.settings.add_recent("runs", run_dir)
        if cfg is not None:
            try:
                if cfg.data:
                    self.data_picker.set_path(cfg.data, emit=False)
                self.select_method(cfg.method)
                self.backbone_combo.setCurrentText(cfg.backbone)
            except UserError:
                pass
        self.refresh_runs(select=run_dir)
        self.watch(run_dir)

    def _browse_root(self) -> None:
        p = QFileDialog.getExistingDirectory(self, "Runs folder", self.runs_root.text())
        if p:
            self.runs_root.setText(p)
            self._root_changed()

    def _root_changed(self) -> None:
        self.settings.set_pref("runs_root", self.runs_root.text().strip())
        self.refresh_runs()

    def _update_buttons(self) -> None:
        running = self.job.is_running()
        self.start_btn.setEnabled(not running)
        self.stop_btn.setEnabled(running and not self.job.stopping)
        if hasattr(self, "runs_tree"):
            self.resume_btn.setEnabled(self.session.can_resume(self.selected_run()))
        if hasattr(self, "inspect_btn"):
            self.inspect_btn.setEnabled(self.session.can_inspect())

    def shutdown(self) -> None:
        self.timer.stop()
        jobs.cancel_pending(self, "knn-scan")
        if self.knn_job.is_running():
            self.knn_job.kill()
            self.knn_job.wait(3000)
        if self.job.is_running():
            self.job.kill()
            self.job.wait(5000)
