"""Shared helpers of the patch-based pretext tasks (relative position, jigsaw): batched patch
cropping with per-channel offsets, per-patch normalisation, colour-channel dropping, and random
draws made for the global batch so DDP and resume see the same patches as one process."""

from __future__ import annotations

import torch
from torch import Tensor


def batch_rand(method, b: int, *shape: int, device: torch.device, salt: int) -> Tensor:
    """U[0, 1) draws [b, *shape] for this process's rows of the global batch, from the method's
    (seed, step) generator: the same numbers whatever the number of processes."""
    return method.draw_global(
        lambda n, g: torch.rand((n, *shape), generator=g, device=device), b, salt, device
    )


def batch_randint(
    method, b: int, high: Tensor | int, *shape: int, device: torch.device, salt: int
) -> Tensor:
    """Integers in [0, high) (high broadcastable to [b, *shape]) from `batch_rand`."""
    u = batch_rand(method, b, *shape, device=device, salt=salt)
    high_t = torch.as_tensor(high, device=device, dtype=u.dtype)
    return (u * high_t).floor().long().clamp(max=(high_t - 1).long())


def crop_patches(x: Tensor, y0: Tensor, x0: Tensor, size: int) -> Tensor:
    """Square patches by integer indexing (no resampling). x [B, C, H, W]; y0, x0 top-left corners
    [B, N] or [B, N, C] (per-channel corners shift colour planes against each other).
    Returns [B, N, C, size, size]."""
    b, c = x.shape[:2]
    if y0.dim() == 2:
        y0 = y0.unsqueeze(-1).expand(-1, -1, c)
    if x0.dim() == 2:
        x0 = x0.unsqueeze(-1).expand(-1, -1, c)
    r = torch.arange(size, device=x.device)
    rows = (y0.unsqueeze(-1) + r)[..., :, None]  # [B, N, C, s, 1]
    cols = (x0.unsqueeze(-1) + r)[..., None, :]  # [B, N, C, 1, s]
    bi = torch.arange(b, device=x.device).view(b, 1, 1, 1, 1)
    ci = torch.arange(c, device=x.device).view(1, 1, c, 1, 1)
    return x[bi, ci, rows, cols]


def normalize_patches(p: Tensor, eps: float = 1e-5) -> Tensor:
    """Each patch independently: subtract its per-channel mean, divide by its standard
    deviation (over channels and pixels), so brightness and contrast statistics shared by
    neighbouring patches cannot give their arrangement away. p [..., C, s, s]."""
    p = p - p.mean(dim=(-2, -1), keepdim=True)
    return p / (p.pow(2).mean(dim=(-3, -2, -1), keepdim=True).sqrt() + eps)


def drop_color_channels(
    p: Tensor, keep: Tensor, noise: Tensor, noise_scale: float = 0.01
) -> Tensor:
    """Doersch et al.'s colour dropping: keep one channel per patch and replace the other two with
    Gaussian noise of std `noise_scale` x the kept channel's std, so chromatic aberration (colour
    fringes that move with the position in the lens) cannot reveal where a patch came from.
    p [M, C, s, s]; keep long [M]; noise standard normal [M, C, s, s]."""
    c = p.shape[1]
    keep_mask = (torch.arange(c, device=p.device)[None] == keep[:, None]).view(-1, c, 1, 1)
    kept = p.gather(1, keep.view(-1, 1, 1, 1).expand(-1, 1, *p.shape[-2:]))
    std = kept.std(dim=(-3, -2, -1), keepdim=True)
    return torch.where(keep_mask, p, noise * std * noise_scale)
