"""The trainer's promises: exact resume after SIGKILL, DDP equals one process, NaN guard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine.config import TrainConfig
from engine.errors import UserError
from engine.events import read_events
from engine.methods.base import Method
from engine.run import RunDir
from engine.trainer import EpochBatchSampler, Trainer, TrainingError

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--method",
    "simclr",
    "--backbone",
    "resnet18",
    "--image-size",
    "16",
    "--batch-size",
    "12",
    "--num-workers",
    "0",
    "--log-every",
    "1",
    "--deterministic",
    "true",
    "--proj-hidden-dim",
    "32",
    "--proj-dim",
    "16",
]


def selfsup(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        **kw,
    )


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def step_losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["losses"]["loss"] for e in read_events(run_dir) if e["type"] == "step"}


def test_sampler_splits_global_batch_between_ranks():
    one = list(EpochBatchSampler(20, 8, seed=3))
    two = [list(EpochBatchSampler(20, 8, seed=3, rank=r, world=2)) for r in range(2)]
    assert [a + b for a, b in zip(*two)] == one
    s = EpochBatchSampler(20, 8, seed=3)
    s.set_position(0, 1)
    assert list(s) == one[1:]


def test_sigkill_then_resume_matches_uninterrupted(shapes_dir, tmp_path):
    steps = "24"
    ref = tmp_path / "ref"
    r = selfsup(
        "train",
        "--data",
        str(shapes_dir),
        "--run-dir",
        str(ref),
        "--max-steps",
        steps,
        "--checkpoint-every",
        "6",
        *TINY,
    )
    assert r.returncode == 0, r.stderr[-2000:]

    run = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "app",
        "train",
        "--data",
        str(shapes_dir),
        "--run-dir",
        str(run),
        "--max-steps",
        steps,
        "--checkpoint-every",
        "6",
        *TINY,
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline and not any(e["type"] == "checkpoint" for e in read_events(run)):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert RunDir(run).status() == "interrupted"  # the process record names a dead pid
    killed_at = max(step_losses(run))
    assert killed_at < int(steps), "run finished before it could be killed"
    r = selfsup("train", "--resume", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    assert RunDir(run).status() == "done" and not RunDir(run).process_path.exists()
    ref_losses, resumed = step_losses(ref), step_losses(run)
    assert max(resumed) == int(steps)
    for step in range(7, int(steps) + 1):  # every step after the checkpoint replays exactly
        assert resumed[step] == pytest.approx(ref_losses[step], rel=1e-5, abs=1e-6), step


@pytest.mark.skipif(sys.platform == "win32", reason="gloo process group test")
def test_two_process_ddp_equals_one_process(shapes_dir, tmp_path):
    # NCHW on both sides: oneDNN's channels_last convolutions pick batch-size dependent kernels.
    common = [
        "train",
        "--data",
        str(shapes_dir),
        "--max-steps",
        "3",
        "--channels-last",
        "off",
        *TINY,
    ]
    one = tmp_path / "one"
    r = selfsup(*common, "--run-dir", str(one))
    assert r.returncode == 0, r.stderr[-2000:]
    two = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(free_port()),
            "--tee",
            "3",
            "-m",
            "app",
            *common,
            "--run-dir",
            str(two),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-8000:]  # --tee 3: both ranks' output
    a, b = step_losses(one), step_losses(two)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    # Step 1 is the same computation up to float summation order; later steps add rounding
    # differences of the gradient and batch-norm all-reduces, which SGD then carries along.
    assert b[1] == pytest.approx(a[1], rel=1e-5)
    for s in a:
        assert b[s] == pytest.approx(a[s], rel=1e-3), (s, a, b)


class _NaNAtStep3(Method):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(4, 2)
        self.calls = 0

    def forward(self, batch):
        self.calls += 1
        loss = self.backbone(batch["x"]).pow(2).mean()
        return {"loss": loss * float("nan") if self.calls == 3 else loss}


class _Vectors(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        return {"x": torch.full((4,), float(i))}


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    cfg = TrainConfig(
        data="mem",
        method="test",
        max_steps=10,
        batch_size=8,
        num_workers=0,
        checkpoint_every=1,
        log_every=1,
    )
    trainer = Trainer(cfg, _NaNAtStep3(), _Vectors(), tmp_path / "run")
    with pytest.raises(TrainingError, match="at step 3"):
        trainer.fit()
    events = read_events(tmp_path / "run")
    assert events[-1]["type"] == "error" and "step 3" in events[-1]["message"]
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["step"] == 2


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    cfg = TrainConfig(data="mem", method="test", max_steps=2, batch_size=8, num_workers=0)
    with pytest.raises(UserError, match="nothing to resume"):
        Trainer(cfg, _NaNAtStep3(), _Vectors(), tmp_path / "none").fit(resume=True)


def test_config_json_round_trip(tmp_path):
    cfg = TrainConfig(data="x", method_args={"temperature": 0.2})
    cfg.optim.lr = 0.3
    cfg.save(tmp_path / "config.json")
    back = TrainConfig.load(tmp_path / "config.json")
    assert back == cfg
    assert json.loads((tmp_path / "config.json").read_text())["optim"]["lr"] == 0.3
