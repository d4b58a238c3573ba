"""Discrete VAE (DALL-E's stage 1, Ramesh et al. 2021, scaled down): BEiT's image tokenizer.

A conv encoder maps an image to a grid of logits over a codebook (512 entries here, DALL-E
8192) at the ViT's patch resolution (one token per patch: the downsampling factor is the patch
size the ViT uses at this image size, engine.backbones.vit.default_patch_size, unless --patch
says otherwise). Training relaxes the discrete code with the Gumbel-softmax (temperature on a
cosine from 1 to 1/16 over the first `anneal_fraction` of the run, as DALL-E), a conv decoder
reconstructs the image from the relaxed one-hot grid, and the loss is the negative ELBO:
reconstruction (mean squared error on the normalised view; DALL-E uses a logit-Laplace
likelihood) + `kl_weight` x KL(q(z|x) || uniform prior), per token. Tokens = argmax of the
encoder's logits (no noise), what BEiT predicts.

The model sees the same normalised crop views a ViT sees, so BEiT can tokenise its own view.
As a backbone for kNN / linear probes: the encoder's softmax averaged over positions (a
bag-of-visual-words histogram, [B, codebook]); dense: the per-position softmax.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import augment
from engine.backbones.vit import default_patch_size
from engine.config import opt
from engine.errors import UserError
from engine.losses import fp32
from engine.methods.base import Method


@dataclass
class DVAEConfig:
    codebook: int = opt(512, "codebook size (DALL-E 8192)")
    hidden: int = opt(64, "conv channels of encoder and decoder")
    patch: int = opt(
        0, "downsampling factor = BEiT's ViT patch size; 0: the default ViT patch at this size"
    )
    kl_weight: float = opt(0.01, "weight of KL(q || uniform) per token against the per-pixel MSE")
    temp_start: float = opt(1.0, "Gumbel-softmax temperature at the start (DALL-E 1)")
    temp_final: float = opt(1 / 16, "Gumbel-softmax temperature after the anneal (DALL-E 1/16)")
    anneal_fraction: float = opt(0.5, "fraction of the run over which the temperature anneals")
    crop_scale_min: float = opt(0.5, "RandomResizedCrop lower scale; flip only, no colour jitter")


def gumbel_temperature(
    step: int, total: int, start: float = 1.0, final: float = 1 / 16, fraction: float = 0.5
) -> float:
    """Cosine from `start` at step 0 to `final` at step fraction * total, then `final`."""
    end = max(1.0, fraction * total)
    t = min(step, end) / end
    return final + 0.5 * (start - final) * (1 + math.cos(math.pi * t))


@fp32
def kl_to_uniform(logits: Tensor) -> Tensor:
    """Mean over positions of KL(softmax(logits) || uniform) = sum_k q_k log q_k + log K;
    logits [B, K, h, w] (codebook on dim 1)."""
    logq = F.log_softmax(logits, dim=1)
    return ((logq.exp() * logq).sum(1) + math.log(logits.shape[1])).mean()


@fp32
def elbo_loss(
    recon: Tensor, target: Tensor, logits: Tensor, kl_weight: float
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, reconstruction, kl): mean squared error per pixel + kl_weight x KL per token."""
    rec = F.mse_loss(recon, target)
    kl = kl_to_uniform(logits)
    return rec + kl_weight * kl, rec, kl


class DVAENet(nn.Module):
    """Encoder to codebook logits at 1/patch resolution, decoder from a (soft) one-hot grid."""

    def __init__(self, image_size: int, patch: int, codebook: int, hidden: int):
        super().__init__()
        h = hidden
        self.encoder = nn.Sequential(
            nn.Conv2d(3, h, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(h, h, patch, stride=patch),
            nn.ReLU(),
            nn.Conv2d(h, h, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(h, codebook, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(codebook, h, 1),  # on a one-hot grid: the codebook embedding
            nn.Conv2d(h, h, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(h, h, patch, stride=patch),
            nn.ReLU(),
            nn.Conv2d(h, 3, 3, padding=1),
        )
        self.patch_size, self.codebook = patch, codebook
        self.embed_dim, self.stride = codebook, patch
        self.arch = {"name": "dvae", "image_size": image_size}

    def logits(self, x: Tensor) -> Tensor:
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    @torch.no_grad()
    def tokens(self, x: Tensor) -> Tensor:
        """[B, h*w] long: argmax codes, row-major like the ViT's patches."""
        return self.logits(x).argmax(1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(x).float().softmax(1).mean(dim=(2, 3))

    def forward_dense(self, x: Tensor) -> Tensor:
        return self.logits(x).float().softmax(1)


class DVAE(Method):
    """Discrete VAE (DALL-E, scaled down): Gumbel-softmax image tokenizer for BEiT"""

    method_name, family, config_cls = "dvae", "generative", DVAEConfig
    produces = ("global", "dense", "tokens")
    # DALL-E: Adam lr 1e-3 at batch 512, weight decay 1e-4
    defaults = {
        "optimizer": "adamw",
        "lr": 5e-4,
        "weight_decay": 1e-4,
        "warmup_epochs": 0.0,
        "backbone": "dvae",
    }

    def extractor(self, kind: str, source=None):
        return dvae_features(self, kind, source)

    def __init__(self, image_size: int, cfg: DVAEConfig):
        super().__init__()
        patch = cfg.patch or default_patch_size(image_size)
        if image_size % patch:
            raise UserError(f"dvae: image size {image_size} is not a multiple of patch {patch}")
        self.cfg, self.image_size = cfg, image_size
        self.backbone = DVAENet(image_size, patch, cfg.codebook, cfg.hidden)
        self.spec = augment.crop_view(image_size, cfg.crop_scale_min)
        self.tau = cfg.temp_start

    @classmethod
    def build(cls, cfg, m: DVAEConfig) -> DVAE:
        return cls(cfg.image_size, m)

    def on_step_start(self, step: int, total_steps: int, optimizer) -> None:
        c = self.cfg
        self.tau = gumbel_temperature(
            step, total_steps, c.temp_start, c.temp_final, c.anneal_fraction
        )

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        logits = self.backbone.logits(x)
        shape = tuple(logits.shape[1:])

        def gumbel(n: int, g: torch.Generator) -> Tensor:
            u = torch.rand((n, *shape), generator=g, device=g.device)
            return -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))

        noise = self.draw_global(gumbel, x.shape[0], 301, x.device)
        z = F.softmax((logits.float() + noise) / self.tau, dim=1)
        recon = self.backbone.decode(z.to(logits.dtype))
        loss, rec, kl = elbo_loss(recon, x, logits, self.cfg.kl_weight)
        tau = torch.tensor(self.tau, device=x.device)
        return {"loss": loss, "reconstruction": rec.detach(), "kl": kl.detach(), "tau": tau}


def dvae_features(method: DVAE, kind: str, source=None):
    from engine.features import FeatureExtractor

    return FeatureExtractor(method.backbone, image_size=method.image_size, source=str(source))
