"""Keyframes: a correction recomputes only the frames it governs (counted: propagated frames and
feature computations), resumed runs equal uninterrupted ones bit for bit, the fast and dense
implementations stay identical in every mode, and bad input is a one-line error naming the file."""

from __future__ import annotations

import json

import pytest
from scipy import ndimage

from engine.errors import UserError
from video.annotations import Keyframe, load_keyframes, write_keyframes_json
from video.features import LabFeatures
from video.keyframes import covered, intervals
from video.masks import read_mask, write_mask
from video.pipeline import propagate_keyframes
from video.propagation import PropagationConfig


class CountingLab(LabFeatures):
    """Lab features that count the frames they are computed for (same repr: same cache)."""

    calls = 0

    def __call__(self, images):
        CountingLab.calls += len(images)
        return super().__call__(images)


@pytest.fixture
def gts(sample_masks_dir):
    return [read_mask(p)[0] for p in sorted(sample_masks_dir.glob("*.png"))]


def pngs(out, name="shapes"):
    return {p.stem: p.read_bytes() for p in sorted((out / name).glob("*.png"))}


CFG = PropagationConfig(short_side=160, n_last=3)


def test_intervals_and_coverage():
    assert [iv.key for iv in intervals([3, 7], 10, "forward")] == ["fwd:3:7", "fwd:7:10"]
    assert [iv.key for iv in intervals([3, 7], 10, "backward")] == ["bwd:-1:3", "bwd:3:7"]
    assert [iv.key for iv in intervals([3, 7], 10, "blend")] == [
        "bwd:-1:3",
        "blend:3:7",
        "fwd:7:10",
    ]
    assert covered([3, 7], 10, "forward").tolist() == [False] * 3 + [True] * 7
    assert covered([0, 9], 10, "blend").all()
    with pytest.raises(UserError, match="mode"):
        intervals([0], 5, "sideways")


def test_forward_correction_changes_nothing_before_it_and_reuses_features(
    sample_frames_dir, gts, tmp_path
):
    out = tmp_path / "out"
    feats = CountingLab()
    CountingLab.calls = 0
    kfs = {0: Keyframe(0, gts[0]), 35: Keyframe(35, gts[35])}
    r1 = propagate_keyframes(sample_frames_dir, kfs, out, feats, CFG)
    assert CountingLab.calls == 48 and r1["cache"]["computed"] == 48
    assert r1["propagated"] == 46 and r1["states"] == {
        "keyframe": 2,
        "done": 46,
        "pending": 0,
        "none": 0,
    }
    before = pngs(out)

    # a correction: a new keyframe at 20 (the ground truth there)
    kfs[20] = Keyframe(20, gts[20])
    r2 = propagate_keyframes(sample_frames_dir, kfs, out, feats, CFG)
    after = pngs(out)
    assert CountingLab.calls == 48 and r2["cache"]["computed"] == 0  # no feature computed again
    assert r2["propagated"] == 14 and r2["written_ranges"] == [[20, 34]]  # frames 21..34
    names = sorted(before)
    assert [names.index(n) for n in names if before[n] != after[n]] != []
    changed = [t for t, n in enumerate(names) if before[n] != after[n]]
    assert min(changed) >= 20 and max(changed) < 35
    assert all(before[n] == after[n] for n in names[:20] + names[35:])

    # correcting that keyframe again (the mask grown by 3 pixels): still only 20..34
    grown = gts[20].copy()
    grown[ndimage.binary_dilation(gts[20] == 1, iterations=3) & (gts[20] == 0)] = 1
    kfs[20] = Keyframe(20, grown)
    r3 = propagate_keyframes(sample_frames_dir, kfs, out, feats, CFG)
    assert r3["propagated"] == 14 and r3["cache"]["computed"] == 0
    assert r3["written_ranges"] == [[20, 34]]  # the keyframe and the frames it governs
    third = pngs(out)
    assert all(third[n] == after[n] for n in names[:20] + names[35:])


def test_blend_correction_recomputes_previous_to_next_keyframe(sample_frames_dir, gts, tmp_path):
    out = tmp_path / "out"
    kfs = {0: Keyframe(0, gts[0]), 20: Keyframe(20, gts[20]), 35: Keyframe(35, gts[35])}
    r1 = propagate_keyframes(sample_frames_dir, kfs, out, LabFeatures(), CFG, mode="blend")
    # 1..19 and 21..34 get both passes, 36..47 the forward pass only
    assert r1["propagated"] == 2 * 19 + 2 * 14 + 12
    before = pngs(out)
    grown = gts[20].copy()
    grown[ndimage.binary_dilation(gts[20] == 1, iterations=4) & (gts[20] == 0)] = 1
    kfs[20] = Keyframe(20, grown)
    r2 = propagate_keyframes(sample_frames_dir, kfs, out, LabFeatures(), CFG, mode="blend")
    assert r2["propagated"] == 2 * 19 + 2 * 14 and r2["cache"]["computed"] == 0
    assert r2["written_ranges"] == [[1, 34]]
    after = pngs(out)
    names = sorted(before)
    assert all(before[n] == after[n] for n in names[35:])  # after the next keyframe: untouched
    assert any(before[n] != after[n] for n in names[1:35])


def test_resumed_runs_equal_uninterrupted_ones(sample_frames_dir, gts, tmp_path):
    kfs = {0: Keyframe(0, gts[0]), 30: Keyframe(30, gts[30])}
    for mode in ("forward", "blend", "backward"):
        ref = tmp_path / f"ref-{mode}"
        propagate_keyframes(sample_frames_dir, kfs, ref, LabFeatures(), CFG, mode=mode)
        out = tmp_path / f"cut-{mode}"
        for stop_after in (7, 23):
            calls = [0]

            def cancel(calls=calls, stop_after=stop_after):
                calls[0] += 1
                return calls[0] > stop_after

            r = propagate_keyframes(
                sample_frames_dir, kfs, out, LabFeatures(), CFG, mode=mode, cancel=cancel
            )
            assert r["stopped"] and r["states"]["pending"] > 0
        r = propagate_keyframes(sample_frames_dir, kfs, out, LabFeatures(), CFG, mode=mode)
        assert not r["stopped"] and r["states"]["pending"] == 0
        assert pngs(out) == pngs(ref), mode


def test_local_and_dense_identical_in_every_mode(sample_frames_dir, gts, tmp_path):
    kfs = {5: Keyframe(5, gts[5]), 25: Keyframe(25, gts[25])}
    cfg = PropagationConfig(short_side=96, n_last=2, radius=3)
    for mode in ("forward", "blend", "backward"):
        a = propagate_keyframes(
            sample_frames_dir, kfs, tmp_path / f"l{mode}", LabFeatures(), cfg, "local", mode=mode
        )
        b = propagate_keyframes(
            sample_frames_dir, kfs, tmp_path / f"d{mode}", LabFeatures(), cfg, "dense", mode=mode
        )
        assert a["propagated"] == b["propagated"] > 0
        assert pngs(tmp_path / f"l{mode}") == pngs(tmp_path / f"d{mode}"), mode


def test_from_frame_leaves_earlier_intervals(sample_frames_dir, gts, tmp_path):
    out = tmp_path / "out"
    kfs = {0: Keyframe(0, gts[0]), 24: Keyframe(24, gts[24])}
    r = propagate_keyframes(sample_frames_dir, kfs, out, LabFeatures(), CFG, from_frame=30)
    assert r["propagated"] == 23  # 25..47 only
    assert r["states"]["pending"] == 23 and r["states"]["done"] == 23
    tl = json.loads((out / "shapes_timeline.json").read_text())
    assert tl["frames"][3]["state"] == "pending" and tl["frames"][30]["state"] == "done"
    assert tl["frames"][24]["state"] == "keyframe" and tl["frames"][30]["area"] > 0


def test_keyframes_from_folder_json_and_errors(sample_frames_dir, gts, tmp_path):
    from video.io import open_video
    from video.pipeline import frame_names

    with open_video(sample_frames_dir) as r:
        names, hw = frame_names(r), r.size
    d = tmp_path / "kf"
    write_mask(d / f"{names[10]}.png", gts[10])
    (d / "keypoints.csv").write_text("frame,point,object,x,y\n10,0,1,40,50\n10,1,2,60,20\n")
    kfs = load_keyframes(d, names, hw)
    assert list(kfs) == [10] and (kfs[10].ids == gts[10]).all() and kfs[10].points[1] == (60, 20, 2)
    js = write_keyframes_json(tmp_path / "k.json", kfs)
    back = load_keyframes(js, names, hw)
    assert (back[10].ids == gts[10]).all() and back[10].points == kfs[10].points
    # one-line errors naming the file
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(UserError, match="bad.json"):
        load_keyframes(bad, names, hw)
    bad.write_text(json.dumps({"keyframes": [{"frame": 999, "mask": "x.png"}]}))
    with pytest.raises(UserError, match="out of range"):
        load_keyframes(bad, names, hw)
    small = tmp_path / "small"
    write_mask(small / f"{names[0]}.png", gts[0][:10, :10])
    with pytest.raises(UserError, match=r"small.*10x10"):
        load_keyframes(small, names, hw)
    pts = tmp_path / "pts"
    pts.mkdir()
    (pts / "keypoints.csv").write_text("frame,point,object,x,y\n0,0,1,4000,5\n")
    with pytest.raises(UserError, match="outside"):
        load_keyframes(pts, names, hw)


def test_removing_a_keyframe_recomputes_what_it_governed(sample_frames_dir, gts, tmp_path):
    out = tmp_path / "out"
    kfs = {0: Keyframe(0, gts[0]), 20: Keyframe(20, gts[20])}
    propagate_keyframes(sample_frames_dir, kfs, out, LabFeatures(), CFG)
    del kfs[20]
    r = propagate_keyframes(sample_frames_dir, kfs, out, LabFeatures(), CFG)
    assert r["written_ranges"] == [[20, 47]] and r["propagated"] == 28
    ref = tmp_path / "ref"
    propagate_keyframes(sample_frames_dir, kfs, ref, LabFeatures(), CFG)
    assert pngs(out) == pngs(ref)


def test_feature_cache_bounds(tmp_path):
    import torch

    from video.feature_cache import FeatureCache, cache_info

    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    calls = []

    def compute(idx):
        calls.extend(idx)
        return torch.nn.functional.normalize(torch.randn(len(idx), 4, 8, 8), dim=1)

    fc = FeatureCache(
        compute, video, "m", (64, 64), tmp_path / "c", mem_bytes=3 * 1536, disk_bytes=2000
    )
    a = fc.get([0, 1, 2, 3])
    assert len(fc._mem) == 3  # 3 frames of 512 bytes + bookkeeping fit the memory bound
    assert fc.disk_used() <= 2000 and fc.evicted >= 1  # files of 640 bytes, bound 2000
    b = fc.get([3])
    assert torch.equal(a[3], b[0]) and calls == [0, 1, 2, 3]
    info = cache_info(tmp_path / "c")
    assert info["entries"][0]["model"] == "m" and info["entries"][0]["size"] == [64, 64]
