"""The CLIP method's hyper-parameters, one dataclass shared by the method and the caption dataset."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import opt
from multimodal.models import TINY_MODEL


@dataclass
class ClipConfig:
    model: str = opt(
        TINY_MODEL, "open_clip model name (selfsup-tiny, selfsup-small, ViT-B-32, ...)"
    )
    pretrained: str = opt(
        "", "open_clip tag, weights file, or local-dir:FOLDER ('' = from scratch)"
    )
    loss: str = opt(
        "clip", "clip (softmax InfoNCE) | siglip (pairwise sigmoid)", choices=["clip", "siglip"]
    )
    lock_image: bool = opt(False, "freeze the image tower (LiT), train the text tower")
    lock_text: bool = opt(False, "freeze the text tower, train the image tower")
    lock_unlocked_groups: int = opt(0, "keep the last N layer groups of a locked tower trainable")
    image_tower: str = opt(
        "",
        "LiT with your own image model: a run, export or published model whose global features, "
        "locked, become the image tower (a trainable linear head maps them to the shared space)",
    )
    max_logit_scale: float = opt(100.0, "clamp of the learnable temperature exp(t)")
    local_loss: bool = opt(
        True, "DDP: each rank scores its own rows against all (open_clip --local-loss)"
    )
    gather_with_grad: bool = opt(
        True, "DDP: gather features with gradients (open_clip --gather-with-grad)"
    )
    crop_scale_min: float = opt(0.9, "random-resized-crop minimum area (open_clip uses 0.9)")
    color_jitter: float = opt(0.0, "colour jitter strength, applied with p 0.8 (open_clip: off)")
    gray_scale_prob: float = opt(0.0, "share of images turned gray (open_clip aug_cfg; off)")
    flip_p: float = opt(0.0, "horizontal flip probability (open_clip: none)")
    image_key: str = opt("filepath", "caption table: image path column")
    caption_key: str = opt("title", "caption table: caption column")
    separator: str = opt("", "caption table separator ('' = tab, or comma for .csv)")
    skip_bad: bool = opt(
        False, "skip rows with a missing image or empty caption (counted) instead of failing"
    )
