"""Training throughput of our image SSL methods against lightly's, in the same process.

For each method (SimCLR, MoCo v2, BYOL, DINO, Barlow Twins) on ResNet-18 at 32 px, batch 256,
on ../shared/data/cifar10-subset/train:

- ours: the trainer's own step (`Trainer._train_step`: views made batched inside the method,
  optimiser, schedule, EMA), fed by our image-folder dataset through a DataLoader;
- lightly: its documented usage (heads, losses, transforms and momentum helpers from `lightly`,
  PIL transforms in torchvision DataLoader workers, a plain training loop), with the same
  backbone (torchvision ResNet-18 with the 3x3 stride-1 stem and no max-pool that we use at
  32 px) and the same head sizes, so both sides do the same model FLOPs.

The machine is shared, so measurements alternate: each round times one fp32 matmul (the peak),
one step of ours and one of lightly's (order flipped every round), and the report gives
medians plus the load average. Model FLOPs per step are counted with FlopCounterMode
(forward + backward, our augmentation's FLOPs excluded).

    python bench/bench_throughput.py [--methods simclr,byol] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

METHODS = ["simclr", "moco_v2", "byol", "dino", "barlow_twins"]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "cifar10-subset" / "train"


def matmul_flops_per_s(n: int = 2048, reps: int = 3) -> tuple[float, float]:
    """fp32 GEMM rate right now, per wall second and per CPU second (best of `reps`): the peak
    we compare to. On a shared machine the per-CPU-second figure is the stable one."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    wall = cpu = float("inf")
    for _ in range(reps):
        c, t = time.process_time(), time.perf_counter()
        a @ b
        wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    return 2 * n**3 / wall, 2 * n**3 / cpu


def onednn_gemm_flops_per_s(n: int = 2048, hw: int = 32, reps: int = 3) -> tuple[float, float]:
    """The same kind of fp32 GEMM (M = hw*hw, K = N = n) run by oneDNN as a 1x1 channels-last
    convolution: where torch.matmul's BLAS misses the CPU's widest vector units, convolutions
    beat torch.matmul, and this is the fairer peak."""
    x = torch.randn(1, n, hw, hw).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.functional.conv2d
    with torch.no_grad():
        conv(x, w)
        wall = cpu = float("inf")
        for _ in range(reps):
            c, t = time.process_time(), time.perf_counter()
            conv(x, w)
            wall, cpu = min(wall, time.perf_counter() - t), min(cpu, time.process_time() - c)
    flops = 2 * hw * hw * n * n
    return flops / wall, flops / cpu


def count_flops(fn: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


class Batches:
    """Endless batches from a DataLoader; knows its worker processes for CPU accounting."""

    def __init__(self, loader):
        self.loader, self.it = loader, iter(loader)

    def __next__(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def worker_pids(self) -> list[int]:
        return [w.pid for w in getattr(self.it, "_workers", [])]


def cpu_seconds(pids: list[int], own: bool = True) -> float:
    """User + system CPU time of the given worker processes, plus this process's (all threads)
    unless own is False."""
    t = time.process_time() if own else 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            t += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return t


# ----------------------------------------------------------------------------- ours


class Ours:
    """One method trained by our Trainer, step by step."""

    def __init__(self, method: str, args: argparse.Namespace, run_dir: Path, precision: str):
        import engine.data  # noqa: F401  (registers the "images" dataset kind)
        import engine.methods  # noqa: F401
        from engine.build import apply_method_defaults, build_method
        from engine.registry import build_dataset, get_method
        from engine.trainer import Trainer

        values = {
            "data": str(args.data),
            "backbone": "resnet18",
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "num_workers": args.num_workers,
            "max_steps": 10_000,
            "checkpoint_every": 10**9,
            "run_dir": str(run_dir),
            "channels_last": args.channels_last,
            "precision": precision,
            "method_args": {},
        }
        cfg = apply_method_defaults(values, {}, method)
        dataset = build_dataset(get_method(method).data, cfg)
        self.method = build_method(cfg)
        self.trainer = Trainer(cfg, self.method, dataset, run_dir)
        self.trainer._setup()
        self.batches = Batches(self.trainer.loader())

    def step(self) -> None:
        self.trainer._train_step(next(self.batches))
        self.trainer.step += 1

    def model_flops(self) -> int:
        """Counted eagerly (the FLOP counter's dispatch mode and compiled graphs do not mix);
        a compiled backbone compiles on the next step, the warm-up."""
        batch = next(self.batches)
        backbone = self.method.backbone
        compiled, backbone._compiled_call_impl = backbone._compiled_call_impl, None
        total = count_flops(lambda: self.trainer._train_step(batch))
        backbone._compiled_call_impl = compiled
        images = batch["image"]
        aug = count_flops(lambda: self.method.make_views(images, self.method.specs))
        return total - aug


# ----------------------------------------------------------------------------- lightly


def lightly_backbone() -> nn.Module:
    """torchvision ResNet-18 as lightly's examples use it, with the CIFAR stem we use at 32 px."""
    import torchvision

    resnet = torchvision.models.resnet18()
    resnet.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    resnet.maxpool = nn.Identity()
    return nn.Sequential(*list(resnet.children())[:-1])


class Lightly:
    """lightly's documented example for each method, same backbone and head sizes as ours."""

    def __init__(self, method: str, args: argparse.Namespace, precision: str):
        from lightly.data import LightlyDataset
        from lightly.loss import BarlowTwinsLoss, DINOLoss, NegativeCosineSimilarity, NTXentLoss
        from lightly.models.modules import heads
        from lightly.models.utils import deactivate_requires_grad, update_momentum
        from lightly.transforms import (
            BYOLTransform,
            BYOLView1Transform,
            BYOLView2Transform,
            DINOTransform,
            MoCoV2Transform,
            SimCLRTransform,
        )
        from lightly.utils.scheduler import cosine_schedule

        s = args.image_size
        self.name, self.epoch, self.epochs = method, 0, 100
        # a lightly user's mixed precision: plain torch.autocast around the forward and loss
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        self.update_momentum, self.cosine_schedule = update_momentum, cosine_schedule
        self.backbone = lightly_backbone()
        mods = nn.ModuleDict({"backbone": self.backbone})
        byol_views = BYOLTransform(  # BYOL's asymmetric pair, also lightly's Barlow Twins recipe
            view_1_transform=BYOLView1Transform(input_size=s),
            view_2_transform=BYOLView2Transform(input_size=s),
        )
        if method == "simclr":
            mods["head"] = heads.SimCLRProjectionHead(512, 512, 128)
            self.criterion = NTXentLoss(temperature=0.5)
            transform = SimCLRTransform(input_size=s, cj_strength=0.5, gaussian_blur=0.0)
            lr, wd = 0.06, 5e-4
        elif method == "moco_v2":
            mods["head"] = heads.MoCoProjectionHead(512, 512, 128)
            self.criterion = NTXentLoss(temperature=0.2, memory_bank_size=(4096, 128))
            transform = MoCoV2Transform(input_size=s, gaussian_blur=0.0)
            lr, wd = 0.06, 5e-4
        elif method == "byol":
            mods["head"] = heads.BYOLProjectionHead(512, 4096, 256)
            mods["predictor"] = heads.BYOLPredictionHead(256, 4096, 256)
            self.criterion = NegativeCosineSimilarity()
            transform = byol_views
            lr, wd = 0.1, 5e-4
        elif method == "dino":
            mods["head"] = heads.DINOProjectionHead(512, 1024, 256, 2048, freeze_last_layer=1)
            self.criterion = DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=5)
            transform = DINOTransform(global_crop_size=s, local_crop_size=16, n_local_views=6)
            lr, wd = 5e-4, 0.04
        elif method == "barlow_twins":
            mods["head"] = heads.BarlowTwinsProjectionHead(512, 2048, 2048)
            self.criterion = BarlowTwinsLoss()
            transform = byol_views
            lr, wd = 0.1, 5e-4
        else:
            raise ValueError(method)
        if method in ("moco_v2", "byol", "dino"):
            mods["backbone_momentum"] = copy.deepcopy(mods["backbone"])
            # weight-normed DINO heads cannot be deep-copied: lightly's example builds a new one
            mods["head_momentum"] = (
                heads.DINOProjectionHead(512, 1024, 256, 2048)
                if method == "dino"
                else copy.deepcopy(mods["head"])
            )
            deactivate_requires_grad(mods["backbone_momentum"])
            deactivate_requires_grad(mods["head_momentum"])
        self.m = mods
        params = [p for p in mods.parameters() if p.requires_grad]
        if method == "dino":
            self.optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
        else:
            self.optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
        dataset = LightlyDataset(input_dir=str(args.data), transform=transform)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=args.num_workers,
        )
        self.batches = Batches(loader)

    def embed(self, x: torch.Tensor, momentum: bool = False) -> torch.Tensor:
        m = self.m
        f = (m["backbone_momentum"] if momentum else m["backbone"])(x).flatten(start_dim=1)
        z = (m["head_momentum"] if momentum else m["head"])(f)
        return z.detach() if momentum else z

    def loss(self, views: list[torch.Tensor]) -> torch.Tensor:
        m, name = self.m, self.name
        if name in ("simclr", "barlow_twins"):
            return self.criterion(self.embed(views[0]), self.embed(views[1]))
        if name == "moco_v2":
            self.update_momentum(m["backbone"], m["backbone_momentum"], m=0.99)
            self.update_momentum(m["head"], m["head_momentum"], m=0.99)
            return self.criterion(self.embed(views[0]), self.embed(views[1], momentum=True))
        mom = self.cosine_schedule(self.epoch, self.epochs, 0.996, 1)
        self.update_momentum(m["backbone"], m["backbone_momentum"], m=mom)
        self.update_momentum(m["head"], m["head_momentum"], m=mom)
        if name == "byol":
            p0, p1 = (m["predictor"](self.embed(v)) for v in views)
            z0, z1 = (self.embed(v, momentum=True) for v in views)
            return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        teacher = [self.embed(v, momentum=True) for v in views[:2]]
        student = [self.embed(v) for v in views]
        return self.criterion(teacher, student, epoch=self.epoch)

    def _train_step(self, views: list[torch.Tensor]) -> None:
        if self.dtype is None:
            loss = self.loss(views)
        else:
            with torch.autocast("cpu", dtype=self.dtype):
                loss = self.loss(views)
        loss.backward()
        if self.name == "dino":
            self.m["head"].cancel_last_layer_gradients(current_epoch=self.epoch)
        self.optimizer.step()
        self.optimizer.zero_grad()

    def step(self) -> None:
        self._train_step(next(self.batches)[0])

    def model_flops(self) -> int:
        views = next(self.batches)[0]
        return count_flops(lambda: self._train_step(views))


# ----------------------------------------------------------------------------- driver


def wait_idle(pids: list[int], quiet_cpu_s: float = 0.01, timeout_s: float = 15.0) -> float:
    """Wait until these DataLoader workers have refilled their prefetch queues and gone idle;
    return the perf_counter time at which they went idle (the start of the quiet interval)."""
    end, poll = time.perf_counter() + timeout_s, 0.05
    c, t = cpu_seconds(pids, own=False), time.perf_counter()
    while time.perf_counter() < end:
        time.sleep(poll)
        c2, t2 = cpu_seconds(pids, own=False), time.perf_counter()
        if c2 - c < quiet_cpu_s:
            return t
        c, t = c2, t2
    return time.perf_counter()


def timed(impl, others: list[int]) -> tuple[float, float]:
    """Wall seconds and CPU seconds of one training step, counting the time its own DataLoader
    workers take to refill the batch it consumed (in a training loop that work shares the same
    cores). The other implementations' workers are idle first: otherwise lightly's augmenting
    workers would run during our timed step and ours during theirs (measured: DINO's fp32 step
    took 15.5 s alone and 19 s amid the others)."""
    wait_idle(others + impl.batches.worker_pids())
    pids = impl.batches.worker_pids()
    c, t = cpu_seconds(pids), time.perf_counter()
    impl.step()
    idle_at = wait_idle(pids)
    return idle_at - t, cpu_seconds(pids) - c


def bench_method(method: str, args: argparse.Namespace, precisions: list[str]) -> dict:
    """Every implementation at every precision, timed in alternating rounds. Keys are
    "ours-fp32", "lightly-bf16", ...; speed-ups are keyed "speedup_wall bf16/bf16" (ours over
    lightly at one precision) and "speedup_wall bf16/fp32" (our default over lightly's fp32)."""
    with tempfile.TemporaryDirectory() as tmp:
        impls: dict[str, object] = {}
        for prec in precisions:
            impls[f"ours-{prec}"] = Ours(method, args, Path(tmp) / f"run-{prec}", prec)
            if not args.skip_lightly:
                impls[f"lightly-{prec}"] = Lightly(method, args, prec)
        flops = {k: v.model_flops() for k, v in impls.items()}  # also the warm-up step
        for _ in range(args.warmup):
            for v in impls.values():
                v.step()
        walls: dict[str, list[float]] = {k: [] for k in impls}
        cpus: dict[str, list[float]] = {k: [] for k in impls}
        peaks = []
        gemm = []
        for r in range(args.rounds):
            peaks.append(matmul_flops_per_s())
            gemm.append(onednn_gemm_flops_per_s())
            order = list(impls) if r % 2 == 0 else list(reversed(impls))
            for k in order:
                others = [p for o in impls if o != k for p in impls[o].batches.worker_pids()]
                w, c = timed(impls[k], others)
                walls[k].append(w)
                cpus[k].append(c)
        peak = statistics.median(p[0] for p in peaks)
        peak_cpu = statistics.median(p[1] for p in peaks)
        gemm_cpu = statistics.median(g[1] for g in gemm)
        out = {
            "method": method,
            "matmul_peak_gflops": peak / 1e9,
            "matmul_gflop_per_cpu_s": peak_cpu / 1e9,
            "onednn_gemm_gflop_per_cpu_s": gemm_cpu / 1e9,
            "impls": {},
        }
        for k in impls:
            t, c = statistics.median(walls[k]), statistics.median(cpus[k])
            out["impls"][k] = {
                "compiled": bool(getattr(getattr(impls[k], "trainer", None), "compiled", False)),
                "step_wall_s": walls[k],
                "step_cpu_s": cpus[k],
                "images_per_s": args.batch_size / t,
                "images_per_cpu_s": args.batch_size / c,
                "model_gflop_per_step": flops[k] / 1e9,
                "gflops": flops[k] / t / 1e9,
                "fraction_of_peak": flops[k] / t / peak,
                "gflop_per_cpu_s": flops[k] / c / 1e9,
                "cpu_fraction_of_peak": flops[k] / c / peak_cpu,
                "cpu_fraction_of_onednn_gemm": flops[k] / c / gemm_cpu,
            }
        if not args.skip_lightly:
            pairs = {f"{p}/{p}": (f"ours-{p}", f"lightly-{p}") for p in precisions}
            # what a user gets from each: our default precision against lightly's fp32 default
            pairs[f"{precisions[-1]}/fp32"] = (f"ours-{precisions[-1]}", "lightly-fp32")
            for label, (o, li) in pairs.items():
                out[f"speedup_wall {label}"] = statistics.median(
                    [a / b for a, b in zip(walls[li], walls[o])]
                )
                out[f"speedup_cpu {label}"] = statistics.median(
                    [a / b for a, b in zip(cpus[li], cpus[o])]
                )
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="timed steps per implementation")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps after the FLOP count")
    p.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--skip-lightly", action="store_true")
    p.add_argument(
        "--precisions",
        default="fp32,auto",
        help="comma list of fp32 / bf16 / fp16 / auto; auto is what the probe picks on this "
        "machine (the default a user gets) and is dropped when it resolves to fp32",
    )
    p.add_argument("--json", type=Path, help="write the results here too")
    p.add_argument("--allow-load", action="store_true", help="run on a busy machine (stamped)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        print(f"skipped: {args.data} is absent (the benchmark data lives beside the project)")
        return
    if not args.skip_lightly:
        try:
            import lightly  # noqa: F401
        except ImportError:  # before any DataLoader worker exists, so the run cannot hang
            sys.exit("lightly is not installed: pip install -e '.[bench]', or --skip-lightly")
    from machine import finish, guard  # bench/machine.py: CPU, flags, load guard

    info = guard(args.allow_load)
    precisions = resolve_precisions(args.precisions, args.image_size)
    print(f"precisions: {precisions}")
    results = {
        "machine": info,
        "args": {k: str(v) for k, v in vars(args).items()},
        "methods": [],
    }
    for method in args.methods.split(","):
        load0 = os.getloadavg()[0]
        r = bench_method(method, args, precisions)
        r["load_avg_1min"] = [load0, os.getloadavg()[0]]
        results["methods"].append(r)
        print(json.dumps(r), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finish(info)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(table(results))


def resolve_precisions(spec: str, image_size: int) -> list[str]:
    """Named precisions, with auto replaced by the probe's choice and duplicates dropped; fp32
    first, so the last entry is our default."""
    from engine.precision import choose_precision

    out = []
    for name in spec.split(","):
        if name == "auto":
            chosen = choose_precision("auto", torch.device("cpu"), image_size)
            print(f"auto precision: {chosen.name} ({chosen.reason})")
            name = chosen.name
        if name not in out:
            out.append(name)
    return sorted(out, key=lambda n: n != "fp32")


def table(results: dict) -> str:
    """Markdown, one row per method and precision: images/s by wall clock, our speed-up over
    lightly at that precision (wall and CPU time), our default against lightly's fp32 default,
    and model FLOPs per CPU-second as % of the fp32 torch.matmul and oneDNN GEMM rates."""
    rows = [
        "| method | precision | ours img/s | lightly img/s | speed-up (wall) | speed-up (CPU time) | ours default vs lightly fp32 | ours % of fp32 matmul / oneDNN GEMM | lightly % | model GFLOP/step | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def pct(x: dict | None) -> str:
        if x is None:
            return "-"
        g = x.get("cpu_fraction_of_onednn_gemm")
        return f"{100 * x['cpu_fraction_of_peak']:.0f}% / " + (f"{100 * g:.0f}%" if g else "-")

    def ratio(r: dict, key: str) -> str:
        return f"{r[key]:.2f}x" if key in r else "-"

    for r in results["methods"]:
        precs = [k.split("-", 1)[1] for k in r["impls"] if k.startswith("ours-")]
        load = "-".join(f"{x:.1f}" for x in r["load_avg_1min"])
        for prec in precs:
            o, li = r["impls"][f"ours-{prec}"], r["impls"].get(f"lightly-{prec}")
            lt = f"{li['images_per_s']:.1f}" if li else "-"
            default = ratio(r, f"speedup_wall {prec}/fp32") if prec == precs[-1] else ""
            rows.append(
                f"| {r['method']} | {prec}{' compiled' if o.get('compiled') else ''} "
                f"| {o['images_per_s']:.1f} | {lt} "
                f"| {ratio(r, f'speedup_wall {prec}/{prec}')} | {ratio(r, f'speedup_cpu {prec}/{prec}')} "
                f"| {default} | {pct(o)} | {pct(li)} | {o['model_gflop_per_step']:.0f} | {load} |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    main()
