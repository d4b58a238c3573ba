"""Dense feature sources for propagation: raw Lab pixels, any model's dense features (through
engine.features.load_features), or a plain callable. Each is a callable uint8 [B, 3, H, W] -> [B, C, h, w]
with a `stride` attribute (pixels per feature cell)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine.color import rgb_to_lab


class LabFeatures:
    """The raw-pixel baseline: Lab averaged over stride x stride cells, plus a constant channel.

    Propagation compares L2-normalised features by cosine; on a bare 3-vector that would ignore
    brightness differences along a ray. The constant channel c makes cos(u, v) ~ 1 - |x - y|^2 /
    (2 c^2) for Lab differences small against c, i.e. a Gaussian kernel on Lab distance.
    """

    def __init__(self, stride: int = 8, c: float = 50.0):
        self.stride, self.c = int(stride), float(c)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
        lab = rgb_to_lab(x)
        lab = torch.cat([lab[:, :1] - 50, lab[:, 1:], torch.full_like(lab[:, :1], self.c)], 1)
        return F.avg_pool2d(lab, self.stride) if self.stride > 1 else lab

    def __repr__(self) -> str:
        return f"LabFeatures(stride={self.stride})"


class ExtractorFeatures:
    """Wraps engine.features.FeatureExtractor (its `.dense`) or any module with forward_dense."""

    def __init__(self, extractor: Any):
        self.extractor = extractor
        self.stride = int(
            getattr(extractor, "stride", 0)
            or getattr(getattr(extractor, "backbone", None), "stride", 0)
            or 0
        )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if hasattr(self.extractor, "dense"):
            return self.extractor.dense(images)
        return self.extractor.forward_dense(images)

    def __repr__(self) -> str:
        return f"ExtractorFeatures({getattr(self.extractor, 'source', type(self.extractor).__name__)}, stride={self.stride})"


def load_dense_features(
    source: str | Path | None,
    device: str | torch.device = "cpu",
    lab_stride: int = 8,
    precision: str = "auto",
):
    """'lab' / None -> LabFeatures; any model source -> what its method declares as dense
    features (a colorization run: its embedding network; a backbone: forward_dense)."""
    if source is None or str(source).lower() == "lab":
        return LabFeatures(lab_stride)
    from engine.features import FeatureExtractor, load_features

    feats = load_features(source, "dense", device, precision)
    if not isinstance(feats, FeatureExtractor):
        return feats  # a method's own dense features (a colorization run's embedding)
    if hasattr(feats.backbone, "set_output_stride") and feats.stride > 8:
        feats.backbone.set_output_stride(8)  # CRW / DINO's protocol: layer3, layer4 at stride 1
        feats.stride = 8
    return ExtractorFeatures(feats)
