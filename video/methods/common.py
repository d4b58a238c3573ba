"""What the clip methods share: running an encoder on whole clips for evaluation."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.augment import normalize, to_float


@torch.no_grad()
def eval_on_clips(method: nn.Module, clips: Tensor, size: int, fn: Callable[[Tensor], Tensor]):
    """fn(x) in eval mode, x = uint8 clips [B, T, 3, H, W] as normalised float frames resized to
    `size` x `size` (the training view's size; the centre view, no augmentation)."""
    was = method.training
    method.eval()
    try:
        x = normalize(to_float(clips.to(next(method.parameters()).device)))
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(
                x.flatten(0, 1), size=(size, size), mode="bilinear", antialias=True
            ).view(*x.shape[:3], size, size)
        return fn(x)
    finally:
        method.train(was)
