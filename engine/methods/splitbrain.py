"""Split-brain autoencoder (Zhang et al. 2017): two disjoint sub-networks, one sees only L and
predicts ab, the other sees only ab and predicts L; the representation is both concatenated.

Recipe kept from the paper:
- the split: each half never sees the channels it must predict, so neither can copy its input
  (the failure of a plain autoencoder) and together they cover the whole signal;
- cross-channel prediction by classification, which the paper found better than regression:
  L -> ab over the in-gamut ab bins (grid 10, soft-encoded over 5 nearest bins, as in
  colorization) and ab -> L over 50 uniform L bins (2 L units each, our resolution choice);
  the loss is the sum of the two cross-entropies, no colour rebalancing by default;
- the features are the concatenation of the two halves (`SplitBrainBackbone`): half-width
  ResNets (32-64-128-256 channels for ResNet-18) so the total matches one ResNet, as the paper
  halved every layer of one AlexNet.
Each half has a dense head like colorization's (predictions at 1/4 resolution). The backbone
takes ordinary normalised RGB and converts to Lab inside, so it evaluates and exports like any
other. `--backbone resnet18|resnet50` selects the split version of that ResNet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from engine.backbones import SplitBrainBackbone, build_backbone
from engine.color import LQuantizer, rgb_to_lab, soft_cross_entropy
from engine.config import opt
from engine.errors import UserError
from engine.methods.base import RESNET_ADAMW
from engine.methods.colorization import ColorTargetMethod, DenseHead


@dataclass
class SplitBrainConfig:
    grid: float = opt(10.0, "ab bin size in Lab units")
    l_bins: int = opt(50, "number of uniform L bins for ab -> L")
    pred_stride: int = opt(4, "predict at 1/pred_stride of the input resolution")
    rebalance: bool = opt(
        False, "weight L -> ab pixels toward rare colours (colorization's rebalancing)"
    )
    rebalance_lambda: float = opt(0.5, "mix of the colour prior with uniform")
    prior_images: int = opt(10000, "training images used to measure the colour prior")
    head_dim: int = opt(128, "width of each dense head")
    crop_min_scale: float = opt(0.5, "smallest random crop, as an area fraction")


def splitbrain_backbone(name: str, image_size: int) -> SplitBrainBackbone:
    if name in ("resnet18", "resnet50"):
        name = "splitbrain_" + name
    if name not in ("splitbrain_resnet18", "splitbrain_resnet50"):
        raise UserError(f"split-brain needs a ResNet backbone (resnet18 or resnet50), not '{name}'")
    return build_backbone(name, image_size)


class SplitBrain(ColorTargetMethod):
    """Split-brain autoencoder: L predicts ab and ab predicts L in two half networks, features
    concatenated"""

    method_name, family, config_cls = "splitbrain", "pretext", SplitBrainConfig
    defaults = RESNET_ADAMW | {"lr": 1e-3, "weight_decay": 1e-4}

    def __init__(self, backbone: SplitBrainBackbone, image_size: int, cfg: SplitBrainConfig):
        super().__init__(backbone, image_size, cfg)
        self.l_quantizer = LQuantizer(cfg.l_bins)
        self.l_to_ab = DenseHead(backbone.l_net.out_dim, self.quantizer.num_bins, cfg.head_dim)
        self.ab_to_l = DenseHead(backbone.ab_net.out_dim, cfg.l_bins, cfg.head_dim)

    @classmethod
    def build(cls, cfg, m: SplitBrainConfig) -> SplitBrain:
        return cls(splitbrain_backbone(cfg.backbone, cfg.image_size), cfg.image_size, m)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        f_l, f_ab = self.backbone.halves(x)
        lab = F.adaptive_avg_pool2d(rgb_to_lab(x), self.grid_hw)
        ab, L = lab[:, 1:], lab[:, :1]
        idx, w = self.quantizer.soft_encode(ab)
        pixel_w = self.prior.pixel_weights(ab) if self.cfg.rebalance else None
        loss_ab = soft_cross_entropy(self.l_to_ab(f_l, self.grid_hw), idx, w, pixel_w)
        loss_l = F.cross_entropy(
            self.ab_to_l(f_ab, self.grid_hw).float(), self.l_quantizer.encode(L)
        )
        return {"loss": loss_ab + loss_l, "loss_l_to_ab": loss_ab, "loss_ab_to_l": loss_l}
