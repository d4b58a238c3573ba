"""RotNet (Gidaris et al. 2018): predict which of 0/90/180/270 degrees an image was rotated by.

Recipe kept from the paper:
- rotations by multiples of 90 degrees only, made with flips and transposes (`torch.rot90`), so
  no interpolation or border artefact can reveal the rotation (the paper's reason for these four);
- all four rotations of every image in the same batch (the paper found this better than one
  random rotation per image: the network must tell them apart on the same content);
- a 4-way classifier on the backbone's global feature (an MLP by default; `head_hidden_dim=0`
  gives a linear layer), cross-entropy.
Scaled to small images: RotNet's CIFAR augmentation (random crop + horizontal flip) as a
random resized crop of 60-100% of the image; no colour jitter (rotation does not need it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import augment
from engine.config import opt
from engine.heads import mlp
from engine.methods.base import HALF_WIDTH_AT_32, RESNET_SGD, Method


@dataclass
class RotationConfig:
    head_hidden_dim: int = opt(512, "classifier MLP hidden width (0 = linear classifier)")
    crop_min_scale: float = opt(0.6, "smallest random crop, as a fraction of the image area")


def rotate_all(x: Tensor) -> tuple[Tensor, Tensor]:
    """The four rotations of every image: x [B, C, S, S] -> ([4B, C, S, S], labels [4B]).
    Block k holds rot90(x, k) (k quarter turns counter-clockwise), label k."""
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(x.shape[-2:])}")
    rots = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return rots, labels


class Rotation(Method):
    """RotNet: classify the 0/90/180/270-degree rotation of each image (all four per image)"""

    method_name, family, config_cls = "rotation", "pretext", RotationConfig
    # paper: 0.1 at batch 128
    defaults = RESNET_SGD | HALF_WIDTH_AT_32 | {"lr": 0.2, "weight_decay": 5e-4}

    def __init__(self, backbone: nn.Module, image_size: int, cfg: RotationConfig):
        super().__init__(backbone, cfg)
        d = backbone.embed_dim
        self.head = (
            mlp(d, cfg.head_hidden_dim, 4, layers=2) if cfg.head_hidden_dim else nn.Linear(d, 4)
        )
        self.spec = augment.crop_view(image_size, cfg.crop_min_scale)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        x, labels = rotate_all(x)
        logits = self.head(self.backbone(x))
        loss = F.cross_entropy(logits, labels)
        return {"loss": loss, "acc": (logits.argmax(1) == labels).float().mean()}
