"""Backbone factory: names like resnet18, resnet50, vit_small, vit_tiny_p8."""

from __future__ import annotations

import re

from torch import nn

from engine.backbones.resnet import ResNetBackbone
from engine.backbones.splitbrain import SplitBrainBackbone
from engine.backbones.vit import VIT_SIZES, ViT, default_patch_size
from engine.errors import UserError

BACKBONES = ["resnet18", "resnet18_w32", "resnet50"] + [f"vit_{s}" for s in VIT_SIZES]
_RESNET_RE = re.compile(r"^resnet(18|50)(?:_w(\d+))?$")  # resnet18_w32: stage widths 32..256
_VIT_RE = re.compile(r"^vit_(tiny|small|base)(?:_p(\d+))?$")


def build_backbone(name: str, image_size: int = 224, **kwargs) -> nn.Module:
    """kwargs: small_stem and output_stride (ResNets: 8 or 16 for dense features); depth, mask_token (only methods that mask patches ask for
    the [MASK] embedding), drop_path, pos_embed ("learned" | "sincos" | "sincos_rows"), init
    ("default" | "mae" | "mocov3"), heads, layerscale, registers, interpolation ("size" |
    "dino" | "antialias"), global_pool ("cls" | "avg") for ViTs (see engine/backbones/vit.py). Options of the other family are ignored."""
    m = _RESNET_RE.match(name)
    if m:
        return ResNetBackbone(
            int(m.group(1)),
            image_size=image_size,
            small_stem=kwargs.get("small_stem"),
            output_stride=kwargs.get("output_stride"),
            width=int(m.group(2) or 64),
        )
    if name in (
        "splitbrain_resnet18",
        "splitbrain_resnet50",
    ):  # the split-brain method's two halves
        return SplitBrainBackbone(
            int(name[17:]), image_size=image_size, small_stem=kwargs.get("small_stem")
        )
    m = _VIT_RE.match(name)
    if m:
        patch = int(m.group(2)) if m.group(2) else default_patch_size(image_size)
        if image_size % patch:
            raise UserError(
                f"image size {image_size} is not a multiple of patch size {patch} for {name}"
            )
        return ViT(
            m.group(1),
            patch_size=patch,
            image_size=image_size,
            depth=kwargs.get("depth"),
            mask_token=kwargs.get("mask_token", False),
            drop_path=kwargs.get("drop_path", 0.0),
            pos_embed=kwargs.get("pos_embed", "learned"),
            init=kwargs.get("init", "default"),
            heads=kwargs.get("heads"),
            layerscale=kwargs.get("layerscale"),
            registers=kwargs.get("registers", 0),
            interpolation=kwargs.get("interpolation", "size"),
            global_pool=kwargs.get("global_pool", "cls"),
        )
    raise UserError(
        f"unknown backbone '{name}'; choose one of: {', '.join(BACKBONES)} (ViTs take _p8/_p16 etc.)"
    )


def is_vit(backbone: nn.Module) -> bool:
    return isinstance(backbone, ViT)


__all__ = ["BACKBONES", "ResNetBackbone", "SplitBrainBackbone", "ViT", "build_backbone", "is_vit"]
