"""Image GPT (Chen et al. 2020): k-means colour tokens, the next-token loss by hand, a causal
transformer whose position t sees tokens < t only (SOS first), learning on the sample, exact
resume with the palette in the checkpoint, and the middle layer's pooled features."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import engine.methods  # noqa: F401
from engine.build import train
from engine.methods.igpt import IGPTConfig, IGPTNet, next_token_loss
from tests.engine.method_runs import assert_stop_and_resume_replay, first_and_last_losses, tiny_run

TINY = {"clusters": 8, "resolution": 8, "width": 32, "depth": 2, "num_heads": 2}


def test_next_token_loss_by_hand():
    assert next_token_loss(torch.zeros(1, 3, 8), torch.tensor([[0, 5, 7]])).item() == (
        pytest.approx(math.log(8))
    )
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])  # two positions, two colours
    want = (-math.log(math.e**2 / (math.e**2 + 1)) - math.log(1 / (1 + math.e))) / 2
    assert next_token_loss(logits, torch.tensor([[0, 0]])).item() == pytest.approx(want, rel=1e-6)


def test_tokens_are_nearest_palette_colours_in_raster_order():
    net = IGPTNet(IGPTConfig(clusters=2, resolution=2, width=8, depth=1, num_heads=1), 2)
    net.palette.copy_(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    x = torch.tensor([[[-0.9, 0.8], [0.7, -0.2]]]).expand(3, 2, 2)[None]
    assert net.tokens(x).tolist() == [[0, 1, 1, 0]]
    big = F.interpolate(x, size=(4, 4), mode="nearest")  # downsampled (area) to the same tokens
    assert net.tokens(big).tolist() == [[0, 1, 1, 0]]


def test_position_t_sees_only_the_tokens_before_it():
    torch.manual_seed(0)
    net = IGPTNet(IGPTConfig(**TINY), 8)
    tokens = torch.randint(0, 8, (1, 64))
    t = 20
    base = net.logits(tokens)
    later = tokens.clone()
    later[:, t:] = (later[:, t:] + 1) % 8  # the token itself and everything after it
    assert torch.allclose(net.logits(later)[:, : t + 1], base[:, : t + 1], atol=1e-6)
    earlier = tokens.clone()
    earlier[:, t - 1] = (earlier[:, t - 1] + 1) % 8
    assert not torch.allclose(net.logits(earlier)[:, t], base[:, t])
    assert torch.allclose(net.logits(earlier)[:, :t], base[:, :t], atol=1e-6)


def test_probe_layer_is_the_middle_by_default():
    assert IGPTNet(IGPTConfig(depth=6, width=16, num_heads=2), 32).probe == 3
    assert IGPTNet(IGPTConfig(depth=6, width=16, num_heads=2, probe_layer=1), 32).probe == 1


def _cfg(shapes_dir, run, steps, **m):
    optim = {"lr": 0.06}  # x 12 / 256: 2.8e-3
    return tiny_run("igpt", shapes_dir, run, steps, {**TINY, **m}, optim, precision="fp32")


def test_loss_falls_palette_is_kept_and_features_pool_the_probe_layer(shapes_dir, tmp_path):
    torch.manual_seed(0)
    train(_cfg(shapes_dir, tmp_path / "run", 30))
    first, last = first_and_last_losses(tmp_path / "run")
    assert first > math.log(8) - 0.3 and last < first - 0.4, (first, last)
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    palette = ck["model"]["backbone.palette"]
    assert bool(ck["model"]["backbone.fitted"]) and palette.shape == (8, 3)
    assert palette.abs().max() <= 1 and palette.std(0).min() > 0.05  # distinct image colours

    from engine.features import load_features

    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    ex = load_features(tmp_path / "run", "global", precision="fp32")
    feats = ex.embed(images)
    assert feats.shape == (3, 32)
    net = ex.backbone
    h = net.hidden(net.tokens(images.float() / 127.5 - 1), upto=1)  # depth 2: the middle is 1
    assert torch.allclose(feats, F.layer_norm(h, (32,)).mean(1), atol=1e-5)
    dense = load_features(tmp_path / "run", "dense", precision="fp32").dense(images)
    assert dense.shape == (3, 32, 8, 8)

    # held-out bits per palette token: below the uniform log2(8) = 3 bits once trained, and
    # exactly 3 with a zeroed head (every colour equally likely)
    from engine.build import load_method
    from engine.data import ImageFolderDataset

    method, _ = load_method(tmp_path / "run")
    val = ImageFolderDataset(shapes_dir, load_size=16)
    held_out = torch.stack([val[i]["image"] for i in range(24)])
    assert 0.5 < method.evaluate_token_bits(held_out) < 3 - 0.4
    torch.nn.init.zeros_(method.backbone.head.weight)
    assert method.evaluate_token_bits(held_out, batch=5) == pytest.approx(3.0, abs=1e-5)

    # the untrained baseline keeps the fitted palette (without it every pixel is one token and
    # every image the same feature: chance kNN) and only the weights are fresh
    from engine.features import random_init_features

    base = random_init_features(tmp_path / "run", "global", seed=0, precision="fp32")
    assert torch.equal(base.backbone.palette, palette) and bool(base.backbone.fitted)
    assert not torch.equal(base.backbone.pos, net.pos)
    assert base.embed(images).std(0).mean() > 1e-3  # images differ in the baseline's features


def test_resume_replays_exactly(shapes_dir, tmp_path):
    assert_stop_and_resume_replay(lambda run: _cfg(shapes_dir, run, 4), tmp_path)
