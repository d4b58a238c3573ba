"""The jobs the desktop app runs as `selfsup` commands: J&F of a mask folder, the overlay video
with keypoints, and the --events stream the app follows (progress, then the result)."""

from __future__ import annotations

import json

import numpy as np

from app.cli import main
from video.io import open_video
from video.masks import read_mask, write_mask
from video.pipeline import read_keypoints_csv, render_overlay, score_masks


def test_score_of_ground_truth_is_perfect_and_shifted_is_not(sample_masks_dir, tmp_path):
    gts = sorted(sample_masks_dir.glob("*.png"))
    r = score_masks(gts, sample_masks_dir)
    assert r["J"] == 1.0 and r["F"] == 1.0
    shifted = []
    for p in gts:
        write_mask(tmp_path / p.name, np.roll(read_mask(p)[0], 6, axis=1))
        shifted.append(tmp_path / p.name)
    r = score_masks(shifted, sample_masks_dir)
    assert 0.3 < r["J"] < 0.95 and r["J&F"] < 1.0
    assert score_masks(shifted[:-1], sample_masks_dir) is None  # another frame count


def test_overlay_video_with_masks_and_keypoints(sample, sample_masks_dir, tmp_path):
    gts = sorted(sample_masks_dir.glob("*.png"))
    kp = tmp_path / "k.csv"
    rows = ["frame,point,object,x,y"] + [
        f"{t:05d},{k},{k + 1},{x},{y}"
        for t in range(len(gts))
        for k, (x, y) in enumerate([(20, 30), (100, 90)])
    ]
    kp.write_text("\n".join(rows) + "\n")
    assert read_keypoints_csv(kp)["objects"] == [1, 2]
    seen = []
    out = render_overlay(
        sample / "shapes.mp4", tmp_path / "o.mp4", gts, kp, 0.5, lambda d, n, s: seen.append(d)
    )
    with (
        open_video(out, backend="pyav") as r,
        open_video(sample / "shapes.mp4", backend="pyav") as src,
    ):
        assert r.num_frames == src.num_frames == len(gts)
        a, b = r.frame(0).astype(int), src.frame(0).astype(int)
    assert np.abs(a - b).mean() > 5  # the overlay changed the picture
    assert seen[-1] == len(gts)


def test_propagate_writes_events_and_result(sample, sample_masks_dir, tmp_path):
    out, events = tmp_path / "out", tmp_path / "events.jsonl"
    first = sorted(sample_masks_dir.glob("*.png"))[0]
    argv = ["propagate", "--video", str(sample / "shapes.mp4"), "--mask", str(first)]
    argv += ["--points", "96,57,1", "--out", str(out), "--n-last", "2", "--no-overlay"]
    argv += ["--ground-truth", str(sample_masks_dir), "--events", str(events)]
    assert main(argv) == 0
    recs = [json.loads(line) for line in events.read_text().splitlines()]
    progress = [r for r in recs if r["type"] == "progress"]
    assert {r["stage"] for r in progress} == {"masks", "keypoints"}
    assert progress[-1]["done"] == progress[-1]["total"] == 48
    done = recs[-1]
    assert done["type"] == "done" and done["result"]["frames"] == 48
    assert done["result"]["jf"]["J&F"] > 0.8 and len(done["result"]["masks"]) == 48
    assert json.loads((out / "result.json").read_text())["keypoints"] == done["result"]["keypoints"]
    # a user error ends the stream with an error record naming the problem
    bad = tmp_path / "bad.jsonl"
    assert (
        main(
            [
                "propagate",
                "--video",
                str(sample / "nope.mp4"),
                "--points",
                "1,1",
                "--out",
                str(out),
                "--events",
                str(bad),
            ]
        )
        == 2
    )
    last = json.loads(bad.read_text().splitlines()[-1])
    assert last["type"] == "error" and "nope.mp4" in last["message"]
