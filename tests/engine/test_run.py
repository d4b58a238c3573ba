"""RunDir owns a run's layout and state: a user's stop is 'stopped', a killed run 'interrupted'."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from engine.config import TrainConfig
from engine.errors import UserError
from engine.methods.base import Method
from engine.run import RunDir, RunState, resolve
from engine.trainer import Trainer


class _Linear(Method):
    def __init__(self):
        super().__init__()
        self.backbone = torch.nn.Linear(4, 2)

    def forward(self, batch):
        return {"loss": self.backbone(batch["x"]).pow(2).mean()}


class _Vectors(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        return {"x": torch.full((4,), float(i))}


def _cfg(**kw) -> TrainConfig:
    base = dict(data="mem", method="test", max_steps=6, batch_size=8, num_workers=0, log_every=1)
    return TrainConfig(**{**base, **kw})


def test_state_folds_events_into_status():
    t = time.time()
    ev = [
        {"type": "start", "step": 0, "total_steps": 10, "time": t},
        {"type": "step", "step": 3, "losses": {"loss": 0.5}, "time": t},
    ]
    st = RunState.from_events(ev)
    assert (st.phase, st.step, st.total_steps, st.loss) == ("running", 3, 10, 0.5)
    assert st.status(alive=True) == "running"
    assert st.status(alive=False) == "interrupted"
    assert st.status(alive=None, now=t + 10) == "running"
    assert st.status(alive=None, now=t + 1000) == "interrupted"  # silent, cannot check the pid
    stopped = RunState.from_events(ev + [{"type": "stopped", "step": 3, "message": "m"}])
    assert stopped.status(alive=False) == "stopped" and stopped.message == "m"
    failed = RunState.from_events(ev + [{"type": "error", "step": 3, "message": "boom"}])
    assert failed.status() == "failed"
    assert RunState.from_events(ev + [{"type": "done", "step": 10}]).status() == "done"
    resumed = RunState.from_events(ev + [{"type": "stopped", "step": 3}, ev[0]])
    assert resumed.phase == "running"  # a resumed run is running again
    assert RunState().status() == "new"
    planned = ev[:1] + [
        {"type": "plan", "planned_steps": 40},
        {"type": "replan", "planned_steps": 55},
    ]
    assert RunState.from_events(planned).total_steps == 55  # a time budget's schedule length


def test_user_stop_writes_a_stopped_event_and_resumes(tmp_path):
    run = RunDir(tmp_path / "run")
    holder: dict = {}

    def stop_at_2(e):
        if e["type"] == "step" and e["step"] == 2:
            holder["t"].stop_requested = True

    trainer = Trainer(_cfg(), _Linear(), _Vectors(), run, callbacks=(stop_at_2,))
    holder["t"] = trainer
    result = trainer.fit()
    assert result["stopped"] and result["step"] == 2
    assert [e["type"] for e in run.events()][-1] == "stopped"
    assert run.status() == "stopped" and run.can_resume()
    assert not run.process_path.exists()  # the process record goes with the process
    result = Trainer(_cfg(), _Linear(), _Vectors(), run).fit(resume=True)
    assert not result.get("stopped") and run.status() == "done" and run.state().step == 6


def test_second_run_in_the_same_folder_is_refused(tmp_path):
    run = RunDir(tmp_path / "run")
    Trainer(_cfg(max_steps=2), _Linear(), _Vectors(), run).fit()
    with pytest.raises(UserError, match="already holds a run"):
        Trainer(_cfg(max_steps=2), _Linear(), _Vectors(), run).fit()


def test_liveness_from_the_process_record(tmp_path):
    run = RunDir(tmp_path)
    assert run.alive() is None  # no record: cannot tell
    run.mark_alive()
    assert run.alive() is True
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    rec = json.loads(run.process_path.read_text())
    run.process_path.write_text(json.dumps({**rec, "pid": int(dead.stdout), "started": None}))
    assert run.alive() is False
    run.process_path.write_text(json.dumps({**rec, "host": socket.gethostname() + "-other"}))
    assert run.alive() is None  # another machine's process: unknown here
    run.process_path.write_text(json.dumps({**rec, "pid": os.getpid(), "started": "1"}))
    assert run.alive() is False  # our pid, but a different process start: the pid was recycled


def test_resolve_names_what_a_source_is(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(UserError, match="no such run directory or model file"):
        resolve(tmp_path / "missing")
    run.path.mkdir()
    with pytest.raises(UserError, match="not a run directory"):
        resolve(run.path)
    run.save_config(_cfg())
    with pytest.raises(UserError, match="without checkpoints/last.pt"):
        resolve(run.path)
    run.checkpoint_path.parent.mkdir()
    run.checkpoint_path.write_bytes(b"x")
    src = resolve(run.path)
    assert (src.kind, src.path, src.run) == ("checkpoint", run.checkpoint_path, run)
    assert resolve(run.checkpoint_path).run == run  # a checkpoint inside a run knows its run
    named = resolve("torchvision:resnet18:/tmp/w.pth")
    assert (named.kind, named.scheme, named.name, str(named.path)) == (
        "named",
        "torchvision",
        "resnet18",
        "/tmp/w.pth",
    )
    export = tmp_path / "b.safetensors"
    export.write_bytes(b"x")
    assert resolve(export).kind == "export" and resolve(export).run is None


def test_find_lists_runs_newest_first(tmp_path):
    a, b = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    a.save_config(_cfg())
    time.sleep(0.02)
    b.save_config(_cfg())
    (tmp_path / "not-a-run").mkdir()
    assert RunDir.find(tmp_path) == [b, a]
    assert RunDir.new("dino", tmp_path).name.startswith("dino-")
