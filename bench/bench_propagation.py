"""Label propagation on DAVIS-2016 sequences at 480p: J&F and speed per feature source, and the
fast (local-window) implementation against the plain dense reference in the same run.

    python bench/bench_propagation.py [--root ../shared/data/davis2016-train-mini]
        [--features lab,colorization,image] [--colorization RUN | --train-steps 150]
        [--image-checkpoint RUN] [--max-frames 0] [--dense-frames 0] [--threads 1]

Per sequence, each frame's features are computed once (timed: "features f/s"), then both
implementations propagate from the same features (timed: "propagation f/s", the label transfer
and the upsampled argmax); their masks are compared pixel for pixel. J&F is the DAVIS global mean
over objects (one object per DAVIS-2016 sequence), first and last frames excluded.

Feature sources: raw Lab pixels (stride 8); a colorization_video model (a given run, or trained
here for --train-steps on the sequences' frames plus the shipped sample video); an image SSL
checkpoint (any `load_feature_extractor` source; skipped when none is given).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from video.features import LabFeatures, load_dense_features  # noqa: E402
from video.io import FolderReader  # noqa: E402
from video.jf import evaluate_sequence, mean_over_objects  # noqa: E402
from video.masks import object_ids, read_mask  # noqa: E402
from video.pipeline import davis_sequences, frame_names  # noqa: E402
from video.propagation import PropagationConfig, Propagator, ids_to_onehot, labels_to_ids  # noqa: E402


def train_colorization(root: Path, steps: int, out: Path, size: int, batch: int) -> Path:
    """A short colorization_video run on the DAVIS sequences' frames and the sample video."""
    import video.methods  # noqa: F401
    from engine.build import apply_method_defaults, train

    data = Path(tempfile.mkdtemp(prefix="colorize-data-"))
    for name, img_dir, _ in davis_sequences(root):
        os.symlink(img_dir.resolve(), data / name)
    os.symlink(
        (ROOT / "assets" / "sample" / "video" / "JPEGImages" / "480p" / "shapes").resolve(),
        data / "shapes",
    )
    cfg = apply_method_defaults(
        {
            "data": str(data),
            "image_size": size,
            "batch_size": batch,
            "max_steps": steps,
            "num_workers": 1,
            "run_dir": str(out),
            "checkpoint_every": steps,
            "log_every": 10,
        },
        {},
        "colorization_video",
    )
    t = time.perf_counter()
    res = train(cfg)
    print(
        f"trained colorization_video for {steps} steps ({size}px, batch {batch}) in {time.perf_counter() - t:.0f} s, last losses {res['losses']}",
        flush=True,
    )
    return out


def run_source(
    name: str, features, seqs, cfg: PropagationConfig, max_frames: int, dense_frames: int
) -> dict:
    rows, objects = [], []
    tot = {
        "frames": 0,
        "feat_s": 0.0,
        "local_s": 0.0,
        "dense_s": 0.0,
        "dense_frames": 0,
        "mismatch": 0,
        "compared": 0,
    }
    for seq, img_dir, ann_dir in seqs:
        reader = FolderReader(img_dir)
        n = min(len(reader), max_frames) if max_frames else len(reader)
        names = frame_names(reader)[:n]
        gts = [read_mask(ann_dir / f"{s}.png", size=reader.size)[0] for s in names]
        ids = [0, *object_ids(gts[0])]
        onehot = ids_to_onehot(gts[0], ids)
        prop = Propagator(features, cfg)
        t = time.perf_counter()
        feats = []
        for i in range(0, n, cfg.batch_frames):
            feats += list(
                prop.embed(torch.from_numpy(reader.frames(range(i, min(n, i + cfg.batch_frames)))))
            )
        feat_s = time.perf_counter() - t
        masks = {}
        for impl, limit in (("local", n), ("dense", min(n, dense_frames) if dense_frames else n)):
            p = Propagator(features, cfg, impl)
            t = time.perf_counter()
            soft = p.reset(feats[0], onehot)
            out = [gts[0]]
            for f in feats[1:limit]:
                out.append(labels_to_ids(p.step(f), reader.size, ids, cfg.norm_mask))
            masks[impl] = out
            tot[f"{impl}_s"] += time.perf_counter() - t
            del soft
        d = len(masks["dense"])
        tot["dense_frames"] += d
        tot["mismatch"] += int(
            sum((a != b).sum() for a, b in zip(masks["local"][:d], masks["dense"]))
        )
        tot["compared"] += d
        res = evaluate_sequence(masks["local"], gts, objects=ids[1:])
        objects.append(res["objects"])
        rows.append({"sequence": seq, "frames": n, "J": res["J"], "F": res["F"], "J&F": res["J&F"]})
        tot["frames"] += n
        tot["feat_s"] += feat_s
        print(
            f"  {name:>12} {seq:<12} J {res['J']:.3f} F {res['F']:.3f} J&F {res['J&F']:.3f} ({n} frames)",
            flush=True,
        )
    steps_local = tot["frames"] - len(seqs)
    steps_dense = tot["dense_frames"] - len(seqs)
    return {
        "features": name,
        **mean_over_objects(objects),
        "sequences": rows,
        "frames": tot["frames"],
        "features_fps": tot["frames"] / tot["feat_s"],
        "local_fps": steps_local / tot["local_s"],
        "dense_fps": steps_dense / tot["dense_s"],
        "speedup": (steps_local / tot["local_s"]) / (steps_dense / tot["dense_s"]),
        "dense_frames_compared": tot["compared"],
        "mismatched_pixels": tot["mismatch"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "davis2016-train-mini"))
    p.add_argument("--sequences", nargs="+")
    p.add_argument(
        "--features",
        default="lab,colorization,image",
        help="comma list of lab, colorization, image",
    )
    p.add_argument(
        "--colorization", help="colorization_video run dir / checkpoint (default: train one here)"
    )
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--train-size", type=int, default=64)
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument(
        "--image-checkpoint", help="image SSL run dir / checkpoint / export for source (c)"
    )
    p.add_argument(
        "--learned-short-side",
        type=int,
        default=0,
        help="frames' shorter side for learned features (0 = 480p as is)",
    )
    p.add_argument("--max-frames", type=int, default=0, help="frames per sequence (0 = all)")
    p.add_argument(
        "--dense-frames",
        type=int,
        default=0,
        help="frames per sequence for the dense reference (0 = all)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 on a shared CPU: spinning threads slow small ops)",
    )
    p.add_argument("--json", help="write all results here")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    root = Path(a.root)
    if not root.exists():
        sys.exit(f"{root}: not found (the shared data folder is needed for this benchmark)")
    seqs = davis_sequences(root, a.sequences)
    wanted = a.features.split(",")
    results = []
    cfg = PropagationConfig()
    print(f"{len(seqs)} sequences, torch threads {a.threads}, {cfg}", flush=True)
    if "lab" in wanted:
        results.append(run_source("lab", LabFeatures(8), seqs, cfg, a.max_frames, a.dense_frames))
    learned = PropagationConfig(short_side=a.learned_short_side)
    if "colorization" in wanted:
        run = (
            Path(a.colorization)
            if a.colorization
            else train_colorization(
                root,
                a.train_steps,
                Path(tempfile.mkdtemp(prefix="colorize-run-")),
                a.train_size,
                a.train_batch,
            )
        )
        results.append(
            run_source(
                "colorization",
                load_dense_features(run),
                seqs,
                learned,
                a.max_frames,
                a.dense_frames,
            )
        )
    if "image" in wanted and a.image_checkpoint:
        results.append(
            run_source(
                "image-ssl",
                load_dense_features(a.image_checkpoint),
                seqs,
                learned,
                a.max_frames,
                a.dense_frames,
            )
        )
    elif "image" in wanted:
        print("image SSL source skipped: pass --image-checkpoint RUN_DIR", flush=True)

    print(
        "\n| features | J | F | J&F | frames | features f/s | propagation f/s (local) | (dense reference) | speed-up | masks identical |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        same = "yes" if r["mismatched_pixels"] == 0 else f"no ({r['mismatched_pixels']} px)"
        print(
            f"| {r['features']} | {r['J']:.3f} | {r['F']:.3f} | {r['J&F']:.3f} | {r['frames']} | {r['features_fps']:.2f} | {r['local_fps']:.2f} | {r['dense_fps']:.2f} | {r['speedup']:.1f}x | {same} ({r['dense_frames_compared']} frames) |"
        )
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {
                    "results": results,
                    "threads": a.threads,
                    "machine": platform.platform(),
                    "config": vars(a),
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
