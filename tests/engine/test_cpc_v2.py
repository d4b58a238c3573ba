"""CPC v2 on image patches (Hénaff et al. 2020): the grid of overlapping patches, the per-patch
augmentations, InfoNCE and its targets by hand, a context that never sees the rows it predicts,
learning on the sample, exact resume after a stop, and pooled patch features for the probe."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import engine.methods  # noqa: F401
from engine.build import build_method, train
from engine.methods.cpc_v2 import (
    ContextNet,
    CPCv2,
    CPCv2Config,
    cpc_loss,
    grid_size,
    info_nce,
    patch_grid,
)
from tests.engine.method_runs import assert_stop_and_resume_replay, first_and_last_losses, tiny_run

TINY = {
    "patch_size": 4,
    "patch_stride": 2,
    "width": 8,
    "code_dim": 16,
    "context_layers": 1,
    "predict_rows": 2,
}


def test_info_nce_by_hand():
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    codes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    e = torch.e
    want = (
        -torch.log(torch.tensor(e / (e + 1 + 1 / e)))
        - torch.log(torch.tensor(e**2 / (1 + e**2 + 1)))
    ) / 2
    assert info_nce(pred, codes, torch.tensor([0, 1])).item() == pytest.approx(
        want.item(), rel=1e-6
    )


def test_cpc_loss_predicts_the_rows_below_among_every_patch_of_every_image():
    torch.manual_seed(0)
    b, d, g = 2, 3, 3
    z, ctx = torch.randn(b, d, g, g), torch.randn(b, d, g, g)
    heads = torch.nn.ModuleList(torch.nn.Linear(d, d, bias=False) for _ in range(3))
    codes = [(bi, i, j) for bi in range(b) for i in range(g) for j in range(g)]
    per_k = []
    for k, head in enumerate(heads[:2], start=1):  # k = 3 >= g rows: nothing to predict
        terms = []
        for bi in range(b):
            for i in range(g - k):
                for j in range(g):
                    p = head(ctx[bi, :, i, j])
                    scores = torch.stack([p @ z[cb, :, ci, cj] for cb, ci, cj in codes])
                    true = codes.index((bi, i + k, j))
                    terms.append(-(scores[true] - torch.logsumexp(scores, 0)))
        per_k.append(torch.stack(terms).mean())
    want = torch.stack(per_k).mean()
    assert cpc_loss(ctx, z, heads).item() == pytest.approx(want.item(), rel=1e-5)


def test_context_sees_only_its_row_and_the_rows_above():
    torch.manual_seed(0)
    net = ContextNet(4, layers=3)
    z = torch.randn(2, 4, 6, 6, requires_grad=True)
    i, j = 2, 3
    net(z)[:, :, i, j].sum().backward()
    dep = z.grad.abs().sum((0, 1)) > 0
    assert not dep[i + 1 :].any() and dep[i, j] and dep[i - 1, j]


def test_grid_and_per_patch_augmentations():
    x = torch.randn(2, 3, 32, 32)
    cfg = CPCv2Config()
    assert grid_size(32, cfg.patch_size, cfg.patch_stride) == 7  # the paper's 7 x 7 grid
    grid = patch_grid(x, 8, 4)
    assert grid.shape == (2, 7, 7, 3, 8, 8) and torch.equal(grid[1, 2, 5], x[1, :, 8:16, 20:28])
    m = CPCv2(32, cfg)
    assert not any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in m.modules())
    m.set_step_context(0, 0)
    patches = m.augmented_patches(x)
    assert patches.shape == (2, 7, 7, 3, 8, 8)
    kept = (patches.abs().sum((-1, -2)) > 0).sum(-1)  # colour dropping: one channel per patch
    assert (kept == 1).all()
    m = CPCv2(32, CPCv2Config(patch_jitter=0, color_drop_p=0.0))
    m.set_step_context(0, 0)
    patches = m.augmented_patches(x)  # no crop, no drop: each patch is itself or its mirror
    same = (patches == grid).flatten(3).all(-1)
    mirror = (patches == grid.flip(-1)).flatten(3).all(-1)
    assert (same | mirror).all() and same.any() and mirror.any()


def _cfg(shapes_dir, run, steps, lr=0.06, min_lr_ratio=0.0, **m):
    optim = {"lr": lr, "min_lr_ratio": min_lr_ratio}  # lr x 12 / 256
    return tiny_run("cpc_v2", shapes_dir, run, steps, {**TINY, **m}, optim, precision="fp32")


def test_loss_falls_and_features_are_pooled_patch_codes(shapes_dir, tmp_path):
    """Chance is log(12 images x 49 patches) = 6.38 nats. Colour dropping on every patch (the
    default) makes the task slow to start on 36 images; half the patches keep their colour here."""
    torch.manual_seed(0)
    train(_cfg(shapes_dir, tmp_path / "run", 60, 0.13, 1.0, color_drop_p=0.5))  # 6e-3, constant
    first, last = first_and_last_losses(tmp_path / "run")
    assert first > 6.3 and last < first - 0.2, (first, last)

    from engine.features import load_features

    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    ex = load_features(tmp_path / "run", "global", precision="fp32")
    feats = ex.embed(images)
    assert feats.shape == (3, 16)
    dense = load_features(tmp_path / "run", "dense", precision="fp32").dense(images)
    assert dense.shape == (3, 16, 7, 7) and torch.allclose(dense.mean((2, 3)), feats, atol=1e-5)


def test_resume_replays_exactly(shapes_dir, tmp_path):
    assert_stop_and_resume_replay(lambda run: _cfg(shapes_dir, run, 4), tmp_path)


def test_build_has_the_papers_defaults(shapes_dir, tmp_path):
    cfg = _cfg(shapes_dir, tmp_path / "r", 1)
    cfg.method_args = {}
    cfg.image_size = 32
    m = build_method(cfg)
    assert m.cfg.bidirectional and m.cfg.color_drop_p == 1.0 and len(m.context) == 2
    assert F is not None
