"""Tiny training runs of one method on the shapes sample, shared by the method tests."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from engine.build import apply_method_defaults
from engine.events import read_events


def tiny_run(
    method: str,
    data: Path,
    run: Path,
    steps: int,
    method_args: dict[str, Any] | None = None,
    optim: dict[str, Any] | None = None,
    **train: Any,
):
    """A deterministic 16 px, batch-12 run that logs every step and checkpoints every 2."""
    values = dict(data=str(data), image_size=16, batch_size=12, max_steps=steps, num_workers=0)
    values |= dict(run_dir=str(run), log_every=1, checkpoint_every=2, deterministic=True)
    values |= {**train, "method_args": dict(method_args or {})}
    return apply_method_defaults(values, {"warmup_epochs": 0.0, **(optim or {})}, method)


def step_values(run: Path, key: str = "loss") -> dict[int, float]:
    return {e["step"]: e["losses"][key] for e in read_events(run) if e["type"] == "step"}


def first_and_last_losses(run: Path, n: int = 3) -> tuple[float, float]:
    """The mean loss of a run's first n steps and of its last n steps."""
    losses = step_values(run)
    steps = sorted(losses)
    return tuple(sum(losses[s] for s in part) / n for part in (steps[:n], steps[-n:]))


def sigterm_at(step: int):
    """A trainer callback that stops the run at `step` as the app's Stop button does."""

    def callback(event: dict) -> None:
        if event["type"] == "step" and event["step"] == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return callback


def assert_stop_and_resume_replay(make_cfg, tmp: Path, stop: int = 2) -> None:
    """Stopped at `stop` (SIGTERM, as the app's Stop button) and resumed: every later step's loss
    equals an uninterrupted run's. make_cfg(run_dir) -> TrainConfig."""
    import pytest
    import torch

    from engine.build import resume, train

    for name, callbacks in (("ref", ()), ("cut", (sigterm_at(stop),))):
        torch.manual_seed(0)
        train(make_cfg(tmp / name), callbacks=callbacks)
    assert read_events(tmp / "cut")[-1]["type"] == "stopped"
    resume(tmp / "cut")
    ref, cut = step_values(tmp / "ref"), step_values(tmp / "cut")
    assert sorted(cut) == sorted(ref)
    for s in range(stop + 1, max(ref) + 1):
        assert cut[s] == pytest.approx(ref[s], rel=1e-5), (s, cut, ref)
