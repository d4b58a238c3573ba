"""The Train page's "Check features (kNN vs random init)" button runs `selfsup eval knn
--baseline` as a child process for a finished run with class folders and shows the verdict."""

from __future__ import annotations

import pytest

from app.cli import main
from tests.app.helpers import wait_until


@pytest.fixture
def finished_run(shapes_dir, tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    args = ["train", "--data", str(shapes_dir), "--run-dir", str(run_dir), "--max-steps", "2"]
    args += ["--image-size", "16", "--batch-size", "12", "--num-workers", "0"]
    assert main(args) == 0
    return run_dir


def test_check_features_button_shows_knn_vs_random_init(window, qtbot, finished_run):
    from engine.run import RunDir

    page = window.train_page
    window.show_page("train")
    page.runs_root.setText(str(finished_run.parent))
    page.refresh_runs(select=finished_run)
    assert page.selected_run() == finished_run
    wait_until(qtbot, lambda: page.knn_btn.isEnabled(), 30, "the class folders to be found")
    assert "Ready" in page.knn_label.text() and "3 classes" in page.knn_label.text()
    page.knn_btn.click()
    assert page.knn_job.is_running() and not page.knn_btn.isEnabled()
    args = page.knn_job.args
    assert args[:2] == ["eval", "knn"] and "--baseline" in args and "--events" in args
    assert args[args.index("--checkpoint") + 1] == str(finished_run)
    wait_until(qtbot, lambda: not page.knn_job.is_running(), 240, "the kNN check to finish")
    wait_until(qtbot, lambda: page.knn.result is not None, 5, "the verdict")
    text = page.knn_label.text()
    v = page.knn.result
    assert text.startswith(f"kNN top-1 {v.top1:.2f} vs random init {v.baseline:.2f} (")
    assert "points)" in text
    assert ("Better than the untrained network" in text) == v.better
    if not v.better:
        assert "train longer" in text and "another method" in text
    saved = RunDir(finished_run).subdir("eval") / "knn.json"
    assert saved.is_file() and "baseline" in saved.read_text()
    assert page.knn_btn.isEnabled()


def test_unlabelled_data_needs_a_validation_folder(window, qtbot, tmp_path, shapes_dir):
    from engine.config import TrainConfig
    from engine.run import RunDir

    page = window.train_page
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes((shapes_dir / "disc" / "000.png").read_bytes())
    run = RunDir(tmp_path / "runs" / "flat-run")
    run.save_config(TrainConfig(data=str(flat), method="simclr"))
    run.checkpoint_path.parent.mkdir(parents=True)
    run.checkpoint_path.write_bytes(b"x")
    run.events_path.write_text('{"type": "done", "step": 1, "time": 1}\n')
    page.runs_root.setText(str(run.path.parent))
    page.refresh_runs(select=run.path)
    wait_until(qtbot, lambda: "no class sub-folders" in page.knn_label.text(), 30, "the scan")
    assert not page.knn_btn.isEnabled()
    page.knn_val.set_path(str(shapes_dir))
    wait_until(qtbot, lambda: page.knn_btn.isEnabled(), 30, "the validation folder's classes")
    assert page.knn.args()[page.knn.args().index("--train") + 1] == str(shapes_dir)
