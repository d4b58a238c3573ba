"""SimCLR (Chen et al. 2020): two symmetric views, MLP projection, NT-Xent over 2N views."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine import augment
from engine.config import opt
from engine.heads import mlp
from engine.losses import nt_xent
from engine.methods.base import TWO_VIEW_RESNET, Method


@dataclass
class SimCLRConfig:
    temperature: float = opt(0.5, "NT-Xent temperature (0.5 in the paper's CIFAR runs)")
    proj_hidden_dim: int = opt(512, "projection MLP hidden width")
    proj_dim: int = opt(128, "projection output dimension")


class SimCLR(Method):
    """SimCLR: contrast two augmented views against all others in the batch (NT-Xent)"""

    method_name, family, config_cls = "simclr", "contrastive", SimCLRConfig
    defaults = TWO_VIEW_RESNET | {"lr": 0.06, "weight_decay": 5e-4}

    def __init__(self, backbone: torch.nn.Module, image_size: int, cfg: SimCLRConfig):
        super().__init__(backbone, cfg)
        self.projector = mlp(backbone.embed_dim, cfg.proj_hidden_dim, cfg.proj_dim, layers=2)
        self.specs = augment.simclr_views(image_size)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        v1, v2 = self.make_views(batch, self.specs)
        z = self.projector(self.backbone(torch.cat([v1, v2])))
        z1, z2 = z.chunk(2)
        return {"loss": nt_xent(z1, z2, self.cfg.temperature)}
