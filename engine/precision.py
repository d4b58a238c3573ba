"""Autocast precision chosen by measurement, not by assumption.

CPUs differ by a factor of a hundred here: with AMX or AVX512-BF16 a bf16 matmul runs several
times faster than fp32, without them bf16 is emulated and far slower. `--precision auto` on a CPU
therefore runs a short probe (a matmul and a convolution at the run's shapes, fp32 against bf16
autocast, a few hundred milliseconds) and uses bf16 only when it is faster by a clear margin.
The result is cached per CPU model and flags, torch version, thread count and shapes, so the
probe runs once per machine. On CUDA: bf16 where supported, else fp16 (with a GradScaler).

Precision-sensitive arithmetic stays fp32 whatever the choice: losses and logits before a
temperature (engine.losses.fp32), softmax / centering, BatchNorm statistics, EMA updates and
optimizer state (the parameters themselves stay fp32 under autocast).
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from engine import cache

MARGIN = 1.3  # bf16 must be at least this much faster than fp32 on both probes


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" | "bf16" | "fp16"
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self, device: torch.device):
        dtype = self.dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)


def choose_precision(requested: str, device: torch.device, image_size: int = 32) -> Precision:
    """requested: auto | fp32 | bf16 | fp16."""
    if requested in ("fp32", "bf16", "fp16"):
        return Precision(requested, "requested")
    forced = os.environ.get("SELFSUP_PRECISION", "")
    if forced in ("fp32", "bf16", "fp16"):  # a site-wide choice (the test suite pins fp32)
        return Precision(forced, "SELFSUP_PRECISION")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "CUDA with bf16 support")
        return Precision("fp16", "CUDA without bf16: fp16 with loss scaling")
    if device.type != "cpu":
        return Precision("fp32", f"{device.type}: not probed, fp32")
    probe = cpu_probe(image_size)
    speed = min(probe["matmul_speedup"], probe["conv_speedup"])
    measured = (
        f"bf16 autocast {probe['matmul_speedup']:.2f}x matmul, {probe['conv_speedup']:.2f}x conv "
        f"vs fp32 on {probe['cpu']}"
    )
    if speed >= MARGIN:
        return Precision("bf16", f"{measured} (>= {MARGIN}x)")
    return Precision("fp32", f"{measured} (< {MARGIN}x)")


def cpu_description() -> str:
    """CPU model and the flags that decide bf16 speed (amx_bf16, avx512_bf16, avx512f)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    keep = sorted(f for f in flags if "bf16" in f or f.startswith("amx") or f == "avx512f")
    return f"{model} [{' '.join(keep) or 'no bf16 flags'}]"


def cpu_probe(image_size: int = 32, force: bool = False) -> dict:
    """{"matmul_speedup", "conv_speedup", "cpu", ...}: bf16 autocast over fp32, measured once per
    (CPU, torch, threads, shapes) and cached in the user's cache folder."""
    key_parts = (cpu_description(), torch.__version__, torch.get_num_threads(), image_size)
    name = f"precision-{cache.files_key([], *key_parts)}.json"
    if not force and (hit := cache.read_json(name)) is not None:
        return hit
    g = torch.Generator().manual_seed(0)  # the probe leaves the global random state alone
    a, b = torch.randn(512, 512, generator=g), torch.randn(512, 512, generator=g)
    side = max(8, min(image_size, 64))
    x = torch.randn(16, 64, side, side, generator=g).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=torch.channels_last)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
    with torch.no_grad():
        mm = _ratio(lambda: a @ b)
        cv = _ratio(lambda: conv(x))
    out = {"matmul_speedup": mm, "conv_speedup": cv, "cpu": key_parts[0], "torch": key_parts[1]}
    out.update(threads=key_parts[2], image_size=image_size, time=time.time())
    cache.write_json(name, out)
    return out


def _ratio(fn, budget_s: float = 0.15) -> float:
    """fp32 time / bf16-autocast time of fn, best of a few repeats within about budget_s each."""

    def best(ctx) -> float:
        with ctx:
            fn()  # warm-up: oneDNN picks and caches its kernels on the first call
            times, t_end = [], time.perf_counter() + budget_s
            while len(times) < 3 or (time.perf_counter() < t_end and len(times) < 20):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
                if times[-1] > budget_s:  # emulated bf16 can be 100x slower: do not wait on it
                    break
        return min(times)

    fp32 = best(contextlib.nullcontext())
    bf16 = best(torch.autocast("cpu", dtype=torch.bfloat16))
    return fp32 / bf16
