"""The Train page's state, Qt-free: the chosen method and what the form shows for it, the
`selfsup train` command line (default run name, "already holds a run"), start / resume
decisions, the watched run's curves and status, the runs table and the kNN check.

The training process itself is the page's `CliJob`; the session asks `running()` whether it
lives. Everything about a run comes from its directory (`engine.run.RunDir`) and its events
(`engine.events.EventTail`), so a run started from a terminal reads the same. Events:
`watching(run)` when another run's curves start (the page clears its plots).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.gui.runs import RunCurves, format_duration
from app.gui.sessions.cli_args import flag_value
from app.gui.sessions.events import Event
from app.gui.sessions.knn import KnnCheck
from engine.config import TrainConfig
from engine.errors import UserError
from engine.events import EventTail
from engine.run import RunDir

TQDM_LINE = re.compile(r"^\s*\d+%\|")
DEFAULT_METHOD = "simclr"
TERMINAL = ("done", "stopped", "failed")
RESUME_HINT = "resume it with “Resume selected”"


def backbone_names() -> list[str]:
    from engine.backbones import BACKBONES

    return [*BACKBONES, "vit_tiny_p8", "vit_small_p8"]


def method_choices() -> list[tuple[str, str]]:
    """(text, name) of every registered method, by family."""
    from engine.registry import list_methods

    specs = sorted(list_methods(), key=lambda s: (s.family, s.name))
    return [(f"{s.name}  ·  {s.family or s.data}", s.name) for s in specs]


def shows_in_log(line: str) -> bool:
    """tqdm's bars stay out of the log (the progress bar shows them)."""
    return not TQDM_LINE.match(line)


@dataclass
class DataInput:
    """What the data picker asks for: a folder, or a caption file for caption methods."""

    recent: str  # the Settings recent list
    mode: str  # "dir" | "any"
    file_filter: str
    placeholder: str


@dataclass
class RunRow:
    path: Path
    name: str
    method: str
    backbone: str
    status: str
    step: str
    loss: str
    message: str


@dataclass
class Monitor:
    """The progress box: bar, status ("" leaves it as it is) and the stats line."""

    step: int
    total: int
    bar_format: str
    status: str
    stats: str | None  # None leaves it as it is
    stats_tip: str | None = None


class TrainSession:
    def __init__(self, running: Callable[[], bool] = lambda: False) -> None:
        self.running = running  # does our training process live (the page's CliJob)
        self.spec = None  # engine.registry.MethodSpec of the chosen method
        self.active_run: Path | None = None  # the run our child process trains
        self.watched: Path | None = None  # the run whose curves are shown
        self.curves = RunCurves()
        self.tail: EventTail | None = None
        self.final_status = ""  # what the watched run ended as when its child died silently
        self._summaries: dict[Path, tuple] = {}
        self.knn = KnnCheck()
        self.watching = Event()  # (run)

    # ---- the method --------------------------------------------------------------------------
    def set_method(self, name: str):
        from engine.registry import get_method

        self.spec = get_method(name)
        return self.spec

    def description(self) -> str:
        s = self.spec
        return s.description + (f"  (data: {s.data})" if s.data != "images" else "")

    def defaults(self, fields, backbone: str) -> dict[str, Any]:
        """The method's overrides of these form fields for a run of this backbone (its paper's
        lr, batch size, ...; its small-image recipe on resnet18_w32), as `selfsup train`."""
        return {k: v for k, v in self.spec.recipe(backbone).items() if k in fields}

    def method_defaults(self, backbone: str) -> dict[str, Any]:
        """The method options the recipe for this backbone sets (DINO's on resnet18_w32)."""
        return dict(self.spec.recipe(backbone).get("method_args", {}))

    def default_backbone(self, image_size: int = TrainConfig.image_size) -> str:
        """What `selfsup train` picks at this image size when no --backbone is given."""
        return self.spec.default_backbone(image_size)

    def data_input(self) -> DataInput:
        if self.spec.data == "captions":
            return DataInput(
                "captions",
                "any",
                "Caption tables (*.tsv *.csv);;All files (*)",
                "caption file (.tsv/.csv) or a folder of images with .txt captions",
            )
        return DataInput("folders", "dir", "", "folder of images (videos for video methods)")

    # ---- command lines ----------------------------------------------------------------------
    def check_idle(self) -> None:
        if self.running():
            raise UserError("a run is already training; stop it first")

    def command(
        self, data: str, root: Path, name: str, backbone: str, changed: list[tuple[str, Any]]
    ) -> tuple[list[str], Path]:
        """`selfsup train` for the form; flags only where values differ from the method's
        defaults (`changed`: the forms' changed values), so it reads like one a person types.
        No name: <method>-<date>-<time>. A folder that already holds a run is refused."""
        if not data:
            raise UserError("choose the training data first (a folder of images)")
        if not Path(data).expanduser().exists():
            raise UserError(f"{data}: no such folder or file")
        method = self.spec.name
        run = RunDir(Path(root) / name) if name else RunDir.new(method, root)
        run.check_new()
        args = ["train", "--data", str(Path(data).expanduser()), "--method", method]
        args += ["--run-dir", str(run.path)]
        image_size = dict(changed).get("image_size", TrainConfig.image_size)
        if backbone != self.default_backbone(image_size):
            args += ["--backbone", backbone]
        for k, v in changed:
            args += ["--" + k.replace("_", "-"), flag_value(v)]
        return args, run.path

    def resume_command(self, run_dir: str | Path) -> list[str]:
        run = RunDir(run_dir)
        self.check_idle()
        if not run.can_resume():
            raise UserError(f"{run}: nothing to resume, no checkpoint")
        if run.status() == "done":
            raise UserError(f"{run}: this run already finished")
        return ["train", "--resume", str(run)]

    def launched(self, run_dir: Path) -> None:
        """Our child process trains run_dir now; its curves are shown."""
        self.active_run = Path(run_dir)
        self.watch(run_dir)

    def finish(self, stopped: bool, message: str) -> tuple[str, str, str] | None:
        """Our child ended: (status, error to show or "", hint); None when it trained nothing.
        A child that died before its run could say so reads stopped (asked to) or failed."""
        run, self.active_run = self.active_run, None
        if run is None:
            return None
        status = RunDir(run).status()
        if status not in TERMINAL:
            status = "stopped" if stopped else "failed"
            if run == self.watched:
                self.final_status = status
        failed = status == "failed" and not stopped  # a requested stop is not an error
        error = (message or "training stopped unexpectedly") if failed else ""
        hint = RESUME_HINT if status == "stopped" and RunDir(run).can_resume() else ""
        return status, error, hint

    # ---- the watched run ----------------------------------------------------------------------
    def watch(self, run_dir: str | Path) -> None:
        """Show this run's curves from its first event; new ones arrive through poll()."""
        self.watched = Path(run_dir)
        self.tail = EventTail(self.watched)
        self.curves = RunCurves()
        self.final_status = ""
        self.watching.emit(self.watched)
        self.curves.add(self.tail.poll())

    def poll(self) -> str:
        """Fold new events: "" (nothing new), "events", or "appeared" (the first events of the
        run we train: its folder exists now)."""
        if self.tail is None:
            return ""
        events = self.tail.poll()
        if not events:
            return ""
        first = self.curves.state.phase == "new"
        self.curves.add(events)
        return "appeared" if first and self.watched == self.active_run else "events"

    def training_watched(self) -> bool:
        return self.watched is not None and self.watched == self.active_run and self.running()

    def status(self) -> str:
        """The watched run's status."""
        if self.training_watched():
            return "running"
        st = self.curves.state.status(RunDir(self.watched).alive())
        if st in ("new", "running", "interrupted") and self.final_status:
            st = self.final_status  # the child died before its run could say so
        return st

    def monitor(self, stopping: bool = False) -> Monitor:
        c = self.curves
        bar = f"step {c.step} / {c.total_steps}  (%p%)" if c.total_steps else "waiting for the first step…"  # fmt: skip
        loss = c.losses.get("loss")
        if self.training_watched():
            parts = [f"{c.images_per_s:.0f} images/s" if c.images_per_s else "measuring speed…"]
            if c.eta_s and c.step:
                parts.append(f"ETA {format_duration(c.eta_s)}")
            if loss:
                parts.append(f"loss {loss[-1][1]:.4f}")
            if c.state.precision:
                parts.append(c.state.precision + (", compiled" if c.state.compiled else ""))
            why = "; ".join(r for r in (c.state.precision_reason, c.state.compile_reason) if r)
            status = "" if stopping else "running"
            return Monitor(c.step, c.total_steps, bar, status, "  ·  ".join(parts), why)
        if self.watched is None:
            return Monitor(c.step, c.total_steps, bar, "", None)
        last = f"last loss {loss[-1][1]:.4f}" if loss else "no steps logged"
        msg = f" · {c.state.message}" if c.state.message else ""
        return Monitor(c.step, c.total_steps, bar, self.status(), f"{last}{msg}")

    def finished_text(self, status: str) -> str:
        loss = self.curves.losses.get("loss")
        if status == "done":
            return f"finished: loss {loss[-1][1]:.4f}" if loss else "no steps logged"
        return f"{status} at step {self.curves.step}"

    # ---- runs ------------------------------------------------------------------------------------
    def runs(self, root: Path, recent: list[str]) -> list[RunRow]:
        """The runs under root, newest first, then recent runs kept elsewhere."""
        root = Path(root).expanduser()
        runs = [r.path for r in RunDir.find(root)]
        runs += [Path(p) for p in recent if Path(p).parent != root and Path(p).is_dir()]
        rows = []
        for run in runs:
            s = self.summary(run)
            ours = run == self.active_run and self.running()
            st = "running" if ours else s["state"].status(RunDir(run).alive())
            loss = f"{s['loss']:.4f}" if s["loss"] is not None else ""
            step = f"{s['step']}/{s['total_steps']}" if s["total_steps"] else str(s["step"])
            rows.append(
                RunRow(run, s["name"], s["method"], s["backbone"], st, step, loss, s["message"])
            )
        return rows

    def summary(self, run: Path) -> dict:
        """RunDir.summary, re-read only when the events changed (long runs have big event files)."""
        try:
            st = RunDir(run).events_path.stat()
            key = (st.st_size, st.st_mtime_ns)
        except OSError:
            key = None
        hit = self._summaries.get(run)
        if hit is None or hit[0] != key or key is None:
            hit = (key, RunDir(run).summary())
            self._summaries[run] = hit
        return hit[1]

    def can_resume(self, run: Path | None) -> bool:
        if self.running() or run is None:
            return False
        r = RunDir(run)
        return r.can_resume() and r.status() != "done"

    def can_inspect(self) -> bool:
        return self.watched is not None and RunDir(self.watched).can_resume()

    def select_for_knn(self, run: Path | None) -> None:
        """Tell the kNN check which run is selected; only a finished run is checked."""
        finished = (
            run is not None
            and not (run == self.active_run and self.running())
            and RunDir(run).status() != "running"
        )
        self.knn.set_run(run, finished)

    @staticmethod
    def open_run(run_dir: str | Path):
        """`selfsup gui RUN_DIR`: (the run's folder, its TrainConfig or None if unreadable)."""
        run_dir = Path(run_dir).expanduser().resolve()
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: run folder not found")
        if not RunDir(run_dir).exists():
            raise UserError(f"{run_dir}: not a run directory (no config.json or events.jsonl)")
        try:
            return run_dir, RunDir(run_dir).config()
        except UserError:
            return run_dir, None
