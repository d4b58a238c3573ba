"""Batched augmentations: each op against torchvision's reference, masks, determinism, clips."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from engine import augment as A
from engine.errors import UserError

OFF = dict(flip_p=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0, normalize=False)


def params(
    b,
    box=(0.0, 0.0, 1.0, 1.0),
    flip=False,
    jitter=(1.0, 1.0, 1.0, 0.0),
    gray=False,
    sigma=0.0,
    solarize=False,
):
    """Hand-set parameters, the same for all b samples (the order is b, c, s, h)."""
    return A.ViewParams(
        box=torch.tensor([box] * b, dtype=torch.float32),
        flip=torch.full((b,), flip),
        jitter=torch.tensor([jitter] * b, dtype=torch.float32),
        order=torch.arange(4).repeat(b, 1),
        gray=torch.full((b,), gray),
        sigma=torch.full((b,), float(sigma)),
        solarize=torch.full((b,), solarize),
    )


@pytest.fixture
def x():
    return torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(0))


def test_shapes_dtypes_and_normalisation():
    u8 = torch.randint(0, 256, (5, 3, 40, 48), dtype=torch.uint8)
    out = A.augment_view(u8, A.ViewSpec(size=16))
    assert out.shape == (5, 3, 16, 16) and out.dtype == torch.float32
    # normalised with ImageNet stats: a float image equal to MEAN maps to 0
    mean_img = torch.tensor(A.MEAN).view(1, 3, 1, 1).expand(2, 3, 8, 8)
    out = A.apply_view(mean_img, A.ViewSpec(size=8, **{**OFF, "normalize": True}), params(2))
    assert out.abs().max() < 1e-5
    assert torch.equal(
        A.to_float(torch.tensor([0, 255], dtype=torch.uint8)), torch.tensor([0.0, 1.0])
    )


def test_identity_and_flip_are_exact(x):
    same = A.apply_view(x, A.ViewSpec(size=24, **OFF), params(4))
    assert torch.allclose(same, x, atol=1e-6)
    spec = A.ViewSpec(size=24, scale=(1.0, 1.0), ratio=(1.0, 1.0), **{**OFF, "flip_p": 1.0})
    flipped = A.augment_view(x, spec)
    assert torch.allclose(flipped, torch.flip(x, dims=[-1]), atol=1e-6)


def test_crop_matches_torchvision_resized_crop(x):
    box = (4 / 24, 2 / 24, 12 / 24, 15 / 24)  # left 4, top 2, width 12, height 15
    for size in (8, 20):  # downscale (antialiased) and upscale
        ours = A.apply_view(x, A.ViewSpec(size=size, **OFF), params(4, box))
        ref = TF.resized_crop(x, 2, 4, 15, 12, [size, size], antialias=True)
        assert (ours - ref).abs().max() < 1e-5
    # full-image crop at scale (1, 1) is just an antialiased resize
    spec = A.ViewSpec(size=12, scale=(1.0, 1.0), ratio=(1.0, 1.0), **OFF)
    ref = TF.resize(x, [12, 12], antialias=True)
    assert (A.augment_view(x, spec) - ref).abs().max() < 1e-5


def test_random_boxes_respect_scale_ratio_and_bounds():
    spec = A.ViewSpec(size=8, scale=(0.2, 0.5), ratio=(0.5, 2.0))
    p = A.sample_view_params(
        4000, spec, generator=torch.Generator().manual_seed(1), image_hw=(30, 60)
    )
    x0, y0, w, h = p.box.unbind(1)
    assert (
        (x0 >= 0).all()
        and (y0 >= 0).all()
        and (x0 + w <= 1 + 1e-6).all()
        and (y0 + h <= 1 + 1e-6).all()
    )
    area = w * h
    assert area.min() >= 0.2 - 1e-5 and area.max() <= 0.5 + 1e-5
    aspect = (w * 60) / (h * 30)
    assert aspect.min() >= 0.5 - 1e-4 and aspect.max() <= 2.0 + 1e-4
    assert 0.45 < p.flip.float().mean() < 0.55


def test_jitter_ops_match_torchvision(x):
    spec = A.ViewSpec(size=24, **{**OFF, "jitter_p": 1.0})
    cases = [
        ((1.3, 1.0, 1.0, 0.0), TF.adjust_brightness(x, 1.3)),
        ((1.0, 0.6, 1.0, 0.0), TF.adjust_contrast(x, 0.6)),
        ((1.0, 1.0, 1.7, 0.0), TF.adjust_saturation(x, 1.7)),
        ((0.7, 1.4, 1.0, 0.0), TF.adjust_contrast(TF.adjust_brightness(x, 0.7), 1.4)),
    ]
    for jitter, ref in cases:
        out = A.apply_view(x, spec, params(4, jitter=jitter))
        assert (out - ref).abs().max() < 1e-5, jitter


def test_hue_rotation_keeps_luma_and_turns_like_torchvision():
    g = torch.Generator().manual_seed(2)
    x = 0.35 + 0.3 * torch.rand(2, 3, 16, 16, generator=g)  # muted colours stay in gamut
    spec = A.ViewSpec(size=16, **{**OFF, "jitter_p": 1.0})
    out = A.apply_view(x, spec, params(2, jitter=(1.0, 1.0, 1.0, 0.1)))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert ((out * luma).sum(1) - (x * luma).sum(1)).abs().max() < 1e-4
    ref = TF.adjust_hue(x, 0.1)
    back = A.apply_view(x, spec, params(2, jitter=(1.0, 1.0, 1.0, -0.1)))
    # the same direction as torchvision's HSV shift: much closer than turning the other way
    assert (out - ref).abs().mean() < 0.5 * (back - ref).abs().mean()
    # a full turn is the identity
    full = A.apply_view(x, spec, params(2, jitter=(1.0, 1.0, 1.0, 1.0)))
    assert torch.allclose(full, x, atol=1e-4)


def test_jitter_order_is_per_sample():
    x = torch.full((2, 3, 4, 4), 0.8)
    x[:, 0] = 0.2
    p = params(2, jitter=(1.5, 1.0, 1.0, 0.0))
    p.jitter[:, 1] = 0.0  # contrast 0 -> image becomes its mean luma
    p.order = torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3]])  # brightness first vs contrast first
    out = A.apply_view(x, A.ViewSpec(size=4, **{**OFF, "jitter_p": 1.0}), p)
    luma = 0.2989 * 0.2 + (0.587 + 0.114) * 0.8
    bright_first = 0.2989 * 0.3 + (0.587 + 0.114) * 1.0  # 0.8 * 1.5 clamps to 1
    assert torch.allclose(out[0], torch.full_like(out[0], bright_first), atol=1e-5)
    assert torch.allclose(out[1], torch.full_like(out[1], min(1.0, 1.5 * luma)), atol=1e-5)


def test_grayscale_blur_solarize(x):
    gray = A.apply_view(x, A.ViewSpec(size=24, **{**OFF, "gray_p": 1.0}), params(4, gray=True))
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    assert (gray - TF.rgb_to_grayscale(x, num_output_channels=3)).abs().max() < 1e-5

    k = A.blur_kernel_size(24)
    assert k == 3 and A.blur_kernel_size(224) == 23 and A.blur_kernel_size(64) == 7
    blur = A.apply_view(x, A.ViewSpec(size=24, **{**OFF, "blur_p": 1.0}), params(4, sigma=1.3))
    assert (blur - TF.gaussian_blur(x, [k, k], [1.3, 1.3])).abs().max() < 1e-5
    # sigma 0 = this sample is not blurred
    assert torch.allclose(
        A.apply_view(x, A.ViewSpec(size=24, **{**OFF, "blur_p": 1.0}), params(4)), x, atol=1e-6
    )

    ramp = torch.linspace(0, 1, 11).view(1, 1, 1, 11).expand(1, 3, 11, 11).contiguous()
    sol = A.apply_view(
        ramp, A.ViewSpec(size=11, **{**OFF, "solarize_p": 1.0}), params(1, solarize=True)
    )
    expected = torch.where(ramp >= 0.5, 1 - ramp, ramp)
    assert torch.allclose(sol, expected, atol=1e-6)
    assert torch.allclose(sol, TF.solarize(ramp, 0.5), atol=1e-6)


def test_probabilities_mask_per_sample():
    spec = A.ViewSpec(size=8, jitter_p=0.8, gray_p=0.2, blur_p=0.5, solarize_p=0.2)
    p = A.sample_view_params(5000, spec, generator=torch.Generator().manual_seed(3))
    jittered = (p.jitter != torch.tensor([1.0, 1.0, 1.0, 0.0])).any(1).float().mean()
    assert abs(jittered - 0.8) < 0.03
    assert abs(p.gray.float().mean() - 0.2) < 0.03
    assert abs((p.sigma > 0).float().mean() - 0.5) < 0.03
    assert abs(p.solarize.float().mean() - 0.2) < 0.03
    on = p.sigma[p.sigma > 0]
    assert on.min() >= 0.1 and on.max() <= 2.0
    b = p.jitter[:, 0]
    assert (
        b.min() >= 0.6 - 1e-6 and b.max() <= 1.4 + 1e-6 and p.jitter[:, 3].abs().max() <= 0.1 + 1e-6
    )
    assert all(sorted(row) == [0, 1, 2, 3] for row in p.order[:20].tolist())


def test_generator_makes_views_reproducible():
    imgs = torch.randint(0, 256, (6, 3, 20, 20), dtype=torch.uint8)
    spec = A.byol_views(16)[1]
    a = A.augment_view(imgs, spec, generator=torch.Generator().manual_seed(7))
    b = A.augment_view(imgs, spec, generator=torch.Generator().manual_seed(7))
    c = A.augment_view(imgs, spec, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_clip_frames_share_params():
    frame = torch.randint(0, 256, (2, 1, 3, 20, 20), dtype=torch.uint8)
    clips = frame.expand(2, 4, 3, 20, 20).contiguous()
    spec = A.ViewSpec(size=12, blur_p=0.5, solarize_p=0.5, gray_p=0.5)
    out = A.augment_view(clips, spec, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 4, 3, 12, 12)
    for t in range(1, 4):
        assert torch.equal(out[:, t], out[:, 0])
    assert not torch.equal(out[0, 0], out[1, 0])
    # the same through explicit repetition of each clip's params
    p = A.sample_view_params(2, spec, generator=torch.Generator().manual_seed(0), image_hw=(20, 20))
    flat = A.apply_view(clips.flatten(0, 1), spec, p.repeat_interleave(4))
    assert torch.equal(flat.view(2, 4, 3, 12, 12), out)


def test_presets_follow_the_papers():
    s = A.simclr_views(32)
    assert (
        len(s) == 2
        and s[0].blur_p == 0.0
        and math.isclose(s[0].brightness, 0.4)
        and math.isclose(s[0].hue, 0.1)
    )
    s = A.simclr_views(224)
    assert s[0].blur_p == 0.5 and math.isclose(s[0].brightness, 0.8) and math.isclose(s[0].hue, 0.2)
    v1, v2 = A.byol_views(96)
    assert (v1.blur_p, v1.solarize_p, v2.blur_p, v2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert v1.saturation == 0.2
    # CIFAR recipes (solo-learn, lightly): no blur at <= 64 px, solarization kept
    v1, v2 = A.byol_views(32)
    assert (v1.blur_p, v1.solarize_p, v2.blur_p, v2.solarize_p) == (0.0, 0.0, 0.0, 0.2)
    d = A.dino_views(96, 40, 6)
    assert len(d) == 8 and [v.size for v in d] == [96, 96] + [40] * 6
    assert d[0].scale == (0.4, 1.0) and d[2].scale == (0.05, 0.4)
    assert [v.blur_p for v in d[:3]] == [1.0, 0.1, 0.5]
    assert all(v.blur_p == 0.0 for v in A.dino_views(32, 16, 6))
    imgs = torch.randint(0, 256, (3, 3, 36, 36), dtype=torch.uint8)
    assert [A.augment_view(imgs, v).shape[-1] for v in A.dino_views(32, 16, 6)] == [32] * 2 + [
        16
    ] * 6
    # MoCo v2 (--aug-plus): crop (0.2, 1), jitter 0.4/0.4/0.4/0.1 at every size, blur above 64 px
    for size, blur in ((32, 0.0), (224, 0.5)):
        m = A.mocov2_views(size)[0]
        assert m.scale == (0.2, 1.0) and m.blur_p == blur and m.gray_p == 0.2
        assert (m.brightness, m.contrast, m.saturation, m.hue) == (0.4, 0.4, 0.4, 0.1)
    assert A.mocov2_views(224, blur=False)[0].blur_p == 0.0  # SupCon's reference views


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    spec = A.ViewSpec(size=24, solarize_p=0.5)
    p = A.sample_view_params(8, spec, generator=torch.Generator().manual_seed(0))
    cpu = A.apply_view(x, spec, p)
    gpu = A.apply_view(x.cuda(), spec, p.to("cuda"))
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-3)


def test_bad_spec_values_are_user_errors():
    with pytest.raises(UserError, match="scale must satisfy"):
        A.ViewSpec(scale=(0.5, 0.2))
    with pytest.raises(UserError, match="gray_p must be in"):
        A.ViewSpec(gray_p=1.5)
    assert A.ViewSpec(scale=[0.2, 1.0]).scale == (0.2, 1.0)  # lists from JSON are fine
