"""A long video (5,000 frames, generated): `selfsup propagate` in a child process keeps its
peak memory under a stated bound, is killed outright mid-way, and the same command continues
from the frames on disk to the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from video.io import VideoWriter
from video.masks import write_mask

ROOT = Path(__file__).resolve().parents[2]
N = 5000
SIDE = 64
GROWTH_BOUND_MB = 120  # 5,000 frames may not cost more than a 200-frame run plus this

# VmHWM is this process image's own peak; getrusage's ru_maxrss would also count the pytest
# parent's RSS at fork (Linux keeps the pre-exec maximum), gigabytes late in a full run
CHILD = """
import re, sys
from app.cli import main
code = main(sys.argv[1:])
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
print("MAXRSS_KB", hwm, flush=True)
sys.exit(code)
"""


def make_video(path: Path, n: int) -> np.ndarray:
    """A disc moving on a textured background; returns the first frame's mask."""
    rng = np.random.default_rng(0)
    bg = (rng.integers(0, 80, (SIDE, SIDE, 3))).astype(np.uint8)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    with VideoWriter(path, fps=30, crf=18, gop=30) as w:
        for t in range(n):
            cx = 32 + 14 * np.sin(t / 40)
            cy = 32 + 10 * np.cos(t / 55)
            disc = (xx - cx) ** 2 + (yy - cy) ** 2 < 10**2
            f = bg.copy()
            f[disc] = (230, 60, 40)
            w.write(f)
            if t == 0:
                first = disc.astype(np.uint8)
    return first


def run_child(argv, env, kill_when=None):
    p = subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    if kill_when is not None:
        while p.poll() is None and not kill_when():
            time.sleep(0.2)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()
        return p.returncode, None
    out, _ = p.communicate(timeout=300)
    rss = [int(line.split()[1]) for line in out.splitlines() if line.startswith("MAXRSS_KB")]
    return p.returncode, rss[0] / 1024 if rss else None


@pytest.mark.slow
def test_long_video_bounded_memory_and_resume_after_kill(tmp_path):
    t0 = time.perf_counter()
    video = tmp_path / "long.mp4"
    first = make_video(video, N)
    mask = tmp_path / "first.png"
    write_mask(mask, first)
    out = tmp_path / "out"
    env = {
        **os.environ,
        "SELFSUP_FEATURE_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
        "SELFSUP_VIDEO_BACKEND": "pyav",
    }
    argv = ["propagate", "--video", str(video), "--mask", str(mask), "--out", str(out)]
    argv += [
        "--no-overlay",
        "--precision",
        "fp32",
        "--n-last",
        "3",
        "--events",
        str(tmp_path / "e.jsonl"),
    ]
    owner = out / ".long.state" / "masks" / "owner.u32"

    def far_enough():
        try:
            return int((np.fromfile(owner, np.uint32) != 0).sum()) >= N // 3
        except (OSError, ValueError):
            return False

    code, _ = run_child(argv, env, kill_when=far_enough)
    assert code == -signal.SIGKILL
    done_at_kill = int((np.fromfile(owner, np.uint32) != 0).sum())
    assert N // 3 <= done_at_kill < N

    code, rss_mb = run_child(argv, env)
    assert code == 0
    res = json.loads((out / "result.json").read_text())
    assert res["states"] == {"keyframe": 1, "done": N - 1, "pending": 0, "none": 0}
    # it continued: only the frames missing at the kill were propagated again (plus at most
    # the one being written when it died)
    assert N - done_at_kill <= res["propagated"] <= N - done_at_kill + 1
    assert res["cache"]["computed"] <= N - done_at_kill + 16  # features of the done part: cached
    assert len(list((out / "long").glob("*.png"))) == N
    # bounded = nothing grows with the length: the same command on a 200-frame video, in the
    # same environment, sets the baseline (imports alone are 750-900 MB depending on the machine)
    short = tmp_path / "short.mp4"
    write_mask(tmp_path / "first_short.png", make_video(short, 200))
    short_argv = ["propagate", "--video", str(short), "--mask", str(tmp_path / "first_short.png")]
    short_argv += ["--out", str(tmp_path / "out_short"), "--no-overlay", "--precision", "fp32"]
    code_short, rss_short = run_child(short_argv + ["--n-last", "3"], env)
    assert code_short == 0 and rss_mb is not None and rss_short is not None
    assert rss_mb - rss_short < GROWTH_BOUND_MB, (rss_mb, rss_short)
    tl = json.loads((out / "long_timeline.json").read_text())
    assert len(tl["frames"]) == N and tl["frames"][-1]["area"] > 0.05
    print(
        f"peak RSS {rss_mb:.0f} MB (200 frames: {rss_short:.0f} MB), {done_at_kill} frames done at the kill, "
        f"{res['propagated']} propagated after, {time.perf_counter() - t0:.0f} s in all"
    )
