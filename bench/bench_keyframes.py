"""Keyframes on DAVIS-2016 sequences: J&F of propagation from ground truth given at frame 0
only, at frames 0 and N/2, and every 20 frames, forward only vs the forward+backward blend,
scored on the frames that are not keyframes; plus what the correction at N/2 buys on the frames
it governs (forward: N/2+1..N-1; blend: 1..N-1).

    python bench/bench_keyframes.py [--root ../shared/data/davis2016-train-mini] [--short-side 0]
        [--checkpoint lab | dino:vits8:FILE ...] [--threads 1] [--json out.json]

Every run goes through `video.pipeline.propagate_keyframes` (the code `selfsup propagate
--keyframes DIR --mode forward|blend` runs), one feature cache per sequence, so the features of a
sequence are computed once for all six runs. J and F as the DAVIS 2017 evaluation per frame
(no [1:-1] cut: the scored frames are exactly the non-keyframes), mean over frames per sequence,
then over the sequences (one object each in DAVIS 2016).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from video.annotations import Keyframe  # noqa: E402
from video.features import load_dense_features  # noqa: E402
from video.io import FolderReader  # noqa: E402
from video.jf import evaluate_sequence  # noqa: E402
from video.masks import read_mask  # noqa: E402
from video.pipeline import davis_sequences, frame_names, propagate_keyframes  # noqa: E402
from video.propagation import PropagationConfig  # noqa: E402

SCHEDULES = {
    "frame 0": lambda n: [0],
    "frames 0, N/2": lambda n: [0, n // 2],
    "every 20": lambda n: list(range(0, n, 20)),
}


def score(preds: dict[int, np.ndarray], gts: list[np.ndarray], frames: list[int]) -> float:
    r = evaluate_sequence([preds[t] for t in frames], [gts[t] for t in frames], [1], False)
    return r["J&F"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--root", default=str(ROOT.parent / "shared/data/davis2016-train-mini"))
    ap.add_argument("--checkpoint", default="lab")
    ap.add_argument("--short-side", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    features = load_dense_features(args.checkpoint)
    cfg = PropagationConfig(short_side=args.short_side)
    cache = tempfile.mkdtemp(prefix="kf-cache-")
    rows: dict[tuple[str, str], list[float]] = {}
    governed: dict[tuple[str, str], list[float]] = {}
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    for seq, img_dir, ann_dir in davis_sequences(args.root):
        reader = FolderReader(img_dir)
        names = frame_names(reader)
        ann = {p.stem: p for p in ann_dir.glob("*.png")}
        gts = [read_mask(ann[s], size=reader.size)[0] for s in names]
        gts = [np.where(g == 255, 0, g) for g in gts]
        n = len(names)
        reader.close()
        for mode in ("forward", "blend"):
            preds_by = {}
            for sched, keys_of in SCHEDULES.items():
                keys = keys_of(n)
                kfs = {t: Keyframe(t, gts[t]) for t in keys}
                out = Path(tempfile.mkdtemp(prefix=f"kf-{seq}-"))
                ts = time.perf_counter()
                res = propagate_keyframes(
                    img_dir, kfs, out, features, cfg, mode=mode, cache_dir=cache
                )
                preds = {t: read_mask(out / seq / f"{names[t]}.png")[0] for t in range(n)}
                preds_by[sched] = preds
                scored = [t for t in range(n) if t not in set(keys)]
                rows.setdefault((mode, sched), []).append(score(preds, gts, scored))
                print(
                    f"{seq:12s} {mode:7s} {sched:14s} J&F {rows[(mode, sched)][-1]:.3f} "
                    f"({len(scored)} frames, {time.perf_counter() - ts:.1f} s, "
                    f"features computed {res['cache']['computed']})",
                    flush=True,
                )
            # the correction at N/2: the frames it governs, without and with it
            h = n // 2
            gov = list(range(h + 1, n)) if mode == "forward" else [t for t in range(1, n) if t != h]
            for sched in ("frame 0", "frames 0, N/2"):
                governed.setdefault((mode, sched), []).append(score(preds_by[sched], gts, gov))
    elapsed = time.perf_counter() - t0
    print(
        f"\n{elapsed:.0f} s, load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, "
        f"at end {' '.join(f'{v:.2f}' for v in os.getloadavg())}\n"
    )
    print("| ground truth given at | forward J&F | forward+backward blend J&F |")
    print("|---|---|---|")
    for sched in SCHEDULES:
        f, b = np.mean(rows[("forward", sched)]), np.mean(rows[("blend", sched)])
        print(f"| {sched} | {f:.3f} | {b:.3f} |")
    print("\n| correction at N/2, on the frames it governs | without | with | gain |")
    print("|---|---|---|---|")
    for mode, what in (("forward", "forward: N/2+1..N-1"), ("blend", "blend: 1..N-1")):
        a, b = np.mean(governed[(mode, "frame 0")]), np.mean(governed[(mode, "frames 0, N/2")])
        print(f"| {what} | {a:.3f} | {b:.3f} | {b - a:+.3f} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "rows": {f"{m}|{s}": v for (m, s), v in rows.items()},
                    "governed": {f"{m}|{s}": v for (m, s), v in governed.items()},
                    "seconds": elapsed,
                    "checkpoint": args.checkpoint,
                    "short_side": args.short_side,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
