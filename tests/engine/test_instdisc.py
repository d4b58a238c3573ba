"""Instance discrimination (Wu et al. 2018): the NCE and exact losses by hand, the memory bank's
update, learning on the sample, and exact resume with the bank in the checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import engine.methods  # noqa: F401
from engine.build import build_method, train
from engine.methods.instdisc import exact_loss, exp_scores, nce_loss
from tests.engine.method_runs import assert_stop_and_resume_replay, first_and_last_losses, tiny_run


def test_nce_loss_by_hand():
    pos, neg = torch.tensor([2.0]), torch.tensor([[1.0, 3.0]])
    z, n = torch.tensor(4.0), 10  # m = 2 noise samples, P_n = 1/10, so m P_n = 0.2
    data = math.log(0.5 / (0.5 + 0.2))
    noise = math.log(0.2 / (0.25 + 0.2)) + math.log(0.2 / (0.75 + 0.2))
    assert nce_loss(pos, neg, z, n).item() == pytest.approx(-(data + noise), rel=1e-6)


def test_exact_softmax_by_hand():
    f = F.normalize(torch.tensor([[1.0, 1.0]]), dim=1)
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    logits = (f @ bank.t() / 0.5)[0]
    want = -(logits[1] - torch.logsumexp(logits, 0))
    assert exact_loss(f, bank, torch.tensor([1]), 0.5).item() == pytest.approx(
        want.item(), rel=1e-6
    )


def test_nce_scores_stay_float32_under_bf16_autocast():
    """The noise scores are an einsum (a bmm, which CPU autocast runs in bf16) divided by
    T = 0.07 and exponentiated: under autocast they must equal the float32 ones."""
    g = torch.Generator().manual_seed(0)
    f = F.normalize(torch.randn(8, 64, generator=g), dim=1)
    bank = F.normalize(torch.randn(8, 50, 64, generator=g), dim=2)
    want = exp_scores(f, bank[:, 0], bank, 0.07)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = exp_scores(f, bank[:, 0], bank, 0.07)
        bf16 = torch.exp(torch.einsum("bd,bmd->bm", f, bank) / 0.07)
    assert got[1].dtype == torch.float32 and torch.allclose(got[1], want[1], rtol=1e-6)
    assert torch.equal(got[0], want[0])
    assert (bf16.float() / want[1] - 1).abs().max() > 1e-3  # what the old code computed


def _cfg(shapes_dir, run, steps, **m):
    return tiny_run("instdisc", shapes_dir, run, steps, {"feat_dim": 16, **m})


def test_loss_falls_and_the_bank_follows_the_embeddings(shapes_dir, tmp_path):
    """The exact softmax (the default below 8192 images): the loss falls on the sample."""
    torch.manual_seed(0)
    train(_cfg(shapes_dir, tmp_path / "run", 24))
    first, last = first_and_last_losses(tmp_path / "run")
    assert last < first * 0.97, (first, last)
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    bank = ck["model"]["bank"]
    assert bank.shape == (36, 16) and torch.allclose(bank.norm(dim=1), torch.ones(36), atol=1e-5)


def test_nce_estimates_z_once_and_updates_the_bank_with_momentum(shapes_dir, tmp_path):
    from engine.build import build_method
    from tests.engine.test_methods import load_images

    cfg = _cfg(shapes_dir, tmp_path / "r", 2, exact_below=0, negatives=8)
    m = build_method(cfg).train()

    class _Trainer:
        dataset = list(range(36))

    _Trainer.cfg = cfg
    m.on_epoch_start(0, _Trainer)
    files = sorted(p for p in shapes_dir.rglob("*.png"))[:12]
    batch = {"image": load_images(files, 16), "index": torch.arange(12)}
    before = m.bank.clone()
    m.set_step_context(0, 0)
    out = m(batch)
    z = float(m.z)
    assert z > 0 and torch.isfinite(out["loss"])
    f = m._pending[1]
    m.on_step_end(1, 2)
    want = F.normalize(before[:12] * 0.5 + f * 0.5, dim=1)
    assert torch.allclose(m.bank[:12], want, atol=1e-6) and torch.equal(m.bank[12:], before[12:])
    m.set_step_context(0, 1)
    m(batch)
    assert float(m.z) == z  # Z is estimated once, then fixed (as in the paper)


def test_resume_replays_exactly(shapes_dir, tmp_path):
    """The bank, Z and the data position are in the checkpoint."""
    assert_stop_and_resume_replay(
        lambda run: _cfg(shapes_dir, run, 4, exact_below=0, negatives=8), tmp_path
    )


def test_build_has_the_papers_defaults(shapes_dir, tmp_path):
    """At these small images the authors' CIFAR temperature (0.1); the paper's 0.07 above 32 px
    (test_recipes.py checks both recipes)."""
    m = build_method(_cfg(shapes_dir, tmp_path / "r", 1))
    assert m.cfg.temperature == 0.1 and m.cfg.negatives == 4096 and m.cfg.bank_momentum == 0.5
