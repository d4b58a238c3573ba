"""torch.compile of the student backbone, where it is a measured win, with a clean fallback.

Measured (docs/benchmarks.md, Intel Xeon with AMX, 2 cores, SimCLR ResNet-18 at 32 px, batch
256): under CPU bf16 autocast a compiled backbone steps 1.13x faster (3.06 -> 2.71 s), in fp32
it gains nothing (6.84 vs 6.82 s), and compiling costs 25-30 s on the first step. Inductor fuses
the BatchNorm / ReLU / dtype-cast passes that surround the convolutions; in bf16 the AMX
convolutions are fast enough for those passes to matter, in fp32 they are not.

`--compile auto` therefore compiles only under bf16 / fp16 autocast, for runs long enough to pay
the compile back, on one process (DDP's
bucketing and compiled graphs are not worth the risk for a measured 13%), and only where a C++
compiler exists for inductor's CPU kernels. `Module.compile()` compiles in place, so checkpoint
keys are unchanged. A compile failure on the first step switches the module back to eager and
the step is run again (`Trainer._train_step`).
"""

from __future__ import annotations

import os
import shutil

from torch import nn

from engine.precision import Precision

# compiling costs 25-30 s once and saves ~12% of each step: below this many steps (or a time
# budget under MIN_BUDGET_MIN minutes) it does not pay back, e.g. the demo's 120-step runs
MIN_STEPS, MIN_BUDGET_MIN = 300, 5.0


def compile_decision(
    requested: str,
    device_type: str,
    precision: Precision,
    distributed: bool,
    total_steps: int = MIN_STEPS,
    time_budget_min: float = 0.0,
) -> tuple[bool, str]:
    """(compile?, why) for `--compile auto | on | off`; SELFSUP_COMPILE=on|off overrides auto
    site-wide (the test suite turns it off)."""
    forced = os.environ.get("SELFSUP_COMPILE", "")
    if requested == "auto" and forced in ("on", "off"):
        return forced == "on", "SELFSUP_COMPILE"
    if requested == "on":
        return True, "requested"
    if requested == "off":
        return False, "requested off"
    if precision.name == "fp32":
        return False, "fp32: compiling measured no gain"
    if distributed:
        return False, "several processes: eager under DDP"
    short = time_budget_min < MIN_BUDGET_MIN if time_budget_min > 0 else total_steps < MIN_STEPS
    if short:
        return False, "short run: compiling (25-30 s) would not pay back"
    if device_type == "cpu" and not (shutil.which("g++") or shutil.which("c++")):
        return False, "no C++ compiler for inductor's CPU kernels"
    return True, f"{precision.name} autocast: compiled backbone measured 1.13x faster"


def compile_module(module: nn.Module) -> None:
    """Compile in place (state_dict keys unchanged); failures surface on the first call."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True  # a frame dynamo cannot trace runs eagerly
    module.compile()


def uncompile(module: nn.Module) -> None:
    """Back to the eager forward after a compile failure."""
    module._compiled_call_impl = None
