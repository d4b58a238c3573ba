"""torch.compile of the backbone: the auto policy, a real compiled step matching eager, and the
clean fallback to eager when compiling fails (engine/compile.py)."""

from __future__ import annotations

import pytest
import torch

from engine.compile import compile_decision
from engine.config import TrainConfig
from engine.events import read_events
from engine.methods.base import Method
from engine.precision import Precision
from engine.run import RunState
from engine.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class Tiny(Method):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = torch.nn.Sequential(
            torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
        )

    def forward(self, batch):
        return {"loss": self.backbone(batch["x"]).float().pow(2).mean()}


DATA = [{"x": torch.linspace(-1, 1, 4) * (i + 1)} for i in range(8)]


def fit(tmp_path, name: str, compile: str, precision: str = "fp32", steps: int = 2) -> Trainer:
    cfg = TrainConfig(
        data="m", method="t", max_steps=steps, batch_size=4, num_workers=0,
        precision=precision, compile=compile,
    )  # fmt: skip
    trainer = Trainer(cfg, Tiny(), DATA, tmp_path / name)
    trainer.fit()
    return trainer


def test_auto_compiles_only_under_autocast_and_on_one_process(monkeypatch):
    monkeypatch.delenv("SELFSUP_COMPILE", raising=False)
    bf16, fp32 = Precision("bf16", "probe"), Precision("fp32", "probe")
    assert compile_decision("auto", "cpu", fp32, False)[0] is False
    assert compile_decision("auto", "cpu", bf16, True)[0] is False  # DDP stays eager
    assert compile_decision("auto", "cuda", Precision("fp16", "x"), False)[0] is True
    assert compile_decision("on", "cpu", fp32, True) == (True, "requested")
    assert compile_decision("off", "cpu", bf16, False)[0] is False
    assert compile_decision("auto", "cpu", bf16, False, total_steps=120)[0] is False  # the demo
    assert compile_decision("auto", "cpu", bf16, False, total_steps=10, time_budget_min=15)[0]
    assert not compile_decision("auto", "cpu", bf16, False, time_budget_min=2)[0]
    monkeypatch.setenv("SELFSUP_COMPILE", "off")  # the suite's site-wide switch
    assert compile_decision("auto", "cpu", bf16, False) == (False, "SELFSUP_COMPILE")
    assert compile_decision("on", "cpu", bf16, False)[0] is True  # an explicit request wins


def test_a_failed_compile_falls_back_to_eager_and_says_so(tmp_path, monkeypatch):
    def broken(module):  # what a missing compiler or an unsupported op looks like
        def fail(*a, **k):
            raise RuntimeError("inductor: C++ compile failed")

        module._compiled_call_impl = fail

    monkeypatch.setattr("engine.trainer.compile_module", broken)
    eager = fit(tmp_path, "eager", "off")
    fallback = fit(tmp_path, "fallback", "on")
    assert fallback.method.backbone._compiled_call_impl is None and not fallback.compiled
    events = read_events(tmp_path / "fallback")
    assert next(e for e in events if e["type"] == "start")["compiled"] is True
    failed = next(e for e in events if e["type"] == "compile")
    assert "C++ compile failed" in failed["compile_reason"] and failed["compiled"] is False
    state = RunState.from_events(events)
    assert state.phase == "done" and not state.compiled
    for a, b in zip(eager.method.parameters(), fallback.method.parameters()):
        assert torch.equal(a, b)  # the failed attempt left no trace in the weights


def test_a_compiled_backbone_trains_like_the_eager_one(tmp_path):
    eager = fit(tmp_path, "eager", "off")
    compiled = fit(tmp_path, "compiled", "on")
    assert compiled.compiled, compiled.compile_reason
    assert compiled.method.backbone._compiled_call_impl is not None
    assert set(compiled.method.state_dict()) == set(eager.method.state_dict())  # keys unchanged
    for a, b in zip(eager.method.parameters(), compiled.method.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    start = next(e for e in read_events(tmp_path / "compiled") if e["type"] == "start")
    assert start["compiled"] is True and start["compile_reason"] == "requested"
