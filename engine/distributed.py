"""DDP helpers: process info and an all-gather that keeps gradients (for contrastive negatives)."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


def init_from_env(device_type: str) -> bool:
    """Join the process group torchrun describes (NCCL on GPU, gloo on CPU); False when alone."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        return False
    if not is_dist():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return True


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:
        g = torch.stack(grads)
        dist.all_reduce(g)  # every rank's loss depends on this rank's slice
        return g[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x from all processes along dim 0; gradients flow back to each owner."""
    if not is_dist() or world_size() == 1:
        return x
    return torch.cat(_GatherWithGrad.apply(x), dim=0)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if not is_dist() or world_size() == 1:
        return x
    out = [torch.zeros_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank src's value of a small picklable object on every process (a decision all must share)."""
    if not is_dist() or world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


@torch.no_grad()
def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if is_dist() and world_size() > 1:
        x = x.clone()
        dist.all_reduce(x)
        x /= world_size()
    return x


class _AllReduceSumWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        g = g.clone()
        dist.all_reduce(g)  # every rank's (identical) loss depends on every rank's summand
        return g


def all_reduce_sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum of x over all processes, differentiable (global-batch statistics inside a loss)."""
    if not is_dist() or world_size() == 1:
        return x
    return _AllReduceSumWithGrad.apply(x)
