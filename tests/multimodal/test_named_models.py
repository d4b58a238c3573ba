"""open_clip image towers and timm models by name, from local files (no network)."""

from __future__ import annotations

import torch

import multimodal.methods  # noqa: F401  (declares the open_clip family)
from engine.features import load_features
from multimodal.embedder import load_clip
from multimodal.models import TINY_MODEL, create_clip


def test_open_clip_image_tower_by_name_equals_the_clip_model(tmp_path):
    torch.manual_seed(2)
    f = tmp_path / "clip.pt"
    torch.save(create_clip(TINY_MODEL, image_size=32).state_dict(), f)
    tower = load_features(f"open_clip:{TINY_MODEL}:{f}", "global")
    emb = load_clip(f"open_clip:{TINY_MODEL}:{f}")  # the same string works for index / search
    images = (torch.rand(2, 3, emb.image_size, emb.image_size) * 255).to(torch.uint8)
    want = emb.features.embed(images)
    assert torch.allclose(tower.embed(images), want, atol=1e-6)
    assert emb.spec["pretrained"] == str(f.resolve())


def test_timm_models_by_name_equal_timm(tmp_path):
    import timm

    for name, size in (("vit_tiny_patch16_224", (32, 48)), ("resnet18", (64, 64))):
        torch.manual_seed(0)
        ref = timm.create_model(name, pretrained=False, num_classes=0).eval()
        torch.save(ref.state_dict(), tmp_path / f"{name}.pth")
        ex = load_features(f"timm:{name}:{tmp_path / f'{name}.pth'}", "global")
        x = torch.randn(2, 3, *size)
        with torch.no_grad():
            if name.startswith("vit"):  # ours runs it with dynamic image size: compare on 224
                x = torch.randn(2, 3, 224, 224)
            assert torch.allclose(ex.backbone(x), ref(x), atol=1e-5)
            dense = ex.backbone.forward_dense(x)
        assert dense.shape[0] == 2 and dense.shape[1] == ex.embed_dim
