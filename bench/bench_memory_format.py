"""Where DINO's multi-crop step loses to lightly in fp32: one ResNet-18 forward + backward over
a step's crops, channels_last against NCHW, all crops of a size in one pass against passes of
one batch each (lightly's loop), in fp32 and under bf16 autocast.

Our step passes the 2 x 256 global crops (32 px) in one batch and the 6 x 256 local crops
(16 px) in another, channels_last; lightly passes each crop's 256 images separately in NCHW.
Both do the same model FLOPs, so the difference is the convolution kernels oneDNN picks for
each layout and batch.

    python bench/bench_memory_format.py [--batch 256] [--repeats 3] [--allow-load]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import finish, guard  # noqa: E402

from engine.backbones import build_backbone  # noqa: E402


def pass_seconds(
    net: torch.nn.Module, x: torch.Tensor, passes: int, channels_last: bool, bf16: bool
) -> float:
    """Forward + backward over x in `passes` equal chunks."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net.to(memory_format=fmt)
    t = time.perf_counter()
    for chunk in x.chunk(passes):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = net(chunk.contiguous(memory_format=fmt))
        y.float().sum().backward()
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--allow-load", action="store_true")
    args = p.parse_args()
    info = guard(args.allow_load)
    torch.manual_seed(0)
    net = build_backbone("resnet18", 32)
    b = args.batch
    crops = {"2 global crops, 32 px": (2, 32), "6 local crops, 16 px": (6, 16)}
    print("| crops | precision | layout | passes | s (median) |")
    print("|---|---|---|---|---|")
    for label, (n, size) in crops.items():
        x = torch.randn(n * b, 3, size, size)
        for bf16 in (False, True):
            for cl in (True, False):
                for passes in (1, n):
                    pass_seconds(net, x[:b], 1, cl, bf16)  # warm-up: kernels for this shape
                    s = [pass_seconds(net, x, passes, cl, bf16) for _ in range(args.repeats)]
                    layout = "channels_last" if cl else "NCHW"
                    prec = "bf16" if bf16 else "fp32"
                    print(
                        f"| {label} | {prec} | {layout} | {passes} x {n * b // passes} "
                        f"| {statistics.median(s):.2f} |",
                        flush=True,
                    )
    finish(info)


if __name__ == "__main__":
    main()
