"""MaskFeat (Wei et al. 2022): replace block-wise masked patch embeddings by a learnable [MASK]
token and regress the HOG features of the masked patches with a linear head (L2 loss).

HOG targets (engine/hog.py): 9 unsigned orientation bins, 8x8-pixel cells, per-cell L2
normalisation, one histogram per RGB channel (the paper's colour HOG), computed on the unmasked
view on the training device. The paper's 16-px patches hold 2x2 cells; on small images patches are
smaller than 8 px (4 px at 32 px input), so the cell shrinks to the patch (`engine.hog.auto_cell`)
and each patch predicts one cell: 27 values. HOG is taken of the normalised view the student sees:
mean/std normalisation per channel changes neither the orientations nor, after the per-cell,
per-channel L2 normalisation, the histograms.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine import augment
from engine.backbones import is_vit
from engine.config import opt
from engine.errors import UserError
from engine.hog import auto_cell, hog_patch_targets
from engine.masking import block_masks, masked_mean
from engine.methods.base import VIT_ADAMW, Method


@dataclass
class MaskFeatConfig:
    mask_ratio: float = opt(0.4, "fraction of patches masked in blocks (0.4 in the paper)")
    hog_bins: int = opt(9, "HOG orientation bins")
    hog_cell: int = opt(8, "HOG cell in pixels, shrunk to the patch size on small images")
    crop_scale_min: float = opt(
        0.5, "RandomResizedCrop lower scale (paper [0.5, 1]); flip only, no colour jitter"
    )


class MaskFeat(Method):
    """MaskFeat: predict HOG features of block-masked patches with a [MASK] token (ViT)"""

    method_name, family, config_cls = "maskfeat", "masked", MaskFeatConfig
    defaults = VIT_ADAMW | {"lr": 2e-4, "weight_decay": 0.05, "warmup_epochs": 5}

    backbone_kwargs = {"mask_token": True}

    def __init__(self, backbone: nn.Module, image_size: int, cfg: MaskFeatConfig):
        if not is_vit(backbone):
            raise UserError(
                f"MaskFeat needs a ViT backbone (vit_tiny, vit_small, ...), not {backbone.arch.get('name')}"
            )
        super().__init__(backbone, cfg)
        p = backbone.patch_size
        self.cell = auto_cell(p, cfg.hog_cell)
        self.target_dim = 3 * cfg.hog_bins * (p // self.cell) ** 2
        self.head = nn.Linear(backbone.embed_dim, self.target_dim)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.spec = augment.crop_view(image_size, cfg.crop_scale_min)

    def masks(self, x: torch.Tensor) -> torch.Tensor:
        gh, gw = x.shape[-2] // self.backbone.patch_size, x.shape[-1] // self.backbone.patch_size
        m = self.draw_global(
            lambda total, g: block_masks(total, gh, gw, self.cfg.mask_ratio, g), x.shape[0], 202
        )
        return m.to(x.device)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        mask = self.masks(x)
        with torch.no_grad():
            target = hog_patch_targets(x, self.backbone.patch_size, self.cell, self.cfg.hog_bins)
        tokens = self.backbone.forward_tokens(x, mask=mask)[:, 1:]
        pred = self.head(tokens)
        per_patch = ((pred.float() - target) ** 2).mean(-1)
        return {"loss": masked_mean(per_patch, mask)}
