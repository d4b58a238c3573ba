"""Gated PixelCNN: every sub-pixel's distribution depends exactly on the sub-pixels before it in
raster order (checked with gradients: no blind spot, no peeking), bits/dim by hand, learning on
the sample, sampling, exact resume, and features for kNN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import engine.methods  # noqa: F401
from engine.build import train
from engine.methods.pixelcnn import PixelCNN, PixelCNNConfig, bits_per_dim, to_input
from tests.engine.method_runs import sigterm_at, step_values, tiny_run


def tiny(layers: int = 4) -> PixelCNN:
    torch.manual_seed(0)
    return PixelCNN(8, PixelCNNConfig(channels=12, layers=layers, kernel=3))


def dependencies(model: PixelCNN, i: int, j: int, c: int, size: int = 8) -> torch.Tensor:
    """[3, H, W] bool: which input sub-pixels the logits of sub-pixel (c, i, j) depend on."""
    x = torch.randn(16, 3, size, size, requires_grad=True)  # 16 inputs: a ReLU may zero one
    model.backbone.logits(x)[:, :, c, i, j].sum().backward()
    return x.grad.abs().sum(0) > 0


@pytest.mark.parametrize("c", [0, 1, 2])
def test_receptive_field_is_exactly_the_raster_past(c):
    model = tiny(layers=6)  # deep enough for the whole past of (5, 4) to be reached
    i, j, size = 5, 4, 8
    dep = dependencies(model, i, j, c, size)
    past = torch.zeros(3, size, size, dtype=torch.bool)
    past[:, :i] = True  # every row above, all columns (no blind spot on the right)
    past[:, i, :j] = True  # the pixels to the left
    past[:c, i, j] = True  # the earlier colours of this pixel: G sees R, B sees R and G
    assert not (dep & ~past).any(), "a sub-pixel sees its own value or the future"
    assert (
        dep[:, i - 1, j + 2].all() and dep[:, i - 2, size - 1].all()
    )  # above-right: no blind spot
    assert bool(dep[:c, i, j].all())


def test_bits_per_dim_by_hand():
    logits = torch.zeros(1, 256, 1, 1, 1)  # uniform over 256 values: exactly 8 bits
    assert bits_per_dim(logits, torch.zeros(1, 1, 1, 1)).item() == pytest.approx(8.0)
    logits[0, 7] = math.log(255 * 3)  # p(7) = 3*255 / (3*255 + 255) = 0.75
    assert bits_per_dim(logits, torch.full((1, 1, 1, 1), 7)).item() == pytest.approx(
        -math.log2(0.75), rel=1e-4
    )


def _cfg(shapes_dir, run, steps):
    args = {"channels": 12, "layers": 3, "kernel": 3}
    # lr x 12 / 256 (linear scaling): 1.2e-2
    return tiny_run("pixelcnn", shapes_dir, run, steps, args, {"lr": 0.25}, image_size=8)


def test_learns_the_sample_then_samples_and_resumes(shapes_dir, tmp_path):
    from engine.build import resume

    torch.manual_seed(0)
    train(_cfg(shapes_dir, tmp_path / "ref", 30))
    bpd = step_values(tmp_path / "ref", "bits_per_dim")
    # from 8 bits (uniform over 256 values) down: a 12-channel model learns slowly but surely
    assert bpd[1] > 7.9 and sum(bpd[s] for s in (28, 29, 30)) / 3 < bpd[1] - 0.2, bpd
    torch.manual_seed(0)
    train(_cfg(shapes_dir, tmp_path / "cut", 30), callbacks=(sigterm_at(2),))
    resume(tmp_path / "cut", {"max_steps": 4})  # step 3's loss depends only on the checkpoint
    cut, ref = step_values(tmp_path / "cut"), step_values(tmp_path / "ref")
    assert cut[3] == pytest.approx(ref[3], rel=1e-5)

    from engine.features import load_features

    figure = load_features(tmp_path / "ref", "reconstruction")
    samples = figure.method.sample(2, 8, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (2, 3, 8, 8) and samples.dtype == torch.uint8
    ex = load_features(tmp_path / "ref", "global")  # the hidden layer, for kNN
    assert ex.embed(samples).shape == (2, 12) and torch.allclose(
        ex.prepare(samples), to_input(samples)
    )
    assert F is not None
