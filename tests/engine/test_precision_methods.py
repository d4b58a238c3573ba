"""bf16 autocast and fp32 agree on the first step's loss for every joint-embedding method, and
the loss stays a float32 tensor under autocast (engine.losses.fp32)."""

from __future__ import annotations

import pytest
import torch

from engine.backbones import build_backbone
from tests.engine.test_methods import TINY_ARGS, _build, shapes_batches  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

TOLERANCE = 0.05  # relative: bf16 keeps 8 bits of mantissa in the matmuls and convolutions


@pytest.mark.parametrize("name", list(TINY_ARGS))
def test_bf16_first_step_loss_matches_fp32(name, shapes_batches):  # noqa: F811 (fixture)
    images, labels = shapes_batches
    batch = {"image": images[:12], "label": labels[:12]}
    torch.manual_seed(0)
    method = _build(name, build_backbone("resnet18", 16)).train()
    losses = {}
    for precision in ("fp32", "bf16"):
        state = {k: v.clone() for k, v in method.state_dict().items()}  # BN stats, queues
        method.set_step_context(0, 0)
        torch.manual_seed(1)
        ctx = (
            torch.autocast("cpu", dtype=torch.bfloat16)
            if precision == "bf16"
            else torch.autocast("cpu", enabled=False)
        )
        with ctx:
            out = method(batch)
        assert out["loss"].dtype == torch.float32, (name, precision)
        losses[precision] = out["loss"].item()
        method.load_state_dict(state)
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=TOLERANCE), (name, losses)


def test_trainer_logs_its_precision_and_why(tmp_path):
    from engine.config import TrainConfig
    from engine.events import read_events
    from engine.methods.base import Method
    from engine.trainer import Trainer

    class Linear(Method):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Linear(4, 2)

        def forward(self, batch):
            return {"loss": self.backbone(batch["x"]).pow(2).mean()}

    data = [{"x": torch.full((4,), float(i))} for i in range(8)]
    cfg = TrainConfig(
        data="m", method="t", max_steps=1, batch_size=4, num_workers=0, precision="bf16"
    )
    Trainer(cfg, Linear(), data, tmp_path / "r").fit()
    start = next(e for e in read_events(tmp_path / "r") if e["type"] == "start")
    assert start["precision"] == "bf16" and start["precision_reason"] == "requested"
