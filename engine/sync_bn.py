"""Batch norm over the global batch under DDP, on any device.

torch's SyncBatchNorm refuses CPU tensors; SimCLR/BYOL rely on global-batch statistics, and the
DDP-equals-single-process guarantee needs them, so on CPU we synchronise with two all-reduces.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from engine.distributed import all_reduce_sum_with_grad


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose statistics span every process (works for 2-D [B,C] and 4-D inputs)."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() not in (2, 3, 4, 5):
            raise ValueError(f"expected 2-D to 5-D input, got {x.dim()}-D")

    local = False  # set by local_bn: statistics of this process's batch only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.local or not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        sums = all_reduce_sum_with_grad(torch.cat([x.sum(dims), count]))
        n = sums[-1]
        mean = sums[:-1] / n
        centred = x - mean.view(shape)
        var = (
            all_reduce_sum_with_grad((centred * centred).sum(dims)) / n
        )  # two-pass: no E[x^2]-E[x]^2 cancellation
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
            self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1), alpha=m)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_global_bn(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm for one that uses global-batch statistics (in place where possible)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        new = GlobalBatchNorm(
            module.num_features,
            module.eps,
            module.momentum,
            module.affine,
            module.track_running_stats,
        )
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_global_bn(child))
    return module


_OWN_GROUP: list = []


def local_bn(module: nn.Module) -> None:
    """Make the batch norms below `module` use this process's batch only, after the trainer made
    them global (GlobalBatchNorm on CPU, torch's SyncBatchNorm on CUDA): MoCo's shuffled key
    encoder needs per-process statistics. Idempotent; a collective call the first time (every
    rank creates the one-process groups)."""
    for m in module.modules():
        if isinstance(m, GlobalBatchNorm):
            m.local = True
        elif isinstance(m, nn.SyncBatchNorm):
            if not _OWN_GROUP:
                groups = [dist.new_group([r]) for r in range(dist.get_world_size())]
                _OWN_GROUP.append(groups[dist.get_rank()])
            m.process_group = _OWN_GROUP[0]
