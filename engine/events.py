"""events.jsonl: the one record of a run (or of any long job) that the CLI, the GUI and tests read.

Record types: start, step, checkpoint, progress (jobs other than training), and one terminal
record: done, stopped (a user's stop; resumable) or error. `engine.run.RunState` folds them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def events_file(path: str | Path) -> Path:
    """A run directory's events.jsonl, or the .jsonl file itself."""
    p = Path(path)
    return p if p.suffix == ".jsonl" else p / "events.jsonl"


class EventLog:
    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = events_file(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, type: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"type": type, "time": time.time(), **fields}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()


class EventTail:
    """Reads only the records appended since the last poll (complete lines; a half-written last
    line waits for the next poll), so a GUI can follow a long run cheaply."""

    def __init__(self, path: str | Path):
        self.path = events_file(path)
        self.offset = 0
        self._partial = b""

    def poll(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.offset:  # file replaced: start over
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        self.offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a run directory or events file."""
    return EventTail(path).poll()


class JobEvents(EventLog):
    """The events stream of a long job other than training (`selfsup propagate`, `index`,
    `overlay` with --events FILE): throttled `progress` records, then `done` with the result or
    `error` with the one-line message. The app follows it with an EventTail, as it does a run."""

    def __init__(self, path: str | Path, min_interval_s: float = 0.1):
        super().__init__(path)
        self.min_interval_s = min_interval_s
        self._last: tuple[float, str] = (0.0, "")

    def progress(self, done: int, total: int, stage: str = "", **fields: Any) -> None:
        now = time.monotonic()
        t, last_stage = self._last
        if done < total and stage == last_stage and now - t < self.min_interval_s:
            return
        self._last = (now, stage)
        self.write("progress", done=int(done), total=int(total), stage=stage, **fields)
