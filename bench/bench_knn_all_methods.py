"""kNN top-1 on cifar10-subset/val of one image method after a wall-time budget on this machine
(default 15 minutes, `selfsup train --time-budget`), next to random init of the same backbone,
raw pixels and lightly's SimCLR trained with the same budget.

One method per call, so a quiet machine can run them one by one; each call appends a row to
bench/results/knn_all_methods.json, and `--table` prints the markdown table for
docs/benchmarks.md (the latest row of each method):

    python bench/bench_knn_all_methods.py --method simclr            # 15 min + evaluation
    python bench/bench_knn_all_methods.py --method lightly_simclr    # the peer, same budget
    python bench/bench_knn_all_methods.py --method pixels            # raw pixels, no training
    python bench/bench_knn_all_methods.py --table

Each method trains on cifar10-subset/train (5,000 images; labels unused except by supcon) with
its registered defaults (backbone, batch size, optimiser, lr, weight decay, views); the only
common settings are the budget, the image size (32 px), the seed and the threads. The budget is
wall time (the trainer times its first steps and plans the whole schedule to end on time), so the
machine must be quiet: the 1-minute load average must be <= 1 before a run, or `--allow-load`
runs anyway and stamps the row. kNN: cosine, temperature-weighted votes (T = 0.07), k = 20 and
200, on the evaluated backbone (DINO/iBOT: the teacher), centre-crop features of train and val.
lightly (the `bench` extra) is imported only for `--method lightly_simclr`. BEiT's row includes
its dvae tokenizer, trained first on the same images for a third of the budget
(`--tokenizer-share`).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe as machine  # noqa: E402  (bench/machine.py: CPU, flags)
from machine import load  # noqa: E402

from engine.backbones import build_backbone  # noqa: E402
from engine.data import ImageFolderDataset  # noqa: E402
from engine.evaluation.common import cached_features  # noqa: E402
from engine.evaluation.knn import knn_accuracy  # noqa: E402
from engine.features import FeatureExtractor, load_features, random_init_features  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cifar10-subset"
OUT = ROOT / "bench" / "results" / "knn_all_methods.json"
KS = (20, 200)


# ------------------------------------------------------------------------------- machine
# ------------------------------------------------------------------------------- features
def knn_rows(extractor: FeatureExtractor, train, val) -> dict[str, float]:
    tx, ty = cached_features(extractor, train, batch_size=250, num_workers=0)
    vx, vy = cached_features(extractor, val, batch_size=250, num_workers=0)
    return {f"knn{k}": knn_accuracy(tx, ty, vx, vy, k=k)["top1"] for k in KS}


def pixel_knn(train, val) -> dict[str, float]:
    def feats(ds):
        x = torch.stack([ds[i]["image"] for i in range(len(ds))]).float().flatten(1)
        return x - x.mean(1, keepdim=True), torch.tensor(ds.targets)

    (tx, ty), (vx, vy) = feats(train), feats(val)
    return {f"knn{k}": knn_accuracy(tx, ty, vx, vy, k=k)["top1"] for k in KS}


def random_init(arch: str, size: int, seed: int, train, val) -> dict[str, float]:
    torch.manual_seed(seed)
    return knn_rows(
        FeatureExtractor(build_backbone(arch, size), source=f"random {arch}"), train, val
    )


def held_out_bits(run: Path, val) -> dict[str, float]:
    """Held-out bits of the likelihood models: per 8-bit sub-pixel (PixelCNN), per palette
    token (iGPT)."""
    from engine.build import load_method

    method, _ = load_method(run)
    for measure, key in (
        ("evaluate_bits", "bits_per_dim"),
        ("evaluate_token_bits", "bits_per_token"),
    ):
        if hasattr(method, measure):
            images = torch.stack([val[i]["image"] for i in range(len(val))])
            return {key: getattr(method, measure)(images)}
    return {}


def every_network(run: Path, train, val) -> dict[str, dict[str, float]]:
    """kNN of each network a kept run holds (DINO / iBOT: student and EMA teacher; BYOL and
    MoCo: online and target / key / momentum encoder): is the evaluated one the better one?"""
    from engine.build import load_method

    method, _ = load_method(run)
    nets = {"backbone (student / online)": method.backbone}
    if isinstance(getattr(method, "teacher_backbone", None), torch.nn.Module):
        nets["teacher_backbone"] = method.teacher_backbone
    target = next(
        (
            getattr(method, a)
            for a in ("target", "key_encoder", "momentum_encoder")
            if hasattr(method, a)
        ),
        None,
    )
    if isinstance(target, torch.nn.Sequential):  # EMA (backbone, projector) copies
        nets["target backbone"] = target[0]
    return {
        name: knn_rows(FeatureExtractor(net, source=name), train, val) for name, net in nets.items()
    }


# ------------------------------------------------------------------------------- training
def train_ours(name: str, args, run_dir: Path, **values) -> dict:
    """Train with the method's registered defaults; `values` override the TrainConfig fields
    set here (bench_bf16_quality: a step count and a precision instead of a time budget)."""
    from engine.build import apply_method_defaults, train

    cfg = apply_method_defaults(
        {
            "data": args.train,
            "image_size": args.image_size,
            "num_workers": args.workers,
            "seed": args.seed,
            "device": args.device,
            "time_budget": args.budget_minutes,
            "log_every": 10,
            "checkpoint_every": 10**9,
            "run_dir": str(run_dir),
            **({"batch_size": args.batch_size} if args.batch_size else {}),
            **({"backbone": args.backbone} if args.backbone else {}),
            **values,
        },
        {},
        name,
    )
    t0 = time.perf_counter()
    out = train(cfg)
    plan = out.get("plan", {"s_per_step": (time.perf_counter() - t0) / max(out["step"], 1)})
    from engine.events import read_events

    start = next((e for e in read_events(run_dir) if e.get("type") == "start"), {})
    return {
        "precision": start.get("precision", "fp32"),  # auto's choice on this machine
        "backbone": cfg.backbone,
        "batch_size": cfg.batch_size,
        "steps": out["step"],
        "planned_steps": plan.get("planned_steps"),
        "s_per_step": plan.get("s_per_step"),
        "epochs": plan.get("epochs"),
        "budget_spent": out.get("budget_spent"),
        "train_s": time.perf_counter() - t0,
        "final_loss": out["losses"].get("loss"),
    }


def method_options(pairs: list[str]) -> dict:
    """--set teacher_temp=0.04 --set n_local=2 -> {"teacher_temp": 0.04, "n_local": 2}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set {pair}: expected NAME=VALUE")
        try:
            out[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = value
    return out


def train_tokenizer(args, run_dir: Path) -> tuple[dict, dict]:
    """BEiT's dVAE on the same images for `--tokenizer-share` of the budget; BEiT gets the rest,
    so its row costs the same wall time as every other row."""
    minutes = args.budget_minutes * args.tokenizer_share
    stats = train_ours("dvae", args, run_dir, time_budget=minutes, backbone="")
    beit = {
        "time_budget": args.budget_minutes - minutes,
        "method_args": {"tokenizer": str(run_dir)},
    }
    return {"method": "dvae", "minutes": minutes, **stats}, beit


def train_lightly_simclr(args, train) -> tuple[torch.nn.Module, dict]:
    """lightly's SimCLR as in its CIFAR-10 benchmark (benchmarks/cifar10_benchmark.py):
    SimCLRProjectionHead(512, 512, 128), NTXentLoss (T = 0.5), SimCLRTransform at 32 px with
    cj_strength 0.5 and no blur, SGD lr 6e-2 x batch/128, momentum 0.9, wd 5e-4, cosine; on our
    ResNet-18 (the same backbone as every row). Steps planned from 3 timed steps (after a
    warm-up step; fewer past 5% of the budget; weights put back) to end within the same budget."""
    import torchvision
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform

    t_start = time.perf_counter()
    torch.manual_seed(args.seed)
    batch = args.batch_size or 256
    backbone = build_backbone(args.backbone or "resnet18", args.image_size)
    model = torch.nn.ModuleDict(
        {"backbone": backbone, "head": SimCLRProjectionHead(backbone.embed_dim, 512, 128)}
    )
    transform = SimCLRTransform(input_size=args.image_size, cj_strength=0.5, gaussian_blur=0.0)
    ds = torchvision.datasets.ImageFolder(args.train, transform=transform)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )  # fmt: skip
    criterion = NTXentLoss(temperature=0.5)
    opt = torch.optim.SGD(
        model.parameters(), lr=6e-2 * batch / 128, momentum=0.9, weight_decay=5e-4
    )

    def batches():
        while True:
            yield from loader

    def step(views) -> float:
        x = torch.cat(views)
        z = model["head"](model["backbone"](x))
        loss = criterion(*z.chunk(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    it = batches()
    saved = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    times = []
    for i in range(4):
        t = time.perf_counter()
        step(next(it)[0])
        if i:
            times.append(time.perf_counter() - t)
            if sum(times) > 0.05 * args.budget_minutes * 60:  # as the trainer's plan
                break
    model.load_state_dict(saved[0])
    opt.load_state_dict(saved[1])
    sps = sum(times) / len(times)
    left = args.budget_minutes * 60 - (time.perf_counter() - t_start)
    steps = max(1, int(0.97 * left / sps))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss = float("nan")
    for _ in range(steps):
        loss = step(next(it)[0])
        sched.step()
    return backbone.eval(), {
        "backbone": backbone.arch["name"],
        "batch_size": batch,
        "steps": steps,
        "planned_steps": steps,
        "s_per_step": sps,
        "epochs": steps * batch / len(ds),
        "train_s": time.perf_counter() - t_start,
        "final_loss": loss,
    }


# ------------------------------------------------------------------------------- results
def read_results(path: Path) -> dict:
    if not path.exists():
        return {"rows": []}
    data = json.loads(path.read_text())
    if not isinstance(data.get("rows"), list):  # the first format (CPU-second budget): keep aside
        path.replace(path.with_suffix(".v1.json"))
        return {"rows": []}
    return data


def write_results(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def cpu_kind(row: dict) -> str:
    """Short machine label: rows from CPUs with and without AMX are not the same budget."""
    m = row.get("machine", {})
    amx = " AMX" if "amx_bf16" in m.get("flags", "") else ""
    return f"{m.get('model', '?').split(' Processor')[0].replace('(R)', '')}{amx}, {row.get('precision', 'fp32')}"


def table(rows: list[dict]) -> str:
    latest: dict[str, dict] = {}
    for r in rows:  # the latest row of each method, variant and machine kind
        latest[r["method"] + " " + r.get("variant", "") + " " + cpu_kind(r)] = r
    lines = [
        "| method | family | CPU, precision | backbone | batch | steps (epochs) | s/step "
        "| kNN k=20 | kNN k=200 | random init k=20 / k=200 | vs random (k=200) | bits/dim "
        "| budget min | load before / after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(latest.values(), key=lambda r: -r["knn200"]):
        rnd = r.get("random")
        ep = f"{r['steps']} ({r['epochs']:.1f})" if r.get("steps") else "-"
        sps = f"{r['s_per_step']:.2f}" if r.get("s_per_step") else "-"
        rr = f"{rnd['knn20']:.3f} / {rnd['knn200']:.3f}" if rnd else "-"
        delta = f"{100 * (r['knn200'] - rnd['knn200']):+.1f} pt" if rnd else "-"
        bits = f"{r['bits_per_dim']:.3f}" if "bits_per_dim" in r else "-"
        if "bits_per_token" in r:
            bits = f"{r['bits_per_token']:.3f} per palette token"
        lb, la = r.get("load_before", ["-"])[0], r.get("load_after", ["-"])[0]
        name = r["method"] + (f" ({r['variant']})" if r.get("variant") else "")
        if tok := r.get("tokenizer"):
            name += f" (after {tok['minutes']:.3g} min of dvae, {tok['steps']} steps)"
        stamp = " (--allow-load)" if r.get("allow_load") else ""
        lines.append(
            f"| {name} | {r.get('family', '')} | {cpu_kind(r)} "
            f"| {r.get('backbone', '-')} "
            f"| {r.get('batch_size', '-')} | {ep} | {sps} | {r['knn20']:.3f} | {r['knn200']:.3f} "
            f"| {rr} | {delta} | {bits} | {r.get('budget_minutes', '-')} | {lb} / {la}{stamp} |"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--method", help="an image method, lightly_simclr, or pixels")
    ap.add_argument("--table", action="store_true", help="print the markdown table and exit")
    ap.add_argument("--budget-minutes", type=float, default=15.0)
    ap.add_argument("--train", default=str(DATA / "train"))
    ap.add_argument("--val", default=str(DATA / "val"))
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=0, help="0 = the method's default")
    ap.add_argument("--backbone", default="", help="'' = the method's default (e.g. resnet18_w32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1, help="DataLoader decoding workers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--allow-load", action="store_true", help="run on a busy machine (stamped)")
    ap.add_argument(
        "--variant", default="", help="a label for a non-default setting, e.g. 'batch 64'"
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a method option for a variant row, e.g. --set teacher_temp=0.04 (with --variant)",
    )
    ap.add_argument(
        "--tokenizer-share",
        type=float,
        default=1 / 3,
        help="beit: the share of the budget spent first on its dvae tokenizer",
    )
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--runs", default="", help="keep the run here (default: a temporary folder)")
    ap.add_argument(
        "--networks",
        default="",
        metavar="RUN_DIR",
        help="no training: kNN of every network a kept run holds (student, EMA teacher/target)",
    )
    args = ap.parse_args()
    out = Path(args.out)
    results = read_results(out)
    if args.table:
        print(table(results["rows"]))
        return 0
    if args.networks:
        warnings.simplefilter("ignore", UserWarning)
        from app.registry_all import load_all

        load_all()
        train = ImageFolderDataset(args.train, load_size=args.image_size)
        val = ImageFolderDataset(args.val, load_size=args.image_size)
        for name, accs in every_network(Path(args.networks), train, val).items():
            print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in accs.items()))
        return 0
    if not args.method:
        ap.error("--method NAME, --networks RUN_DIR or --table")
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    from app.registry_all import load_all
    from engine.registry import get_method

    load_all()  # every method, images and others

    info = machine()
    before = load()
    print(f"cpu: {info.get('model')} ({info['cpus']} cpus); flags: {info.get('flags', '')}")
    print(f"load average before: {before}", flush=True)
    if before[0] > 1 and not args.allow_load:
        print(
            f"refusing to run: 1-minute load average {before[0]} > 1 (other jobs would share the "
            "CPU and the budget); wait for a quiet machine or pass --allow-load (stamped)"
        )
        return 3
    train = ImageFolderDataset(args.train, load_size=args.image_size)
    val = ImageFolderDataset(args.val, load_size=args.image_size)
    row: dict = {"method": args.method, "budget_minutes": args.budget_minutes}
    if args.variant:
        row["variant"] = args.variant
    if args.method == "pixels":
        row.update(family="-", backbone="-", **pixel_knn(train, val))
    elif args.method == "lightly_simclr":
        backbone, stats = train_lightly_simclr(args, train)
        row.update(family="peer (lightly 'bench' extra)", **stats)
        row.update(knn_rows(FeatureExtractor(backbone, source="lightly_simclr"), train, val))
    else:
        spec = get_method(args.method)
        if spec.data != "images":
            ap.error(f"{args.method} trains on {spec.data}, not images")
        runs = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="knn-bench-"))
        run = runs / args.method
        values: dict = {"method_args": method_options(args.set)}
        if values["method_args"] and not args.variant:
            ap.error("--set changes the method: name the row with --variant")
        if values["method_args"]:
            row["method_args"] = values["method_args"]
        if args.method == "beit":  # its tokenizer is trained first, inside the same budget
            row["tokenizer"], beit = train_tokenizer(args, runs / "dvae")
            values = {**beit, "method_args": {**beit["method_args"], **values["method_args"]}}
        row.update(family=spec.family, **train_ours(args.method, args, run, **values))
        # what the method declares as its global features (MOCA: mean patch token; PixelCNN,
        # CPC v2, iGPT: their own encoders), and the same model rebuilt untrained
        row.update(knn_rows(load_features(run, "global"), train, val))
        row["random"] = knn_rows(random_init_features(run, "global", seed=args.seed), train, val)
        row.update(held_out_bits(run, val))
    if row.get("backbone", "-") != "-" and "random" not in row:
        row["random"] = random_init(row["backbone"], args.image_size, args.seed, train, val)
    after = load()
    row.update(
        load_before=before,
        load_after=after,
        allow_load=bool(args.allow_load and before[0] > 1),
        threads=args.threads,
        machine=info,
        time=time.strftime("%Y-%m-%d %H:%M:%S"),
    )
    print(f"load average after: {after}")
    print(json.dumps({k: v for k, v in row.items() if k != "machine"}))
    results["rows"].append(row)
    write_results(out, results)
    if row.get("random"):
        gain = 100 * (row["knn200"] - row["random"]["knn200"])
        print(f"{args.method}: kNN k=200 {row['knn200']:.3f} vs random init {gain:+.1f} points")
    return 0 if math.isfinite(row["knn200"]) else 1


if __name__ == "__main__":
    sys.exit(main())
