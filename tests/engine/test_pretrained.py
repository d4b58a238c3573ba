"""Published self-supervised models load by name and compute what their authors' code computes.

For each family a randomly initialised model of the authors' own architecture (their code,
vendored in tests/third_party, or timm where their code is timm) is saved in the official file
layout, loaded through our source string (`dino:vits16:FILE`, ...), and its [CLS] features, patch
tokens and last-layer attention are compared with the reference forward at two input sizes, one
of them non-square, so position-embedding interpolation is covered. No network is used."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.errors import UserError
from engine.features import load_features

THIRD = Path(__file__).resolve().parents[1] / "third_party"
SIZES = [(64, 64), (48, 80)]
TOL = dict(atol=2e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def dino_ref():
    sys.path.insert(0, str(THIRD / "dino"))
    try:
        import vision_transformer

        return vision_transformer
    finally:
        sys.path.remove(str(THIRD / "dino"))


@pytest.fixture(scope="module")
def dinov2_ref():
    os.environ["XFORMERS_DISABLED"] = "1"
    sys.path.insert(0, str(THIRD / "dinov2"))
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from dinov2.models import vision_transformer
        return vision_transformer
    finally:
        sys.path.remove(str(THIRD / "dinov2"))


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter perturbed (position grid, LayerScale, registers included), so a key that
    loads into the wrong place or an interpolation rule that differs cannot go unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


def attention_of(blocks, tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """Last-layer attention from a reference model's own modules (DINOv2 and timm do not
    return it): softmax(q k^T / sqrt(d)) of its last block's qkv on the normalised tokens."""
    for blk in blocks[:-1]:
        tokens = blk(tokens)
    last = blocks[-1]
    x = last.norm1(tokens)
    b, n, d = x.shape
    q, k, _ = last.attn.qkv(x).reshape(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    return (q @ k.transpose(-2, -1) * (d // heads) ** -0.5).softmax(-1)


def ours(source, size):
    ex = load_features(source, "global")
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(size[1]))
    vit = ex.backbone
    with torch.no_grad():
        tokens = vit.forward_tokens(x)
        attn = vit.get_last_selfattention(x)
    return x, tokens, attn, ex


@pytest.mark.parametrize("layout", ["plain", "teacher", "module"])
def test_dino_vits16_equals_the_authors_vit(dino_ref, tmp_path, layout):
    ref = randomize(dino_ref.vit_small(patch_size=16))
    sd = ref.state_dict()
    if layout == "plain":  # the hub release: the backbone's state dict
        ck = sd
    elif layout == "teacher":  # DINO's full checkpoint: heads and the run's argparse.Namespace
        head = {
            "head.mlp.0.weight": torch.zeros(8, 384),
            "head.last_layer.weight_g": torch.ones(4, 1),
        }
        ck = {
            "teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, **head},
            "student": {f"module.backbone.{k}": v for k, v in sd.items()},
            "args": argparse.Namespace(arch="vit_small", patch_size=16),
            "epoch": 100,
        }
    else:
        ck = {"state_dict": {f"module.{k}": v for k, v in sd.items()}}
    torch.save(ck, tmp_path / "w.pth")
    for size in SIZES:
        x, tokens, attn, ex = ours(f"dino:vits16:{tmp_path / 'w.pth'}", size)
        with torch.no_grad():
            want = ref.get_intermediate_layers(x, 1)[0]
            want_attn = ref.get_last_selfattention(x)
        assert torch.allclose(tokens[:, 0], ref(x), **TOL)  # [CLS] features
        assert torch.allclose(tokens, want, **TOL)  # patch tokens after the last norm
        assert torch.allclose(attn, want_attn, **TOL)
    assert ex.image_size == 224 and ex.backbone.arch["interpolation"] == "dino"


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("vits14", dict(interpolate_offset=0.1)),
        (
            "vits14_reg",
            dict(num_register_tokens=4, interpolate_antialias=True, interpolate_offset=0.0),
        ),
    ],
)
def test_dinov2_equals_the_authors_vit(dinov2_ref, tmp_path, name, kwargs):
    ref = dinov2_ref.vit_small(
        patch_size=14, img_size=518, init_values=1.0, block_chunks=0, **kwargs
    )
    randomize(ref)
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    regs = kwargs.get("num_register_tokens", 0)
    for size in [(56, 56), (42, 70)]:
        x, tokens, attn, ex = ours(f"dinov2:{name}:{tmp_path / 'w.pth'}", size)
        with torch.no_grad():
            want = ref.forward_features(x)
            want_attn = attention_of(ref.blocks, ref.prepare_tokens_with_masks(x), 6)
        assert torch.allclose(tokens[:, 0], want["x_norm_clstoken"], **TOL)
        assert torch.allclose(tokens[:, 1 + regs :], want["x_norm_patchtokens"], **TOL)
        assert torch.allclose(attn, want_attn, **TOL)
        dense = ex.dense((x * 40 + 128).clamp(0, 255).to(torch.uint8))  # extractor: patches only
        assert dense.shape == (2, 384, size[0] // 14, size[1] // 14)


def _timm_vit(dim: int, heads: int):
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(
        patch_size=16,
        embed_dim=dim,
        depth=12,
        num_heads=heads,
        qkv_bias=True,
        num_classes=0,
        global_pool="token",
        dynamic_img_size=True,
    )


@pytest.mark.parametrize(
    "name,dim,heads,wrap",
    [
        ("mocov3:vits16", 384, 12, "mocov3"),  # 12 heads: MoCo v3's ViT-S, not DeiT's 6
        ("mae:vitb16", 768, 12, "mae"),
    ],
)
def test_timm_based_vits_equal_timm(tmp_path, name, dim, heads, wrap):
    ref = randomize(_timm_vit(dim, heads))
    sd = ref.state_dict()
    if wrap == "mocov3":
        ck = {
            "state_dict": {
                **{f"module.base_encoder.{k}": v for k, v in sd.items()},
                "module.base_encoder.head.0.weight": torch.zeros(4, dim),
                **{f"module.momentum_encoder.{k}": v for k, v in sd.items()},
                "module.predictor.0.weight": torch.zeros(4, 4),
            },
            "arch": "vit_small",
            "epoch": 300,
        }
    else:  # MAE: encoder and decoder in "model"
        ck = {
            "model": {
                **sd,
                "mask_token": torch.zeros(1, 1, 512),
                "decoder_embed.weight": torch.zeros(512, dim),
            }
        }
    torch.save(ck, tmp_path / "w.pth.tar")
    for size in SIZES:
        x, tokens, attn, _ = ours(f"{name}:{tmp_path / 'w.pth.tar'}", size)
        with torch.no_grad():
            want = ref.forward_features(x)
            embedded = ref.norm_pre(ref._pos_embed(ref.patch_embed(x)))
            want_attn = attention_of(ref.blocks, embedded, heads)
        assert torch.allclose(tokens[:, 0], ref(x), **TOL)
        assert torch.allclose(tokens, want, **TOL)
        assert torch.allclose(attn, want_attn, **TOL)


def _resnet_layouts(sd: dict) -> dict[str, object]:
    fc = {"fc.0.weight": torch.zeros(8, 2048), "fc.0.bias": torch.zeros(8)}
    return {
        "dino:resnet50": {k: v for k, v in sd.items() if not k.startswith("fc.")},
        "mocov3:resnet50": {
            "state_dict": {
                **{f"module.base_encoder.{k}": v for k, v in sd.items() if not k.startswith("fc.")},
                **{f"module.base_encoder.{k}": v for k, v in fc.items()},
            }
        },
        "solo:resnet50": {"state_dict": {f"backbone.{k}": v for k, v in sd.items()}},
        "vissl:resnet50": {
            "classy_state_dict": {
                "base_model": {
                    "model": {
                        "trunk": {
                            f"_feature_blocks.{k}": v
                            for k, v in sd.items()
                            if not k.startswith("fc.")
                        }
                    }
                }
            }
        },
        "lightly:resnet50": {
            "state_dict": {
                f"backbone.{ {'conv1': '0', 'bn1': '1', 'layer1': '4', 'layer2': '5', 'layer3': '6', 'layer4': '7'}[k.split('.')[0]] }.{k.split('.', 1)[1]}": v
                for k, v in sd.items()
                if not k.startswith("fc.")
            }
        },
    }


def test_resnet_checkpoints_of_every_layout_equal_torchvision(tmp_path):
    import torchvision

    ref = randomize(torchvision.models.resnet50(weights=None))
    ref.fc = torch.nn.Identity()
    sd = {k: v for k, v in ref.state_dict().items()}
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(x)
    for name, ck in _resnet_layouts(
        torchvision.models.resnet50(weights=None).state_dict() | sd
    ).items():
        f = tmp_path / f"{name.replace(':', '_')}.pth"
        torch.save(ck, f)
        ex = load_features(f"{name}:{f}", "global")
        with torch.no_grad():
            assert torch.allclose(ex.backbone(x), want, **TOL), name
    # propagation wants stride 8: layer3 and layer4 at stride 1, weights unchanged
    from video.features import load_dense_features

    dense = load_dense_features(f"dino:resnet50:{tmp_path / 'dino_resnet50.pth'}")
    assert dense.stride == 8
    assert dense(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)).shape == (1, 2048, 8, 8)


def test_wrong_files_are_one_line_errors(dino_ref, tmp_path):
    base = randomize(dino_ref.vit_base(patch_size=16))
    torch.save(base.state_dict(), tmp_path / "base.pth")
    with pytest.raises(UserError) as e:
        load_features(f"dino:vits16:{tmp_path / 'base.pth'}")
    msg = str(e.value)
    assert "base.pth" in msg and "dino:vits16" in msg and "mis-shaped" in msg and "\n" not in msg
    (tmp_path / "cut.pth").write_bytes((tmp_path / "base.pth").read_bytes()[:5000])
    with pytest.raises(UserError, match="cut.pth: not a readable checkpoint"):
        load_features(f"dino:vits16:{tmp_path / 'cut.pth'}")

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"state_dict": {}, "evil": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="evil.pth: refused to load"):
        load_features(f"dino:vits16:{tmp_path / 'evil.pth'}")
    with pytest.raises(UserError, match="no such weights file"):
        load_features(f"dino:vits16:{tmp_path / 'missing.pth'}")
    with pytest.raises(UserError, match="unknown model; known: dino:vits16"):
        load_features(f"dino:vitz99:{tmp_path / 'base.pth'}")


def test_attention_figure_and_propagation_take_a_pretrained_source(dino_ref, tmp_path):
    from video.features import load_dense_features
    from video.propagation import propagate_masks

    ref = randomize(dino_ref.vit_small(patch_size=16))
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    src = f"dino:vits16:{tmp_path / 'w.pth'}"
    images = torch.randint(0, 255, (2, 3, 64, 96), dtype=torch.uint8)
    ex = load_features(src)
    assert ex.attention(images).shape == (2, 6, 4, 6)
    feats = load_dense_features(src)
    frames = [torch.randint(0, 255, (64, 64, 3), dtype=torch.uint8).numpy() for _ in range(3)]
    first = torch.zeros(64, 64, dtype=torch.uint8).numpy()
    first[8:40, 8:40] = 1
    masks = list(propagate_masks(iter(frames), first, feats))
    assert len(masks) == 3 and masks[0].shape == (64, 64) and F is not None


def test_consumers_take_named_sources_end_to_end(dino_ref, tmp_path, capsys):
    """DAVIS evaluation, the PCA figure and the photo index, each given a published model's
    name with a local file (tiny inputs: the point is the plumbing, not the numbers)."""
    from app.cli import main
    from multimodal.models import TINY_MODEL, create_clip

    root = Path(__file__).resolve().parents[2] / "assets" / "sample"
    vit = randomize(dino_ref.vit_small(patch_size=16))
    ibot = {
        "state_dict": {
            **{f"backbone.{k}": v for k, v in vit.state_dict().items()},
            "backbone.masked_embed": torch.zeros(1, 384),
            "head.last_layer.weight": torch.zeros(2, 2),
        }
    }
    torch.save(ibot, tmp_path / "ibot_teacher.pth")  # iBOT's checkpoint_teacher.pth layout
    src = f"ibot:vits16:{tmp_path / 'ibot_teacher.pth'}"
    assert (
        main(
            [
                "eval",
                "davis",
                "--root",
                str(root / "video"),
                "--checkpoint",
                src,
                "--max-frames",
                "3",
            ]
        )
        == 0
    )
    assert "overall" in capsys.readouterr().out
    out = tmp_path / "pca.png"
    images = sorted(p for p in (root / "images" / "val").rglob("*") if p.is_file())[:2]
    assert (
        main(
            [
                "visualize",
                "pca",
                "--checkpoint",
                src,
                "--images",
                *map(str, images),
                "--out",
                str(out),
                "--size",
                "64",
            ]
        )
        == 0
    )
    assert out.stat().st_size > 1000
    torch.manual_seed(0)
    torch.save(create_clip(TINY_MODEL, image_size=32).state_dict(), tmp_path / "clip.pt")
    import multimodal.methods  # noqa: F401

    idx = tmp_path / "idx"
    argv = ["index", str(root / "images" / "val"), "--index", str(idx), "--num-workers", "0"]
    assert main([*argv, "--model", f"open_clip:{TINY_MODEL}:{tmp_path / 'clip.pt'}"]) == 0
    assert (idx / "index.json").exists()


def test_a_masking_methods_run_loads_as_features(tmp_path):
    """MaskFeat / iBOT / BEiT train a ViT with a [MASK] embedding; eval and the app load their
    backbone without it."""
    from engine.backbones import build_backbone
    from engine.features import FeatureExtractor, backbone_from_checkpoint

    vit = build_backbone("vit_tiny", 32, mask_token=True)
    ck = {
        "model": {f"backbone.{k}": v for k, v in vit.state_dict().items()},
        "backbone_arch": vit.arch,
    }
    ex = FeatureExtractor(backbone_from_checkpoint(ck, "maskfeat-run"))
    assert ex.backbone.mask_token is None and ex.embed(torch.zeros(1, 3, 32, 32)).shape == (1, 192)
