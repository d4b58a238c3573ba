"""MOCA (Gidaris et al. 2024): code assignments, bag of codes and the prediction loss by hand,
the official complementary masks, one step's codebook and distance-scale updates, learning on
the sample, and exact resume with the codebook in the checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import engine.methods  # noqa: F401
from engine.backbones import build_backbone
from engine.build import build_method, train
from engine.errors import UserError
from engine.methods.moca import (
    MOCA,
    Codebook,
    MOCAConfig,
    bag_of_codes,
    code_assignments,
    code_prediction_loss,
    complementary_masks,
    distance_scale,
    mask_counts,
)
from engine.optim import build_optimizer
from tests.engine.method_runs import assert_stop_and_resume_replay, step_values, tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_code_assignments_and_bag_of_codes_by_hand():
    # tokens a = (1, 0) and b = (3, 4) (unit: (0.6, 0.8)); words e1, e2; inv_delta 2
    tokens = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])
    words = torch.eye(2)
    codes = code_assignments(tokens, words, 2.0)
    a = [math.exp(2) / (math.exp(2) + 1), 1 / (math.exp(2) + 1)]  # softmax(2 * (1, 0))
    b = [
        math.exp(1.2) / (math.exp(1.2) + math.exp(1.6)),
        math.exp(1.6) / (math.exp(1.2) + math.exp(1.6)),
    ]
    assert codes[0, 0].tolist() == pytest.approx(a, rel=1e-6)
    assert codes[0, 1].tolist() == pytest.approx(b, rel=1e-6)
    bow = bag_of_codes(codes, (1, 2), 0)  # the mean over both tokens
    assert bow[0].tolist() == pytest.approx([(a[0] + b[0]) / 2, (a[1] + b[1]) / 2], rel=1e-6)
    # the scale: max_k cos - mean_k cos, a: 1 - 0.5, b: 0.8 - 0.7, averaged
    assert distance_scale(tokens, words).item() == pytest.approx(0.3, rel=1e-6)
    # offset 1 of a 4x4 grid: only the 4 central tokens count
    codes = torch.tensor([0.0, 1.0]).repeat(1, 16, 1)
    codes[0, [5, 6, 9, 10]] = torch.tensor([0.25, 0.75])
    assert bag_of_codes(codes, (4, 4), 1)[0].tolist() == pytest.approx([0.25, 0.75])


def test_prediction_loss_by_hand():
    feats, weights, target = torch.tensor([[1.0, 0.0]]), torch.eye(2), torch.tensor([[0.25, 0.75]])
    lse = math.log(math.exp(2) + 1)  # logits kappa * (1, 0) = (2, 0)
    ce = -(0.25 * (2 - lse) + 0.75 * (-lse))
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    got_ce, got_kl = code_prediction_loss(feats, weights, 2.0, target)
    assert got_ce.item() == pytest.approx(ce, rel=1e-6)
    assert got_kl.item() == pytest.approx(ce - entropy, rel=1e-5)


def test_complementary_masks_are_the_official_ones():
    # ViT-B/16 at 224: 196 tokens; encoder keeps 88 then 49, the decoder adds 39 masked ones
    assert mask_counts(196, MOCAConfig()) == (88, 39, 49)
    assert mask_counts(16, MOCAConfig()) == (7, 3, 4)
    g = torch.Generator().manual_seed(0)
    k1, dec, k2 = complementary_masks(5, 196, (88, 39, 49), g)
    for i in range(5):
        s1, sd, s2 = set(k1[i].tolist()), set(dec[i].tolist()), set(k2[i].tolist())
        assert (len(s1), len(sd), len(s2)) == (88, 39, 49)
        assert not (s1 & s2) and not (sd & s1) and not (sd & s2)
    with pytest.raises(UserError):
        mask_counts(4, MOCAConfig(mask_ratio=0.9))


def test_codebook_queue():
    # unit words from clamped Gaussians (in 2-d a row may clamp to zero: check at a real width)
    assert torch.allclose(Codebook(8, 64).words.norm(dim=1), torch.ones(8))
    cb = Codebook(4, 2)
    cb.enqueue(torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]]))
    cb.enqueue(torch.tensor([[0.0, -5.0], [2.0, 0.0]]))  # wraps: slots 3 and 0
    assert int(cb.ptr) == 1
    want = [[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0]]
    assert cb.words.tolist() == [pytest.approx(w) for w in want]


def _tiny(**kw) -> MOCA:
    bb = build_backbone("vit_tiny", 16, depth=2, pos_embed="sincos", init="mae")
    return MOCA(bb, 16, MOCAConfig(**{"num_words": 32, "num_new_words": 4, **kw})).train()


def test_step_updates_the_scale_twice_and_enqueues_teacher_tokens():
    torch.manual_seed(0)
    m = _tiny()
    assert m.counts == (7, 3, 4) and m.offset == 0 and m.early_index == 0  # depth 2: block 0
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    m.set_step_context(0, 0)
    out = m({"image": images})
    assert {"loss", "loss_img", "loss_loc", "kl"} <= set(out) and torch.isfinite(out["loss"])
    assert out["loss"].item() == pytest.approx(0.5 * (out["loss_img"] + out["loss_loc"]).item())
    views = m.make_views({"image": images}, m.specs)
    tokens = [m.teacher_backbone.forward_tokens(v)[:, 1:] for v in views]
    s = 0.5
    for t in tokens:  # two EMA updates per step, one per view
        s = 0.99 * s + 0.01 * distance_scale(t, m.codebook.words).item()
    before = m.codebook.words.clone()
    m.on_step_end(1, 10)
    assert float(m.codebook.scale) == pytest.approx(s, rel=1e-5)
    assert int(m.codebook.ptr) == 4 and torch.equal(m.codebook.words[4:], before[4:])
    # each new word is one (normalised) teacher token of one view
    new = m.codebook.words[:4]
    bank = F.normalize(torch.cat(tokens).flatten(0, 1), dim=1)
    assert torch.allclose((new @ bank.t()).amax(1), torch.ones(4), atol=1e-5)
    # the generated class weights are unit vectors of the image / decoder widths
    assert torch.allclose(m.image_generator(m.codebook.words).norm(dim=1), torch.ones(32))
    assert m.decoder_generator(m.codebook.words).shape == (32, 128)  # 2/3 of 192


def test_needs_a_vit():
    with pytest.raises(UserError, match="ViT"):
        MOCA(build_backbone("resnet18", 16), 16, MOCAConfig())


def _cfg(shapes_dir, run, steps, optim=None, **m):
    args = {"num_words": 64, "num_new_words": 8, **m}
    return tiny_run("moca", shapes_dir, run, steps, args, optim)


def test_loss_falls_on_the_sample(shapes_dir, tmp_path):
    """A batch of 12 scales the paper's lr to 7e-6; the tiny run uses a base lr of 0.02 (9e-4
    at batch 12) and the weight generators a constant 1e-3."""
    torch.manual_seed(0)
    train(_cfg(shapes_dir, tmp_path / "run", 24, {"lr": 0.02}, lr_wgen=1e-3))
    loss, kl = step_values(tmp_path / "run"), step_values(tmp_path / "run", "kl")
    sharp = step_values(tmp_path / "run", "perplexity_token")

    def mean(v, steps):
        return sum(v[s] for s in steps) / len(steps)

    early, late = range(1, 7), range(21, 25)
    assert mean(loss, late) < 0.9 * mean(loss, early), loss
    assert mean(kl, late) < 0.5 * mean(kl, early), kl
    assert mean(sharp, late) < 0.75 * 64, sharp  # not by the targets turning uniform
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert ck["model"]["codebook.words"].shape == (64, 192)
    assert int(ck["model"]["codebook.ptr"]) == (24 * 8) % 64
    # the global feature is the teacher's mean patch token, as the paper evaluates
    from engine.features import load_features

    ex = load_features(tmp_path / "run", "global")
    x = torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8)
    tokens = ex.backbone.forward_tokens(ex.prepare(x))[:, 1:]
    assert torch.allclose(ex.embed(x), tokens.mean(1), atol=1e-5)
    assert torch.equal(ex.backbone.pos_embed, ck["model"]["teacher_backbone.pos_embed"])
    # the weight generators kept the official constant lr through the trainer's schedule
    const = [g for g in ck["optimizer"]["param_groups"] if g.get("constant")]
    assert len(const) == 4 and all(g["lr"] == 1e-3 for g in const)


def test_resume_replays_exactly(shapes_dir, tmp_path):
    """The codebook, its pointer and scale, and the teacher are in the checkpoint."""
    assert_stop_and_resume_replay(
        lambda run: _cfg(shapes_dir, run, 4, {"lr": 0.02}, num_words=16), tmp_path
    )


def test_build_has_the_papers_defaults(shapes_dir, tmp_path):
    c = MOCAConfig()
    assert (c.kappa, c.inv_delta, c.img_weight, c.loc_weight) == (3.0, 10.0, 0.5, 0.5)
    assert (c.mask_ratio, c.mask_ratio_second, c.dec_mask_ratio) == (0.55, 0.75, 0.35)
    cfg = _cfg(shapes_dir, tmp_path / "r", 1)
    assert cfg.optim.optimizer == "adamw" and cfg.optim.clip_grad == 0.1
    m = build_method(cfg)
    assert m.backbone.pos_embed.requires_grad is False  # fixed sin-cos, as the paper's ViT
    # main_pretrain.py: the generators at lr 1e-4 and wd 0.05 (none on biases / norms), constant
    opt = build_optimizer(m, cfg.optim, lr=0.02)
    const = [g for g in opt.param_groups if g.get("constant")]
    generators = {id(p) for n, p in m.named_parameters() if n.split(".")[0].endswith("generator")}
    assert {id(p) for g in const for p in g["params"]} == generators
    for step in (0, 2, 3):
        m.on_step_start(step, 4, opt)
    assert all(g["lr"] == 1e-4 for g in const)
    assert sorted(g["weight_decay"] for g in const) == [0.0, 0.0, 0.05, 0.05]
    assert opt.param_groups[0]["weight_decay"] > 0.05  # the model's cosine 0.05 -> 0.2 moved
