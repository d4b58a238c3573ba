"""--precision auto decides by a cached measurement on the CPU at hand; an explicit choice wins."""

from __future__ import annotations

import torch

from engine import precision as P


def test_explicit_choice_is_kept(monkeypatch):
    monkeypatch.setenv("SELFSUP_PRECISION", "bf16")
    assert P.choose_precision("auto", torch.device("cpu")).reason == "SELFSUP_PRECISION"
    for name in ("fp32", "bf16", "fp16"):
        assert P.choose_precision(name, torch.device("cpu")) == P.Precision(name, "requested")
    assert P.Precision("bf16", "").dtype == torch.bfloat16 and P.Precision("fp32", "").dtype is None


def test_auto_on_cpu_follows_the_probe(monkeypatch):
    monkeypatch.delenv("SELFSUP_PRECISION", raising=False)
    fast = {"matmul_speedup": 3.9, "conv_speedup": 2.5, "cpu": "Xeon [amx_bf16]"}
    monkeypatch.setattr(P, "cpu_probe", lambda size: fast)
    got = P.choose_precision("auto", torch.device("cpu"))
    assert got.name == "bf16" and "3.90x matmul" in got.reason and "Xeon" in got.reason
    slow = {"matmul_speedup": 4.0, "conv_speedup": 0.01, "cpu": "EPYC [no bf16 flags]"}
    monkeypatch.setattr(P, "cpu_probe", lambda size: slow)
    got = P.choose_precision("auto", torch.device("cpu"))
    assert got.name == "fp32" and "< 1.3x" in got.reason  # both probes must clear the margin


def test_probe_runs_once_per_machine_and_shape(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(P, "_ratio", lambda fn, budget_s=0.15: calls.append(fn) or 1.0)
    first = P.cpu_probe(32)
    assert len(calls) == 2 and first["matmul_speedup"] == 1.0
    assert P.cpu_probe(32) == first and len(calls) == 2  # cached
    P.cpu_probe(64)
    assert len(calls) == 4  # other shapes: measured again


def test_real_probe_measures_both_kernels(monkeypatch, tmp_path):
    monkeypatch.setenv("SELFSUP_CACHE", str(tmp_path))
    r = P.cpu_probe(16, force=True)
    assert r["matmul_speedup"] > 0 and r["conv_speedup"] > 0 and r["threads"] >= 1


def test_losses_and_prototype_logits_are_fp32_under_bf16_autocast():
    from engine.losses import dino_loss, nt_xent
    from engine.methods.dino import DINOHead

    z1, z2 = torch.randn(8, 16), torch.randn(8, 16)
    head = DINOHead(16, 64, 32, 16)  # in, prototypes, hidden, bottleneck
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = head(torch.randn(4, 16))
        assert logits.dtype == torch.float32
        loss = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.1)
        assert loss.dtype == torch.float32
        center = torch.zeros(1, 64)
        d = dino_loss([logits, logits], [logits.bfloat16(), logits], center, 0.1, 0.04)
        assert d.dtype == torch.float32
    ref = nt_xent(z1.bfloat16().float(), z2.bfloat16().float(), 0.1)
    assert loss.item() == ref.item()  # the same fp32 arithmetic on the (bf16-rounded) inputs


def test_feature_extractor_runs_at_the_chosen_precision_and_returns_fp32():
    from engine.backbones import build_backbone
    from engine.features import FeatureExtractor

    torch.manual_seed(0)
    ex = FeatureExtractor(build_backbone("resnet18", 32), image_size=32)
    images = (torch.rand(2, 3, 32, 32) * 255).to(torch.uint8)
    ref = ex.set_precision("fp32").embed(images)
    assert ex.precision.name == "fp32" and ref.dtype == torch.float32
    low = ex.set_precision("bf16").embed(images)
    assert ex.precision.name == "bf16" and low.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(ref, low, dim=1)
    assert cos.min() > 0.99 and not torch.equal(ref, low)  # bf16 really ran, and stayed close
    assert ex.set_precision("bf16").dense(images).dtype == torch.float32
