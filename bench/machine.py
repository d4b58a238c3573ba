"""What every benchmark prints and records: the CPU (model, the flags that decide bf16 and SIMD
speed), cores, torch, and the load average before and after. A benchmark refuses to run on a
busy machine (1-minute load above 1 before it starts) unless --allow-load, which stamps the
result with the load instead."""

from __future__ import annotations

import os
import subprocess
import sys

import torch


def describe() -> dict:
    info: dict = {
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = {
            k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in out.splitlines())
        }
        info["model"] = fields.get("Model name", "")
        flags = fields.get("Flags", "").split()
        info["flags"] = " ".join(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c")))
    except (OSError, subprocess.SubprocessError):
        info["model"] = "unknown (no lscpu)"
    return info


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def guard(allow_load: bool) -> dict:
    """Print the machine; exit when the machine is busy and the caller did not allow it."""
    info = {**describe(), "load_before": load()}
    print(
        f"machine: {info['model']} ({info['cpus']} cores, torch {info['torch']}, "
        f"{info['threads']} threads) flags: {info.get('flags', '')}"
    )
    print(f"load average before: {info['load_before']}")
    if info["load_before"][0] > 1.0:
        if not allow_load:
            sys.exit(
                "the 1-minute load average is above 1: other work would distort the timings "
                "(stop it, or pass --allow-load to record a stamped, unreliable figure)"
            )
        info["stamp"] = f"load {info['load_before'][0]}: not a quiet machine"
    return info


def finish(info: dict) -> dict:
    info["load_after"] = load()
    print(f"load average after: {info['load_after']}")
    return info
