"""Relative patch position (Doersch et al. 2015): given a centre patch and one of its eight
neighbours on a 3x3 grid, classify where the neighbour lies (8-way).

Shortcuts the paper closes, kept here:
- a gap between the patches (half a patch, 48 px for 96 px patches in the paper) and a random
  jitter of each patch (up to 7/96 of a patch) so edges and textures cannot simply be continued;
- per-patch normalisation (mean subtracted, std divided) so shared low-level statistics do not
  leak the layout;
- colour dropping: two of the three colour channels of every patch are replaced by Gaussian noise
  (std 1/100 of the kept channel's), against chromatic aberration, which the paper found the
  network otherwise uses to locate a patch in the lens field.
The two patches go through the same backbone; their features are concatenated (centre first) and
an MLP predicts the position. Scaled to small images: the grid (3 patches + 2 gaps + jitter)
fills the view, so a 64 px view gives 15 px patches with an 8 px gap and 1 px jitter, a 32 px
view 7 px patches with a 4 px gap; the grid sits at a random place in a random 60-100% crop.
Every image gives `neighbours_per_image` pairs (default all eight: balanced labels, one centre
encoding shared by its pairs; the paper sampled one pair per image).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import augment
from engine.config import opt
from engine.errors import UserError
from engine.heads import mlp
from engine.methods.base import HALF_WIDTH_AT_32, RESNET_SGD, Method
from engine.methods.tiles import (
    batch_rand,
    batch_randint,
    crop_patches,
    drop_color_channels,
    normalize_patches,
)

# Label i <-> (dy, dx) of the neighbour relative to the centre, in reading order (as the paper).
OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


@dataclass
class RelPatchConfig:
    gap_ratio: float = opt(0.5, "gap between patches as a fraction of the patch side (paper 48/96)")
    jitter_ratio: float = opt(
        7 / 96, "max jitter of each patch as a fraction of its side (paper 7/96)"
    )
    color_drop: bool = opt(True, "replace 2 of 3 colour channels of each patch with noise")
    neighbours_per_image: int = opt(8, "pairs per image (1-8), each with a different neighbour")
    head_hidden_dim: int = opt(512, "hidden width of the pair classifier MLP")
    crop_min_scale: float = opt(0.6, "smallest random crop of the image, as an area fraction")


def patch_layout(size: int, gap_ratio: float, jitter_ratio: float) -> tuple[int, int, int]:
    """(patch, gap, jitter) in pixels: the largest patch whose 3x3 grid with gaps, plus jitter on
    both sides, fits in a `size` view."""
    for p in range(size // 3, 0, -1):
        gap, jit = round(p * gap_ratio), max(1, round(p * jitter_ratio)) if jitter_ratio > 0 else 0
        if 3 * p + 2 * gap + 2 * jit <= size:
            return p, gap, jit
    raise UserError(f"image size {size} is too small for a 3x3 patch grid")


def sample_pairs(
    method: Method, b: int, size: int, layout: tuple[int, int, int], k: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-left corners of the centre and k neighbours per image, and the neighbours' labels.
    Returns (y0 [B, 1+k], x0 [B, 1+k], labels [B, k]); column 0 is the centre patch."""
    p, gap, jit = layout
    step = p + gap
    lo, hi = step + jit, size - 2 * p - gap - jit  # range of the centre's top-left corner
    centre = lo + batch_randint(method, b, hi - lo + 1, 2, device=device, salt=101)  # [B, 2]
    order = batch_rand(method, b, 8, device=device, salt=102).argsort(1)
    labels = order[:, :k] if k < 8 else torch.arange(8, device=device).expand(b, 8)
    offs = torch.tensor(OFFSETS, device=device)[labels]  # [B, k, 2]
    grid = torch.cat([torch.zeros(b, 1, 2, dtype=torch.long, device=device), offs], 1)
    jitter = batch_randint(method, b, 2 * jit + 1, 1 + k, 2, device=device, salt=103) - jit
    corners = centre[:, None] + grid * step + jitter  # [B, 1+k, 2]
    return corners[..., 0], corners[..., 1], labels


class RelPatch(Method):
    """Relative patch position: classify where a neighbour patch lies around a centre patch (8-way)"""

    method_name, family, config_cls = "relpatch", "pretext", RelPatchConfig
    defaults = RESNET_SGD | HALF_WIDTH_AT_32 | {"lr": 0.1, "weight_decay": 5e-4}

    def __init__(self, backbone: nn.Module, image_size: int, cfg: RelPatchConfig):
        super().__init__()
        if not 1 <= cfg.neighbours_per_image <= 8:
            raise UserError(f"neighbours_per_image must be 1..8, got {cfg.neighbours_per_image}")
        self.backbone, self.cfg, self.image_size = backbone, cfg, image_size
        self.layout = patch_layout(image_size, cfg.gap_ratio, cfg.jitter_ratio)
        self.head = mlp(2 * backbone.embed_dim, cfg.head_hidden_dim, 8, layers=2)
        self.spec = augment.crop_view(image_size, cfg.crop_min_scale, normalize=False)

    def patches(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised (and colour-dropped) patches [B, 1+k, 3, p, p] and labels [B, k]."""
        b, k = x.shape[0], self.cfg.neighbours_per_image
        y0, x0, labels = sample_pairs(self, b, x.shape[-1], self.layout, k, x.device)
        p = normalize_patches(crop_patches(x, y0, x0, self.layout[0]))
        if self.cfg.color_drop:
            flat = p.flatten(0, 1)
            keep = batch_randint(self, b, 3, 1 + k, device=x.device, salt=104).flatten()
            p = drop_color_channels(flat, keep, torch.randn_like(flat)).view_as(p)
        return p, labels

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        p, labels = self.patches(x)
        b, n = p.shape[:2]
        f = self.backbone(p.flatten(0, 1)).view(b, n, -1)
        pairs = torch.cat([f[:, :1].expand(-1, n - 1, -1), f[:, 1:]], dim=-1).flatten(0, 1)
        logits, labels = self.head(pairs), labels.flatten()
        return {
            "loss": F.cross_entropy(logits, labels),
            "acc": (logits.argmax(1) == labels).float().mean(),
        }
