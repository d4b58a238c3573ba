"""MoCo v2 (Chen et al. 2020) and MoCo v3 (Chen, Xie & He 2021).

v2: a momentum key encoder and a queue of past keys as negatives, MLP head, InfoNCE (tau 0.2).
v3: no queue; the negatives are the other keys of the global batch; a predictor on the query
side, a symmetric loss, a cosine momentum schedule and a ViT whose patch projection stays at
its random initialisation (the paper's stability trick).

Shuffling BN (v2): MoCo shuffles the key batch across GPUs so that query and key of an image see
different BN statistics (its _batch_shuffle_ddp). Under DDP this is done as in MoCo: the key
views of the global batch are gathered and permuted, each process encodes its slice of the
permutation with BN statistics of its own slice only (the key encoder's BN stays per-process,
while the trainer makes the query encoder's global), and the keys are gathered and unshuffled.
On one process `shuffle_bn_splits = S > 1` (default 2) is the equivalent: both encoders compute
BN statistics over S sub-batches and the key sub-batches are a random permutation of the query
ones; 0/1 turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine import augment
from engine.backbones import is_vit
from engine.config import opt
from engine.distributed import gather_no_grad, rank, world_size
from engine.heads import mlp
from engine.losses import info_nce
from engine.methods.base import (
    CIFAR_LARS,
    TWO_VIEW_RESNET,
    VIT_ADAMW,
    Method,
    ema_follow,
    ema_update,
    frozen_copy,
    online_and_target,
)
from engine.sync_bn import local_bn


@dataclass
class MoCoV2Config:
    temperature: float = opt(0.2, "InfoNCE temperature (paper 0.2)")
    queue_size: int = opt(4096, "negatives in the queue (paper 65536; 4096 for small data)")
    ema_momentum: float = opt(0.99, "key encoder momentum (paper 0.999; 0.99 for small data)")
    proj_hidden_dim: int = opt(0, "MLP head hidden width (0 = backbone width, as in the paper)")
    proj_dim: int = opt(128, "key/query dimension")
    shuffle_bn_splits: int = opt(
        2, "one process: BN sub-batches with shuffled keys (0/1 = off; DDP: ranks)"
    )


def split_forward(
    encoder: nn.Module, x: torch.Tensor, splits: int, perm: torch.Tensor | None = None
) -> torch.Tensor:
    """encoder(x) with BN statistics per sub-batch; `perm` shuffles the rows first and undoes it."""
    if splits <= 1:
        return encoder(x)
    if perm is not None:
        x = x[perm]
    out = torch.cat([encoder(c) for c in x.chunk(splits)])
    return out[torch.argsort(perm)] if perm is not None else out


class MoCoV2(Method):
    """MoCo v2: query vs momentum-encoder key, with a queue of past keys as negatives"""

    method_name, family, config_cls = "moco_v2", "contrastive", MoCoV2Config
    defaults = TWO_VIEW_RESNET | {"lr": 0.06, "weight_decay": 5e-4}

    def __init__(self, backbone: nn.Module, image_size: int, cfg: MoCoV2Config):
        super().__init__(backbone, cfg)
        d = backbone.embed_dim
        self.projector = mlp(d, cfg.proj_hidden_dim or d, cfg.proj_dim, layers=2, bn=False)
        self.key_encoder = frozen_copy(nn.Sequential(backbone, self.projector))
        self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_size, cfg.proj_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.specs = augment.mocov2_views(image_size)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x_q, x_k = self.make_views(batch, self.specs)
        s = 0 if world_size() > 1 else self.cfg.shuffle_bn_splits
        q = split_forward(lambda x: self.projector(self.backbone(x)), x_q, s)
        with torch.no_grad():
            k = F.normalize(self.keys(x_k, s), dim=1)
        loss = info_nce(q, k, self.queue, self.cfg.temperature)
        self.enqueue(k)
        return {"loss": loss}

    def keys(self, x_k: torch.Tensor, splits: int) -> torch.Tensor:
        """Key encoder outputs with shuffled BN: across processes under DDP (MoCo's
        _batch_shuffle_ddp / _batch_unshuffle_ddp), else over `splits` sub-batches."""
        world = world_size()
        if world == 1 and splits <= 1:
            return self.key_encoder(x_k)
        total = x_k.shape[0] * world
        g = self.step_generator(x_k.device, salt=99)
        perm = torch.randperm(total, generator=g, device=x_k.device)  # the same on every rank
        if world == 1:
            return split_forward(self.key_encoder, x_k, splits, perm)
        local_bn(self.key_encoder)
        mine = perm.view(world, -1)[rank()]
        k_shuffled = gather_no_grad(self.key_encoder(gather_no_grad(x_k)[mine]))
        k = torch.empty_like(k_shuffled)
        k[perm] = k_shuffled  # unshuffle
        return k[rank() * x_k.shape[0] : (rank() + 1) * x_k.shape[0]]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest queue entries with the keys of the whole global batch."""
        keys = gather_no_grad(keys)[-self.queue.shape[0] :]
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % self.queue.shape[
            0
        ]
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % self.queue.shape[0])

    def on_step_end(self, step: int, total_steps: int) -> None:
        ema_update(
            self.key_encoder, nn.Sequential(self.backbone, self.projector), self.cfg.ema_momentum
        )


@dataclass
class MoCoV3Config:
    temperature: float = opt(0.0, "temperature (0 = the paper's: 0.2 for ViT, 1.0 for ResNet)")
    ema_momentum: float = opt(0.99, "base momentum, cosine schedule to 1 (paper 0.99)")
    proj_hidden_dim: int = opt(1024, "projector hidden width (paper 4096)")
    proj_dim: int = opt(256, "output dimension (paper 256)")
    pred_hidden_dim: int = opt(1024, "predictor hidden width (paper 4096)")
    freeze_patch_embed: bool = opt(
        True, "ViT: keep the random patch projection fixed (paper's stability trick)"
    )


class MoCoV3(Method):
    """MoCo v3: ViT with predictor and momentum encoder, symmetric in-batch contrastive loss"""

    method_name, family, config_cls = "moco_v3", "contrastive", MoCoV3Config
    # At <= 32 px a half-width ResNet-18 with solo-learn's CIFAR MoCo v3 recipe (LARS lr 0.3,
    # wd 1e-6, temperature 0.2): a ViT-tiny got 51 steps of 15 CPU minutes and +3.4 kNN points.
    defaults = VIT_ADAMW | {
        "lr": 1.5e-4, "weight_decay": 0.1,
        "small_image": {
            "backbone": "resnet18_w32", **CIFAR_LARS, "lr": 0.3, "weight_decay": 1e-6,
            "method_args": {"temperature": 0.2},
        },
    }  # fmt: skip
    # ViT: fixed 2-D sin-cos position embedding and the reference code's initialisation
    backbone_kwargs = {"pos_embed": "sincos_rows", "init": "mocov3"}

    def __init__(self, backbone: nn.Module, image_size: int, cfg: MoCoV3Config):
        super().__init__(backbone, cfg)
        vit = is_vit(backbone)
        if cfg.freeze_patch_embed and vit:
            backbone.patch_embed.requires_grad_(False)
        self.temperature = cfg.temperature or (0.2 if vit else 1.0)
        # MLPs with BN in every layer and an affine-free BN at the end of the projector; as in
        # the reference code, ViT gets a 3-layer projector and a predictor ending in BN too,
        # ResNet a 2-layer projector and a predictor without the last BN.
        h, d = cfg.proj_hidden_dim, cfg.proj_dim
        self.projector = mlp(backbone.embed_dim, h, d, layers=3 if vit else 2, last_bn=True)
        self.predictor = mlp(d, cfg.pred_hidden_dim, d, layers=2, last_bn=vit)
        self.momentum_encoder = frozen_copy(nn.Sequential(backbone, self.projector))
        self.specs = augment.byol_views(image_size)  # MoCo v3 uses BYOL's asymmetric recipe

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        (q1, q2), (k1, k2) = online_and_target(
            self, self.make_views(batch, self.specs), self.momentum_encoder
        )
        t = self.temperature
        return {"loss": 2 * t * (info_nce(q1, k2, None, t) + info_nce(q2, k1, None, t))}

    def on_step_end(self, step: int, total_steps: int) -> None:
        online = nn.Sequential(self.backbone, self.projector)
        ema_follow(self.momentum_encoder, online, self.cfg.ema_momentum, step, total_steps)
