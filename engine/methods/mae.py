"""MAE (He et al. 2022): encode only the visible 25% of patches, reconstruct the rest with a light
decoder, loss = MSE on per-patch normalised pixels of the masked patches only.

AttMask option (Kakogeorgiou et al. 2022, proposed for iBOT): MAE has no teacher, so the attention
that picks the patches is the encoder's own last-layer [CLS] attention on the full view, computed
without gradient. This costs one extra full forward per step (about 4x the visible-only encoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine import augment
from engine.backbones import is_vit
from engine.backbones.vit import Block, sincos_pos_embed
from engine.config import opt
from engine.errors import UserError
from engine.heads import xavier_init
from engine.masking import (
    KeepMask,
    cls_attention,
    keep_lowest,
    masked_mean,
    patchify,
    random_masking,
    restore_order,
)
from engine.methods.base import VIT_ADAMW, Method, reconstruction_features


@dataclass
class MAEConfig:
    mask_ratio: float = opt(0.75, "fraction of patches hidden from the encoder (0.75 in the paper)")
    decoder_dim: int = opt(256, "decoder width (paper 512 for ViT-L; smaller for tiny data)")
    decoder_depth: int = opt(4, "decoder blocks (paper 8; 1-4 suffice for linear/kNN use)")
    decoder_heads: int = opt(8, "decoder attention heads")
    norm_pix_loss: bool = opt(
        True, "targets are per-patch normalised pixels (paper default for best features)"
    )
    crop_scale_min: float = opt(
        0.2, "RandomResizedCrop lower scale (paper 0.2); no colour augmentation"
    )
    masking: str = opt(
        "random",
        "random | attmask_high | attmask_low (AttMask by the encoder's own [CLS] attention)",
        choices=["random", "attmask_high", "attmask_low"],
    )


class MAE(Method):
    """MAE: reconstruct normalised pixels of 75% masked patches from the visible ones (ViT)"""

    method_name, family, config_cls = "mae", "masked", MAEConfig
    produces = ("global", "dense", "reconstruction")
    defaults = VIT_ADAMW | {"lr": 1.5e-4, "weight_decay": 0.05, "warmup_epochs": 5}
    extractor = reconstruction_features("mae_method_figure")

    backbone_kwargs = {"pos_embed": "sincos", "init": "mae"}  # fixed sin-cos, xavier Linear
    adam_betas = (0.9, 0.95)  # MAE's AdamW (the other methods use the default 0.999)

    def __init__(self, backbone: nn.Module, image_size: int, cfg: MAEConfig):
        super().__init__()
        if not is_vit(backbone):
            raise UserError(
                f"MAE needs a ViT backbone (vit_tiny, vit_small, ...), not {backbone.arch.get('name')}"
            )
        self.backbone, self.cfg, self.image_size = backbone, cfg, image_size
        p, d, dd = backbone.patch_size, backbone.embed_dim, cfg.decoder_dim
        grid = image_size // p
        self.decoder_embed = nn.Linear(d, dd)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        if dd % 4:
            raise UserError(f"MAE decoder_dim must be a multiple of 4, got {dd}")
        self.register_buffer(
            "decoder_pos_embed", sincos_pos_embed(dd, grid, grid), persistent=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(dd, cfg.decoder_heads) for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(dd, eps=1e-6)
        self.decoder_pred = nn.Linear(dd, p * p * 3)
        nn.init.normal_(self.mask_token, std=0.02)
        for m in [self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred]:
            m.apply(xavier_init)
        self.spec = augment.crop_view(image_size, cfg.crop_scale_min)

    # ---- masking -------------------------------------------------------------------------
    def choose_mask(self, x: torch.Tensor) -> KeepMask:
        b, n = x.shape[0], self.backbone.num_patches(x.shape[-2], x.shape[-1])
        if self.cfg.masking == "random":
            return self.draw_global(
                lambda total, g: random_masking(total, n, self.cfg.mask_ratio, x.device, g),
                b,
                salt=101,
                device=x.device,
            )
        with torch.no_grad():
            attn = cls_attention(self.backbone.get_last_selfattention(x))
        scores = attn if self.cfg.masking == "attmask_high" else -attn  # lowest scores stay visible
        return keep_lowest(scores, int(n * (1 - self.cfg.mask_ratio)))

    # ---- the three parts of models_mae.py ------------------------------------------------
    def forward_encoder(self, x: torch.Tensor, km: KeepMask) -> torch.Tensor:
        return self.backbone.forward_tokens(x, keep=km.ids_keep)  # [B, 1+K, D]

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        x = self.decoder_embed(latent)
        patches = restore_order(x[:, 1:], self.mask_token, ids_restore)
        x = torch.cat([x[:, :1], patches], dim=1) + self.decoder_pos_embed.to(x.dtype)
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]  # [B, N, p*p*3]

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        target = patchify(x, self.backbone.patch_size)
        if self.cfg.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            target = (target - mean) / (var + 1e-6) ** 0.5
        return target

    def forward_loss(self, x: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        per_patch = ((pred.float() - self.targets(x).float()) ** 2).mean(-1)
        return masked_mean(per_patch, mask)

    def reconstruct(self, x: torch.Tensor, km: KeepMask) -> torch.Tensor:
        """Predicted patches [B, N, p*p*3] in normalised-image space (norm_pix undone with each
        patch's own mean/std, as the MAE visualisations do), for figures."""
        pred = self.forward_decoder(self.forward_encoder(x, km), km.ids_restore)
        if self.cfg.norm_pix_loss:
            t = patchify(x, self.backbone.patch_size)
            pred = pred * (t.var(-1, keepdim=True) + 1e-6) ** 0.5 + t.mean(-1, keepdim=True)
        return pred

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        km = self.choose_mask(x)
        pred = self.forward_decoder(self.forward_encoder(x, km), km.ids_restore)
        return {"loss": self.forward_loss(x, pred, km.mask)}
