"""Token masking for masked image modelling: random (MAE), block-wise (BEiT / MaskFeat / iBOT) and
attention-guided (AttMask), plus the patchify helpers MAE and the figures share.

Conventions: patches are numbered row-major over the ViT grid; a mask is bool [B, N] with True =
masked (hidden from the student / to be predicted). MAE-style index tensors: ``ids_keep`` [B, K]
are the visible patches fed to the encoder, ``ids_restore`` [B, N] puts [visible..., masked...]
back into grid order.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class KeepMask:
    """MAE's view of a masking: which patches the encoder sees and how to undo the shuffle."""

    ids_keep: torch.Tensor  # [B, K] long, grid indices of the visible patches
    ids_restore: torch.Tensor  # [B, N] long, position of each grid patch in [keep..., masked...]
    mask: torch.Tensor  # [B, N] bool, True = masked


def keep_lowest(scores: torch.Tensor, num_keep: int) -> KeepMask:
    """Keep the `num_keep` patches with the lowest score per row (ties: lowest index first).
    Random noise as scores is MAE's per-sample shuffle; attention as scores masks the most
    attended patches (AttMask-High), minus attention the least attended (AttMask-Low)."""
    ids_shuffle = torch.argsort(scores, dim=1, stable=True)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :num_keep]
    mask = torch.ones_like(scores, dtype=torch.bool)
    mask.scatter_(1, ids_keep, False)
    return KeepMask(ids_keep, ids_restore, mask)


def random_masking(
    batch: int,
    num_patches: int,
    ratio: float,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> KeepMask:
    """MAE: mask `ratio` of the patches uniformly at random, independently per sample."""
    num_keep = int(num_patches * (1 - ratio))
    noise = torch.rand(
        batch, num_patches, generator=generator, device=generator.device if generator else device
    )
    return keep_lowest(noise.to(device), num_keep)


def restore_order(
    visible: torch.Tensor, fill: torch.Tensor, ids_restore: torch.Tensor
) -> torch.Tensor:
    """[B, K, D] visible tokens + a fill token [1, 1, D] -> [B, N, D] in grid order."""
    b, k, d = visible.shape
    n = ids_restore.shape[1]
    x = torch.cat([visible, fill.expand(b, n - k, d).to(visible.dtype)], dim=1)
    return torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, d))


def block_mask(
    height: int,
    width: int,
    num_masked: float,
    rng: random.Random,
    min_patches: int | None = None,
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
) -> torch.Tensor:
    """BEiT block-wise masking of one grid: add random rectangles (area in [min_patches, what is
    left], log-uniform aspect) until about `num_masked` patches are covered. Each rectangle may
    add at most what is still missing, so the count lands on or just under the target.
    min_patches defaults to (min(h, w) // 3)^2 as in iBOT (16 for BEiT's 14x14 grid)."""
    mask = torch.zeros(height, width, dtype=torch.bool)
    low = max(1, (min(height, width) // 3) ** 2) if min_patches is None else min_patches
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    count = 0
    while count < num_masked:
        budget = num_masked - count
        added = 0
        for _ in range(10):  # a few tries for a rectangle that adds something within budget
            area = rng.uniform(low, budget)
            ratio = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(area * ratio)))
            w = int(round(math.sqrt(area / ratio)))
            if 0 < h < height and 0 < w < width:
                top, left = rng.randint(0, height - h), rng.randint(0, width - w)
                box = mask[top : top + h, left : left + w]
                new = h * w - int(box.sum())
                if 0 < new <= budget:
                    box.fill_(True)
                    added = new
                    break
        if added == 0:
            break
        count += added
    return mask.flatten()


def block_masks(
    batch: int,
    height: int,
    width: int,
    ratio: float,
    generator: torch.Generator | None = None,
    ratio_var: float = 0.0,
    prob: float = 1.0,
    min_patches: int | None = None,
) -> torch.Tensor:
    """bool [B, h*w] block-wise masks. Per sample: masked with probability `prob` (iBOT masks
    half the images), at a ratio drawn from U(ratio - var, ratio + var) (iBOT: 0.3 +- 0.2).
    Randomness comes from `generator` only, so a step's masks are reproducible."""
    seed = (
        int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        if generator is not None
        else random.getrandbits(62)
    )
    rng = random.Random(seed)
    out = torch.zeros(batch, height * width, dtype=torch.bool)
    for i in range(batch):
        if rng.random() >= prob:
            continue
        r = rng.uniform(ratio - ratio_var, ratio + ratio_var) if ratio_var > 0 else ratio
        out[i] = block_mask(height, width, r * height * width, rng, min_patches)
    return out


def attention_masks(
    attention: torch.Tensor,
    ratio: float,
    mode: str = "high",
    hint_max: float = 0.1,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """AttMask (Kakogeorgiou et al. 2022): bool [B, N] masking the `ratio` most attended
    ("high"), least attended ("low") patches by a teacher's [CLS] attention [B, N], or "hint":
    high, then reveal again ratio*hint_max*N patches drawn among the top hint_max most attended,
    so the student gets a few hints of the object. `noise` [B, N] uniform draws pick the hints
    (pass them for reproducible masks; only the first hint_max*N columns are used)."""
    b, n = attention.shape
    k = int(n * ratio)
    if mode not in ("high", "low", "hint"):
        raise ValueError(f"attention masking mode must be high, low or hint, not {mode!r}")
    order = torch.argsort(attention, dim=1, descending=mode != "low", stable=True)
    mask = torch.zeros(b, n, dtype=torch.bool, device=attention.device)
    mask.scatter_(1, order[:, :k], True)
    if mode == "hint":
        top = max(1, int(n * hint_max))
        reveal = min(int(ratio * hint_max * n), top)
        if reveal > 0:
            u = (torch.rand(b, n, device=attention.device) if noise is None else noise)[:, :top]
            pick = torch.gather(order[:, :top], 1, torch.argsort(u, dim=1)[:, :reveal])
            mask.scatter_(1, pick, False)
    return mask


def cls_attention(attn: torch.Tensor) -> torch.Tensor:
    """Last-layer attention [B, heads, 1+N, 1+N] -> [CLS]-to-patch attention averaged over heads, [B, N]."""
    return attn[:, :, 0, 1:].mean(1)


def tokens_and_attention(
    vit: nn.Module, x: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One ViT pass giving both the normalised output tokens [B, 1+N, D] and the last block's
    attention [B, heads, 1+N, 1+N] (a teacher needs both; get_last_selfattention would cost a
    second forward)."""
    t = vit.embed(x, mask)
    for blk in vit.blocks[:-1]:
        t = blk(t)
    t, attn = vit.blocks[-1](t, return_attention=True)
    return vit.norm(t), attn


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, N, patch*patch*C], row-major patches, pixels (p, q, c) ordered as MAE."""
    b, c, h, w = images.shape
    gh, gw = h // patch, w // patch
    x = images[:, :, : gh * patch, : gw * patch].reshape(b, c, gh, patch, gw, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, patch * patch * c)


def unpatchify(patches: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of patchify for a (height x width)-pixel image: [B, N, p*p*C] -> [B, C, H, W]."""
    b, n, d = patches.shape
    c = d // (patch * patch)
    gh, gw = height // patch, width // patch
    x = patches.reshape(b, gh, gw, patch, patch, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, gh * patch, gw * patch)


def masked_mean(loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of a per-patch loss [B, N] over masked patches only (0 if nothing is masked)."""
    m = mask.to(loss.dtype)
    return (loss * m).sum() / m.sum().clamp(min=1.0)
