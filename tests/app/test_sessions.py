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


def _run(tmp_path: Path, data: Path | str, checkpoint: bool = True, method: str = "simclr") -> Path:
    run = tmp_path / "run"
    run.mkdir()
    from engine.run import RunDir

    r = RunDir(run)
    r.config_path.write_text(json.dumps({"method": method, "data": str(data)}))
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


def test_knn_check_advice_follows_the_runs_method_and_length(tmp_path, shapes_dir):
    from engine.events import EventLog
    from engine.run import RunDir

    run = _run(tmp_path, shapes_dir, method="byol")
    EventLog(RunDir(run).events_path).write("step", step=40, losses={"loss": 1.0})
    check = KnnCheck()
    check.set_run(run, finished=True)
    check.finished(0, "", {"top1": 0.30, "baseline": {"top1": 0.31}, "val_images": 100})
    assert not check.result.better
    assert "This run trained 40 steps." in check.status_text()
    assert "choose simclr or moco_v2" in check.status_text()


def test_knn_check_needs_a_checkpoint(tmp_path, shapes_dir):
    check = KnnCheck()
    check.set_run(_run(tmp_path, shapes_dir, checkpoint=False), finished=True)
    check.scanned({str(shapes_dir): ["a"]})
    assert not check.can_run and "checkpoint" in check.status_text()
    with pytest.raises(ValueError):
        KnnCheck().args()


# ---- video -------------------------------------------------------------------------------------
def _video(tmp_path: Path, n: int = 4, gt: bool = False, scale: int = 2) -> LoadedVideo:
    """A video of n frames at 16x20 whose timeline is downscaled by `scale` (as for long videos)."""
    frames = np.zeros((n, 16 // scale, 20 // scale, 3), np.uint8)
    src = VideoSource(tmp_path / "clip.mp4", "clip", tmp_path / "gt" if gt else None)
    return LoadedVideo(src, np.zeros((16, 20, 3), np.uint8), frames, 25.0, (16, 20), [])


def test_video_session_open_resets_state_and_tells_the_page(tmp_path):
    from video.annotations import Keyframe

    s, seen = VideoSession(), []
    s.video_changed.connect(lambda: seen.append("video"))
    s.keyframes = {0: Keyframe(0, np.ones((16, 20), np.uint8))}
    s.result_dir, s.result = tmp_path, {"masks": ["x"]}
    s.set_video(_video(tmp_path))
    assert seen == ["video"] and s.keyframes == {} and s.changed == set()
    assert not s.has_result and s.result == {} and not s.has_ground_truth
    assert s.describe() == "clip: 4 frames, 20x16, 25 fps"
    assert s.frame_text(2) == "frame 3 / 4 · 0.1s"
    assert s.names == ["00000", "00001", "00002", "00003"]
    assert s.run_folder() is None, "no root: no output folder of its own"


def test_video_session_edits_make_keyframes_at_video_resolution(tmp_path):
    s, seen = VideoSession(), []
    s.keyframes_changed.connect(lambda: seen.append("kf"))
    s.set_video(_video(tmp_path, n=6))
    ids, pts = s.marks_at(3, (8, 10))
    assert ids is None and pts == []
    assert not s.edit(3, np.zeros((8, 10), np.uint8), []), "nothing changed: no keyframe"
    # paint on the downscaled frame 3: a keyframe at the video's 16x20, in video coordinates
    small = np.zeros((8, 10), np.uint8)
    small[2:4, 2:4] = 1
    assert s.edit(3, small, [(5.0, 4.0, 1)]) and seen == ["kf"]
    kf = s.keyframes[3]
    assert kf.ids.shape == (16, 20) and kf.ids[4:8, 4:8].all() and kf.ids.sum() == 16
    assert kf.points == {0: (10.0, 8.0, 1)} and s.changed == {3}
    ids, pts = s.marks_at(3, (8, 10))
    assert (ids == small).all() and pts == [(5.0, 4.0, 1)]
    # a fine full-resolution detail survives an edit elsewhere on the small frame
    kf.ids[15, 19] = 2
    shown, _ = s.marks_at(3, (8, 10))
    shown[0, 0] = 1
    s.edit(3, shown, [(5.0, 4.0, 1)])
    assert kf.ids[15, 19] == 2 and kf.ids[0:2, 0:2].all() and kf.points == {0: (10.0, 8.0, 1)}
    # keypoints only on frame 0 (full-size first frame): points, no mask
    s.edit(0, np.zeros((16, 20), np.uint8), [(1.0, 2.0, 1), (3.0, 4.0, 2)])
    assert s.keyframes[0].ids is None and s.keyframes[0].points[1] == (3.0, 4.0, 2)
    assert s.problem() is not None and "frame 4 has 1 keypoint(s) but frame 1 has 2" in s.problem()
    s.edit(3, s.marks_at(3, (8, 10))[0], [(5.0, 4.0, 1), (6.0, 6.0, 2)])
    assert s.problem() is None
    assert "frame 4 is a keyframe: 2 object(s), 2 keypoint(s)" in s.keyframes_text(3)
    assert "2 keyframe(s): 1, 4" in s.keyframes_text(3)
    assert s.remove_keyframe(0) and not s.remove_keyframe(0) and sorted(s.keyframes) == [3]
    s.clear_keyframes()
    assert s.keyframes == {} and s.changed == {0, 3} and s.problem().startswith("mark at least")
    # a loaded mask (at the video's size) as a keyframe
    m = np.zeros((16, 20), np.uint8)
    m[1, 1] = 2
    s.set_keyframe_mask(5, m)
    assert s.keyframes[5].ids[1, 1] == 2 and s.keyframes[5].ids is not m


def test_video_session_command_line_writes_keyframes_and_restores_them(tmp_path):
    from video.annotations import load_keyframes

    root = tmp_path / "propagation"
    s = VideoSession(root)
    s.set_video(_video(tmp_path, n=5, gt=True))
    out = s.run_folder()
    assert out.parent == root and out.name.startswith("clip-") and out == s.run_folder()
    ids = np.zeros((16, 20), np.uint8)
    ids[2:5, 2:5], ids[8:9, 8:9], ids[0, 0] = 1, 2, 255
    assert object_ids(ids) == {1, 2}
    s.set_keyframe_mask(0, ids)
    s.edit(2, np.zeros((8, 10), np.uint8), [(3.0, 4.5, 2)])
    s.mode = "blend"
    args = s.propagate_args("lab", {"topk": 7, "flag": True}, exports=["png", "coco"])
    assert args[:6] == [
        "propagate",
        "--video",
        str(tmp_path / "clip.mp4"),
        "--out",
        str(out),
        "--checkpoint",
    ]
    assert args[args.index("--topk") + 1] == "7" and args[args.index("--flag") + 1] == "true"
    assert args[args.index("--mode") + 1] == "blend"
    i = args.index("--export")
    assert args[i + 1 : i + 3] == ["png", "coco"]
    assert args[args.index("--ground-truth") + 1] == str(tmp_path / "gt")
    kf_path = Path(args[args.index("--keyframes") + 1])
    assert kf_path == out / "keyframes.json" and s.pending_out == out and s.changed == set()
    back = load_keyframes(kf_path, s.names, (16, 20))
    assert sorted(back) == [0, 2] and (back[0].ids == ids).all()
    assert back[2].points == {0: (6.0, 9.0, 2)} and back[2].ids is None
    # removing a keyframe removes its mask file on the next write
    s.remove_keyframe(0)
    s.set_keyframe_mask(1, ids)
    s.propagate_args("lab", {})
    assert sorted(p.name for p in (out / "keyframes_masks").glob("*.png")) == ["00001.png"]
    # the same video opened in a new session: its keyframes come back
    s2 = VideoSession(root)
    s2.set_video(_video(tmp_path, n=5, gt=True))
    assert sorted(s2.keyframes) == [1, 2] and (s2.keyframes[1].ids == ids).all()


def _write_result(out: Path, n: int, first: int, **extra) -> list[str]:
    """A forward run's folder from keyframe `first` on: masks of frames first..n-1 only."""
    from video.masks import write_mask

    (out / "clip").mkdir(parents=True)
    masks = []
    for t in range(first, n):
        m = np.zeros((16, 20), np.uint8)
        m[t : t + 4, :5] = 1
        write_mask(out / "clip" / f"{t:05d}.png", m)
        masks.append(str(out / "clip" / f"{t:05d}.png"))
    states = ["none"] * first + ["keyframe"] + ["done"] * (n - first - 1)
    timeline = {
        "frames": [{"t": t, "state": st} for t, st in enumerate(states)],
        "look_first": [4, 2],
    }
    (out / "clip_timeline.json").write_text(json.dumps(timeline))
    (out / "result.json").write_text(
        json.dumps(
            {
                "masks": masks,
                "seconds": 2.0,
                "mode": "forward",
                "written_ranges": [[first, n - 1]],
                "states": {"keyframe": 1, "done": n - first - 1, "pending": 0, "none": first},
                "timeline": str(out / "clip_timeline.json"),
                **extra,
            }
        )
    )
    return masks


def test_video_session_result_timeline_and_corrections(tmp_path):
    s, seen = VideoSession(), []
    s.result_changed.connect(lambda: seen.append("result"))
    s.set_video(_video(tmp_path, n=6))
    out = tmp_path / "prop"
    jf = {"J&F": 0.75, "J": 0.7, "F": 0.8, "frames": 4}
    _write_result(out, 6, 1, jf_unannotated=jf)
    s.load_result(out)
    assert seen == ["result"] and s.has_result and s.can_export_masks
    assert s.result_mask(0, (8, 10)) is None, "frame 0 is before the keyframe: no mask"
    full = s.result_mask(3, (16, 20))
    assert full[3:7, :5].all() and s.result_mask(3, (8, 10)).shape == (8, 10)
    assert s.result_mask(3, (16, 20)) is full, "cached at the video's size"
    model = s.timeline_model()
    assert model.n == 6 and model.states == ["none", "keyframe"] + ["done"] * 4
    assert model.recomputed == [(1, 5)] and model.flagged == [2, 4]
    assert model.recomputed_frames() == {1, 2, 3, 4, 5}
    assert [s.next_flagged(t) for t in (0, 2, 4, 5)] == [2, 4, 2, 2]
    line, text = s.summary()
    assert line == "done in 2.0s · frames 2–6 recomputed · results in prop"
    assert "J&amp;F 0.750" in text and "not keyframes" in text and "frame(s) 3, 5" in text
    # a correction on frame 3 starts from the propagated mask and keeps what was not edited
    shown, _ = s.marks_at(3, (16, 20))
    shown[15, 19] = 2
    assert s.edit(3, shown, [])
    kf = s.keyframes[3]
    assert kf.ids[3:7, :5].all() and kf.ids[15, 19] == 2 and kf.points == {}
    assert s.timeline_model().keyframes == [3] and s.timeline_model().changed == [3]
    # keypoints from the CSV by frame name
    (out / "kp.csv").write_text("frame,point,object,x,y\n00002,0,1,10.0,8.0\n")
    s.result["keypoints"] = str(out / "kp.csv")
    s.load_result(out)  # rereads result.json: no keypoints there
    assert s.keypoints is None
    s.keypoints, s._kp_index = {"frames": [[(10.0, 8.0)]], "objects": [1]}, {"00002": 0}
    assert s.keypoints_at(2, (8, 10)) == [(5.0, 4.0, 1)] and s.keypoints_at(3, (8, 10)) == []


def test_video_session_copies_each_export(tmp_path):
    s = VideoSession()
    s.set_video(_video(tmp_path, n=3))
    out = tmp_path / "prop"
    exports = {}
    for fmt, name in (("coco", "clip_coco.json"), ("overlay", "clip_overlay.mp4")):
        exports[fmt] = str(out / name)
    ffv1 = {"1": str(out / "clip_masks_obj1.mkv"), "2": str(out / "clip_masks_obj2.mkv")}
    _write_result(out, 3, 0, exports={**exports, "ffv1": ffv1})
    for p in [*exports.values(), *ffv1.values()]:
        Path(p).write_bytes(b"x")
    s.load_result(out)
    got = s.copy_exports(tmp_path / "dest", ["png", "coco", "ffv1", "csv", "overlay"])
    d = tmp_path / "dest"
    assert [p.name for p in got["png"]] == ["00000.png", "00001.png", "00002.png"]
    assert got["png"][0].parent == d / "clip"
    assert got["coco"] == [d / "clip_coco.json"] and got["overlay"] == [d / "clip_overlay.mp4"]
    assert got["ffv1"] == [d / "clip_masks_obj1.mkv", d / "clip_masks_obj2.mkv"]
    assert got["csv"] == [], "no keypoints: nothing to write"
    text = s.exports_text(got, d)
    assert "DAVIS PNGs (3 file(s))" in text and "nothing to write for keypoints CSV" in text


def test_video_session_texts():
    s = VideoSession()
    assert s.progress_text({"done": 3, "total": 10, "stage": "propagating", "rate": 2.5}) == (
        "propagating: 3 / 10 · 2.5 frames/s"
    )
    assert s.progress_text({"done": 0, "total": 0, "stage": "loading"}) == "loading"
    s.job_kind = "propagate"
    assert s.finished_text(True) == "propagation cancelled" and s.finished_text(False) == "failed"
    s.job_kind = "export"
    assert s.finished_text(True) == "export cancelled"
