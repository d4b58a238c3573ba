"""Feature-extraction speed of the published ViTs: frames per second of FeatureExtractor.dense
at 480p (the input of video propagation) and photos per second of FeatureExtractor.embed at
224 px in batches of 32 (what indexing a photo folder does), for DINO ViT-S/16, ViT-S/8 and
DINOv2 ViT-S/14 (the architectures of engine.pretrained's catalog with random weights: speed
does not depend on them), in fp32 and at the precision the CPU probe picks.

    python bench/bench_features.py [--frames 8] [--allow-load]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import machine  # noqa: E402

from engine.features import FeatureExtractor  # noqa: E402
from engine.pretrained import CATALOG, build  # noqa: E402

MODELS = ["dino:vits16", "dino:vits8", "dinov2:vits14"]


def frames_per_s(ex: FeatureExtractor, frames: torch.Tensor) -> float:
    ex.dense(frames[:1])  # warm-up: kernels chosen, caches filled
    t = time.perf_counter()
    for f in frames:
        ex.dense(f[None])
    return len(frames) / (time.perf_counter() - t)


def photos_per_s(ex: FeatureExtractor, photos: torch.Tensor, batch: int = 32) -> float:
    ex.embed(photos[:batch])
    t = time.perf_counter()
    for s in range(0, len(photos), batch):
        ex.embed(photos[s : s + batch])
    return len(photos) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--width", type=int, default=854)
    p.add_argument("--photos", type=int, default=64, help="224 px photos embedded per model")
    p.add_argument("--allow-load", action="store_true")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "features.json"))
    args = p.parse_args()
    info = machine.guard(args.allow_load)
    rows = []
    for name in MODELS:
        m = CATALOG[name]
        patch = int(m.arch["name"].rsplit("_p", 1)[1])
        h, w = args.height // patch * patch, args.width // patch * patch
        frames = torch.randint(0, 255, (args.frames, 3, h, w), dtype=torch.uint8)
        torch.manual_seed(0)
        ex = FeatureExtractor(build(m.arch).eval(), image_size=m.image_size)
        row = {"model": name, "input": f"{w}x{h}", "tokens": (h // patch) * (w // patch)}
        side = 224 // patch * patch
        photos = torch.randint(0, 255, (args.photos, 3, side, side), dtype=torch.uint8)
        for precision in ("fp32", "auto"):
            ex.set_precision(precision)
            row[f"{precision}_fps"] = round(frames_per_s(ex, frames), 3)
            row[f"{precision}_photos_per_s"] = round(photos_per_s(ex, photos), 2)
            row[f"{precision}_is"] = ex.precision.name
        rows.append(row)
        print(json.dumps(row))
    info = machine.finish(info)
    print(
        "\n| model | 480p input | tokens | fp32 frames/s | 224 px photos/s (fp32) |"
        " default precision | frames/s | photos/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['input']} | {r['tokens']} | {r['fp32_fps']:.2f} | "
            f"{r['fp32_photos_per_s']:.1f} | {r['auto_is']} | {r['auto_fps']:.2f} | "
            f"{r['auto_photos_per_s']:.1f} |"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
