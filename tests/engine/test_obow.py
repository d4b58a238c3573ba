"""OBoW (Gidaris et al. 2021): the soft BoW target and the dynamic head's loss by hand, the
vocabulary queue and the adaptive delta, the student's patches, learning on the sample, and
exact resume with the vocabulary in the checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

import engine.methods  # noqa: F401
from engine.backbones import build_backbone
from engine.build import build_method, train
from engine.errors import UserError
from engine.methods.obow import (
    OBoW,
    OBoWConfig,
    Vocabulary,
    bow_loss,
    local_samples,
    soft_bow,
    word_distances,
)
from tests.engine.method_runs import assert_stop_and_resume_replay, step_values, tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_soft_bow_target_by_hand():
    # a 1 x 2 map with locations a = (0, 0) and b = (2, 0); words (0, 0) and (1, 0)
    feats = torch.tensor([[0.0, 2.0], [0.0, 0.0]]).view(1, 2, 1, 2)
    words = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    dist = word_distances(feats, words)
    assert dist.view(2, 2).tolist() == [[0.0, 4.0], [1.0, 1.0]]  # [word, location]
    # codes softmax(-d / delta), delta = 1: a -> (1, e^-1) / (1 + e^-1), b -> (e^-4, e^-1) / ...
    a = [1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))]
    b = [math.exp(-4) / (math.exp(-4) + math.exp(-1)), math.exp(-1) / (math.exp(-4) + math.exp(-1))]
    pooled = [max(a[0], b[0]), max(a[1], b[1])]  # max over the locations, then L1-normalised
    want = [v / sum(pooled) for v in pooled]
    assert soft_bow(dist, 1.0).view(-1).tolist() == pytest.approx(want, rel=1e-6)
    avg = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2]
    assert soft_bow(dist, 1.0, "avg").view(-1).tolist() == pytest.approx(avg, rel=1e-6)
    # a larger inverse temperature sharpens towards the hard assignment (a -> word 0, b -> word 1)
    assert soft_bow(dist, 50.0).view(-1).tolist() == pytest.approx([0.5, 0.5], abs=1e-6)


def test_bow_loss_by_hand():
    """Two crops of one image, unit weights e1, e2, kappa 2, target (0.25, 0.75)."""
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    weights, target = torch.eye(2), torch.tensor([[0.25, 0.75]])
    lse = math.log(math.exp(2) + 1)  # logits (2, 0) and (0, 2)
    ce1 = -(0.25 * (2 - lse) + 0.75 * (-lse))
    ce2 = -(0.25 * (-lse) + 0.75 * (2 - lse))
    got = bow_loss(feats, weights, torch.tensor(2.0), target)
    assert got.item() == pytest.approx((ce1 + ce2) / 2, rel=1e-6)


def test_vocabulary_queue_and_local_samples():
    v = Vocabulary(5, 2)
    v.enqueue(torch.ones(3, 2))
    v.enqueue(torch.full((4, 2), 2.0))  # wraps around: slots 3, 4, 0, 1
    assert int(v.ptr) == 2
    assert v.words[:, 0].tolist() == [2.0, 2.0, 1.0, 2.0, 2.0]
    # 3x3 average of a 4x4 map: 2x2 positions; position 3 is the bottom-right window
    f = torch.arange(16.0).view(1, 1, 4, 4)
    assert local_samples(f, torch.tensor([3])).item() == pytest.approx(f[0, 0, 1:, 1:].mean())
    # a 2x2 map pools over the whole map
    g = torch.arange(4.0).view(1, 1, 2, 2)
    assert local_samples(g, torch.tensor([0])).item() == pytest.approx(1.5)


def test_step_updates_delta_queue_and_builds_the_papers_views():
    torch.manual_seed(0)
    m = OBoW(build_backbone("resnet18", 32), 32, OBoWConfig(num_words=16)).train()
    assert m.crop_spec.size == 23 and m.crop_spec.scale == (0.08, 0.6)  # 160/224, paper range
    assert m.patch_size == 14 and m.patch_jitter == 4  # 96/224 and 24/224 of 32 px
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    m.set_step_context(0, 0)
    patches = m.patches(m.make_views({"image": images}, [m.patch_source_spec])[0])
    assert patches.shape == (5 * 6, 3, 14, 14)
    out = m({"image": images})
    assert {"loss", "loss_crops", "loss_patches", "kl"} <= set(out) and torch.isfinite(out["loss"])
    # the running mean of the minimum distance: 0.99 * 0.5 + 0.01 * this batch's mean
    feats = m.teacher_backbone.stages(m.make_views({"image": images}, [m.teacher_spec])[0])[4]
    mu = word_distances(feats, m.vocab[1].words).amin(1).mean()
    before = m.vocab[1].words.clone()
    m.on_step_end(1, 10)
    assert float(m.vocab[1].min_distance_mean) == pytest.approx(
        0.99 * 0.5 + 0.01 * float(mu), rel=1e-4
    )
    assert int(m.vocab[0].ptr) == 6 and int(m.vocab[1].ptr) == 6
    assert not torch.equal(m.vocab[1].words[:6], before[:6])
    assert torch.equal(m.vocab[1].words[6:], before[6:])
    # the generated class weights are unit vectors
    w = m.generators[0](m.vocab[0].words)
    assert torch.allclose(w.norm(dim=1), torch.ones(16), atol=1e-5)


def test_needs_a_resnet():
    with pytest.raises(UserError, match="ResNet"):
        OBoW(build_backbone("vit_tiny", 16, depth=1), 16, OBoWConfig())


def _cfg(shapes_dir, run, steps, **m):
    return tiny_run("obow", shapes_dir, run, steps, {"num_words": 64, **m})


def test_loss_falls_on_the_sample(shapes_dir, tmp_path):
    torch.manual_seed(0)
    train(_cfg(shapes_dir, tmp_path / "run", 24))
    loss, kl = step_values(tmp_path / "run"), step_values(tmp_path / "run", "kl")
    early = sum(loss[s] for s in range(1, 7)) / 6
    late = sum(loss[s] for s in range(21, 25)) / 4
    assert late < 0.6 * early and late < loss[1], loss
    # not by the targets flattening: the KL part falls as well
    assert sum(kl[s] for s in range(21, 25)) / 4 < 0.6 * sum(kl[s] for s in range(1, 7)) / 6, kl
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["model"]["vocab.1.words"].shape == (64, 256)  # layer4 of resnet18_w32 (<= 32 px)
    assert int(ck["model"]["vocab.0.ptr"]) == (24 * 12) % 64


def test_resume_replays_exactly(shapes_dir, tmp_path):
    """The queue (16 words: it wraps every step of 12), its pointer, the running mean of the
    minimum distance and the teacher are in the checkpoint."""
    assert_stop_and_resume_replay(lambda run: _cfg(shapes_dir, run, 4, num_words=16), tmp_path)


def test_build_has_the_papers_defaults(shapes_dir, tmp_path):
    m = build_method(_cfg(shapes_dir, tmp_path / "r", 1))
    c = OBoWConfig()
    assert (c.kappa, c.inv_delta, c.ema_momentum, c.n_crops, c.n_patches) == (5.0, 10.0, 0.99, 2, 5)
    assert m.level_names == ["layer3", "layer4"] and not m.kappa.requires_grad
