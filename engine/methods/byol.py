"""BYOL (Grill et al. 2020): an online network with a predictor regresses the projection of an
EMA target network on the other view; no negatives. Symmetric loss, asymmetric augmentations."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine import augment
from engine.config import opt
from engine.heads import mlp
from engine.losses import byol_loss
from engine.methods.base import (
    CIFAR_LARS,
    TWO_VIEW_RESNET,
    Method,
    ema_follow,
    frozen_copy,
    online_and_target,
)


@dataclass
class BYOLConfig:
    ema_momentum: float = opt(
        0.99, "base target momentum, cosine schedule to 1 (paper 0.996; 0.99 for small data)"
    )
    proj_hidden_dim: int = opt(4096, "projector and predictor hidden width (paper 4096)")
    proj_dim: int = opt(256, "projection dimension (paper 256)")


class BYOL(Method):
    """BYOL: online network predicts an EMA target's projection of another view, no negatives"""

    method_name, family, config_cls = "byol", "distillation", BYOLConfig
    # LARS as in the paper; lr, wd and trust of solo-learn's ResNet-18 recipe (CIFAR and
    # ImageNet-100): plain SGD (lr 0.1) reached only +1.4 kNN points in 15 CPU minutes.
    defaults = TWO_VIEW_RESNET | CIFAR_LARS | {"lr": 1.0, "weight_decay": 1e-5}

    def __init__(self, backbone: nn.Module, image_size: int, cfg: BYOLConfig):
        super().__init__(backbone, cfg)
        self.projector = mlp(backbone.embed_dim, cfg.proj_hidden_dim, cfg.proj_dim, layers=2)
        self.predictor = mlp(cfg.proj_dim, cfg.proj_hidden_dim, cfg.proj_dim, layers=2)
        self.target = frozen_copy(nn.Sequential(backbone, self.projector))
        self.specs = augment.byol_views(image_size)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        (p1, p2), (z1, z2) = online_and_target(
            self, self.make_views(batch, self.specs), self.target
        )
        return {"loss": byol_loss(p1, z2) + byol_loss(p2, z1)}

    def on_step_end(self, step: int, total_steps: int) -> None:
        online = nn.Sequential(self.backbone, self.projector)
        ema_follow(self.target, online, self.cfg.ema_momentum, step, total_steps)
