"""A training run's folder: the one owner of its layout, its state and of model-source strings.

Everything that reads or writes a run (trainer, CLI, GUI, evaluation, video, multimodal) goes
through `RunDir`, so the file names below are spelled once. `RunState` is the run's status as
derived from its events plus a liveness check of the training process, so a killed run reads
"interrupted" at once instead of "running" until a staleness timeout. `resolve(source)` turns
whatever a user typed where a model is expected into a `ModelSource`.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import UserError

CONFIG = "config.json"
EVENTS = "events.jsonl"
CHECKPOINT = Path("checkpoints") / "last.pt"
PROCESS = "process.json"  # pid and host of the process training this run, while it trains
STALE_S = 120.0  # no liveness record (another host): a "running" run silent this long died

TERMINAL = ("done", "stopped", "error")


class RunDir:
    """runs/<name>/: config.json, events.jsonl, checkpoints/last.pt, process.json, eval/, ..."""

    def __init__(self, path: str | Path | RunDir):
        self.path = Path(path.path if isinstance(path, RunDir) else path).expanduser()

    @classmethod
    def new(cls, method: str, root: str | Path = "runs") -> RunDir:
        """A fresh run folder name: <method>-<date>-<time>."""
        return cls(Path(root) / f"{method}-{time.strftime('%Y%m%d-%H%M%S')}")

    @classmethod
    def of(cls, source: str | Path | None) -> RunDir | None:
        """The run a model source belongs to (its folder, or a checkpoint inside it), if any."""
        if source is None:
            return None
        p = Path(str(source)).expanduser()
        for cand in (p, p.parent.parent if p.parent.name == "checkpoints" else None):
            if cand is not None and cand.is_dir() and (cand / CONFIG).is_file():
                return cls(cand)
        return None

    @staticmethod
    def find(root: str | Path) -> list[RunDir]:
        """Run folders directly under root, newest first."""
        root = Path(root).expanduser()
        if not root.is_dir():
            return []
        runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and RunDir(p).exists()]
        return sorted(runs, key=RunDir.mtime, reverse=True)

    resolve = staticmethod(lambda source: resolve(source))

    # ---- paths ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def events_path(self) -> Path:
        return self.path / EVENTS

    @property
    def checkpoint_path(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def process_path(self) -> Path:
        return self.path / PROCESS

    def subdir(self, name: str) -> Path:
        """exports/, figures/, eval/: created on first use."""
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (RunDir, str, Path)):
            return _same(self.path, Path(other))
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self.path.resolve()))

    def mtime(self) -> float:
        for f in (self.events_path, self.config_path, self.path):
            try:
                return f.stat().st_mtime
            except OSError:
                continue
        return 0.0

    # ---- contents ------------------------------------------------------------------------
    def exists(self) -> bool:
        """A run lives here (it has a config or has logged events)."""
        return self.config_path.is_file() or self.events_path.is_file()

    def has_checkpoint(self) -> bool:
        return self.checkpoint_path.is_file()

    def can_resume(self) -> bool:
        return self.has_checkpoint() and self.config_path.is_file()

    def check_new(self) -> None:
        """The trainer and the GUI refuse to start a second run in a folder that holds one."""
        if self.has_checkpoint() or self.exists():
            raise UserError(
                f"{self.path}: already holds a run; resume it with --resume {self.path} or choose another --run-dir"
            )

    def config(self):
        """The run's TrainConfig."""
        from engine.config import TrainConfig

        if not self.config_path.is_file():
            raise UserError(f"{self.path}: not a run directory (no {CONFIG})")
        return TrainConfig.load(self.config_path)

    def config_dict(self) -> dict[str, Any]:
        """config.json as a dict; {} when missing or unreadable (for listings, never fails)."""
        try:
            out = json.loads(self.config_path.read_text())
        except (OSError, ValueError):
            return {}
        return out if isinstance(out, dict) else {}

    def save_config(self, cfg) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        cfg.save(self.config_path)

    def method(self) -> str:
        return str(self.config_dict().get("method", ""))

    def events(self) -> list[dict[str, Any]]:
        from engine.events import read_events

        return read_events(self.events_path)

    def state(self) -> RunState:
        return RunState.from_events(self.events())

    def status(self) -> str:
        return self.state().status(self.alive())

    def checkpoint(self, map_location: Any = "cpu") -> dict[str, Any]:
        from engine.checkpoint import load_checkpoint

        if not self.has_checkpoint():
            raise UserError(f"{self.path}: no {CHECKPOINT.as_posix()} in this run directory")
        return load_checkpoint(self.checkpoint_path, map_location=map_location)

    def write_result(self, name: str, result: dict[str, Any]) -> Path:
        """eval/<name>.json, written atomically."""
        from engine.checkpoint import atomic_write

        out = self.subdir("eval") / f"{name}.json"
        atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2)))
        return out

    def summary(self) -> dict[str, Any]:
        """What a runs table shows: method, backbone, data, progress, last loss, status words."""
        cfg = self.config_dict()
        state = self.state()
        return {
            "name": self.name,
            "method": cfg.get("method", "?"),
            "backbone": cfg.get("backbone", "?"),
            "data": cfg.get("data", ""),
            "step": state.step,
            "total_steps": state.total_steps,
            "loss": state.loss,
            "message": state.message,
            "state": state,
        }

    # ---- liveness --------------------------------------------------------------------------
    def mark_alive(self) -> None:
        """Written by the training process when it starts; removed when it ends."""
        from engine.checkpoint import atomic_write

        rec = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _proc_start(os.getpid()),
        }
        atomic_write(self.process_path, lambda tmp: Path(tmp).write_text(json.dumps(rec)))

    def clear_alive(self) -> None:
        try:
            rec = json.loads(self.process_path.read_text())
            if rec.get("pid") == os.getpid():
                self.process_path.unlink()
        except (OSError, ValueError):
            pass

    def alive(self) -> bool | None:
        """True/False when this machine can tell whether the training process lives; None when
        it cannot (no record, or the run trains on another host)."""
        try:
            rec = json.loads(self.process_path.read_text())
            pid, host = int(rec["pid"]), str(rec["host"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if host != socket.gethostname():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, another user's
        started = rec.get("started")
        now = _proc_start(pid)
        return not (started and now and started != now)  # a recycled pid is another process


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a recycled pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


@dataclass
class RunState:
    """A run's progress and phase folded from its events; `status` adds the liveness check.

    phase: new | running | done | stopped | failed. status: those, with running split into
    running / interrupted (the process is gone, or silent for STALE_S where we cannot tell)."""

    phase: str = "new"
    step: int = 0
    total_steps: int = 0
    message: str = ""
    last_time: float = 0.0
    loss: float | None = None
    precision: str = ""
    precision_reason: str = ""  # why: "requested", or the CPU probe's measured speed-ups
    compiled: bool = False  # the backbone runs through torch.compile (engine/compile.py)
    compile_reason: str = ""

    @classmethod
    def from_events(cls, events: list[dict[str, Any]]) -> RunState:
        st = cls()
        for e in events:
            st.add(e)
        return st

    def add(self, e: dict[str, Any]) -> None:
        t = e.get("type", "")
        self.last_time = float(e.get("time", self.last_time) or self.last_time)
        if t == "start":
            self.phase, self.message = "running", ""
            self.total_steps = int(e.get("total_steps", self.total_steps) or 0)
            self.step = int(e.get("step", 0) or 0)
            self.precision = str(e.get("precision", self.precision) or "")
            self.precision_reason = str(e.get("precision_reason", "") or "")
        if t in ("start", "compile"):  # "compile": the first step's compile failed, eager since
            self.compiled = bool(e.get("compiled", False))
            self.compile_reason = str(e.get("compile_reason", "") or "")
        elif t in ("plan", "replan"):  # a time budget sets the schedule's length
            self.total_steps = int(e.get("planned_steps", self.total_steps) or self.total_steps)
        elif t in ("step", "checkpoint"):
            self.phase = "running"
            self.step = int(e.get("step", self.step) or self.step)
            loss = (e.get("losses") or {}).get("loss")
            self.loss = float(loss) if loss is not None else self.loss
        elif t in TERMINAL:
            self.phase = {"done": "done", "stopped": "stopped", "error": "failed"}[t]
            self.step = int(e.get("step", self.step) or self.step)
            self.message = str(e.get("message", ""))

    def status(self, alive: bool | None = None, now: float | None = None) -> str:
        """new | running | done | stopped | failed | interrupted."""
        if self.phase != "running":
            return self.phase
        if alive is None:
            alive = (now or time.time()) - self.last_time < STALE_S
        return "running" if alive else "interrupted"


# ---- model sources -------------------------------------------------------------------------
NAMED_SCHEMES: tuple[str, ...] = (  # engine/pretrained.py loads them
    *("torchvision", "timm", "open_clip", "dino", "dinov2", "mae", "mocov3", "ibot"),
    *("solo", "lightly", "vissl"),
)
_SCHEME = re.compile(r"^([a-z][a-z0-9_]*):(.+)$")


@dataclass(frozen=True)
class ModelSource:
    """What a `--checkpoint` / `--model` string names.

    kind: "checkpoint" (a .pt/.pth file: ours, or a plain state dict), "export" (our
    .safetensors), or "named" (scheme:name[:FILE], e.g. dino:vits16, torchvision:resnet50)."""

    text: str
    kind: str
    path: Path | None = None
    run: RunDir | None = None
    scheme: str = ""
    name: str = ""

    def __str__(self) -> str:
        return self.text


def resolve(source: str | Path | RunDir | ModelSource) -> ModelSource:
    """A run directory, a checkpoint or export file, or a named model -> ModelSource."""
    if isinstance(source, ModelSource):
        return source
    text = str(source)
    m = _SCHEME.match(text)
    if m and m.group(1) in NAMED_SCHEMES and not Path(text).exists():
        name, _, file = m.group(2).partition(":")
        return ModelSource(
            text, "named", Path(file).expanduser() if file else None, scheme=m.group(1), name=name
        )
    path = Path(text).expanduser()
    if path.is_dir():
        run = RunDir(path)
        if not run.has_checkpoint():
            what = "a run directory without" if run.exists() else "not a run directory: no"
            raise UserError(f"{text}: {what} {CHECKPOINT.as_posix()}")
        return ModelSource(text, "checkpoint", run.checkpoint_path, run)
    if not path.is_file():
        known = ", ".join(f"{s}:NAME" for s in NAMED_SCHEMES)
        raise UserError(f"{text}: no such run directory or model file (or a named model: {known})")
    kind = "export" if path.suffix == ".safetensors" else "checkpoint"
    return ModelSource(text, kind, path, RunDir.of(path))
