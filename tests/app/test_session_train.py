"""The Train page's Qt-free session: the `selfsup train` command line, the refusal of a folder
that holds a run, start / resume decisions, and the status of real run directories (a tiny
training run, and events files written as a stopped, killed or silently dead run leaves them)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli import main
from app.gui.sessions.train import (
    RESUME_HINT,
    TrainSession,
    method_choices,
    shows_in_log,
)
from engine.config import TrainConfig
from engine.errors import UserError
from engine.run import RunDir
from tests.conftest import write_shapes_folder


@pytest.fixture(scope="module", autouse=True)
def methods():
    from app.registry_all import load_all

    load_all()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_shapes_folder(tmp_path_factory.mktemp("data") / "shapes")


@pytest.fixture(scope="module")
def finished_run(shapes, tmp_path_factory) -> Path:
    """A real 2-step training run (the trainer writes config, events and checkpoint)."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    args = ["train", "--data", str(shapes), "--run-dir", str(run), "--max-steps", "2"]
    args += ["--image-size", "16", "--batch-size", "12", "--num-workers", "0", "--log-every", "1"]
    assert main(args) == 0
    return run


def write_run(root: Path, name: str, events: list[dict], checkpoint: bool = True) -> RunDir:
    run = RunDir(root / name)
    run.save_config(TrainConfig(data="/data", method="simclr", backbone="resnet18"))
    if checkpoint:
        run.checkpoint_path.parent.mkdir(parents=True)
        run.checkpoint_path.write_bytes(b"checkpoint")
    append(run, events)
    return run


def append(run: RunDir, events: list[dict]) -> None:
    now = time.time()
    with open(run.events_path, "a") as f:
        for e in events:
            f.write(json.dumps({"time": now, **e}) + "\n")


START = {"type": "start", "step": 0, "total_steps": 9}


def step(i: int, loss: float = 1.5) -> dict:
    return {"type": "step", "step": i, "losses": {"loss": loss}, "lr": 0.1}


def session(running: list[bool] | None = None) -> TrainSession:
    flag = running if running is not None else [False]
    s = TrainSession(lambda: flag[0])
    s.set_method("simclr")
    return s


def test_command_line_for_a_method_with_options(shapes, tmp_path):
    s = session()
    root = tmp_path / "runs"
    changed = [("max_steps", 2), ("lr", 0.1), ("temperature", 0.2), ("deterministic", True)]
    args, run = s.command(str(shapes), root, "a", s.default_backbone(), changed)
    assert run == root / "a"
    assert args == [
        "train", "--data", str(shapes), "--method", "simclr", "--run-dir", str(root / "a"),
        "--max-steps", "2", "--lr", "0.1", "--temperature", "0.2", "--deterministic", "true",
    ]  # fmt: skip
    # another backbone is a flag; no name is <method>-<date>-<time> under the runs folder
    args, run = s.command(str(shapes), root, "", "vit_tiny_p8", [])
    assert args[-2:] == ["--backbone", "vit_tiny_p8"]
    assert run.parent == root and re.fullmatch(r"simclr-\d{8}-\d{6}", run.name)
    # the default follows the image size (half-width ResNet-18 at <= 32 px): no flag for it
    assert (s.default_backbone(32), s.default_backbone(64)) == ("resnet18_w32", "resnet18")
    args, _ = s.command(str(shapes), root, "b", "resnet18", [("image_size", 64)])
    assert "--backbone" not in args and args[-2:] == ["--image-size", "64"]
    args, _ = s.command(str(shapes), root, "c", "resnet18", [])
    assert args[-2:] == ["--backbone", "resnet18"]
    with pytest.raises(UserError, match="choose the training data first"):
        s.command("", root, "a", s.default_backbone(), [])
    with pytest.raises(UserError, match="no such folder or file"):
        s.command(str(tmp_path / "nope"), root, "a", s.default_backbone(), [])


def test_method_view_follows_the_registry():
    names = [name for _, name in method_choices()]
    assert "simclr" in names and "clip" in names and len(names) == len(set(names))
    s = session()
    assert s.description() == s.spec.description
    assert s.data_input().recent == "folders" and s.data_input().mode == "dir"
    clip = s.set_method("clip")
    assert s.description().endswith("(data: captions)")
    assert (s.data_input().recent, s.data_input().mode) == ("captions", "any")
    assert s.default_backbone() == str(clip.defaults.get("backbone", TrainConfig.backbone))
    fields = {"lr": None, "epochs": None}
    assert s.defaults(fields, s.default_backbone()) == {
        k: v for k, v in clip.defaults.items() if k in fields
    }
    assert shows_in_log("step 3 loss 1.2") and not shows_in_log(" 45%|####   | 9/20")


def test_finished_run_reads_done_and_its_folder_is_refused(finished_run):
    s = session()
    with pytest.raises(UserError, match="already holds a run; resume it with --resume"):
        s.command(str(finished_run), finished_run.parent, "tiny", s.default_backbone(), [])
    s.watch(finished_run)
    assert s.status() == "done" and s.curves.step == 2 and len(s.curves.losses["loss"]) == 2
    m = s.monitor()
    assert (m.step, m.total, m.status) == (2, 2, "done") and m.stats.startswith("last loss ")
    assert m.bar_format == "step 2 / 2  (%p%)"
    assert s.finished_text("done").startswith("finished: loss ")
    [row] = s.runs(finished_run.parent, [])
    assert (row.name, row.method, row.status, row.step) == ("tiny", "simclr", "done", "2/2")
    assert float(row.loss) > 0
    assert not s.can_resume(finished_run) and s.can_inspect()
    with pytest.raises(UserError, match="this run already finished"):
        s.resume_command(finished_run)
    s.select_for_knn(finished_run)
    assert s.knn.run == finished_run and "Looking for class" in s.knn.status_text()
    run_dir, cfg = s.open_run(finished_run)
    assert run_dir == finished_run.resolve() and cfg.method == "simclr"


def test_stopped_killed_and_running_runs(tmp_path):
    root = tmp_path / "runs"
    stopped = write_run(root, "stopped", [START, step(3), {"type": "stopped", "step": 3}])
    killed = write_run(root, "killed", [START, step(4)])
    killed.mark_alive()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)  # fmt: skip
    rec = json.loads(killed.process_path.read_text())
    killed.process_path.write_text(json.dumps({**rec, "pid": int(dead.stdout), "started": None}))
    live = write_run(root, "live", [START, step(5)])
    live.mark_alive()  # this process stands in for a training process started elsewhere
    s = session()
    rows = {r.name: r for r in s.runs(root, [])}
    assert {n: (r.status, r.step) for n, r in rows.items()} == {
        "stopped": ("stopped", "3/9"), "killed": ("interrupted", "4/9"), "live": ("running", "5/9"),
    }  # fmt: skip
    assert s.can_resume(stopped.path) and s.can_resume(killed.path)
    assert s.resume_command(stopped.path) == ["train", "--resume", str(stopped.path)]
    s.watch(killed.path)
    assert s.status() == "interrupted" and s.monitor().stats == "last loss 1.5000"
    s.select_for_knn(live.path)
    assert not s.knn.can_run and "finished run" in s.knn.status_text()
    busy = session([True])  # our own child trains something: no resume, no second start
    assert not busy.can_resume(stopped.path)
    with pytest.raises(UserError, match="already training"):
        busy.resume_command(stopped.path)
    with pytest.raises(UserError, match="already training"):
        busy.check_idle()
    bare = write_run(root, "bare", [START], checkpoint=False)
    with pytest.raises(UserError, match="nothing to resume, no checkpoint"):
        s.resume_command(bare.path)


def test_our_child_trains_then_dies_without_a_last_word(tmp_path):
    running = [False]
    s = session(running)
    assert s.finish(stopped=False, message="") is None  # nothing was launched
    run = RunDir(tmp_path / "runs" / "child")
    s.launched(run.path)
    assert s.poll() == ""  # the child has not written anything yet
    running[0] = True
    write_run(run.path.parent, "child", [START])
    assert s.poll() == "appeared"  # the page lists the new folder now
    append(run, [step(1, 2.0), step(2, 1.0)])
    assert s.poll() == "events" and s.poll() == ""
    m = s.monitor()
    assert m.status == "running" and "loss 1.0000" in m.stats
    assert s.monitor(stopping=True).status == ""  # the page keeps saying "stopping"
    assert [r.status for r in s.runs(run.path.parent, [])] == ["running"]
    assert not s.can_resume(run.path)
    # the child dies: no terminal event, the events alone still look like a live run
    running[0] = False
    assert s.finish(stopped=False, message="boom") == ("failed", "boom", "")
    assert s.active_run is None and s.status() == "failed"
    assert s.finished_text("failed") == "failed at step 2"
    # a requested stop that died the same way reads stopped, resumable, and is no error
    s.launched(run.path)
    assert s.finish(stopped=True, message="killed") == ("stopped", "", RESUME_HINT)
    assert s.status() == "stopped"


def test_open_run_and_summary_cache(tmp_path):
    s = session()
    with pytest.raises(UserError, match="run folder not found"):
        s.open_run(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(UserError, match="not a run directory"):
        s.open_run(tmp_path / "plain")
    run = write_run(tmp_path, "r", [START, step(1)])
    first = s.summary(run.path)
    assert s.summary(run.path) is first  # unchanged events are not read again
    append(run, [step(2, 0.5)])
    assert s.summary(run.path)["loss"] == 0.5
    elsewhere = write_run(tmp_path / "other", "x", [START])
    rows = s.runs(tmp_path / "runs-root", [str(elsewhere.path), str(tmp_path / "gone")])
    assert [r.name for r in rows] == ["x"]  # a recent run kept elsewhere; a missing one drops
