"""Every export read back with the reference decoder: COCO RLE with pycocotools' COCO API, the
FFV1 mask videos with PyAV, the keypoints CSV, the overlay with the video reader; and COCO
imported back as keyframes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.cli import main
from engine.errors import UserError
from video.annotations import Keyframe, load_keyframes, read_mask_video
from video.features import LabFeatures
from video.io import open_video
from video.masks import read_mask
from video.pipeline import frame_names, propagate_keyframes, read_keypoints_csv
from video.propagation import PropagationConfig


@pytest.fixture(scope="module")
def exported(tmp_path_factory, sample_frames_dir, sample_masks_dir):
    gts = [read_mask(p)[0] for p in sorted(sample_masks_dir.glob("*.png"))]
    two = gts[0].copy()
    two[:40, :40] = 2  # a second object in the corner
    kfs = {0: Keyframe(0, two, {0: (60.0, 50.0, 1), 1: (20.0, 20.0, 2)}), 30: Keyframe(30, gts[30])}
    kfs[30].points = {0: (70.0, 40.0, 1), 1: (20.0, 20.0, 2)}
    out = tmp_path_factory.mktemp("exports")
    cfg = PropagationConfig(short_side=120, n_last=2)
    res = propagate_keyframes(
        sample_frames_dir,
        kfs,
        out,
        LabFeatures(),
        cfg,
        mode="blend",
        exports=["png", "coco", "ffv1", "csv", "overlay"],
    )
    return res, out


def test_coco_rle_read_by_pycocotools(exported):
    from pycocotools.coco import COCO

    res, out = exported
    coco = COCO(res["exports"]["coco"])
    assert sorted(coco.getCatIds()) == res["objects"] == [1, 2]
    masks = [read_mask(p)[0] for p in res["masks"]]
    assert len(coco.getImgIds()) == len(masks) == 48
    for img in coco.loadImgs(coco.getImgIds()):
        ids = masks[img["frame_id"]]
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img["id"])):
            m = coco.annToMask(ann).astype(bool)
            assert (m == (ids == ann["category_id"])).all()
            assert ann["track_id"] == ann["category_id"] and ann["area"] == m.sum()
        present = {a["category_id"] for a in coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))}
        assert present == {o for o in (1, 2) if (ids == o).any()}


def test_coco_imports_back_as_keyframes(exported, sample_frames_dir):
    res, out = exported
    with open_video(sample_frames_dir) as r:
        names, hw = frame_names(r), r.size
    kfs = load_keyframes(res["exports"]["coco"], names, hw)
    masks = [read_mask(p)[0] for p in res["masks"]]
    assert sorted(kfs) == [t for t, m in enumerate(masks) if m.any()]
    for t, kf in kfs.items():
        assert (kf.ids == masks[t]).all()  # object numbering: (category, track) pairs in order


def test_ffv1_mask_videos_read_back_exactly(exported):
    res, out = exported
    masks = [read_mask(p)[0] for p in res["masks"]]
    for obj, path in res["exports"]["ffv1"].items():
        assert path.endswith(f"_obj{obj}.mkv")
        back = list(read_mask_video(path))
        assert len(back) == 48
        assert all((b == (m == int(obj))).all() for b, m in zip(back, masks))
    with pytest.raises(UserError, match="nope.mkv"):
        list(read_mask_video(out / "nope.mkv"))


def test_keypoints_csv_and_overlay(exported, sample_frames_dir):
    res, out = exported
    kp = read_keypoints_csv(res["exports"]["csv"])
    assert kp["objects"] == [1, 2] and len(kp["frames"]) == 48
    assert kp["frames"][0] == [[60.0, 50.0], [20.0, 20.0]]
    assert kp["frames"][30] == [[70.0, 40.0], [20.0, 20.0]]
    with open_video(res["exports"]["overlay"], backend="pyav") as r:
        assert len(r) == 48


def test_cli_keyframes_json_and_cache_info(sample, sample_masks_dir, tmp_path, capsys):
    first = sorted(sample_masks_dir.glob("*.png"))[0]
    kj = tmp_path / "k.json"
    kj.write_text(json.dumps({"keyframes": [{"frame": 0, "mask": str(first)}]}))
    out, ev = tmp_path / "out", tmp_path / "ev.jsonl"
    argv = ["propagate", "--video", str(sample / "shapes.mp4"), "--keyframes", str(kj)]
    argv += ["--out", str(out), "--short-side", "120", "--export", "coco", "ffv1"]
    argv += ["--events", str(ev), "--mode", "blend"]
    assert main(argv) == 0
    done = json.loads(ev.read_text().splitlines()[-1])
    assert done["type"] == "done" and set(done["result"]["exports"]) == {"coco", "ffv1"}
    assert done["result"]["cache"]["computed"] == 48
    tl = json.loads((out / "shapes_timeline.json").read_text())
    assert len(tl["frames"]) == 48 and tl["frames"][0]["state"] == "keyframe"
    assert {"t", "state", "area", "drift"} <= set(tl["frames"][5])
    assert main(argv) == 0  # again: nothing to do, everything from the cache
    done = json.loads(ev.read_text().splitlines()[-1])
    assert done["result"]["propagated"] == 0 and done["result"]["cache"]["computed"] == 0
    capsys.readouterr()
    assert main(["propagate", "--cache-info"]) == 0
    assert "48 frames" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    argv[argv.index(str(kj))] = str(bad)
    assert main(argv) == 2
    assert "bad.json" in capsys.readouterr().err


def test_mask_video_writer_is_exact_on_noise(tmp_path):
    from video.annotations import write_mask_videos

    rng = np.random.default_rng(0)
    maps = [rng.integers(0, 3, (37, 53)).astype(np.uint8) for _ in range(5)]
    paths = write_mask_videos(tmp_path / "n", maps, [1, 2], fps=30)
    for o, p in paths.items():
        assert [bool((a == (m == o)).all()) for a, m in zip(read_mask_video(p), maps)] == [True] * 5
