"""One progress callback for the CLI's long jobs: a tqdm bar on the terminal and, with
`--events FILE`, progress records that the desktop app follows."""

from __future__ import annotations

import time
from typing import Any

from engine.events import JobEvents


class Progress:
    """Called as progress(done, total, stage="") by video.pipeline, multimodal.index, ...;
    a new stage starts a new bar."""

    def __init__(self, events: JobEvents | None = None, unit: str = "frame", bar: bool = True):
        self.events, self.unit, self.show_bar = events, unit, bar
        self.stage, self._bar, self._t0 = None, None, time.perf_counter()

    def __call__(self, done: int, total: int, stage: str = "") -> None:
        if stage != self.stage:
            self.close()
            self.stage, self._t0 = stage, time.perf_counter()
        rate = done / max(1e-9, time.perf_counter() - self._t0)
        if self.show_bar:
            if self._bar is None:
                from tqdm import tqdm

                self._bar = tqdm(total=total, unit=self.unit, dynamic_ncols=True, desc=stage)
            self._bar.total = total
            self._bar.update(done - self._bar.n)
        if self.events is not None:
            self.events.progress(done, total, stage, rate=rate)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
