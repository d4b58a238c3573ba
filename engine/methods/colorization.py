"""Colorful Image Colorization (Zhang et al. 2016): from the lightness L, predict a distribution
over quantised ab colours for every pixel; the representation is the backbone that sees L.

Recipe kept from the paper:
- colours are classified, not regressed: ab is quantised on a grid of 10 in Lab space, keeping
  the in-gamut cells (`engine.color.gamut_ab_bins`: 261 for 8-bit sRGB; 313 in the paper), and
  each ground-truth pixel is soft-encoded over its 5 nearest bins (Gaussian, sigma 5);
- class rebalancing toward rare colours: pixels are weighted by w ~ ((1-lambda) p~ + lambda/Q)^-1
  with p~ the empirical bin distribution of the training images smoothed by a Gaussian
  (sigma 5), lambda = 0.5, normalised so E_p~[w] = 1. p~ is measured once, on up to
  `prior_images` training images, at the start of training (a state-dict buffer, so a resumed
  run keeps it);
- predictions at 1/4 of the input resolution (ground-truth ab averaged down to that grid), and
  colour decoded by the annealed mean of the predicted distribution, T = 0.38 (`colorize`).
Input: the backbone keeps its 3 input channels and gets the colour-free image with the same L
(Lab (L, 0, 0) back to sRGB, i.e. L replicated as grey), normalised like any RGB input, so the
trained backbone exports, evaluates and fine-tunes like every other one (the paper's network
took L alone). A dense head on the backbone's dense feature map (stride 8 for the small-image
ResNet, the patch size for a ViT) is upsampled to the prediction grid. Augmentation: random
resized crops (50-100% of the image) and flips only: colour augmentation would corrupt the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import augment
from engine.color import ABQuantizer, gray_rgb, lab_to_rgb, rgb_to_lab, soft_cross_entropy
from engine.config import opt
from engine.methods.base import RESNET_ADAMW, Method, reconstruction_features


@dataclass
class ColorizationConfig:
    grid: float = opt(10.0, "ab bin size in Lab units (paper 10)")
    pred_stride: int = opt(4, "predict colours at 1/pred_stride of the input resolution (paper 4)")
    rebalance: bool = opt(True, "weight pixels toward rare colours")
    rebalance_lambda: float = opt(0.5, "mix of the colour prior with uniform (paper 0.5)")
    prior_sigma: float = opt(5.0, "Gaussian smoothing of the colour prior, in ab units (paper 5)")
    prior_images: int = opt(10000, "training images used to measure the colour prior")
    temperature: float = opt(0.38, "annealed-mean temperature for decoding (paper 0.38)")
    head_dim: int = opt(256, "width of the dense colour head")
    crop_min_scale: float = opt(0.5, "smallest random crop, as an area fraction")


class DenseHead(nn.Module):
    """Dense features [B, C, h, w] -> per-pixel class logits [B, Q, H, W] at a requested size:
    conv-BN-ReLU, bilinear upsampling, conv-BN-ReLU, 1x1 classifier."""

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.pre = nn.Sequential(
            nn.Conv2d(in_dim, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.post = nn.Sequential(
            nn.Conv2d(hidden, hidden // 2, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden // 2, num_classes, 1),
        )

    def forward(self, f: Tensor, size: tuple[int, int]) -> Tensor:
        return self.post(
            F.interpolate(self.pre(f), size=size, mode="bilinear", align_corners=False)
        )


class ColorPrior(nn.Module):
    """The empirical ab-bin distribution of the training set and its rebalancing weights
    (buffers, so a resumed run keeps them). Measured once, on up to `max_images` images."""

    def __init__(self, quantizer: ABQuantizer, lam: float = 0.5, sigma: float = 5.0):
        super().__init__()
        self.quantizer, self.lam, self.sigma = quantizer, lam, sigma
        self.register_buffer("counts", torch.zeros(quantizer.num_bins))
        self.register_buffer("weights", torch.ones(quantizer.num_bins))

    @property
    def ready(self) -> bool:
        return bool(self.counts.sum() > 0)

    def set_counts(self, counts: Tensor) -> None:
        self.counts.copy_(counts)
        self.weights.copy_(self.quantizer.rebalance_weights(counts, self.lam, self.sigma))

    @torch.no_grad()
    def fit(self, images, image_size: int, grid: tuple[int, int], max_images: int) -> None:
        """Count nearest bins on the prediction grid. images: an iterable of uint8/float
        [B, 3, H, W] tensors or of batch dicts with "image" (e.g. trainer.feature_loader())."""
        counts, seen = torch.zeros_like(self.counts), 0
        for batch in images:
            x = batch["image"] if isinstance(batch, dict) else batch
            x = augment.to_float(x[: max_images - seen].to(counts.device))
            x = F.interpolate(
                x,
                size=(image_size, image_size),
                mode="bilinear",
                antialias=True,
                align_corners=False,
            )
            counts += self.quantizer.histogram(
                F.adaptive_avg_pool2d(rgb_to_lab(x.clamp(0, 1))[:, 1:], grid)
            )
            seen += x.shape[0]
            if seen >= max_images:
                break
        self.set_counts(counts)

    def pixel_weights(self, ab: Tensor) -> Tensor:
        """Weight of each pixel's nearest bin; measured on this batch if nothing was fitted
        (the method used outside the trainer)."""
        if not self.ready:
            self.set_counts(self.quantizer.histogram(ab))
        return self.weights[self.quantizer.encode(ab)]


class ColorTargetMethod(Method):
    """What colorization and split-brain share: ab bins (`self.quantizer`), the colour prior
    measured at the first epoch, the crop-and-flip view and the prediction grid. The config
    needs grid, pred_stride, rebalance, rebalance_lambda, prior_images and crop_min_scale."""

    def __init__(self, backbone: nn.Module, image_size: int, cfg, prior_sigma: float = 5.0):
        super().__init__()
        self.backbone, self.cfg, self.image_size = backbone, cfg, image_size
        self.quantizer = ABQuantizer(cfg.grid)
        self.prior = ColorPrior(self.quantizer, cfg.rebalance_lambda, prior_sigma)
        self.spec = augment.crop_view(image_size, cfg.crop_min_scale, normalize=False)

    @property
    def grid_hw(self) -> tuple[int, int]:
        g = max(1, self.image_size // self.cfg.pred_stride)
        return g, g

    def on_epoch_start(self, epoch: int, trainer) -> None:
        if self.cfg.rebalance and not self.prior.ready:
            loader = trainer.feature_loader(batch_size=256)
            self.prior.fit(loader, self.image_size, self.grid_hw, self.cfg.prior_images)


class Colorization(ColorTargetMethod):
    """Colorization: predict quantised ab colours from lightness, rebalanced toward rare colours"""

    method_name, family, config_cls = "colorization", "pretext", ColorizationConfig
    produces = ("global", "dense", "reconstruction")
    defaults = RESNET_ADAMW | {"lr": 1e-3, "weight_decay": 1e-4}
    extractor = reconstruction_features("colorization_method_figure")

    def __init__(self, backbone: nn.Module, image_size: int, cfg: ColorizationConfig):
        super().__init__(backbone, image_size, cfg, cfg.prior_sigma)
        self.head = DenseHead(backbone.embed_dim, self.quantizer.num_bins, cfg.head_dim)

    def logits(self, rgb: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Colour logits [B, Q, h, w] from RGB in [0, 1] (only its lightness is used)."""
        inp = augment.normalize(gray_rgb(rgb))
        size = size or (
            rgb.shape[-2] // self.cfg.pred_stride,
            rgb.shape[-1] // self.cfg.pred_stride,
        )
        return self.head(self.backbone.forward_dense(inp), size)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        lab = rgb_to_lab(x)
        logits = self.logits(x, self.grid_hw)
        ab = F.adaptive_avg_pool2d(lab[:, 1:], self.grid_hw)
        idx, w = self.quantizer.soft_encode(ab)
        pixel_w = self.prior.pixel_weights(ab) if self.cfg.rebalance else None
        loss = soft_cross_entropy(logits, idx, w, pixel_w)
        with torch.no_grad():
            acc = (logits.argmax(1) == self.quantizer.encode(ab)).float().mean()
        return {"loss": loss, "acc": acc}


@torch.no_grad()
def colorize(model: Colorization, images: Tensor, temperature: float | None = None) -> Tensor:
    """Colour the lightness of `images` (uint8 or float [0, 1], [B, 3, H, W]) with a trained
    model: annealed-mean ab, upsampled to full resolution, with the input's own L. -> [0, 1]."""
    was_training = model.training
    model.eval()
    try:
        x = augment.to_float(images.to(next(model.parameters()).device))
        lab = rgb_to_lab(x)
        ab = model.quantizer.decode(
            model.logits(x), model.cfg.temperature if temperature is None else temperature
        )
        ab = F.interpolate(ab, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return lab_to_rgb(torch.cat([lab[:, :1], ab], dim=1))
    finally:
        model.train(was_training)
