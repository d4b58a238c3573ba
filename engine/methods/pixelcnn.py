"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders"): p(x) = prod_i p(x_i | x_<i) over the sub-pixels in raster order (row by row, R then G
then B within a pixel), each a 256-way softmax. A vertical stack sees the rows above (its output
is shifted down one row before it feeds the horizontal stack), a horizontal stack sees the pixels
to the left in the current row, so the receptive field has no blind spot. Gated units
tanh(W_f * x) . sigmoid(W_g * x); the first layer's mask is type A (a sub-pixel never sees
itself), the others type B; colour channels are split in three groups so G sees R and B sees R
and G of the same pixel. Measured in bits per dimension on held-out images; samples are drawn
sub-pixel by sub-pixel. The last hidden layer, averaged over positions, is the feature used for
kNN / linear probes (it summarises everything the model conditions on).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.config import opt
from engine.losses import fp32
from engine.methods.base import Method, reconstruction_features


@dataclass
class PixelCNNConfig:
    channels: int = opt(60, "hidden channels per stack, a multiple of 3 (paper 384 on CIFAR)")
    layers: int = opt(8, "gated layers (paper 15 on CIFAR)")
    kernel: int = opt(5, "kernel size of the stacks (odd; paper 5)")


def groups(n: int, split: int = 1) -> Tensor:
    """Colour group (0 = R, 1 = G, 2 = B) of each of n * split channels: a tensor that is
    chunked in `split` parts (gates) has the same grouping in every part."""
    return (torch.arange(n * split) % n) * 3 // n


def centre_mask(out_groups: Tensor, in_groups: Tensor, kind: str) -> Tensor:
    """[out, in] mask of the current pixel's tap: A lets a group see strictly earlier colour
    groups (R sees nothing, G sees R, B sees R and G); B also lets it see its own group."""
    o, i = out_groups[:, None], in_groups[None, :]
    return ((o > i) if kind == "A" else (o >= i)).float()


class MaskedConv(nn.Conv2d):
    """A convolution whose weight is multiplied by a fixed mask on every call."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], mask: Tensor, padding):
        super().__init__(cin, cout, kernel)
        self.pad = padding  # (left, right, top, bottom): causal padding, not symmetric
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, self.pad), self.weight * self.mask, self.bias)


def vertical_conv(cin: int, cout: int, k: int) -> MaskedConv:
    """Rows above and the current row (k//2+1 rows); used only after a one-row down-shift."""
    mask = torch.ones(cout, cin, k // 2 + 1, k)
    return MaskedConv(cin, cout, (k // 2 + 1, k), mask, (k // 2, k // 2, k // 2, 0))


def horizontal_conv(cin: int, cout: int, k: int, kind: str, in_split: int = 1) -> MaskedConv:
    """The current row, the pixels to the left and (masked by colour group) the current one."""
    mask = torch.ones(cout, cin, 1, k // 2 + 1)
    mask[:, :, 0, -1] = centre_mask(groups(cout // 2, 2), groups(cin // in_split, in_split), kind)
    return MaskedConv(cin, cout, (1, k // 2 + 1), mask, (k // 2, 0, 0, 0))


def pointwise(cin: int, cout: int, out_split: int = 1, in_split: int = 1) -> MaskedConv:
    """1x1 with the type-B colour mask (a group sees its own and earlier groups)."""
    m = centre_mask(groups(cout // out_split, out_split), groups(cin // in_split, in_split), "B")
    return MaskedConv(cin, cout, (1, 1), m[:, :, None, None], (0, 0, 0, 0))


def down_shift(x: Tensor) -> Tensor:
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def gate(x: Tensor) -> Tensor:
    f, g = x.chunk(2, dim=1)
    return torch.tanh(f) * torch.sigmoid(g)


class GatedLayer(nn.Module):
    def __init__(self, c: int, k: int, kind: str):
        super().__init__()
        in_v = 3 if kind == "A" else c
        self.v = vertical_conv(in_v, 2 * c, k)
        self.h = horizontal_conv(in_v, 2 * c, k, kind)
        self.v_to_h = nn.Conv2d(2 * c, 2 * c, 1)  # rows above: every colour may be seen
        self.h_out = pointwise(c, c)
        self.residual = kind == "B"

    def forward(self, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        v_pre = self.v(v)
        h_pre = self.h(h) + self.v_to_h(down_shift(v_pre))  # only rows above reach row i
        out = self.h_out(gate(h_pre))
        return gate(v_pre), (h + out) if self.residual else out


class PixelCNNNet(nn.Module):
    """The model; as a backbone: forward(x) the last hidden layer averaged over positions."""

    def __init__(self, cfg: PixelCNNConfig, image_size: int):
        super().__init__()
        c, k = cfg.channels, cfg.kernel
        self.layers = nn.ModuleList(
            [GatedLayer(c, k, "A")] + [GatedLayer(c, k, "B") for _ in range(cfg.layers - 1)]
        )
        self.head = nn.Sequential(pointwise(c, c), nn.ReLU(), pointwise(c, 3 * 256, out_split=1))
        self.embed_dim, self.stride = c, 1
        self.arch = {"name": "pixelcnn", "image_size": image_size}

    def hidden(self, x: Tensor) -> Tensor:
        """x in [-1, 1], [B, 3, H, W] -> the last horizontal stack [B, C, H, W]."""
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h)
        return h

    def logits(self, x: Tensor) -> Tensor:
        """[B, 256, 3, H, W]: channel o of the head predicts colour group o * 3 // (3*256)."""
        b, _, hh, ww = x.shape
        out = self.head(F.relu(self.hidden(x)))  # [B, 768, H, W] grouped R | G | B
        return out.view(b, 3, 256, hh, ww).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.hidden(x).mean(dim=(2, 3))

    def forward_dense(self, x: Tensor) -> Tensor:
        return self.hidden(x)


def to_input(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> [-1, 1] (the model's input) and the integer targets."""
    return images.float() / 127.5 - 1.0


@fp32
def bits_per_dim(logits: Tensor, target: Tensor) -> Tensor:
    """Mean negative log2-likelihood per sub-pixel: cross-entropy in nats / ln 2."""
    return F.cross_entropy(logits, target.long()) / math.log(2)


class PixelCNN(Method):
    """Gated PixelCNN: each sub-pixel's 256-way distribution given all earlier ones (bits/dim)"""

    method_name, family, config_cls = "pixelcnn", "generative", PixelCNNConfig
    produces = ("global", "dense", "reconstruction")
    # paper: RMSProp; Adam lr 1e-3 is the common small-data choice
    defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0, "backbone": "pixelcnn"}

    def extractor(self, kind: str, source=None):
        return pixelcnn_features(self, kind, source)

    def __init__(self, image_size: int, cfg: PixelCNNConfig):
        super().__init__()
        if cfg.channels % 3:
            from engine.errors import UserError

            raise UserError(f"PixelCNN channels must be a multiple of 3 (got {cfg.channels})")
        self.cfg, self.image_size = cfg, image_size
        self.backbone = PixelCNNNet(cfg, image_size)

    @classmethod
    def build(cls, cfg, m: PixelCNNConfig) -> PixelCNN:
        return cls(cfg.image_size, m)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = batch["image"]  # the pixels themselves: a likelihood model is not given views
        if x.dtype != torch.uint8:
            x = (x.float() * 255).round().clamp(0, 255).to(torch.uint8)
        bpd = bits_per_dim(self.backbone.logits(to_input(x)), x)
        return {"loss": bpd * math.log(2), "bits_per_dim": bpd.detach()}

    @torch.no_grad()
    def sample(self, n: int, size: int, generator: torch.Generator | None = None) -> Tensor:
        """n images [n, 3, size, size] uint8, drawn sub-pixel by sub-pixel in raster order."""
        dev = next(self.parameters()).device
        x = torch.zeros(n, 3, size, size, dtype=torch.uint8, device=dev)
        for i in range(size):
            for j in range(size):
                for c in range(3):
                    logits = self.backbone.logits(to_input(x))[:, :, c, i, j]
                    p = torch.softmax(logits.float(), dim=1)
                    x[:, c, i, j] = torch.multinomial(p, 1, generator=generator)[:, 0].to(x.dtype)
        return x

    @torch.no_grad()
    def evaluate_bits(self, images: Tensor, batch: int = 64) -> float:
        """Bits per dimension of held-out uint8 images."""
        total = 0.0
        for s in range(0, len(images), batch):
            x = images[s : s + batch].to(next(self.parameters()).device)
            total += float(bits_per_dim(self.backbone.logits(to_input(x)), x)) * len(x)
        return total / max(1, len(images))


def pixelcnn_features(method: PixelCNN, kind: str, source=None):
    """Samples for the visualiser; the hidden layer (pooled, or as a map) for kNN and PCA, with
    the model's own input scaling ([0, 255] -> [-1, 1])."""
    if kind == "reconstruction":
        return reconstruction_features("pixelcnn_samples_figure")(method, kind)
    from engine.features import FeatureExtractor

    half = (0.5, 0.5, 0.5)
    return FeatureExtractor(method.backbone, half, half, method.image_size, source=str(source))
