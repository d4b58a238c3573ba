"""Supervised contrastive learning (Khosla et al. 2020) for users who have labels: two views per
image, and every image of the same class is a positive (L_out, the paper's better variant)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine import augment
from engine.config import opt
from engine.distributed import all_reduce_mean
from engine.errors import UserError
from engine.heads import mlp
from engine.losses import supcon_loss
from engine.methods.base import TWO_VIEW_RESNET, Method


@dataclass
class SupConConfig:
    temperature: float = opt(0.1, "temperature (paper 0.1)")
    proj_hidden_dim: int = opt(
        0, "projection MLP hidden width (0 = backbone width, as in the paper)"
    )
    proj_dim: int = opt(128, "projection dimension (paper 128)")


class SupCon(Method):
    """SupCon: supervised contrastive, all images of the same class are positives (needs labels)"""

    method_name, family, config_cls = "supcon", "contrastive", SupConConfig
    defaults = TWO_VIEW_RESNET | {"lr": 0.125, "weight_decay": 1e-4}

    def __init__(self, backbone: nn.Module, image_size: int, cfg: SupConConfig, data: str = ""):
        super().__init__()
        self.backbone, self.cfg, self.data = backbone, cfg, data
        d = backbone.embed_dim
        self.projector = mlp(d, cfg.proj_hidden_dim or d, cfg.proj_dim, layers=2, bn=False)
        # the reference code's views: crop (0.2, 1), jitter 0.4/0.4/0.4/0.1, gray, no blur
        self.specs = augment.mocov2_views(image_size, blur=False)

    @classmethod
    def build(cls, cfg, m: SupConConfig) -> SupCon:
        method = super().build(cfg, m)
        method.data = cfg.data  # named in the error about unlabelled images
        return method

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["label"]
        if all_reduce_mean((labels < 0).any().float()) > 0:  # every process raises together
            where = self.data or "the training data"
            raise UserError(
                f"{where}: supcon needs labelled images (one sub-folder per class), but found unlabelled images"
            )
        v1, v2 = self.make_views(batch, self.specs)
        z = self.projector(self.backbone(torch.cat([v1, v2])))
        return {"loss": supcon_loss(z, labels.repeat(2), self.cfg.temperature)}
