"""BEiT and its dVAE tokenizer: KL to the uniform prior and the ELBO by hand, the Gumbel
temperature schedule, block masks (ratio, rectangles), BEiT's masked cross-entropy by hand, the
dVAE learning on the sample, BEiT training on a tiny dVAE run with exact resume, the missing
--tokenizer error, and features through load_features."""

from __future__ import annotations

import math
import os
import random
import signal

import pytest
import torch
import torch.nn.functional as F

import engine.methods  # noqa: F401
from engine.build import apply_method_defaults, build_method, resume, train
from engine.errors import UserError
from engine.events import read_events
from engine.masking import block_mask, block_masks
from engine.methods.beit import masked_token_loss
from engine.methods.dvae import elbo_loss, gumbel_temperature, kl_to_uniform


def test_kl_to_uniform_and_elbo_by_hand():
    assert kl_to_uniform(torch.zeros(1, 4, 2, 2)).item() == pytest.approx(0.0, abs=1e-7)
    logits = torch.zeros(1, 4, 1, 2)
    logits[0, 0, 0, 0] = math.log(3 * 3)  # q = (0.75, 1/12, 1/12, 1/12) at one position
    q = [0.75] + [1 / 12] * 3
    kl = sum(p * math.log(p * 4) for p in q) / 2  # the other position is uniform: KL 0
    assert kl_to_uniform(logits).item() == pytest.approx(kl, rel=1e-5)
    recon, target = torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 3.0]]]])
    loss, rec, k = elbo_loss(recon, target, logits, 0.1)
    assert rec.item() == pytest.approx(5.0) and loss.item() == pytest.approx(
        5.0 + 0.1 * kl, rel=1e-5
    )


def test_gumbel_temperature_schedule():
    assert gumbel_temperature(0, 100) == pytest.approx(1.0)
    assert gumbel_temperature(25, 100) == pytest.approx(1 / 16 + 0.5 * (15 / 16))  # halfway
    assert gumbel_temperature(50, 100) == pytest.approx(1 / 16)
    assert gumbel_temperature(90, 100) == pytest.approx(1 / 16)
    assert gumbel_temperature(100, 100, fraction=1.0) == pytest.approx(1 / 16)


def test_block_masks_ratio_and_rectangles():
    m = block_masks(64, 14, 14, 0.4, torch.Generator().manual_seed(0))
    counts = m.sum(1).float()
    assert (counts <= 0.4 * 196).all() and counts.mean() > 0.35 * 196, counts
    # one rectangle: at least 16 patches (BEiT's 14x14), aspect in [0.3, 1/0.3] up to rounding
    for seed in range(20):
        one = block_mask(14, 14, 40, random.Random(seed)).view(14, 14)
        rows, cols = one.any(1).nonzero(), one.any(0).nonzero()
        assert one.sum() >= 16
        if one.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1):
            h, w = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
            assert 0.3 * w - 1 <= h <= w / 0.3 + 1
    small = block_masks(32, 8, 8, 0.4, torch.Generator().manual_seed(1))  # min block 4 here
    assert small.sum(1).float().mean() > 0.3 * 64


def test_masked_cross_entropy_by_hand():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 5.0, 0.0], [1.0, 1.0, 0.0]]])
    tokens = torch.tensor([[0, 2, 1]])
    mask = torch.tensor([[True, False, True]])
    ce0 = -(2 - math.log(math.exp(2) + 2))
    ce2 = -(1 - math.log(2 * math.e + 1))
    assert masked_token_loss(logits, tokens, mask).item() == pytest.approx((ce0 + ce2) / 2)


def _cfg(shapes_dir, run, steps, method, optim=None, **m):
    return apply_method_defaults(
        {
            "data": str(shapes_dir),
            "image_size": 16,
            "batch_size": 12,
            "max_steps": steps,
            "num_workers": 0,
            "run_dir": str(run),
            "log_every": 1,
            "checkpoint_every": 2,
            "deterministic": True,
            "method_args": m,
        },
        {"warmup_epochs": 0.0, **(optim or {})},
        method,
    )


def _losses(run, key="loss") -> dict[int, float]:
    return {e["step"]: e["losses"][key] for e in read_events(run) if e["type"] == "step"}


def test_beit_needs_a_tokenizer(shapes_dir, tmp_path):
    with pytest.raises(UserError, match="--tokenizer"):
        build_method(_cfg(shapes_dir, tmp_path / "b", 1, "beit"))


def test_dvae_learns_then_beit_trains_on_its_tokens_and_resumes(shapes_dir, tmp_path):
    torch.manual_seed(0)
    dv = tmp_path / "dvae"
    train(
        _cfg(shapes_dir, dv, 100, "dvae", {"lr": 0.2}, codebook=32, hidden=32, anneal_fraction=0.1)
    )
    rec = _losses(dv, "reconstruction")
    first, last = (sum(rec[s] for s in range(a, a + 10)) / 10 for a in (1, 91))
    assert last < 0.97 * first, rec  # noisy views: the mean over ten steps falls
    assert _losses(dv, "tau")[100] == pytest.approx(1 / 16)

    bargs = {"tokenizer": str(dv)}

    def beit_cfg(run, steps):
        c = _cfg(shapes_dir, run, steps, "beit", {"lr": 0.01}, **bargs)
        return c

    def stop_at_2(e):
        if e["type"] == "step" and e["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    for name, callbacks, steps in (("ref", (), 4), ("cut", (stop_at_2,), 4)):
        torch.manual_seed(0)
        train(beit_cfg(tmp_path / name, steps), callbacks=callbacks)
    assert read_events(tmp_path / "cut")[-1]["type"] == "stopped"
    resume(tmp_path / "cut")
    ref, cut = _losses(tmp_path / "ref"), _losses(tmp_path / "cut")
    assert cut[3] == pytest.approx(ref[3], rel=1e-5) and cut[4] == pytest.approx(ref[4], rel=1e-5)
    assert 0 < ref[1] < math.log(32) * 1.5 and ref[4] < ref[1], ref

    ck = torch.load(tmp_path / "ref" / "checkpoints" / "last.pt", weights_only=True)
    assert any(k.startswith("tokenizer.") for k in ck["model"])  # part of the state

    from engine.features import load_features

    ex = load_features(tmp_path / "ref", "global")  # the ViT's [CLS]
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    assert ex.embed(images).shape == (2, 192)
    assert load_features(dv, "global").embed(images).shape == (2, 32)
    assert F is not None
