"""What the Train page plots for one run, accumulated from its events.

Qt-free on purpose (the app's model layer): the page polls `engine.events.EventTail` on a timer
and redraws; the run's status comes from `engine.run.RunState`, the same as for the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.run import RunState


@dataclass
class RunCurves:
    """Loss and learning-rate curves, speed and ETA, plus the run's folded state."""

    losses: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    lr: list[tuple[int, float]] = field(default_factory=list)
    images_per_s: float = 0.0
    eta_s: float = 0.0
    state: RunState = field(default_factory=RunState)

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def total_steps(self) -> int:
        return self.state.total_steps

    def add(self, events: list[dict[str, Any]]) -> None:
        for e in events:
            self.state.add(e)
            t = e.get("type")
            if t == "start":  # a resumed run re-logs from its checkpoint: drop points past it
                self._truncate(self.state.step)
            elif t == "step":
                s = int(e["step"])
                for k, v in (e.get("losses") or {}).items():
                    self.losses.setdefault(k, []).append((s, float(v)))
                if e.get("lr") is not None:
                    self.lr.append((s, float(e["lr"])))
                self.images_per_s = float(e.get("images_per_s") or 0.0)
                self.eta_s = float(e.get("eta_s") or 0.0)
            elif t == "done":
                self.eta_s = 0.0

    def _truncate(self, step: int) -> None:
        self.losses = {k: [p for p in v if p[0] <= step] for k, v in self.losses.items()}
        self.lr = [p for p in self.lr if p[0] <= step]


def format_duration(s: float) -> str:
    s = max(0, int(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
