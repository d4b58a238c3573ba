"""The Train page drives `selfsup train` in a child process: a run finishes with curves, a run
is stopped (checkpoint kept, no process left) and resumed, and the GUI thread never blocks."""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer

from tests.app.helpers import SAMPLE_IMAGES, group_members, pid_alive, wait_until

TINY = {"image_size": 16, "batch_size": 8, "num_workers": 0, "log_every": 1}


def setup_form(page, run_name: str, max_steps: int) -> None:
    page.data_picker.set_path(str(SAMPLE_IMAGES / "train"), emit=False)
    page.select_method("simclr")
    page.backbone_combo.setCurrentText("resnet18")
    page.train_form.set_values({**TINY, "max_steps": max_steps})
    page.run_name.setText(run_name)


class TickGaps:
    """Max gap between 20 ms timer ticks, and the GUI thread's CPU time inside one gap: wall
    gaps include time the OS gave to other processes, CPU time only our own blocking work."""

    def __init__(self):
        self.wall, self.cpu = [], []
        self._t, self._c = time.perf_counter(), time.thread_time()
        self.timer = QTimer()
        self.timer.setInterval(20)
        self.timer.timeout.connect(self.tick)
        self.timer.start()

    def tick(self):
        t, c = time.perf_counter(), time.thread_time()
        self.wall.append(t - self._t)
        self.cpu.append(c - self._c)
        self._t, self._c = t, c

    def stop(self):
        self.timer.stop()


def test_training_run_finishes_with_curves_and_responsive_gui(window, qtbot, tmp_path):
    from engine.run import RunDir

    def status_of(run):
        return RunDir(run).status()

    page = window.train_page
    window.show_page("train")
    setup_form(page, "tiny", max_steps=2)
    args, run_dir = page.build_args()
    # only what differs from the method's defaults goes on the command line
    assert args[:2] == ["train", "--data"] and "--max-steps" in args and "--lr" not in args
    qtbot.wait(300)  # let the page paint first: that is not training work
    cpu = time.thread_time()
    page.start_btn.click()  # builds the command and starts the child: once, not per tick
    click_cpu = time.thread_time() - cpu
    gaps = TickGaps()
    assert page.is_active() and not page.start_btn.isEnabled()
    assert click_cpu < 0.5, f"starting the run took {click_cpu:.2f} s of GUI-thread CPU"
    pid = page.job.pid
    wait_until(qtbot, lambda: not page.is_active(), 240, "the training run to finish")
    gaps.stop()
    errors = [ln for ln in page.job.lines if ln.startswith("error")]
    assert page.job.lines and not errors, page.job.lines[-5:]
    assert status_of(run_dir) == "done", (status_of(run_dir), page.job.lines[-5:])
    assert (run_dir / "checkpoints" / "last.pt").exists()
    xs, ys = page.loss_curves["loss"].getData()
    assert list(xs) == [1, 2] and all(y > 0 for y in ys)
    assert len(page.lr_curve.getData()[0]) == 2
    assert page.progress.value() == page.progress.maximum() == 2
    tree = page.runs_tree
    statuses = {
        tree.topLevelItem(i).text(0): tree.topLevelItem(i).text(3)
        for i in range(tree.topLevelItemCount())
    }
    assert statuses.get("tiny") == "done", statuses
    assert not pid_alive(pid), "the finished child is still alive"
    assert group_members(pid) == [], f"processes left in the child's group: {group_members(pid)}"
    # The event loop kept ticking while the child trained. The GUI thread's own work between
    # two 20 ms ticks stays far below 100 ms (CPU time of this thread: what a blocking call on
    # the GUI thread would show); wall-clock gaps also include the OS running other processes
    # on a busy machine, so only their median is held to the tick rate.
    wall = sorted(gaps.wall)
    report = (
        f"GUI ticks: {len(wall)}, median gap {wall[len(wall) // 2] * 1000:.0f} ms, "
        f"p99 {wall[int(0.99 * len(wall))] * 1000:.0f} ms, max {wall[-1] * 1000:.0f} ms; "
        f"GUI-thread CPU per gap, largest two: "
        f"{', '.join(f'{c * 1000:.0f}' for c in sorted(gaps.cpu)[-2:])} ms"
    )
    print("\n" + report)
    # one gap may hold one-time work (the finished run's refresh: up to 0.15 s of CPU seen on
    # a loaded 2-core CI machine); no other gap may, and none may freeze the window
    cpu = sorted(gaps.cpu)
    assert cpu[-2] < 0.1 and cpu[-1] < 0.3, report
    assert wall[len(wall) // 2] < 0.05, report


def test_stop_keeps_checkpoint_then_resume(window, qtbot, tmp_path):
    page = window.train_page
    setup_form(page, "long", max_steps=5000)
    page.start()
    pid = page.job.pid
    wait_until(qtbot, lambda: page.curves.step >= 1, 240, "the first training step")
    page.stop_btn.click()
    wait_until(qtbot, lambda: not page.is_active(), 120, "the run to stop")
    run = page.active_run or page.watched
    assert (run / "checkpoints" / "last.pt").exists()
    assert not pid_alive(pid) and group_members(pid) == [], "the stopped run left processes behind"
    from app.gui.errors import dialogs
    from engine.run import RunDir

    def status_of(run):
        return RunDir(run).status()

    assert status_of(run) == "stopped"
    assert not any("stopped at step" in m for m in dialogs.shown), (
        "a requested stop is not an error"
    )
    stopped_at = page.curves.step
    # resume from the runs list: continues after the checkpoint, then stop again
    page.refresh_runs(select=run)
    assert page.resume_btn.isEnabled()
    page.resume_btn.click()
    assert page.job.args == ["train", "--resume", str(run)]
    pid = page.job.pid
    wait_until(qtbot, lambda: page.curves.step > stopped_at, 240, "a step after the resume")
    # closing the window asks first; "Keep working" keeps both the window and the run
    window.close()
    box = window.close_box
    assert box is not None and box.isVisible() and "training run" in box.text()
    keep = next(b for b in box.buttons() if b.text() == "Keep working")
    keep.click()
    qtbot.wait(100)
    assert window.isVisible() and page.is_active()
    # "Stop and quit" stops the run cleanly (checkpoint) and then closes the window
    window.close()
    stop = next(b for b in window.close_box.buttons() if b.text() == "Stop and quit")
    stop.click()
    wait_until(qtbot, lambda: not window.isVisible(), 120, "the window to close after stopping")
    assert not page.is_active() and status_of(run) == "stopped"
    assert not pid_alive(pid) and group_members(pid) == []


def test_failing_child_shows_cli_error_and_page_stays_usable(window, qtbot, tmp_path):
    from app.gui.errors import dialogs
    from engine.run import RunDir

    def status_of(run):
        return RunDir(run).status()

    empty = tmp_path / "no-images"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    page = window.train_page
    setup_form(page, "broken", max_steps=2)
    page.data_picker.set_path(str(empty), emit=False)
    page.start()
    wait_until(qtbot, lambda: not page.is_active(), 240, "the child to fail")
    assert dialogs.last_message.startswith(str(empty)) and "no images found" in dialogs.last_message
    assert "Traceback" not in dialogs.last_message and "\n" not in dialogs.last_message
    assert page.start_btn.isEnabled() and not page.stop_btn.isEnabled()
    assert "failed" in page.status_label.text()
    assert RunDir(tmp_path / "runs" / "broken").status() in ("new", "failed")


def test_killed_run_reads_interrupted_and_can_resume(window, tmp_path):
    """A run killed outside the app (kill -9, a crash, a power cut) leaves its process record
    behind: the table says 'interrupted' at once, not 'running', and offers Resume."""
    import json
    import subprocess
    import sys

    from engine.config import TrainConfig
    from engine.run import RunDir

    page = window.train_page
    root = tmp_path / "runs"
    run = RunDir(root / "killed")
    run.save_config(TrainConfig(data=str(SAMPLE_IMAGES / "train"), method="simclr"))
    run.checkpoint_path.parent.mkdir(parents=True)
    run.checkpoint_path.write_bytes(b"checkpoint")
    now = time.time()
    run.events_path.write_text(
        json.dumps({"type": "start", "step": 0, "total_steps": 9, "time": now})
        + "\n"
        + json.dumps({"type": "step", "step": 3, "losses": {"loss": 1.5}, "time": now})
        + "\n"
    )
    run.mark_alive()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    rec = json.loads(run.process_path.read_text())
    run.process_path.write_text(json.dumps({**rec, "pid": int(dead.stdout), "started": None}))
    page.runs_root.setText(str(root))
    page.refresh_runs(select=run.path)
    item = page.runs_tree.topLevelItem(0)
    assert (item.text(0), item.text(3), item.text(4)) == ("killed", "interrupted", "3/9")
    assert page.resume_btn.isEnabled()
    page.watch(run.path)
    assert "interrupted" in page.status_label.text()
