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

from engine import augment
from engine.config import TrainConfig
from engine.errors import UserError
from engine.events import read_events
from engine.methods.base import Method
from engine.run import RunDir
from engine.trainer import EpochBatchSampler, Trainer, TrainingError, steps_that_fit

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


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")
def test_stop_sent_to_the_whole_process_group_stops_cleanly_with_loader_workers(
    shapes_dir, tmp_path
):
    """Ctrl-C in a terminal (or `kill -- -PGID`, `pkill -f`) reaches the DataLoader workers too;
    they must not die and crash the run: it stops after its step with a checkpoint."""
    run = tmp_path / "group"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "app", "train", "--data", str(shapes_dir), "--run-dir", str(run)]
    cmd += ["--max-steps", "200", *TINY, "--num-workers", "1"]  # the last flag wins
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any(e["type"] == "step" for e in read_events(run)):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert read_events(run)[-1]["type"] == "stopped"
    assert RunDir(run).status() == "stopped" and RunDir(run).has_checkpoint()


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
        "--precision",  # one process with 2 threads and two with 1 may measure bf16 differently
        "fp32",
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


class _RecordsBatch(Method):
    """Records what reaches forward: the trainer must hand the loader's "hw" to the method."""

    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(2, 1)
        self.seen: list[torch.Tensor] = []

    def forward(self, batch):
        self.seen.append(batch["hw"].clone())
        views = self.make_views(batch, [augment.ViewSpec(size=8)])
        return {"loss": self.backbone.weight.sum() * 0 + views[0].mean()}


def test_trainer_hands_image_sizes_to_the_method(tmp_path):
    from PIL import Image

    from engine.registry import build_dataset

    for i, (w, h) in enumerate([(30, 10), (10, 40), (24, 24), (50, 20)]):
        (tmp_path / "imgs").mkdir(exist_ok=True)
        Image.new("RGB", (w, h), (i * 40, 0, 0)).save(tmp_path / "imgs" / f"{i}.png")
    cfg = TrainConfig(
        data=str(tmp_path / "imgs"), method="test", image_size=16, max_steps=2, batch_size=4,
        num_workers=0, log_every=1,
    )  # fmt: skip
    method = _RecordsBatch()
    Trainer(cfg, method, build_dataset("images", cfg), tmp_path / "run").fit()
    sizes = {tuple(r) for b in method.seen for r in b.tolist()}
    assert sizes == {(10, 30), (40, 10), (24, 24), (20, 50)}


class _TinyEMA(Method):
    """An MLP and its EMA target whose momentum follows the schedule's total_steps (as BYOL).
    sleep: seconds added to each step, so its time does not swing with the machine's load."""

    def __init__(self, sleep: float = 0.0):
        super().__init__()
        self.sleep = sleep
        from engine.methods.base import frozen_copy

        self.backbone = torch.nn.Sequential(  # tiny: with a sleep, steps take a steady time
            torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32)
        )
        self.target = frozen_copy(self.backbone)
        self.momentum = 0.0

    def forward(self, batch):
        time.sleep(self.sleep)
        x = batch["x"]
        with torch.no_grad():
            t = self.target(x.flip(1))
        return {"loss": (self.backbone(x) - t).pow(2).mean()}

    def on_step_end(self, step, total_steps):
        from engine.methods.base import cosine_momentum, ema_update

        self.momentum = cosine_momentum(0.9, step, total_steps)
        ema_update(self.target, self.backbone, self.momentum)


class _Noise(torch.utils.data.Dataset):
    def __len__(self):
        return 256

    def __getitem__(self, i):
        return {"x": torch.randn(32, generator=torch.Generator().manual_seed(i))}


def _budget_cfg(seconds: float, **kw) -> TrainConfig:
    cfg = TrainConfig(
        data="mem", method="test", time_budget=seconds / 60, batch_size=32, num_workers=0,
        log_every=25, checkpoint_every=10**6, **kw,
    )  # fmt: skip
    cfg.optim.lr, cfg.optim.min_lr_ratio, cfg.optim.warmup_epochs = 0.4, 0.1, 100.0
    return cfg


def test_time_budget_plans_the_schedule_and_ends_on_time(tmp_path, one_thread):
    from engine.optim import lr_at

    budget = 4.0
    cfg = _budget_cfg(budget)
    method = _TinyEMA(sleep=0.04)
    t0 = time.perf_counter()
    out = Trainer(cfg, method, _Noise(), tmp_path / "run").fit()
    elapsed = time.perf_counter() - t0
    events = read_events(tmp_path / "run")
    (plan,) = [e for e in events if e["type"] == "plan"]
    assert 0.75 * budget < elapsed < budget + 1.0, (elapsed, plan, events[-1])
    assert plan["measured_steps"] >= 3 and plan["s_per_step"] > 0 and plan["planned_steps"] > 30
    assert (
        abs(plan["s_per_step"] * plan["planned_steps"] - (budget - plan["setup_s"])) < 0.2 * budget
    )
    # steady steps: a re-plan (when the plan was more than 5% off, on a busy machine) is small
    final = ([plan] + [e for e in events if e["type"] == "replan"])[-1]
    n = final["planned_steps"]
    assert abs(n - plan["planned_steps"]) < 0.3 * plan["planned_steps"]
    assert final["warmup_steps"] == int(0.1 * n)  # 100 epochs of warm-up capped at 10% of the run
    done = events[-1]
    assert done["type"] == "done" and done["step"] == out["step"]
    steps = [e for e in events if e["type"] == "step"]
    peak = 0.4 * 32 / 256
    if done["budget_spent"]:  # steps ran slower than timed (a busy machine): it ended on time
        assert 0.8 * n <= done["step"] < n and steps[-1]["lr"] > 0.1 * peak
    else:  # the plan held: the schedule ran to its end
        assert done["step"] == n and steps[-1]["step"] == n
        assert steps[-1]["lr"] == lr_at(n - 1, n, final["warmup_steps"], peak, 0.1)
        assert abs(steps[-1]["lr"] - 0.1 * peak) < 3e-3 * peak  # the cosine floor
        assert method.momentum == 1.0  # the EMA schedule ended too
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert config["max_steps"] == n == ck["config"]["max_steps"] == ck["total_steps"]


class _SlowStart(_TinyEMA):
    """The first `slow` steps take 3x longer (as a multi-crop ViT's first steps do)."""

    def __init__(self, sleep: float, slow: int):
        super().__init__(sleep)
        self.calls, self.slow = 0, slow

    def forward(self, batch):
        self.calls += 1
        if self.calls <= self.slow:
            time.sleep(2 * self.sleep)
        return super().forward(batch)


def test_budget_run_replans_from_its_own_pace(tmp_path, one_thread):
    """The plan times steps that run 3x slower than the rest; at 5% of the run the trainer
    re-plans from the real pace, so the budget is spent instead of a third of it, and again at
    25% and 50% from the steps since the last re-plan."""
    budget = 3.0
    out = Trainer(_budget_cfg(budget), _SlowStart(0.02, slow=5), _Noise(), tmp_path / "run").fit()
    events = read_events(tmp_path / "run")
    (plan,) = [e for e in events if e["type"] == "plan"]
    replan, *later = [e for e in events if e["type"] == "replan"]
    assert plan["s_per_step"] > 0.05  # timed on the slow steps
    assert replan["previous_steps"] == plan["planned_steps"]
    assert replan["planned_steps"] > 2 * plan["planned_steps"]
    assert replan["s_per_step"] < 0.035
    final = ([replan] + later)[-1]["planned_steps"]  # later re-plans (25%, 50%) fine-tune it
    assert abs(final - replan["planned_steps"]) < 0.3 * replan["planned_steps"]
    assert out["planned_steps"] == final >= out["step"] > 0.8 * final
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["max_steps"] == final


def test_steps_that_fit_counts_every_epochs_start_work():
    """100 s left, 0.1 s steps, 10 steps an epoch, 5 s of work at each epoch's start after the
    first: n steps cost 0.1 n + 5 (ceil(n / 10) - 1) s; 170 cost 97 s, 171 cost 102.1 s. The
    fixed-point iteration it replaces returned 1 here."""
    n = steps_that_fit(100.0, 0.1, 5.0, 0.0, 1.0, steps_per_epoch=10, checkpoint_every=10**9)
    assert n == 170
    # a checkpoint every 50 steps at 2 s each: n = 150 costs 15 + 70 + 6 = 91; 160 costs 16 +
    # 75 + 6 = 97; 161 costs 16.1 + 80 + 6 = 102.1
    assert steps_that_fit(100.0, 0.1, 5.0, 2.0, 1.0, 10, 50) == 160
    assert steps_that_fit(100.0, 0.1, 0.0, 0.0, 0.5, 10, 10**9) == 500  # slowed by 1 / margin
    assert steps_that_fit(0.01, 0.1, 5.0, 0.0, 1.0, 10, 10**9) == 1  # always at least one


class _SlowEpochStart(_TinyEMA):
    """Each epoch starts with `epoch_s` seconds of work (as DeepCluster's clustering)."""

    def __init__(self, sleep: float, epoch_s: float):
        super().__init__(sleep)
        self.epoch_s = epoch_s

    def on_epoch_start(self, epoch, trainer):
        time.sleep(self.epoch_s)


def test_budget_plan_with_costly_epoch_starts_fills_the_budget(tmp_path, one_thread):
    """8 steps an epoch of 0.02 s and 0.3 s at every epoch's start: a 3 s budget holds about 6
    epochs. The plan used to swing between 1 and 139 steps and planned 1 (a 15-minute
    DeepCluster run trained one step)."""
    budget = 3.0
    t0 = time.perf_counter()
    out = Trainer(_budget_cfg(budget), _SlowEpochStart(0.02, 0.3), _Noise(), tmp_path / "r").fit()
    elapsed = time.perf_counter() - t0
    events = read_events(tmp_path / "r")
    (plan,) = [e for e in events if e["type"] == "plan"]
    assert plan["epoch_start_s"] >= 0.3
    assert 16 <= plan["planned_steps"] <= 100, plan
    # the re-plans time the steps without the epoch starts (counted in both, they shrank the
    # schedule and the run ended at about half its budget)
    replans = [e for e in events if e["type"] == "replan"]
    # (against the plan's own pace, timed under the same load: with the epoch starts inside,
    # a re-plan's pace is that plus 0.3 s / 8 steps = 0.0375 s)
    assert all(e["s_per_step"] < plan["s_per_step"] + 0.02 for e in replans), (plan, replans)
    assert elapsed > 0.75 * budget and out["step"] >= 16, (elapsed, out)


def test_budget_run_stopped_and_resumed_equals_the_plain_planned_run(tmp_path, one_thread):
    """The timing steps leave no trace (weights, optimiser, buffers put back) and a resumed run
    keeps the planned schedule: stop + resume == an uninterrupted run of the planned length."""
    cfg = _budget_cfg(2.0)
    cfg.optim.warmup_epochs = 0.0  # the same warm-up with and without a budget

    def stop_at_3(event):  # before the first re-plan (step >= 5), which would change the total
        if event["type"] == "step" and event["step"] == 3:
            trainer.stop_requested = True

    cfg.log_every = 1
    torch.manual_seed(0)
    trainer = Trainer(cfg, _TinyEMA(sleep=0.005), _Noise(), tmp_path / "a", callbacks=(stop_at_3,))
    assert trainer.fit()["stopped"] and trainer.step == 3
    n = trainer.total_steps
    time.sleep(2.5)  # past the original deadline: a resumed run still finishes its plan
    cfg_a = RunDir(tmp_path / "a").config()
    assert cfg_a.max_steps == n and cfg_a.time_budget == cfg.time_budget
    torch.manual_seed(1)  # the weights come from the checkpoint
    resumed = Trainer(cfg_a, _TinyEMA(), _Noise(), tmp_path / "a")
    assert resumed.fit(resume=True)["step"] == n
    plain_cfg = _budget_cfg(0.0, max_steps=n)
    plain_cfg.optim.warmup_epochs = 0.0
    torch.manual_seed(0)
    plain = Trainer(plain_cfg, _TinyEMA(), _Noise(), tmp_path / "b")
    plain.fit()
    a, b = resumed.method.state_dict(), plain.method.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert resumed.method.momentum == plain.method.momentum == 1.0
