"""Video page: paint/keypoints on any frame make keyframes, propagation in a worker process
writes masks that overlap the sample's ground truth, a correction on frame 10 recomputes only
what it governs (timeline and result agree), every export format reads back, and cancelling
leaves no process behind and continues on the next Propagate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.app.helpers import REPO, group_members, pid_alive, wait_until


@pytest.fixture(scope="module")
def sample_video(tmp_path_factory) -> Path:
    """The committed sample (assets/sample/video), else the same generator into a temp folder."""
    root = REPO / "assets" / "sample" / "video"
    if (root / "JPEGImages").is_dir():
        return root
    from video.sample import write_sample

    return write_sample(tmp_path_factory.mktemp("video-sample"))


@pytest.fixture(autouse=True)
def feature_cache(tmp_path, monkeypatch):
    """The child processes cache features in the test's folder, not the user's."""
    monkeypatch.setenv("SELFSUP_FEATURE_CACHE", str(tmp_path / "feature-cache"))


def open_sample(window, qtbot, path) -> None:
    page = window.video_page
    window.show_page("video")
    page.open(path)
    wait_until(qtbot, lambda: page.video is not None and not page.loading, 60, "the video to load")


def wait_job(qtbot, page, what: str = "propagation") -> None:
    wait_until(qtbot, lambda: not page.is_active(), 300, f"{what} to finish")


def stroke(page, x: float, y: float, x2: float | None = None) -> None:
    """One brush stroke as the mouse makes it: stamps, then the release that reports the edit."""
    canvas = page.canvas
    canvas._last = None
    canvas._push_undo()
    canvas.paint_at(x, y)
    if x2 is not None:
        canvas.paint_at(x2, y)
    canvas._last = None
    canvas.edited.emit()


def mask_bytes(paths) -> dict[str, bytes]:
    return {Path(p).stem: Path(p).read_bytes() for p in paths}


def test_paint_erase_and_keypoints_on_any_frame(window, qtbot, sample_video, tmp_path):
    open_sample(window, qtbot, sample_video)
    page, canvas, s = window.video_page, window.video_page.canvas, window.video_page.session
    assert page.video.source.ground_truth is not None and s.keyframes == {}
    canvas.brush = 5
    page.set_tool("brush")
    stroke(page, 30, 30, 40)  # a stroke: line between the stamps
    page._add_object()
    assert canvas.current == 2
    stroke(page, 90, 90)
    ids, _ = page.annotation()
    assert ids[30, 35] == 1 and ids[90, 90] == 2 and ids[0, 0] == 0
    assert sorted(s.keyframes) == [0] and s.keyframes[0].ids[30, 35] == 1
    page.set_tool("erase")
    stroke(page, 90, 90)
    assert page.annotation()[0][90, 90] == 0 and s.keyframes[0].ids[90, 90] == 0
    page.set_tool("point")
    canvas.add_point(50, 60)
    assert page.annotation()[1] == [(50.0, 60.0, 2)]
    assert s.keyframes[0].points == {0: (50.0, 60.0, 2)}
    canvas.undo()
    assert canvas.points == [] and s.keyframes[0].points == {}

    # any frame: painting frame 20 makes it a keyframe; the timeline bar marks it
    page.timeline.setValue(20)
    assert page.annotation()[0].max() == 0, "frame 20 starts empty (nothing propagated yet)"
    page.set_tool("brush")
    stroke(page, 60, 60)
    assert sorted(s.keyframes) == [0, 20] and page.timeline_bar.model.keyframes == [0, 20]
    assert page.timeline_bar.model.changed == [0, 20]
    assert page.remove_key_btn.isEnabled()
    page.timeline.setValue(0)
    assert page.annotation()[0][30, 35] == 1, "frame 0 shows its own keyframe again"
    page.timeline.setValue(20)
    page.remove_key_btn.click()
    assert sorted(s.keyframes) == [0] and page.annotation()[0].max() == 0
    # a keypoint dragged keeps its number
    page.set_tool("point")
    page.timeline.setValue(0)
    canvas.add_point(50, 60)
    canvas.add_point(10, 10)
    canvas.move_point(0, 55, 61)
    canvas.edited.emit()
    assert s.keyframes[0].points == {0: (55.0, 61.0, 2), 1: (10.0, 10.0, 2)}

    # a mask of the wrong size is refused with the one-line message of video.masks
    from PIL import Image

    from app.gui.errors import dialogs

    bad = tmp_path / "bad-mask.png"
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(bad)
    page.load_mask(bad)
    assert "12x10" in dialogs.last_message and "\n" not in dialogs.last_message


def test_propagation_overlaps_ground_truth(window, qtbot, sample_video):
    from video.jf import region_j
    from video.masks import read_mask

    open_sample(window, qtbot, sample_video)
    page = window.video_page
    page.use_ground_truth()
    assert page.annotation()[0].max() >= 1 and sorted(page.session.keyframes) == [0]
    page.propagate_btn.click()
    assert page.is_active() and page.cancel_btn.isEnabled()
    wait_job(qtbot, page)
    masks = [Path(p) for p in page.result["masks"]]
    gts = sorted(page.video.source.ground_truth.glob("*.png"))
    assert len(masks) == len(gts) == page.video.num_frames
    j = [
        region_j(read_mask(m)[0] == o, read_mask(g)[0] == o)
        for m, g in list(zip(masks, gts))[1:-1]
        for o in (1, 2)
    ]
    print(
        f"\nmean J over objects and frames: {np.mean(j):.3f}; page reports J&F {page.result['jf']['J&F']:.3f}"
    )
    assert np.mean(j) > 0.6 and min(j) > 0.2
    assert "J&amp;F" in page.jf_label.text()
    model = page.timeline_bar.model
    assert model.states == ["keyframe"] + ["done"] * 47 and model.keyframes == [0]
    assert model.recomputed == [(0, 47)] and model.changed == []
    # the timeline shows the propagated mask on a later frame
    page.timeline.setValue(page.video.num_frames - 1)
    assert page.canvas.ids is not None and page.canvas.ids.max() >= 1
    assert not page.session.is_keyframe(page.video.num_frames - 1)
    dest = page.export_masks(window.video_page.result_dir.parent / "export")
    assert len(list(dest.glob("*.png"))) == len(masks)


def test_correction_on_frame_10_recomputes_only_its_frames_and_exports_read_back(
    window, qtbot, sample_video, tmp_path
):
    from app.gui.sessions.video import EXPORT_FORMATS
    from video.annotations import read_coco, read_mask_video
    from video.io import open_video
    from video.masks import read_mask
    from video.pipeline import read_keypoints_csv

    open_sample(window, qtbot, sample_video)
    page, s = window.video_page, window.video_page.session
    page.use_ground_truth()
    page.set_tool("point")
    page.canvas.add_point(40.0, 50.0)  # a keypoint of object 1 on frame 0
    assert s.keyframes[0].points == {0: (40.0, 50.0, 1)}
    page.propagate()
    wait_job(qtbot, page)
    first = page.result
    assert first["written_ranges"] == [[0, 47]] and not first["stopped"]
    out = page.result_dir
    before = mask_bytes(first["masks"])

    # correct frame 10: it shows the propagated mask; a stroke of object 1 in a corner
    page.timeline.setValue(10)
    shown = page.annotation()[0].copy()
    assert shown.max() >= 1 and not s.is_keyframe(10)
    page.set_tool("brush")
    page.canvas.brush = 4
    page.canvas.current = 1
    stroke(page, 6, 120)
    painted = page.annotation()[0].copy()
    assert s.is_keyframe(10) and s.keyframes[10].points == {}, "a mask edit only"
    assert (s.keyframes[10].ids == painted).all() and (painted != shown).sum() > 10
    assert page.timeline_bar.model.changed == [10]
    page.propagate()
    wait_job(qtbot, page)
    second = page.result
    assert page.result_dir == out, "the same folder for the same video"
    assert second["written_ranges"] == [[10, 47]] and second["propagated"] == 37
    assert second["cache"]["computed"] == 0, "the features of the first pass are reused"
    model = page.timeline_bar.model
    assert model.keyframes == [0, 10] and model.changed == []
    assert model.recomputed == [(10, 47)]
    assert model.recomputed_frames() == set(range(10, 48))
    assert model.states[0] == model.states[10] == "keyframe" and model.states[11] == "done"
    after = mask_bytes(second["masks"])
    names = sorted(before)
    assert all(after[n] == before[n] for n in names[:10]), "frames before 10 unchanged"
    assert (read_mask(out / page.video.source.name / f"{names[10]}.png")[0] == painted).all()
    assert page.canvas.ids[120, 6] == 1, "frame 10 shows its keyframe"

    # every export format from the page, read back
    dest = tmp_path / "exported"
    page.export(dest, list(EXPORT_FORMATS))
    wait_job(qtbot, page, "the export")
    got = page.last_export
    assert set(got) == set(EXPORT_FORMATS) and all(got.values()), got
    assert page.result["written_ranges"] == [], "an export recomputes nothing"
    pngs = got["png"]
    assert len(pngs) == 48 and pngs[0].parent == dest / page.video.source.name
    ids = [read_mask(p)[0] for p in pngs]
    assert (ids[10] == painted).all()
    hw = ids[0].shape
    coco = read_coco(got["coco"][0], names, hw)
    assert all((coco.get(t, np.zeros(hw, np.uint8)) == ids[t]).all() for t in range(48))
    assert sorted(p.name for p in got["ffv1"]) == [
        f"{page.video.source.name}_masks_obj{o}.mkv" for o in (1, 2)
    ]
    for o, p in zip((1, 2), sorted(got["ffv1"])):
        frames = list(read_mask_video(p))
        assert len(frames) == 48 and all((f == (m == o)).all() for f, m in zip(frames, ids))
    kp = read_keypoints_csv(got["csv"][0])
    assert len(kp["frames"]) == 48 and kp["frames"][0] == [[40.0, 50.0]] and kp["objects"] == [1]
    with open_video(got["overlay"][0], backend="pyav") as r:
        assert r.num_frames == 48 and r.size == hw
    assert "exported to" in page.prop_label.text()


def test_cancel_leaves_no_process_and_propagate_continues(window, qtbot, sample_video):
    from app.gui.errors import dialogs

    open_sample(window, qtbot, sample_video)
    page = window.video_page
    page.use_ground_truth()
    page.propagate()
    pid = page.job.pid
    assert pid_alive(pid)
    wait_until(
        qtbot,
        lambda: page.progress.maximum() > 1 and page.progress.value() >= 2,
        120,
        "the worker to be mid-propagation",
    )
    shown = len(dialogs.shown)
    page.cancel_btn.click()
    wait_until(qtbot, lambda: not page.is_active(), 30, "the cancelled worker to exit")
    assert not pid_alive(pid) and group_members(pid) == [], "cancel left processes behind"
    assert len(dialogs.shown) == shown, "a cancel is not an error"
    assert "cancelled" in page.prop_label.text()
    assert page.propagate_btn.isEnabled() and not page.cancel_btn.isEnabled()
    # the next Propagate continues: only the frames not done before the stop
    page.propagate()
    wait_job(qtbot, page)
    r = page.result
    assert not r["stopped"] and r["states"]["done"] == 47
    assert 0 < r["propagated"] < 47 and r["written_ranges"][0][0] > 1, r["written_ranges"]
    assert page.timeline_bar.model.states.count("done") == 47
