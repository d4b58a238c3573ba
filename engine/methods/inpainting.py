"""Context encoder (Pathak et al. 2016): blank out part of an image and reconstruct it from its
surroundings with an encoder-decoder; the encoder (the backbone) is the representation.

Recipe kept from the paper:
- masks: the central square (half the image side, 64 of 128 px in the paper) or random blocks
  (several possibly overlapping rectangles, about a quarter of the image on average); the hole
  is filled with the dataset mean (0 after normalisation);
- the encoder's feature map is joined to the decoder by a channel-wise fully connected layer
  (every channel mixes all spatial positions, without the parameters of a full FC layer), then a
  1x1 convolution mixes channels, and up-convolutions return to full resolution (tanh, [-1, 1]);
- L2 reconstruction only on the hole, plus the paper's overlap: the predicted region reaches
  `overlap` px (4 of 128 in the paper, scaled with the image) into the visible context around
  the hole, with 10x weight there, so the prediction blends with its border;
- optional adversarial loss (off by default, weight 0.001 against 0.999 for L2, as the paper) with
  a small convolutional discriminator that sees real images and images completed with the
  prediction. One optimiser trains both: the returned loss is L_G + L_D, where the generator's
  adversarial term is evaluated through a parameter-detached copy of the discriminator (no
  gradient into D) and D's own loss sees the prediction detached (no gradient into G), i.e.
  simultaneous gradient steps of the two players instead of the paper's alternating ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from engine import augment
from engine.config import opt
from engine.errors import UserError
from engine.methods.base import HALF_WIDTH_AT_32, RESNET_ADAMW, Method
from engine.methods.tiles import batch_rand


@dataclass
class InpaintingConfig:
    mask: str = opt("center", "center | random (random blocks)", choices=["center", "random"])
    center_frac: float = opt(0.5, "side of the central hole as a fraction of the image (paper 0.5)")
    num_blocks: int = opt(4, "rectangles per image in random mode")
    overlap_frac: float = opt(
        4 / 128,
        "overlap of the predicted region into the context, fraction of the image (paper 4/128)",
    )
    overlap_weight: float = opt(
        10.0, "L2 weight of the overlap ring relative to the hole (paper 10)"
    )
    adversarial: bool = opt(False, "add the adversarial loss with a small discriminator")
    adv_weight: float = opt(
        0.001, "adversarial weight; reconstruction gets 1 - adv_weight (paper 0.001)"
    )
    decoder_dim: int = opt(256, "channels of the first decoder layer (halved per up-convolution)")
    crop_min_scale: float = opt(0.6, "smallest random crop, as an area fraction")


def center_hole(b: int, size: int, frac: float, overlap: int, device) -> Tensor:
    """bool [B, 1, S, S]: the central square of side frac*S shrunk by `overlap` on every side,
    so that with the overlap ring the predicted region is exactly the central square."""
    side = round(size * frac)
    lo, hi = (size - side) // 2 + overlap, (size - side) // 2 + side - overlap
    m = torch.zeros(b, 1, size, size, dtype=torch.bool, device=device)
    m[..., lo:hi, lo:hi] = True
    return m


def random_block_hole(u: Tensor, size: int) -> Tensor:
    """bool [B, 1, S, S] union of rectangles; u [B, K, 4] uniforms -> side in [S/8, 3S/8]
    for height and width, top-left anywhere the rectangle fits."""
    lo, hi = size / 8, 3 * size / 8
    h = (lo + (hi - lo) * u[..., 0]).round().long()
    w = (lo + (hi - lo) * u[..., 1]).round().long()
    y0 = (u[..., 2] * (size - h + 1)).floor().long()
    x0 = (u[..., 3] * (size - w + 1)).floor().long()
    r = torch.arange(size, device=u.device)
    rows = (r >= y0[..., None]) & (r < (y0 + h)[..., None])  # [B, K, S]
    cols = (r >= x0[..., None]) & (r < (x0 + w)[..., None])
    return (rows[..., :, None] & cols[..., None, :]).any(1, keepdim=True)


def reconstruction_weights(hole: Tensor, overlap: int, overlap_weight: float) -> Tensor:
    """1 inside the hole, overlap_weight on the ring of `overlap` px of context around it,
    0 elsewhere. hole bool [B, 1, S, S] -> float [B, 1, S, S]."""
    h = hole.float()
    region = F.max_pool2d(h, 2 * overlap + 1, stride=1, padding=overlap) if overlap > 0 else h
    return h + overlap_weight * (region - h)


def weighted_l2(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """Sum of weight * squared error over the predicted region, divided by the region's size
    (pixels x channels): the paper's weighted mean over the predicted patch."""
    err = (pred.float() - target.float()).pow(2) * weights
    return err.sum() / ((weights > 0).float().sum() * pred.shape[1]).clamp(min=1)


class ChannelwiseFC(nn.Module):
    """Each channel's h*w map -> a new h*w map by its own fully connected layer (plus bias)."""

    def __init__(self, channels: int, hw: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, hw, hw) / math.sqrt(hw))
        self.bias = nn.Parameter(torch.zeros(channels, hw))

    def forward(self, f: Tensor) -> Tensor:
        b, c, h, w = f.shape
        return (torch.einsum("bci,cio->bco", f.flatten(2), self.weight) + self.bias).view(
            b, c, h, w
        )


class Decoder(nn.Module):
    """Channel-wise FC, 1x1 conv, then 4x4 stride-2 up-convolutions to full resolution, tanh."""

    def __init__(self, in_dim: int, grid: int, stride: int, width: int):
        super().__init__()
        n_up = round(math.log2(stride))
        if 2**n_up != stride:
            raise UserError(
                f"context encoder needs a backbone whose stride is a power of 2, got {stride}"
            )
        self.fc = ChannelwiseFC(in_dim, grid * grid)
        self.mix = nn.Sequential(
            nn.Conv2d(in_dim, width, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        ups, c = [], width
        for _ in range(n_up):
            ups += [
                nn.ConvTranspose2d(c, max(c // 2, 16), 4, 2, 1, bias=False),
                nn.BatchNorm2d(max(c // 2, 16)),
                nn.ReLU(inplace=True),
            ]
            c = max(c // 2, 16)
        self.up = nn.Sequential(*ups)
        self.out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, f: Tensor) -> Tensor:
        return torch.tanh(self.out(self.up(self.mix(self.fc(f)))))


def discriminator(size: int) -> nn.Sequential:
    """DCGAN-style critic without normalisation (it is also called with detached parameters):
    4x4 stride-2 convolutions down to 4x4, then one logit."""
    layers, c_in, c, s = [], 3, 32, size
    while s > 4:
        layers += [nn.Conv2d(c_in, c, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        c_in, c, s = c, min(c * 2, 256), s // 2
    layers += [nn.Conv2d(c_in, 1, s), nn.Flatten()]
    return nn.Sequential(*layers)


class Inpainting(Method):
    """Context encoder: reconstruct a masked centre or random blocks from the context (L2, optional
    GAN)"""

    method_name, family, config_cls = "inpainting", "pretext", InpaintingConfig
    defaults = RESNET_ADAMW | HALF_WIDTH_AT_32 | {"lr": 1e-3, "weight_decay": 1e-4}

    def __init__(self, backbone: nn.Module, image_size: int, cfg: InpaintingConfig):
        super().__init__()
        self.backbone, self.cfg, self.image_size = backbone, cfg, image_size
        stride = getattr(backbone, "stride", 8)
        if image_size % stride:
            raise UserError(
                f"context encoder: image size {image_size} is not a multiple of the backbone stride {stride}"
            )
        self.decoder = Decoder(backbone.embed_dim, image_size // stride, stride, cfg.decoder_dim)
        self.overlap = max(1, round(image_size * cfg.overlap_frac)) if cfg.overlap_frac > 0 else 0
        self.disc = discriminator(image_size) if cfg.adversarial else None
        self.spec = augment.crop_view(image_size, cfg.crop_min_scale, normalize=False)

    def holes(self, b: int, device: torch.device) -> Tensor:
        if self.cfg.mask == "center":
            return center_hole(b, self.image_size, self.cfg.center_frac, self.overlap, device)
        return random_block_hole(
            batch_rand(self, b, self.cfg.num_blocks, 4, device=device, salt=301), self.image_size
        )

    def reconstruct(self, x: Tensor, hole: Tensor) -> Tensor:
        """x RGB in [0, 1], hole bool [B, 1, S, S] -> prediction of the whole image in [-1, 1]."""
        inp = augment.normalize(x).masked_fill(hole, 0.0)  # 0 = the mean colour after normalising
        return self.decoder(self.backbone.forward_dense(inp))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        hole = self.holes(x.shape[0], x.device)
        target = x * 2 - 1
        pred = self.reconstruct(x, hole)
        rec = weighted_l2(
            pred, target, reconstruction_weights(hole, self.overlap, self.cfg.overlap_weight)
        )
        if self.disc is None:
            return {"loss": rec, "rec": rec}
        fake = torch.where(
            hole, pred.to(target.dtype), target
        )  # the image completed by the prediction
        frozen = {k: v.detach() for k, v in self.disc.named_parameters()}
        g_adv = F.binary_cross_entropy_with_logits(
            functional_call(self.disc, frozen, (fake,)), torch.ones(x.shape[0], 1, device=x.device)
        )
        d_real, d_fake = self.disc(target), self.disc(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(
            d_real, torch.ones_like(d_real)
        ) + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
        w = self.cfg.adv_weight
        return {
            "loss": (1 - w) * rec + w * g_adv + d_loss,
            "rec": rec,
            "adv_g": g_adv,
            "adv_d": d_loss,
        }
