"""Image GPT (Chen et al. 2020, "Generative Pretraining from Pixels"), scaled to small images.

Images are downsampled (the paper: 32 x 32 to 64 x 64; here 16 x 16 = 256 tokens) and every pixel
is replaced by the nearest colour of a palette found by k-means on (R, G, B) values in [-1, 1]
(the paper: 512 clusters; here 16, fitted on the training pixels when the first epoch starts and
kept as a buffer, so a resumed or loaded model tokenises identically). The raster sequence of
colour indices, preceded by a start-of-sequence token, feeds a GPT-2 transformer: learned
position embeddings, pre-norm blocks (layer norm, causal self-attention, layer norm, MLP with
GELU), a final layer norm and an untied head trained with next-token cross-entropy.

The paper's measure is the linear probe on one layer's features, average-pooled over positions
after layer normalisation; the best layer lies near the middle of the network, not at the end.
The backbone's forward(x) returns exactly that (layer `probe_layer`, default the middle), so
`selfsup eval linear` / `eval knn` run the protocol on the chosen layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import augment
from engine.config import opt
from engine.errors import UserError
from engine.kmeans import assign, kmeans
from engine.losses import fp32
from engine.methods.base import Method


@dataclass
class IGPTConfig:
    clusters: int = opt(16, "colour palette size, k of k-means (paper 512)")
    resolution: int = opt(16, "images downsampled to this side: res^2 tokens (paper 32-64)")
    width: int = opt(128, "transformer width (paper iGPT-S 512, iGPT-L 1536)")
    depth: int = opt(4, "transformer blocks (paper iGPT-S 24, iGPT-L 48)")
    num_heads: int = opt(4, "attention heads (paper 8)")
    probe_layer: int = opt(-1, "block whose pooled output is the feature; -1 = the middle (paper)")
    kmeans_pixels: int = opt(200_000, "training pixels sampled to fit the palette")
    dropout: float = opt(0.0, "dropout in attention and MLP (paper none)")


class Block(nn.Module):
    """GPT-2 block: x + attn(ln(x)), then x + mlp(ln(x)); attention is causal."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.heads, self.dropout = heads, dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).unbind(2)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


class IGPTNet(nn.Module):
    """The palette, the token and position embeddings and the blocks. As a backbone it takes
    images in [-1, 1] (mean = std = 0.5 of [0, 1]): forward(x) [B, width] is layer
    `probe_layer`'s output, layer-normalised and averaged over positions; forward_dense the same
    layer as a [B, width, res, res] map."""

    def __init__(self, cfg: IGPTConfig, image_size: int):
        super().__init__()
        if cfg.width % cfg.num_heads:
            raise UserError(f"iGPT: width {cfg.width} is not a multiple of {cfg.num_heads} heads")
        if not -1 <= cfg.probe_layer < cfg.depth:
            raise UserError(f"iGPT: probe_layer {cfg.probe_layer} not in -1..{cfg.depth - 1}")
        self.cfg, self.res, d = cfg, cfg.resolution, cfg.width
        self.register_buffer("palette", torch.zeros(cfg.clusters, 3))  # k-means centroids
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.tok = nn.Embedding(cfg.clusters + 1, d)  # the last index is the SOS token
        self.pos = nn.Parameter(torch.zeros(1, cfg.resolution**2, d))
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.tok.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(d, cfg.num_heads, cfg.dropout) for _ in range(cfg.depth))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, cfg.clusters, bias=False)
        self.probe = cfg.depth // 2 if cfg.probe_layer < 0 else cfg.probe_layer
        self.embed_dim, self.stride = d, max(1, image_size // cfg.resolution)
        self.arch = {"name": "igpt", "image_size": image_size}

    def downsample(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, 3, res, res] (area average)."""
        if x.shape[-2:] != (self.res, self.res):
            x = F.interpolate(x.float(), size=(self.res, self.res), mode="area")
        return x

    def tokens(self, x: Tensor) -> Tensor:
        """[B, 3, H, W] in [-1, 1] -> colour indices [B, res * res] in raster order."""
        x = self.downsample(x).float()
        b = x.shape[0]
        pixels = x.permute(0, 2, 3, 1).reshape(-1, 3)
        return assign(pixels, self.palette.float())[0].view(b, -1)

    def hidden(self, tokens: Tensor, upto: int | None = None) -> Tensor:
        """Input sequence [SOS, t_0, ..., t_{T-2}] -> the output of block `upto` (every block
        when None) [B, T, width]: position t has seen tokens < t only."""
        sos = torch.full_like(tokens[:, :1], self.cfg.clusters)
        h = self.tok(torch.cat([sos, tokens[:, :-1]], dim=1)) + self.pos[:, : tokens.shape[1]]
        for i, block in enumerate(self.blocks):
            h = block(h)
            if upto is not None and i == upto:
                break
        return h

    def logits(self, tokens: Tensor) -> Tensor:
        """[B, T, clusters]: position t predicts token t."""
        return self.head(self.ln_f(self.hidden(tokens)))

    def _probe(self, x: Tensor) -> Tensor:
        h = self.hidden(self.tokens(x), upto=self.probe)
        return F.layer_norm(h, h.shape[-1:])

    def forward(self, x: Tensor) -> Tensor:
        return self._probe(x).mean(dim=1)

    def forward_dense(self, x: Tensor) -> Tensor:
        h = self._probe(x)
        return h.transpose(1, 2).reshape(h.shape[0], -1, self.res, self.res)


@fp32
def next_token_loss(logits: Tensor, tokens: Tensor) -> Tensor:
    """Mean cross-entropy (nats) of logits [B, T, K] for the tokens [B, T] at the same positions
    (the logits of position t were computed from tokens < t)."""
    return F.cross_entropy(logits.flatten(0, 1), tokens.flatten())


class IGPT(Method):
    """Image GPT: a causal transformer predicts each k-means colour token of the downsampled image
    in raster order"""

    method_name, family, config_cls = "igpt", "generative", IGPTConfig
    # paper: Adam (0.9, 0.95), no weight decay, warm-up then cosine decay
    defaults = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0, "backbone": "igpt"}

    adam_betas = (0.9, 0.95)  # the paper's Adam betas
    fitted_state = ("backbone.palette", "backbone.fitted")  # k-means, part of the tokeniser

    def extractor(self, kind: str, source=None):
        return igpt_features(self, kind, source)

    def __init__(self, image_size: int, cfg: IGPTConfig, seed: int = 0):
        super().__init__()
        self.cfg, self.image_size, self.seed = cfg, image_size, seed
        self.backbone = IGPTNet(cfg, image_size)
        # a light random crop and a flip (small-data choice), straight to the token grid
        self.spec = augment.ViewSpec(
            size=cfg.resolution,
            scale=(0.75, 1.0),
            jitter_p=0.0,
            gray_p=0.0,
            blur_p=0.0,
            normalize=False,
        )

    @classmethod
    def build(cls, cfg, m: IGPTConfig) -> IGPT:
        return cls(cfg.image_size, m, cfg.seed)

    @torch.no_grad()
    def fit_palette(self, loader) -> None:
        """k-means of (R, G, B) in [-1, 1] over pixels of the downsampled training images."""
        pixels = []
        for batch in loader:
            x = augment.to_float(batch["image"]) * 2 - 1
            pixels.append(self.backbone.downsample(x).permute(0, 2, 3, 1).reshape(-1, 3))
        px = torch.cat(pixels)
        g = torch.Generator().manual_seed(self.seed)
        if len(px) > self.cfg.kmeans_pixels:
            px = px[torch.randperm(len(px), generator=g)[: self.cfg.kmeans_pixels]]
        k = self.cfg.clusters
        if len(px) < k:
            raise UserError(f"iGPT: {len(px)} training pixels, fewer than clusters={k}")
        res = kmeans(px, k, iters=20, seed=self.seed)
        self.backbone.palette.copy_(res.centroids)
        self.backbone.fitted.fill_(True)

    def on_epoch_start(self, epoch: int, trainer) -> None:
        if not bool(self.backbone.fitted):  # first epoch (a resumed run loads its palette)
            self.fit_palette(trainer.feature_loader())

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if not bool(self.backbone.fitted):
            raise UserError("iGPT: no colour palette yet; on_epoch_start must run first")
        (x,) = self.make_views(batch, [self.spec])  # [0, 1] at the token resolution
        tokens = self.backbone.tokens(x * 2 - 1)
        loss = next_token_loss(self.backbone.logits(tokens), tokens)
        return {"loss": loss, "bits_per_token": loss.detach() / math.log(2)}

    @torch.no_grad()
    def evaluate_token_bits(self, images: Tensor, batch: int = 64) -> float:
        """Bits per colour token of held-out uint8 images [N, 3, H, W]: the model's own
        likelihood, over its palette at `resolution` (not comparable with PixelCNN's bits per
        8-bit sub-pixel, which the paper does not report either)."""
        device, total = next(self.parameters()).device, 0.0
        for s in range(0, len(images), batch):
            x = augment.to_float(images[s : s + batch].to(device)) * 2 - 1
            tokens = self.backbone.tokens(x)
            nats = next_token_loss(self.backbone.logits(tokens), tokens)
            total += float(nats) / math.log(2) * len(x)
        return total / max(1, len(images))


def igpt_features(method: IGPT, kind: str, source=None):
    """The probe layer, with the model's own input scaling ([0, 255] -> [-1, 1])."""
    from engine.features import FeatureExtractor

    half = (0.5, 0.5, 0.5)
    return FeatureExtractor(method.backbone, half, half, method.image_size, source=str(source))
