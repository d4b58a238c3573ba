"""Label propagation settings, torch-free so the CLI can build its flags without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import opt


@dataclass
class PropagationConfig:
    n_last: int = opt(7, "context: the first frame + the last n propagated frames (DINO: 7)")
    topk: int = opt(5, "affinities kept per target position (DINO: 5)")
    radius: int = opt(12, "neighbourhood half-size in feature cells, <= 0: whole frame (DINO: 12)")
    temperature: float = opt(0.1, "softmax temperature on cosine similarity (DINO: 0.1)")
    norm_mask: bool = opt(True, "rescale each upsampled channel to [0, 1] before argmax (DINO)")
    short_side: int = opt(
        0, "resize frames so their shorter side is this before features (0 = keep)"
    )
    max_side: int = opt(
        960,
        "then shrink frames so their longer side is at most this (0 = no bound; 1080p -> 960x540)",
    )
    batch_frames: int = opt(4, "frames whose features are computed in one forward pass")
    tile: int = opt(12, "target tile side of the local implementation (12 fastest on CPU)")
