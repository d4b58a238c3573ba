"""kNN accuracy on cifar10-subset/val of every image method in the registry after the same fixed
compute budget, against random-initialised backbones and raw pixels.

Each method trains on cifar10-subset/train (5,000 images, labels unused except by supcon) with its
own registered defaults (backbone, optimiser, lr, weight decay, method hyper-parameters); only
the budget, image size, batch size, seed and the warm-up rule (10% of the steps) are common.
The budget is process CPU time, not wall-clock, so methods measured while other jobs share the
machine get the same compute. The step count comes from timing three steps first, so every
method runs a complete cosine schedule within about its budget; a method whose per-epoch work
(DeepCluster's k-means, colorization's prior) makes it overrun is stopped at 1.5x the budget. kNN: cosine, temperature-weighted votes
(T = 0.07), k = 20 and 200, on the evaluated backbone (DINO/iBOT: the teacher).

    python bench/bench_knn_all_methods.py --budget-cpu-s 240 [--methods simclr,mae] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.backbones import build_backbone  # noqa: E402
from engine.build import apply_method_defaults, build_method  # noqa: E402
from engine.data import ImageFolderDataset  # noqa: E402
from engine.evaluation.common import cached_features  # noqa: E402
from engine.evaluation.knn import knn_accuracy  # noqa: E402
from engine.features import FeatureExtractor, load_feature_extractor  # noqa: E402
from engine.registry import list_methods  # noqa: E402
from engine.trainer import Trainer  # noqa: E402


def knn_rows(
    extractor: FeatureExtractor, train: ImageFolderDataset, val: ImageFolderDataset
) -> dict[str, float]:
    tx, ty = cached_features(extractor, train, batch_size=250, num_workers=0)
    vx, vy = cached_features(extractor, val, batch_size=250, num_workers=0)
    return {f"knn{k}": knn_accuracy(tx, ty, vx, vy, k=k)["top1"] for k in (20, 200)}


def pixel_knn(train: ImageFolderDataset, val: ImageFolderDataset) -> dict[str, float]:
    def feats(ds):
        x = torch.stack([ds[i]["image"] for i in range(len(ds))]).float().flatten(1)
        return x - x.mean(1, keepdim=True), torch.tensor(ds.targets)

    (tx, ty), (vx, vy) = feats(train), feats(val)
    return {f"knn{k}": knn_accuracy(tx, ty, vx, vy, k=k)["top1"] for k in (20, 200)}


def cpu_seconds_per_step(base: dict, name: str, train: ImageFolderDataset, root: Path) -> float:
    """Median process CPU time of steps 2-4 of a short real run (per-epoch work such as
    DeepCluster's clustering happens before step 1 and is not counted)."""
    run = root / f"{name}-calibration"
    cfg = apply_method_defaults(
        {**base, "max_steps": 4, "log_every": 1, "run_dir": str(run)}, {"warmup_epochs": 0.0}, name
    )
    stamps: list[float] = []
    record = lambda e: stamps.append(time.process_time()) if e["type"] == "step" else None  # noqa: E731
    Trainer(cfg, build_method(cfg), train, run, callbacks=(record,)).fit()
    shutil.rmtree(run, ignore_errors=True)
    return statistics.median([b - a for a, b in zip(stamps, stamps[1:])])


def train_for_budget(name: str, args, train: ImageFolderDataset, run_root: Path) -> dict:
    base = {
        "data": args.train,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": 0,
        "seed": args.seed,
        "device": args.device,
        "log_every": 5,
        "checkpoint_every": 10**9,
        "run_dir": str(run_root / name),
    }
    sps = cpu_seconds_per_step(base, name, train, run_root)
    steps = max(10, int(args.budget_cpu_s / sps))
    steps_per_epoch = len(train) // args.batch_size
    cfg = apply_method_defaults(
        {**base, "max_steps": steps}, {"warmup_epochs": 0.1 * steps / steps_per_epoch}, name
    )
    torch.manual_seed(args.seed)
    method = build_method(cfg)
    deadline = time.process_time() + 1.5 * args.budget_cpu_s
    holder: dict = {}

    def guard(event: dict) -> None:
        if event.get("type") == "step" and time.process_time() > deadline:
            holder["trainer"].stop_requested = True

    trainer = Trainer(cfg, method, train, cfg.run_dir, callbacks=(guard,))
    holder["trainer"] = trainer
    t0, c0 = time.time(), time.process_time()
    result = trainer.fit()
    stopped, last = bool(result.get("stopped")), result["losses"]
    return {
        "method": name,
        "backbone": cfg.backbone,
        "steps": trainer.step,
        "planned_steps": steps,
        "train_s": time.time() - t0,
        "train_cpu_s": time.process_time() - c0,
        "stopped_early": stopped,
        "final_loss": last.get("loss"),
        "epochs": trainer.step / steps_per_epoch,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = ROOT.parent / "shared" / "data" / "cifar10-subset"
    ap.add_argument("--train", default=str(data / "train"))
    ap.add_argument("--val", default=str(data / "val"))
    ap.add_argument(
        "--budget-cpu-s",
        type=float,
        default=240.0,
        help="training budget per method in process CPU seconds (240 = 2 min on 2 idle cores)",
    )
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument(
        "--methods", default="", help="comma list (default: every method with image data)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "knn_all_methods.json"))
    ap.add_argument("--redo", action="store_true", help="measure methods already in --out again")
    ap.add_argument("--runs", default="", help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    import engine.methods  # noqa: F401  (registers every image method)

    names = [m for m in args.methods.split(",") if m] or [
        s.name for s in list_methods() if s.data == "images"
    ]
    families = {s.name: s.family for s in list_methods()}
    train = ImageFolderDataset(args.train, load_size=args.image_size)
    val = ImageFolderDataset(args.val, load_size=args.image_size)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.setdefault("rows", {})
    results["setup"] = {
        "budget_cpu_s": args.budget_cpu_s,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "train": args.train,
        "val": args.val,
    }

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1))
        tmp.replace(out)

    if "pixels" not in results["rows"]:
        results["rows"]["pixels"] = {
            "method": "raw pixels",
            "backbone": "-",
            **pixel_knn(train, val),
        }
    for arch in ("resnet18", "vit_tiny"):
        key = f"random {arch}"
        if key not in results["rows"]:
            torch.manual_seed(args.seed)
            ex = FeatureExtractor(build_backbone(arch, args.image_size), source=key)
            results["rows"][key] = {
                "method": "random init",
                "backbone": arch,
                **knn_rows(ex, train, val),
            }
            save()
    run_root = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="knn-bench-"))
    for name in names:
        if name in results["rows"] and not args.redo:
            print(f"== {name}: already measured (--redo to measure again)", flush=True)
            continue
        print(f"== {name}", flush=True)
        load_before = os.getloadavg()[0]
        row = train_for_budget(name, args, train, run_root)
        ex = load_feature_extractor(run_root / name)
        row.update(
            knn_rows(ex, train, val),
            family=families.get(name, ""),
            load_avg=(load_before + os.getloadavg()[0]) / 2,
        )
        results["rows"][name] = row
        print(json.dumps(row), flush=True)
        save()
    print("| method | family | backbone | steps (epochs) | train CPU s | kNN k=20 | kNN k=200 |")
    print("|---|---|---|---|---|---|---|")
    for r in sorted(results["rows"].values(), key=lambda r: -r["knn200"]):
        ep = f"{r['steps']} ({r['epochs']:.1f})" if "steps" in r else "-"
        ts = f"{r['train_cpu_s']:.0f}" if "train_cpu_s" in r else "-"
        print(
            f"| {r['method']} | {r.get('family', '')} | {r['backbone']} | {ep} | {ts} | {r['knn20']:.3f} | {r['knn200']:.3f} |"
        )


if __name__ == "__main__":
    main()
