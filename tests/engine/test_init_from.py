"""--init-from: self-supervised training continues from imported weights, student and teacher
alike; the heads come from the file when they fit; config.json says which; resume needs no
source file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch

import engine.methods  # noqa: F401  (declares the methods)
from engine.build import apply_method_defaults, build_method, resume, train
from engine.errors import UserError

THIRD = Path(__file__).resolve().parents[1] / "third_party" / "dino"


def dino_full_checkpoint(path: Path, head_dims=(64, 32, 16)) -> dict:
    """A DINO-layout full checkpoint of the authors' ViT-S/16 with a (small) teacher head."""
    sys.path.insert(0, str(THIRD))
    try:
        import vision_transformer as vits
    finally:
        sys.path.remove(str(THIRD))
    from engine.methods.dino import DINOHead

    torch.manual_seed(3)
    vit = vits.vit_small(patch_size=16)
    out, hidden, bottleneck = head_dims
    head = DINOHead(384, out, hidden, bottleneck).state_dict()
    head = {
        k.replace("last_v", "last_layer.weight_v").replace("last_g", "last_layer.weight_g"): v
        for k, v in head.items()
    }
    teacher = {
        **{f"backbone.{k}": v for k, v in vit.state_dict().items()},
        **{f"head.{k}": v for k, v in head.items()},
    }
    torch.save({"teacher": teacher, "args": argparse.Namespace(arch="vit_small")}, path)
    return vit.state_dict()


def dino_cfg(shapes_dir, run, init_from, **method_args):
    args = {"n_local": 2, "out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16, **method_args}
    return apply_method_defaults(
        {
            "data": str(shapes_dir),
            "image_size": 64,
            "batch_size": 4,
            "max_steps": 2,
            "num_workers": 0,
            "run_dir": str(run),
            "init_from": init_from,
            "checkpoint_every": 1,
            "method_args": args,
        },
        {},
        "dino",
    )


def test_dino_continues_from_the_authors_weights_and_head(shapes_dir, tmp_path):
    f = tmp_path / "dino_full.pth"
    want = dino_full_checkpoint(f)
    cfg = dino_cfg(shapes_dir, tmp_path / "run", f"dino:vits16:{f}")
    method = build_method(cfg)
    for net in (method.backbone, method.teacher_backbone):  # student and teacher alike
        sd = net.state_dict()
        assert all(torch.equal(sd[k], want[k]) for k in want if k in sd)
        assert torch.equal(sd["patch_embed.proj.weight"], want["patch_embed.proj.weight"])
    assert (
        cfg.backbone == "vit_small_p16"
        and cfg.init_report["heads"] == "from the file (teacher head)"
    )
    train(dino_cfg(shapes_dir, tmp_path / "run", f"dino:vits16:{f}"))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["init_report"]["source"].endswith("dino_full.pth")
    assert saved["init_report"]["arch"]["interpolation"] == "dino"
    f.unlink()  # a resume rebuilds the recorded architecture; the checkpoint has the weights
    out = resume(tmp_path / "run", {"max_steps": 3})
    assert out["step"] == 3


def test_head_of_another_size_is_new_and_said_so(shapes_dir, tmp_path):
    f = tmp_path / "dino_full.pth"
    dino_full_checkpoint(f, head_dims=(128, 32, 16))
    cfg = dino_cfg(shapes_dir, tmp_path / "run", f"dino:vits16:{f}")
    build_method(cfg)
    assert cfg.init_report["heads"].startswith("new (the file's head is 128-d")


def test_methods_that_cannot_start_from_weights_say_so(shapes_dir, tmp_path):
    f = tmp_path / "dino_full.pth"
    dino_full_checkpoint(f)
    cfg = apply_method_defaults(
        {"data": str(shapes_dir), "image_size": 32, "init_from": f"dino:vits16:{f}"},
        {},
        "splitbrain",
    )
    with pytest.raises(UserError, match="--init-from is not supported by the 'splitbrain' method"):
        build_method(cfg)
