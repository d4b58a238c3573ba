"""The narrow ResNet option: torchvision's key layout at a quarter of the FLOPs."""

from __future__ import annotations

import pytest
import torch

import engine.methods  # noqa: F401  (declares the methods)
from engine.backbones import build_backbone
from engine.errors import UserError


def test_narrow_resnet_keeps_the_key_layout_with_half_the_channels():
    full, narrow = build_backbone("resnet18", 32), build_backbone("resnet18_w32", 32)
    full_state, narrow_state = full.state_dict(), narrow.state_dict()
    assert list(full_state) == list(narrow_state)  # same modules, same order
    for key, value in full_state.items():
        if value.dim() == 4:  # conv kernels: out and in channels halve (not the RGB input)
            out, inp = value.shape[:2]
            expected = (out // 2, inp if inp == 3 else inp // 2, *value.shape[2:])
            assert narrow_state[key].shape == expected, key
    n_full = sum(p.numel() for p in full.parameters())
    n_narrow = sum(p.numel() for p in narrow.parameters())
    assert 0.24 < n_narrow / n_full < 0.26  # conv weights scale with width squared
    assert narrow.embed_dim == 256 and narrow.arch["name"] == "resnet18_w32"
    assert narrow(torch.randn(2, 3, 32, 32)).shape == (2, 256)
    assert narrow.forward_dense(torch.randn(1, 3, 32, 32)).shape == (1, 256, 4, 4)


def test_narrow_resnet_rebuilds_from_its_arch_and_reloads_its_weights():
    narrow = build_backbone("resnet18_w32", 32)
    again = build_backbone(**narrow.arch)
    again.load_state_dict(narrow.state_dict(), strict=True)
    x = torch.randn(2, 3, 32, 32)
    narrow.eval(), again.eval()
    assert torch.equal(narrow(x), again(x))


def test_narrow_resnet_init_matches_torchvision_statistics():
    """Kaiming fan-out convs as torchvision initialises them, so random-init rows compare."""
    torch.manual_seed(0)
    conv = build_backbone("resnet18_w32", 32).layer3[0].conv2.weight  # 128 -> 128, 3x3
    expected_std = (2.0 / (128 * 9)) ** 0.5
    assert abs(conv.std().item() / expected_std - 1) < 0.05


def test_unknown_backbone_names_the_choices():
    with pytest.raises(UserError, match="resnet18_w32"):
        build_backbone("resnet19", 32)


def test_resnet_methods_train_the_half_width_net_on_small_images_only():
    from engine.build import apply_method_defaults

    def backbone(method: str, **values) -> str:
        return apply_method_defaults({"data": "x", **values}, {}, method).backbone

    two_view = ("simclr", "moco_v2", "byol", "barlow_twins", "supcon", "instdisc", "obow")
    pretext = ("rotation", "relpatch", "jigsaw", "inpainting", "deepcluster")
    for method in two_view + pretext:
        assert backbone(method, image_size=32) == "resnet18_w32", method
        assert backbone(method, image_size=64) == "resnet18", method
    assert backbone("simclr", image_size=32, backbone="resnet18") == "resnet18"  # user's choice
    for method in ("colorization", "splitbrain"):  # their own dense / split backbones
        assert backbone(method, image_size=32) == backbone(method, image_size=64), method
    for method in ("dino", "moco_v3"):  # their ResNet recipe at <= 32 px (test_recipes)
        assert backbone(method, image_size=32) == "resnet18_w32", method
        assert backbone(method, image_size=64) == "vit_tiny", method
    assert backbone("mae", image_size=32) == "vit_tiny"  # masked image modelling needs a ViT
