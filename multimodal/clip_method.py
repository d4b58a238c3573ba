"""CLIP (Radford et al. 2021) and SigLIP (Zhai et al. 2023) training on open_clip models.

The loss is open_clip's: `ClipLoss` (symmetric InfoNCE over image-text pairs, each rank scoring
its local rows against features gathered from all ranks with gradients) or `SigLipLoss` (a
sigmoid per pair, with a learnable bias). The temperature is learned as log-scale and clamped
to `max_logit_scale` (100) after every step, as in the CLIP paper. Locking a tower (LiT, Zhai et
al. 2022) freezes it and trains only the other one.
"""

from __future__ import annotations

import math
import os

import torch
from open_clip.loss import ClipLoss, SigLipLoss
from torch import nn

from engine import augment
from engine import distributed as D
from engine.config import TrainConfig
from engine.errors import UserError
from engine.losses import fp32
from engine.methods.base import Method
from multimodal import data as _data  # noqa: F401  (registers the "captions" dataset)
from multimodal.config import ClipConfig
from multimodal.models import create_clip, image_size_of, native_image_size, preprocess_stats

SIGLIP_INIT_SCALE, SIGLIP_INIT_BIAS = math.log(10.0), -10.0  # SigLIP paper: t' = log 10, b = -10


class ClipImageTower(nn.Module):
    """The image encoder as an engine backbone: forward(x) -> [B, embed_dim] image embedding."""

    def __init__(self, visual: nn.Module, model_name: str, image_size: int):
        super().__init__()
        self.visual = visual
        self.embed_dim = int(visual.output_dim)
        self.arch = {"name": "open_clip", "model": model_name, "image_size": image_size}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


class LockedImageTower(nn.Module):
    """LiT (Zhai et al. 2022) with any engine model: its global features, frozen (weights and
    BatchNorm statistics), then a trainable linear head into the shared space. Images arrive
    normalised with the CLIP model's statistics and are re-normalised with the tower's own."""

    def __init__(self, features, replaces: nn.Module, clip_stats: tuple, source: str):
        super().__init__()
        self.backbone = features.backbone.eval().requires_grad_(False)
        self.output_dim, self.source = int(replaces.output_dim), source
        for name in ("image_size", "preprocess_cfg", "image_mean", "image_std"):  # open_clip reads
            if hasattr(replaces, name):
                setattr(self, name, getattr(replaces, name))
        self.head = nn.Linear(features.embed_dim, self.output_dim)
        (cm, cs), (tm, ts) = clip_stats, (features.mean, features.std)
        for name, v in (("clip_mean", cm), ("clip_std", cs), ("own_mean", tm), ("own_std", ts)):
            self.register_buffer(name, torch.tensor(v).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> LockedImageTower:
        super().train(mode)
        self.backbone.eval()  # locked: BatchNorm keeps the statistics it was trained with
        return self

    def lock(self, unlocked_groups: int = 0, freeze_bn_stats: bool = True) -> None:
        """open_clip's lock_image_tower: the backbone is always locked; the head learns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * self.clip_std + self.clip_mean - self.own_mean) / self.own_std
        with torch.no_grad():
            f = self.backbone(x)
        return self.head(f.float())


class Clip(Method):
    """CLIP / SigLIP: align images with their captions (open_clip models, LiT tower locking)"""

    method_name, family, config_cls = "clip", "multimodal", ClipConfig
    data_kind = "captions"
    produces = ("image_text", "global")
    backbone_option = "model"
    # CLIP paper: AdamW, weight decay 0.2, warm-up then cosine; lr 5e-4 per 256 as open_clip's
    # small-batch recipes. 64 px is what the small configs train at on a CPU.
    defaults = {
        "image_size": 64,
        "optimizer": "adamw",
        "lr": 5e-4,
        "weight_decay": 0.2,
        "warmup_epochs": 1.0,
        "batch_size": 128,
    }

    adam_betas = (0.9, 0.98)  # CLIP paper / open_clip's training default (beta2 0.98)

    @classmethod
    def build(cls, cfg: TrainConfig, m: ClipConfig) -> Clip:
        if (
            m.pretrained
            and not m.pretrained.startswith("local-dir:")
            and not os.path.isfile(m.pretrained)
        ):
            native = native_image_size(m.model)
            if cfg.image_size != native:
                raise UserError(
                    f"{m.model} with pretrained weights expects --image-size {native} (got {cfg.image_size})"
                )
        kwargs = (
            {"init_logit_scale": SIGLIP_INIT_SCALE, "init_logit_bias": SIGLIP_INIT_BIAS}
            if m.loss == "siglip"
            else {}
        )
        model = create_clip(m.model, m.pretrained, image_size=cfg.image_size, **kwargs)
        if m.image_tower:
            from engine.features import load_features

            tower = load_features(m.image_tower, "global")
            stats = preprocess_stats(model)
            model.visual = LockedImageTower(tower, model.visual, stats, m.image_tower)
        return cls(model, m, m.pretrained if m.pretrained.startswith("local-dir:") else m.model)

    def extractor(self, kind: str, source=None):
        return _clip_features(self, kind, source)

    def __init__(self, model: nn.Module, cfg: ClipConfig, model_name: str):
        super().__init__()
        self.cfg, self.model = cfg, model
        self.image_size = image_size_of(model)
        self.backbone = ClipImageTower(model.visual, model_name, self.image_size)  # shares weights
        mean, std = preprocess_stats(model)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        # open_clip's training transform: RandomResizedCrop(scale=(0.9, 1)), no flip or jitter by
        # default; its aug_cfg's colour jitter (p 0.8) and grayscale, and a flip, as options
        j = cfg.color_jitter
        self.view = augment.ViewSpec(
            size=self.image_size, scale=(cfg.crop_scale_min, 1.0), flip_p=cfg.flip_p,
            jitter_p=0.8 if j > 0 else 0.0, brightness=j, contrast=j, saturation=j,
            hue=min(0.5, j / 4), gray_p=cfg.gray_scale_prob, blur_p=0.0, normalize=False,
        )  # fmt: skip
        if cfg.lock_image and cfg.lock_text:
            raise UserError("--lock-image and --lock-text together leave nothing to train")
        if cfg.lock_image:
            model.lock_image_tower(unlocked_groups=cfg.lock_unlocked_groups, freeze_bn_stats=True)
        if cfg.lock_text:
            model.lock_text_tower(unlocked_layers=cfg.lock_unlocked_groups, freeze_layer_norm=True)

    def loss_fn(self) -> nn.Module:
        """Built per call so rank/world come from the live process group (set up by the trainer)."""
        if self.cfg.loss == "siglip":
            return SigLipLoss(rank=D.rank(), world_size=D.world_size())
        return ClipLoss(
            local_loss=self.cfg.local_loss,
            gather_with_grad=self.cfg.gather_with_grad,
            rank=D.rank(),
            world_size=D.world_size(),
        )

    def encode(self, images: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised (image, text) features; a fully locked tower runs without autograd."""
        frozen_image = self.cfg.lock_image and self.cfg.lock_unlocked_groups == 0
        frozen_text = self.cfg.lock_text and self.cfg.lock_unlocked_groups == 0
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_image):
            img = self.model.encode_image(images, normalize=True)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_text):
            txt = self.model.encode_text(text, normalize=True)
        return img, txt

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        (x,) = self.make_views(batch["image"], [self.view])
        x = (x - self.mean) / self.std
        img, txt = self.encode(x, batch["text"])
        loss = self.contrastive_loss(img, txt)
        scale = self.model.logit_scale.exp()
        with torch.no_grad():  # in-batch image->text top-1, a cheap sign of learning
            acc = (
                ((img @ txt.T).argmax(1) == torch.arange(len(img), device=img.device))
                .float()
                .mean()
            )
        return {"loss": loss, "logit_scale": scale.detach(), "batch_acc": acc}

    def contrastive_loss(self, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        """open_clip's CLIP / SigLIP loss in float32 under any autocast: its logits are cosines
        times a learnt scale of up to 100, and a bf16 matmul (8 bits of mantissa) leaves a
        cosine of 0.9 off by up to 0.002, a logit by up to 0.2."""
        loss_fn = self.loss_fn()
        args = [img, txt, self.model.logit_scale.exp()]
        if self.cfg.loss == "siglip":
            args.append(self.model.logit_bias)
        return fp32(lambda *a: loss_fn(*a))(*args)

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        self.model.logit_scale.clamp_(0, math.log(self.cfg.max_logit_scale))


def _clip_features(method: Clip, kind: str, source):
    from multimodal.embedder import clip_features

    return clip_features(method, kind, source)
