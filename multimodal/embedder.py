"""A CLIP model ready for inference: images and texts in, unit-norm embeddings out.

Sources: one of our CLIP run folders or checkpoints, or an open_clip model name (with
`pretrained` tag / file / `local-dir:`). The image side goes through the engine's
FeatureExtractor, so search and evaluation consume the same interface as every other backbone.
`spec` records what made the embeddings, so an index can refuse to mix models.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine.features import FeatureExtractor
from multimodal.clip_method import ClipImageTower
from multimodal.models import (
    LOCAL_DIR,
    TINY_MODEL,
    create_clip,
    fingerprint,
    get_tokenizer,
    image_size_of,
    preprocess_stats,
)


class ClipEmbedder:
    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        spec: dict[str, Any],
        device: str | torch.device = "cpu",
    ):
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.image_size = image_size_of(model)
        mean, std = preprocess_stats(model)
        tower = ClipImageTower(model.visual, spec.get("model", ""), self.image_size)
        self.features = FeatureExtractor(
            tower, mean=mean, std=std, image_size=self.image_size, source=spec.get("source", "")
        )
        self.spec = {
            **spec,
            "image_size": self.image_size,
            "embed_dim": tower.embed_dim,
            "fingerprint": fingerprint(model),
        }

    @property
    def device(self) -> torch.device:
        return self.features.device

    @property
    def dim(self) -> int:
        return int(self.spec["embed_dim"])

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [B,3,S,S] (or float [0,1]) -> float32 [B, D], unit norm, on the CPU."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(
                images.float(),
                size=(self.image_size, self.image_size),
                mode="bicubic",
                antialias=True,
            )
            images = images.clamp(0, 255) if images.max() > 1.5 else images.clamp(0, 1)
        return F.normalize(self.features.embed(images).float(), dim=-1).cpu()

    @torch.no_grad()
    def embed_texts(self, texts: list[str], batch_size: int = 256) -> torch.Tensor:
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self.tokenizer(texts[i : i + batch_size]).to(self.device)
            out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())


def load_clip(
    source: str | Path = TINY_MODEL,
    pretrained: str = "",
    device: str | torch.device = "cpu",
    image_size: int = 0,
) -> ClipEmbedder:
    """A run folder / CLIP checkpoint of ours, or an open_clip model name (+ pretrained), also
    written as the named source `open_clip:MODEL/TAG` or `open_clip:MODEL:FILE`."""
    s = str(source)
    if s.startswith(OPEN_CLIP):
        s, pretrained = parse_open_clip(s, pretrained)
    if not s.startswith(LOCAL_DIR) and (os.sep in s or Path(s).exists()):
        from engine.features import load_features  # a run or checkpoint: its method says how

        return load_features(s, "image_text", device)
    with torch.random.fork_rng():
        torch.manual_seed(
            0
        )  # without weights: the same random model every time (indexes stay comparable)
        model = create_clip(s, pretrained, image_size=image_size)
    pre = (
        str(Path(pretrained).resolve()) if pretrained and os.path.isfile(pretrained) else pretrained
    )
    spec = {"kind": "open_clip", "model": s, "pretrained": pre, "source": s}
    return ClipEmbedder(model, get_tokenizer(s, pretrained), spec, device)


OPEN_CLIP = "open_clip:"


def parse_open_clip(text: str, pretrained: str = "") -> tuple[str, str]:
    """'open_clip:ViT-B-32/laion2b_s34b_b79k' or 'open_clip:ViT-B-32:FILE' -> (model, pretrained)."""
    rest = text[len(OPEN_CLIP) :] if text.startswith(OPEN_CLIP) else text
    model, _, file = rest.partition(":")
    model, _, tag = model.partition("/")
    return model, file or tag or pretrained


def open_clip_image_tower(name: str, file: Path | None, device: Any, source: str):
    """engine.pretrained's loader of the `open_clip` family: the image tower as a
    FeatureExtractor (Features and Video pages, kNN); search keeps the whole ClipEmbedder."""
    model, pretrained = parse_open_clip(name)
    emb = load_clip(model, str(file) if file else pretrained, device)
    emb.features.source = source
    return emb.features


def clip_features(method: Any, kind: str, source: Any) -> Any:
    """The CLIP method's MethodSpec.features: a trained run as a ClipEmbedder (image_text) or
    its image tower as a FeatureExtractor (global, for kNN / linear probes)."""
    name = method.backbone.arch["model"]
    run = source.run
    spec = {
        "kind": "run",
        "model": name,
        "pretrained": "",
        "source": str((run.path if run is not None else source.path).resolve()),
        "step": run.state().step if run is not None else 0,
    }
    device = next(method.parameters()).device
    emb = ClipEmbedder(method.model, get_tokenizer(name), spec, device)
    return emb if kind == "image_text" else emb.features


def _register() -> None:
    from engine.pretrained import register_family

    register_family("open_clip", open_clip_image_tower)


_register()
