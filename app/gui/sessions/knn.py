"""The Train page's one-click feature check (issue 12), Qt-free.

For a finished run whose training data (or a chosen validation folder) has class sub-folders,
`selfsup eval knn --checkpoint RUN --train DATA [--val VAL] --baseline` scores the learned
features against the same architecture with random weights. This module decides whether the
check can run, builds the command line and turns its result into a verdict a person can act on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.gui.sessions.events import Event
from engine.evaluation.verdict import Verdict
from engine.evaluation.verdict import result_verdict as verdict
from engine.run import RunDir


def class_folders(path: str | Path | None) -> list[str]:
    """The classes engine.data would read from `path` (every image inside a class sub-folder);
    [] when the folder is missing, empty or unlabelled. Walks the folder: call off the GUI thread."""
    if not path:
        return []
    root = Path(path).expanduser()
    if not root.is_dir():
        return []
    from engine.media import walk

    files = walk([root], images=True)
    parts = [f.relative_to(root).parts for f in files]
    if not parts or any(len(p) < 2 for p in parts):
        return []
    return sorted({p[0] for p in parts})


@dataclass(frozen=True)
class Plan:
    """Which folders the check uses; `reason` says why it cannot run when train is None."""

    train: str | None
    val: str | None = None
    reason: str = ""


def plan(
    data: str | None, data_classes: list[str], val: str | None, val_classes: list[str]
) -> Plan:
    """The training data when it has classes (with the validation folder as --val when that has
    them too); else the validation folder alone (a 20% hold-out of it); else why not."""
    if data_classes:
        return Plan(data, val if val and val_classes else None)
    if val and val_classes:
        return Plan(val)
    what = f"{data}: no class sub-folders" if data else "the run records no training data"
    hint = "choose a validation folder with one sub-folder per class"
    if val:
        hint = f"{val} has no class sub-folders either; " + hint
    return Plan(None, reason=f"{what}; {hint}")


def knn_args(run: str | Path, p: Plan) -> list[str]:
    args = ["eval", "knn", "--checkpoint", str(run), "--train", str(p.train)]
    if p.val:
        args += ["--val", str(p.val)]
    return [*args, "--baseline"]


class KnnCheck:
    """State of the check for the selected run: its data, the optional validation folder, the
    classes found in each, whether it is running, and the last verdict or error.

    Events: `changed()` after any state change. The page asks `can_run` / `status_text`."""

    def __init__(self) -> None:
        self.changed = Event()
        self.run: RunDir | None = None
        self.finished_run = False
        self.data: str | None = None
        self.val: str | None = None
        self.classes: dict[str, list[str]] = {}  # folder -> classes, once scanned
        self.running = False
        self.result: Verdict | None = None
        self.error = ""

    # ---- inputs ----------------------------------------------------------------------------
    def set_run(self, run: str | Path | None, finished: bool) -> None:
        new = RunDir(run) if run is not None else None
        if new != self.run or finished != self.finished_run:  # another run, or it trained on
            self.result, self.error = None, ""
        self.run, self.finished_run = new, finished
        self.data = (str(new.config_dict().get("data") or "") or None) if new else None
        self.changed.emit()

    def set_val(self, val: str | None) -> None:
        val = val or None
        if val != self.val:
            self.val, self.result, self.error = val, None, ""
            self.changed.emit()

    def folders_to_scan(self) -> list[str]:
        return [f for f in (self.data, self.val) if f and f not in self.classes]

    def scanned(self, found: dict[str, list[str]]) -> None:
        self.classes.update(found)
        self.changed.emit()

    # ---- derived ---------------------------------------------------------------------------
    def plan(self) -> Plan | None:
        """None while a folder is still being scanned."""
        if self.folders_to_scan():
            return None
        return plan(
            self.data,
            self.classes.get(self.data or "", []),
            self.val,
            self.classes.get(self.val or "", []),
        )

    @property
    def can_run(self) -> bool:
        p = self.plan()
        return (
            self.run is not None
            and self.finished_run
            and self.run.has_checkpoint()
            and not self.running
            and p is not None
            and p.train is not None
        )

    def args(self) -> list[str]:
        p = self.plan()
        if self.run is None or p is None or p.train is None:
            raise ValueError("the kNN check cannot run now")
        return knn_args(self.run, p)

    def status_text(self) -> str:
        if self.running:
            return "Checking features: kNN on the trained network, then on a random one…"
        if self.error:
            return f"Check failed: {self.error}"
        if self.result is not None:
            return f"{self.result.text}. {self.result.advice}"
        if self.run is None:
            return ""
        if not self.finished_run or not self.run.has_checkpoint():
            return "The feature check needs a finished run with a checkpoint."
        p = self.plan()
        if p is None:
            return "Looking for class sub-folders…"
        if p.train is None:
            return p.reason
        return f"Ready: kNN on {Path(p.train).name} ({len(self.classes[p.train])} classes) vs the same network with random weights."

    # ---- the job ---------------------------------------------------------------------------
    def started(self) -> None:
        self.running, self.result, self.error = True, None, ""
        self.changed.emit()

    def finished(self, code: int, message: str, result: dict[str, Any] | None) -> None:
        self.running = False
        if code == 0 and result and "baseline" in result:
            self.result = verdict(result, self.run)
        elif code == 0:
            self.error = "the command gave no baseline result"
        else:
            self.error = message or f"exit code {code}"
        self.changed.emit()
