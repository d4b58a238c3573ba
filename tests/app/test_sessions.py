"""The pages' Qt-free session objects: state, decisions and events without a window (fast)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from app.gui.sessions.events import Event
from app.gui.sessions.knn import KnnCheck, class_folders, knn_args, plan, verdict
from app.gui.sessions.video import VideoSession, object_ids
from app.gui.video_model import LoadedVideo, VideoSource


def test_sessions_import_no_qt():
    import subprocess

    code = (
        "import sys, app.gui.sessions.video, app.gui.sessions.knn, app.gui.file_filters;"
        "print([m for m in sys.modules if m.split('.')[0] in ('PySide6','pyqtgraph','shiboken6')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_event_calls_callbacks_in_order_and_disconnects():
    ev, seen = Event(), []
    a, b = (lambda x: seen.append(("a", x))), (lambda x: seen.append(("b", x)))
    ev.connect(a)
    ev.connect(b)
    ev.emit(1)
    ev.disconnect(a)
    ev.emit(2)
    assert seen == [("a", 1), ("b", 1), ("b", 2)]


# ---- kNN check --------------------------------------------------------------------------------
def test_class_folders_follows_engine_data_labels(shapes_dir, tmp_path):
    assert class_folders(shapes_dir) == ["checker", "disc", "stripes"]
    loose = tmp_path / "loose"
    (loose / "a").mkdir(parents=True)
    png = (shapes_dir / "disc" / "000.png").read_bytes()
    (loose / "a" / "x.png").write_bytes(png)
    (loose / "y.png").write_bytes(png)  # one image outside a class folder: unlabelled
    assert class_folders(loose) == []
    assert class_folders(tmp_path / "missing") == [] and class_folders(None) == []


def test_plan_prefers_training_data_and_falls_back_to_the_validation_folder():
    assert plan("/d", ["a", "b"], None, []) == plan("/d", ["a", "b"], "/v", [])
    assert plan("/d", ["a", "b"], "/v", ["a", "b"]).val == "/v"
    p = plan("/d", [], "/v", ["a", "b"])
    assert (p.train, p.val) == ("/v", None)
    p = plan("/d", [], None, [])
    assert p.train is None and "/d: no class sub-folders" in p.reason and "validation" in p.reason
    assert knn_args("/r", plan("/d", ["a"], "/v", ["a"])) == [
        "eval", "knn", "--checkpoint", "/r", "--train", "/d", "--val", "/v", "--baseline",
    ]  # fmt: skip


def test_verdict_better_and_not_better():
    good = verdict({"top1": 0.8, "baseline": {"top1": 0.5}, "val_images": 20})
    assert good.better and good.text == "kNN top-1 0.80 vs random init 0.50 (+30.0 points)"
    assert "Better than the untrained network" in good.advice
    bad = verdict({"top1": 0.5, "baseline": {"top1": 0.55}, "val_images": 20})
    assert not bad.better and "(-5.0 points)" in bad.text
    for hint in ("train longer", "larger images", "another method"):
        assert hint in bad.advice
    # one more image right out of 10 is better; a tie is not
    assert verdict({"top1": 0.6, "baseline": {"top1": 0.5}, "val_images": 10}).better
    assert not verdict({"top1": 0.5, "baseline": {"top1": 0.5}, "val_images": 10}).better


def _run(tmp_path: Path, data: Path | str, checkpoint: bool = True) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    from engine.run import RunDir

    r = RunDir(run)
    r.config_path.write_text(json.dumps({"method": "simclr", "data": str(data)}))
    if checkpoint:
        r.checkpoint_path.parent.mkdir()
        r.checkpoint_path.write_bytes(b"x")
    return run


def test_knn_check_flow(tmp_path, shapes_dir):
    check, changes = KnnCheck(), []
    check.changed.connect(lambda: changes.append(check.status_text()))
    run = _run(tmp_path, shapes_dir)
    check.set_run(run, finished=True)
    assert check.folders_to_scan() == [str(shapes_dir)] and not check.can_run
    assert "Looking for class sub-folders" in check.status_text()
    check.scanned({f: class_folders(f) for f in check.folders_to_scan()})
    assert check.can_run and "3 classes" in check.status_text()
    assert check.args()[-1] == "--baseline"
    check.started()
    assert not check.can_run and check.status_text().startswith("Checking features")
    check.finished(0, "", {"top1": 0.9, "baseline": {"top1": 0.4}, "val_images": 9})
    assert check.result.better and check.can_run
    assert check.status_text().startswith("kNN top-1 0.90 vs random init 0.40 (+50.0 points).")
    check.started()
    check.finished(2, "no such folder", None)
    assert check.status_text() == "Check failed: no such folder"
    check.set_run(run, finished=False)  # e.g. it is training again
    assert not check.can_run and "finished run" in check.status_text()
    assert len(changes) >= 6


def test_knn_check_needs_a_checkpoint(tmp_path, shapes_dir):
    check = KnnCheck()
    check.set_run(_run(tmp_path, shapes_dir, checkpoint=False), finished=True)
    check.scanned({str(shapes_dir): ["a"]})
    assert not check.can_run and "checkpoint" in check.status_text()
    with pytest.raises(ValueError):
        KnnCheck().args()


# ---- video -------------------------------------------------------------------------------------
def _video(tmp_path: Path, n: int = 4, gt: bool = False) -> LoadedVideo:
    frames = np.zeros((n, 8, 10, 3), np.uint8)
    src = VideoSource(tmp_path / "clip.mp4", "clip", tmp_path / "gt" if gt else None)
    return LoadedVideo(src, frames[0], frames, 25.0, (16, 20), [])


def test_video_session_open_resets_state_and_tells_the_page(tmp_path):
    s, seen = VideoSession(), []
    s.video_changed.connect(lambda: seen.append("video"))
    s.set_annotation(np.ones((16, 20), np.uint8), [(1.0, 2.0, 1)])
    s.result_dir, s.result = tmp_path, {"masks": ["x"]}
    s.set_video(_video(tmp_path))
    assert seen == ["video"] and s.first_ids is None and s.first_points == []
    assert not s.has_result and s.result == {} and not s.has_ground_truth
    assert s.describe() == "clip: 4 frames, 20x16, 25 fps"
    assert s.frame_text(2) == "frame 3 / 4 · 0.1s"


def test_video_session_annotation_and_command_line(tmp_path):
    s = VideoSession()
    s.set_video(_video(tmp_path, gt=True))
    ids = np.zeros((16, 20), np.uint8)
    assert not s.has_marks(ids, []) and s.has_marks(ids, [(1, 1, 1)])
    ids[2:5, 2:5], ids[8:9, 8:9], ids[0, 0] = 1, 2, 255
    assert object_ids(ids) == {1, 2}
    assert s.annotation_text(ids, [(1, 1, 1)]) == "2 object(s) painted, 1 keypoint(s)"
    out = tmp_path / "out"
    args = s.propagate_args(ids, [(3.0, 4.5, 2)], "lab", {"topk": 7, "flag": True}, out)
    assert args[:6] == [
        "propagate",
        "--video",
        str(tmp_path / "clip.mp4"),
        "--out",
        str(out),
        "--checkpoint",
    ]
    assert args[args.index("--topk") + 1] == "7" and args[args.index("--flag") + 1] == "true"
    assert (
        args[args.index("--mask") + 1] == str(out / "first.png") and (out / "first.png").is_file()
    )
    assert args[args.index("--points") + 1] == "3,4.5,2"
    assert args[args.index("--ground-truth") + 1] == str(tmp_path / "gt")
    assert s.pending_out == out and s.first_points == [(3.0, 4.5, 2)]
    ids[:] = 9
    assert object_ids(s.first_ids) == {1, 2}, "the session keeps its own copy of the annotation"


def test_video_session_result_masks_keypoints_and_exports(tmp_path):
    from video.masks import write_mask

    s, seen = VideoSession(), []
    s.result_changed.connect(lambda: seen.append("result"))
    s.set_video(_video(tmp_path, n=3))
    out = tmp_path / "prop"
    (out / "masks").mkdir(parents=True)
    masks = []
    for t in range(3):
        m = np.zeros((16, 20), np.uint8)
        m[t : t + 4, :5] = 1
        write_mask(out / "masks" / f"{t:05d}.png", m)
        masks.append(str(out / "masks" / f"{t:05d}.png"))
    jf = {"J&F": 0.75, "J": 0.7, "F": 0.8, "frames": 1, "objects": {"1": {"J": 0.7}}}
    (out / "result.json").write_text(
        json.dumps({"masks": masks, "jf": jf, "seconds": 2.0, "frames_per_s": 1.5})
    )
    s.load_result(out)
    assert seen == ["result"] and s.has_result and s.can_export_masks
    m = s.result_mask(1, (8, 10))
    assert m.shape == (8, 10) and m.max() == 1
    assert s.result_mask(1, (8, 10)) is m  # cached
    assert s.result_mask(7, (8, 10)) is None and s.keypoints_at(1, (8, 10)) == []
    line, text = s.summary()
    assert line == "done in 2.0s (1.5 frames/s) · results in prop"
    assert "J&amp;F 0.750" in text and "object 1: J 0.70" in text
    s.keypoints = {"frames": [[(10.0, 8.0)]] * 3, "objects": [1]}
    assert s.keypoints_at(2, (8, 10)) == [(5.0, 4.0, 1)]
    dest = s.export_masks(tmp_path / "export")
    assert dest == tmp_path / "export" / "clip" and len(list(dest.glob("*.png"))) == 3
    # the overlay: the propagation's own file at the default opacity, else a command line
    (out / "overlay.mp4").write_bytes(b"v")
    s.result["overlay"] = str(out / "overlay.mp4")
    assert s.overlay_plan(tmp_path / "o.mp4", 0.5) is None
    args = s.overlay_plan(tmp_path / "o.mp4", 0.8)
    assert args[0] == "overlay" and args[args.index("--alpha") + 1] == "0.800"
    assert args[args.index("--masks") + 1] == str(out / "masks")


def test_video_session_texts():
    s = VideoSession()
    assert s.progress_text({"done": 3, "total": 10, "stage": "propagating", "rate": 2.5}) == (
        "propagating: 3 / 10 · 2.5 frames/s"
    )
    assert s.progress_text({"done": 0, "total": 0, "stage": "loading"}) == "loading"
    s.job_kind = "propagate"
    assert s.finished_text(True) == "propagation cancelled" and s.finished_text(False) == "failed"
    s.job_kind = "overlay"
    assert s.finished_text(True) == "export cancelled"
