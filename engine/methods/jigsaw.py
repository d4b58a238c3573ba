"""Jigsaw puzzles (Noroozi & Favaro 2016): cut a crop into 3x3 tiles, shuffle them with one of a
fixed set of permutations, and classify which permutation was used.

Recipe kept from the paper:
- the permutation set is chosen greedily for large Hamming distance (the paper's point: puzzles
  that differ in few tiles are ambiguous and teach little). We pick each next permutation to
  maximise its minimum distance to those already chosen, ties broken by the largest total
  distance (the paper's criterion); 100 permutations have minimum distance 6 and mean 8.08.
  The set is deterministic for a seed and stored in the state dict;
- each tile is taken at a random place inside its grid cell (tile 64 of cell 75 in the paper), so
  tiles are separated by a random gap and jitter: edges cannot be continued across tiles;
- every tile is normalised on its own (mean and std), colour channels are shifted by up to 2 px
  of a 64 px tile independently (against chromatic aberration), and a fraction of the images is
  turned to grayscale;
- a shared tile encoder (the backbone, a "context-free network"): per-tile features pass a small
  per-tile layer, are concatenated in shuffled order, and an MLP predicts the permutation index.
Scaled to small images: the tile/cell ratio is the paper's (64/75), so a 64 px view gives 21 px
cells with 18 px tiles, a 32 px view 10 px cells with 8 px tiles.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine import augment
from engine.config import opt
from engine.errors import UserError
from engine.heads import mlp
from engine.methods.base import HALF_WIDTH_AT_32, RESNET_SGD, Method
from engine.methods.tiles import batch_randint, crop_patches, normalize_patches


@dataclass
class JigsawConfig:
    num_permutations: int = opt(100, "size of the permutation set (paper: 100 to 1000)")
    permutation_seed: int = opt(0, "seed of the greedy permutation selection")
    tile_ratio: float = opt(64 / 75, "tile side / grid cell side (paper 64/75)")
    channel_shift_ratio: float = opt(
        2 / 64, "max colour-channel shift as a fraction of the tile (paper 2/64)"
    )
    gray_p: float = opt(0.3, "probability of turning an image to grayscale")
    tile_dim: int = opt(512, "per-tile feature width before concatenation")
    head_hidden_dim: int = opt(1024, "hidden width of the permutation classifier")
    crop_min_scale: float = opt(0.6, "smallest random crop of the image, as an area fraction")


@functools.lru_cache(maxsize=4)
def _all_permutations() -> np.ndarray:
    return np.array(list(itertools.permutations(range(9))), dtype=np.int8)


@functools.lru_cache(maxsize=8)
def _max_hamming_cached(n: int, seed: int) -> np.ndarray:
    allp = _all_permutations()
    rng = np.random.default_rng(seed)
    cand = allp[rng.permutation(len(allp))]  # a seeded order decides the remaining ties
    cols = np.ascontiguousarray(cand.T)
    min_d = np.full(len(cand), 9, np.int32)
    sum_d = np.zeros(len(cand), np.int32)
    chosen = [0]
    for _ in range(1, n):
        last = cols[:, chosen[-1]]
        d = np.zeros(len(cand), np.int32)
        for k in range(9):  # Hamming distance of every candidate to the last chosen one
            d += cols[k] != last[k]
        np.minimum(min_d, d, out=min_d)
        sum_d += d
        score = min_d.astype(np.int64) * 10**7 + sum_d
        score[chosen] = -1
        chosen.append(int(score.argmax()))
    return cand[chosen].astype(np.int64)


def max_hamming_permutations(n: int, seed: int = 0) -> Tensor:
    """[n, 9] permutations of the 9 tiles, greedy max-min Hamming distance (see module doc)."""
    if not 2 <= n <= 10000:
        raise UserError(f"num_permutations must be in 2..10000, got {n}")
    return torch.from_numpy(_max_hamming_cached(int(n), int(seed)).copy())


def shuffle_tiles(tiles: Tensor, perms: Tensor) -> Tensor:
    """tiles [B, 9, ...], perms long [B, 9]: position j of the result holds tile perms[:, j]."""
    idx = perms.view(*perms.shape, *([1] * (tiles.dim() - 2))).expand_as(tiles)
    return tiles.gather(1, idx)


def unshuffle_tiles(shuffled: Tensor, perms: Tensor) -> Tensor:
    """The inverse of `shuffle_tiles`: puts every tile back at its grid position."""
    return shuffle_tiles(shuffled, perms.argsort(dim=1))


class Jigsaw(Method):
    """Jigsaw: reorder 3x3 shuffled tiles by classifying the permutation (max-Hamming set)"""

    method_name, family, config_cls = "jigsaw", "pretext", JigsawConfig
    defaults = RESNET_SGD | HALF_WIDTH_AT_32 | {"lr": 0.1, "weight_decay": 5e-4}

    def __init__(self, backbone: nn.Module, image_size: int, cfg: JigsawConfig):
        super().__init__(backbone, cfg)
        self.cell = image_size // 3
        self.tile = max(1, round(self.cell * cfg.tile_ratio))
        self.shift = (
            max(1, round(self.tile * cfg.channel_shift_ratio)) if cfg.channel_shift_ratio > 0 else 0
        )
        if self.cell < 2:
            raise UserError(f"image size {image_size} is too small for 3x3 jigsaw tiles")
        self.register_buffer(
            "permutations", max_hamming_permutations(cfg.num_permutations, cfg.permutation_seed)
        )
        d = backbone.embed_dim
        self.tile_fc = nn.Sequential(
            nn.Linear(d, cfg.tile_dim, bias=False),
            nn.BatchNorm1d(cfg.tile_dim),
            nn.ReLU(inplace=True),
        )
        self.head = mlp(9 * cfg.tile_dim, cfg.head_hidden_dim, cfg.num_permutations, layers=2)
        self.spec = augment.crop_view(
            3 * self.cell, cfg.crop_min_scale, normalize=False, gray_p=cfg.gray_p
        )

    def tile_corners(self, b: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Top-left corners [B, 9, 3] (row, column) of every colour plane of the 9 tiles in grid
        (reading) order: each tile at a random place in its cell, each plane shifted by up to
        `shift` px on its own, kept inside the view."""
        t = self.tile
        grid = torch.arange(3, device=device) * self.cell
        gy, gx = grid.repeat_interleave(3), grid.repeat(3)  # [9] cell corners
        off = batch_randint(self, b, self.cell - t + 1, 9, 2, device=device, salt=202)  # [B, 9, 2]
        shift = (
            batch_randint(self, b, 2 * self.shift + 1, 9, 3, 2, device=device, salt=203)
            - self.shift
        )
        limit = 3 * self.cell - t
        y0 = ((gy + off[..., 0])[..., None] + shift[..., 0]).clamp(0, limit)
        x0 = ((gx + off[..., 1])[..., None] + shift[..., 1]).clamp(0, limit)
        return y0, x0

    def tiles(self, x: Tensor) -> Tensor:
        """The 9 tiles of views x [B, 3, 3*cell, 3*cell], each normalised: [B, 9, 3, t, t]."""
        y0, x0 = self.tile_corners(x.shape[0], x.device)
        return normalize_patches(crop_patches(x, y0, x0, self.tile))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        (x,) = self.make_views(batch, [self.spec])
        b = x.shape[0]
        labels = batch_randint(self, b, self.cfg.num_permutations, device=x.device, salt=201)
        shuffled = shuffle_tiles(self.tiles(x), self.permutations[labels])
        f = self.tile_fc(self.backbone(shuffled.flatten(0, 1)))  # shared encoder on all 9B tiles
        logits = self.head(f.view(b, -1))
        return {
            "loss": F.cross_entropy(logits, labels),
            "acc": (logits.argmax(1) == labels).float().mean(),
        }
