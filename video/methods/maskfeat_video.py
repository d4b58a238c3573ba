"""MaskFeat on clips (Wei et al. 2022, video setting): a video ViT over 2 x p x p space-time cubes,
random cube masking of 40% of the tokens with a [MASK] token, and a linear head regressing the
HOG features of each masked cube (the image MaskFeat's HOG, `engine.hog`: 9 unsigned bins,
per-cell L2 normalisation, one histogram per RGB channel) of one frame per cube, the cube's first:
SlowFast's _get_hog_label_3d takes the frames at the patch's temporal stride
(`input_frames[:, :, ::PATCH_STRIDE[0]]`). L2 loss on masked tokens only.

Cube masking (SlowFast's MaskingGenerator3D): cubes with a random temporal extent (1..t) and a
random spatial block of area U(0.2, 1.0) * h * w and log-uniform aspect in [0.3, 1/0.3] are
added until the masked fraction is reached; the last cube is trimmed so every clip masks exactly
the ratio.
Scaled down: cube 2 x 4 x 4 at 32 px (the engine's patch rule), 4-frame clips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from engine import augment
from engine.config import opt
from engine.hog import auto_cell, hog_patch_targets
from engine.masking import masked_mean
from video.methods.common import ClipEmbeddingMethod, ClipSampling, eval_on_clips
from video.video_vit import VideoViT, build_video_vit

NAME = "maskfeat_video"


@dataclass
class MaskFeatVideoConfig(ClipSampling):
    clip_len: int = opt(4, "frames per clip (paper: 16 at stride 4), a multiple of the cube's 2")
    mask_ratio: float = opt(0.4, "fraction of cubes masked (paper: 0.4)")
    hog_bins: int = opt(9, "HOG orientation bins")
    hog_cell: int = opt(8, "HOG cell in pixels, shrunk to the cube's side on small inputs")
    crop_scale_min: float = opt(0.5, "random-resized-crop lower scale, shared by a clip's frames")
    depth: int = opt(0, "transformer blocks (0 = the ViT size's default)")


def cube_masks(
    batch: int, t: int, h: int, w: int, ratio: float, generator: torch.Generator | None = None
) -> Tensor:
    """bool [B, t*h*w] in (time, row, column) order with exactly round(ratio * t*h*w) True."""
    n = t * h * w
    target = int(round(ratio * n))
    g = generator or torch.Generator().manual_seed(0)
    out = torch.zeros(batch, t, h, w, dtype=torch.bool)

    def rand() -> float:
        return float(torch.rand((), generator=g))

    for b in range(batch):
        m = out[b]
        count = 0
        while count < target:
            area = (0.2 + 0.8 * rand()) * h * w  # MaskingGenerator3D's block area
            aspect = math.exp(math.log(0.3) + rand() * (math.log(1 / 0.3) - math.log(0.3)))
            bh = max(1, min(h, int(round(math.sqrt(area * aspect)))))
            bw = max(1, min(w, int(round(math.sqrt(area / aspect)))))
            bt = 1 + int(rand() * t)
            t0, y0, x0 = (
                int(rand() * (t - bt + 1)),
                int(rand() * (h - bh + 1)),
                int(rand() * (w - bw + 1)),
            )
            cube = torch.zeros_like(m)
            cube[t0 : t0 + bt, y0 : y0 + bh, x0 : x0 + bw] = True
            new = (cube & ~m).flatten().nonzero().flatten()
            take = new[: target - count]  # trim the last cube to hit the ratio exactly
            m.view(-1)[take] = True
            count += len(take)
    return out.view(batch, n)


def cube_hog_targets(frames: Tensor, patch: int, tubelet: int, cell: int, bins: int) -> Tensor:
    """frames [B, T, 3, S, S] -> [B, (T/tubelet)*gh*gw, F]: the HOG of each cube's first frame
    (frames at the cube's temporal stride, as SlowFast), F = 3*bins*(patch/cell)^2 per patch."""
    b, t = frames.shape[:2]
    per = hog_patch_targets(frames[:, ::tubelet].flatten(0, 1), patch, cell, bins)  # [B*T', N, F]
    return per.reshape(b, -1, per.shape[-1])


class MaskFeatVideo(ClipEmbeddingMethod):
    """MaskFeat on clips: predict HOG of randomly masked space-time cubes (video ViT)"""

    method_name, config_cls = NAME, MaskFeatVideoConfig
    # paper (Kinetics): AdamW, lr 8e-4 per 512 -> 4e-4 per 256, weight decay 0.05, warm-up
    defaults = ClipEmbeddingMethod.defaults | {
        "backbone": "vit_tiny",
        "image_size": 32,
        "lr": 4e-4,
        "weight_decay": 0.05,
        "warmup_epochs": 2.0,
    }

    @classmethod
    def build(cls, cfg, m):
        return MaskFeatVideo(
            build_video_vit(cfg.backbone, cfg.image_size, m.clip_len, 2, m.depth or None),
            cfg.image_size,
            m,
        )

    def __init__(self, backbone: VideoViT, image_size: int, cfg: MaskFeatVideoConfig):
        super().__init__(backbone, cfg)
        p = backbone.patch_size
        self.cell = auto_cell(p, cfg.hog_cell)
        self.target_dim = 3 * cfg.hog_bins * (p // self.cell) ** 2  # one frame per cube
        self.head = nn.Linear(backbone.embed_dim, self.target_dim)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.spec = augment.crop_view(image_size, cfg.crop_scale_min)

    def masks(self, x: Tensor) -> Tensor:
        b, t = x.shape[:2]
        tg, gh, gw = self.backbone.token_grid(t, x.shape[-2], x.shape[-1])
        m = self.draw_global(
            lambda total, g: cube_masks(total, tg, gh, gw, self.cfg.mask_ratio, g), b, 303
        )
        return m.to(x.device)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch["clip"], [self.spec])  # [B, T, 3, S, S], one crop per clip
        mask = self.masks(x)
        with torch.no_grad():
            target = cube_hog_targets(
                x, self.backbone.patch_size, self.backbone.tubelet, self.cell, self.cfg.hog_bins
            )
        pred = self.head(self.backbone.forward_tokens(x, mask=mask))
        per_token = ((pred.float() - target) ** 2).mean(-1)
        return {"loss": masked_mean(per_token, mask)}

    @torch.no_grad()
    def clip_embedding(self, clips: Tensor) -> Tensor:
        """uint8 [B, T, 3, H, W] -> mean of the encoder's tokens [B, D] (no mask, eval mode)."""
        return eval_on_clips(self, clips, self.spec.size, self.backbone)
