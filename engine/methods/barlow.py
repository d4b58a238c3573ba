"""Barlow Twins (Zbontar et al. 2021): make the cross-correlation matrix of two views'
batch-standardised projections the identity; redundancy reduction instead of negatives."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine import augment
from engine.config import opt
from engine.heads import mlp
from engine.losses import barlow_twins_loss
from engine.methods.base import TWO_VIEW_RESNET, Method


@dataclass
class BarlowTwinsConfig:
    lambd: float = opt(5e-3, "off-diagonal weight lambda (paper 5e-3, about 1/D)")
    proj_hidden_dim: int = opt(2048, "projector hidden width (paper 8192)")
    proj_dim: int = opt(2048, "projector output dimension D (paper 8192)")
    scale_loss: float = opt(
        0.1, "loss multiplier (solo-learn's CIFAR recipe 0.1; LARS steps ignore the scale)"
    )


class BarlowTwins(Method):
    """Barlow Twins: push the cross-correlation of two views' embeddings to the identity"""

    # family: grouped with the two-view joint-embedding methods
    method_name, family, config_cls = "barlow_twins", "contrastive", BarlowTwinsConfig
    # The paper's LARS: its step is relative to each weight's norm, so the loss's size (a sum
    # over D = 2048 dimensions) cannot blow the weights up. With plain SGD at lr 0.1 the
    # backbone's conv weights grew 700x in 40 steps and learning stalled (kNN 0.168, -10.5
    # points vs random init after 15 minutes). lr, trust and weight decay: solo-learn's CIFAR.
    defaults = TWO_VIEW_RESNET | {
        "optimizer": "lars", "lr": 0.3, "weight_decay": 1e-4, "lars_trust": 0.02,
    }  # fmt: skip

    def __init__(self, backbone: nn.Module, image_size: int, cfg: BarlowTwinsConfig):
        super().__init__(backbone, cfg)
        # Linear-BN-ReLU, Linear-BN-ReLU, Linear; the loss standardises the output.
        self.projector = mlp(backbone.embed_dim, cfg.proj_hidden_dim, cfg.proj_dim, layers=3)
        self.specs = augment.byol_views(image_size)  # the paper follows BYOL's recipe

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x1, x2 = self.make_views(batch, self.specs)
        z1, z2 = (self.projector(self.backbone(x)) for x in (x1, x2))
        return {"loss": self.cfg.scale_loss * barlow_twins_loss(z1, z2, self.cfg.lambd)}
