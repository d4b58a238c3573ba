"""What the video methods share: their registry family, data and clip-sampling options, running
an encoder on whole clips for evaluation, the stride-8 ResNet that dense tracking methods read,
and their own networks as dense features."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.augment import normalize, to_float
from engine.config import opt
from engine.errors import UserError
from engine.methods.base import Method


@dataclass
class ClipSampling:
    """How training clips are cut from each video (video/data.py reads these fields)."""

    frame_stride: int = opt(2, "frames between a clip's consecutive frames")
    sampling: str = opt("random", "clip start: random | uniform")


class VideoMethod(Method):
    """A method trained on clips; subclasses extend `defaults` with their paper's optimiser."""

    family, data_kind = "video", "clips"
    defaults = {"batch_size": 32, "optimizer": "adamw", "warmup_epochs": 1.0}


class ClipEmbeddingMethod(VideoMethod):
    """A video method that embeds whole clips itself (`clip_embedding(clips) -> [B, D]`): its
    "clip" features are the method (CPC's context, MaskFeat's pooled tokens)."""

    produces = ("clip",)

    def extractor(self, kind: str, source=None):
        return self


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


def dilated_resnet(cfg, method_name: str) -> nn.Module:
    """A ResNet whose dense features come at stride 8: the ImageNet stem with layer3 and layer4
    dilated (CRW, colorization as tracking and Dense Object Nets read this map; a 3x3 stem at
    full resolution would cost 16x the FLOPs in layer1)."""
    from engine.backbones import build_backbone

    if not cfg.backbone.startswith("resnet"):
        raise UserError(
            f"{method_name} needs a ResNet backbone (resnet18, resnet50), not {cfg.backbone}"
        )
    return build_backbone(cfg.backbone, cfg.image_size, small_stem=False, output_stride=8)


class NetFeatures:
    """A video method's own dense network as a feature source for label propagation and the
    Video page: uint8 or [0, 1] images [B, 3, H, W] -> [B, C, H/s, W/s]. `normalise`: the net
    takes ImageNet-normalised input (Dense Object Nets) rather than [0, 1] (colorization)."""

    def __init__(
        self, method: nn.Module, net: nn.Module, source: str = "", normalise: bool = False
    ):
        self.method, self.net, self.stride = method.eval(), net, net.stride
        self.source, self.normalise = source, normalise

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        x = to_float(images.to(next(self.method.parameters()).device))
        return self.net(normalize(x) if self.normalise else x)

    def __repr__(self) -> str:
        return f"NetFeatures({type(self.method).__name__}, {self.source}, stride={self.stride})"
