"""The papers' recipes: optimiser hooks, position embeddings, defaults, crops (issue 12)."""

from __future__ import annotations

import math

import pytest
import torch

import engine.methods  # noqa: F401  (registers the methods)
from engine import augment
from engine.backbones import build_backbone
from engine.config import OptimConfig, make_config
from engine.methods.dino import DINO, DINOConfig
from engine.methods.ibot import IBOTConfig
from engine.methods.mae import MAE, MAEConfig
from engine.methods.moco import MoCoV3, MoCoV3Config
from engine.optim import LARS, build_optimizer
from engine.registry import get_method


def tiny_dino() -> DINO:
    torch.manual_seed(0)
    cfg = DINOConfig(out_dim=16, hidden_dim=16, bottleneck_dim=8, n_local=0)
    return DINO(build_backbone("vit_tiny", 16, depth=2, drop_path=0.1), 16, cfg)


def test_dino_lr_warmup_is_a_tenth_of_the_run_and_weight_decay_rises_along_a_cosine():
    m = tiny_dino()
    opt = build_optimizer(m, OptimConfig(optimizer="adamw", weight_decay=0.04), lr=1e-3)
    assert opt.defaults["betas"] == (0.9, 0.999)  # DINO's AdamW, not MAE's 0.95
    decay, no_decay = opt.param_groups
    seen = {}
    for step in (0, 4, 9, 10, 55, 100):
        m.on_step_start(step, 100, opt)
        seen[step] = (decay["lr"], decay["weight_decay"], no_decay["weight_decay"])
    # warm-up: 10 of 100 steps, linear to the peak (DINO: 10 of 100 epochs)
    assert seen[0][0] == pytest.approx(1e-4) and seen[4][0] == pytest.approx(5e-4)
    assert seen[9][0] == pytest.approx(1e-3) and seen[10][0] == pytest.approx(1e-3)
    assert seen[55][0] == pytest.approx(5e-4)  # half-way through the cosine after warm-up
    # weight decay: 0.04 -> 0.4 by cosine; biases and norms keep 0
    assert seen[0][1] == pytest.approx(0.04) and seen[100][1] == pytest.approx(0.4)
    assert seen[55][1] == pytest.approx(0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * 0.55)))
    assert all(v[2] == 0.0 for v in seen.values())


def test_dino_clips_each_parameter_on_its_own():
    m = tiny_dino()
    params = [p for p in m.parameters() if p.requires_grad]
    for i, p in enumerate(params):
        p.grad = torch.zeros_like(p)
        p.grad.view(-1)[0] = 10.0 if i == 0 else 0.5  # one large gradient, small ones elsewhere
    m.clip_gradients(3.0)
    assert params[0].grad.norm() == pytest.approx(3.0, rel=1e-5)  # clipped to 3 on its own
    assert all(p.grad.norm() == pytest.approx(0.5) for p in params[1:])  # untouched


def test_dino_student_drops_paths_the_teacher_does_not():
    m = tiny_dino()
    student = [b.drop_path.p for b in m.backbone.blocks]
    assert student[-1] == pytest.approx(0.1) and all(
        b.drop_path.p == 0.0 for b in m.teacher_backbone.blocks
    )
    assert get_method("dino").build  # registered


def test_ibot_vit_small_defaults():
    c = IBOTConfig()
    assert (c.n_local, c.norm_last_layer, c.global_scale_min, c.local_scale_max) == (
        10,
        False,
        0.25,
        0.25,
    )


def _sincos(dim: int, a: int, b: int) -> torch.Tensor:
    """The papers' formula for one patch: [sin(a w), cos(a w), sin(b w), cos(b w)]."""
    w = [1 / 10000 ** (i / (dim / 4)) for i in range(dim // 4)]
    return torch.tensor(
        [math.sin(a * x) for x in w]
        + [math.cos(a * x) for x in w]
        + [math.sin(b * x) for x in w]
        + [math.cos(b * x) for x in w]
    )


@pytest.mark.parametrize("method", ["mae", "moco_v3"])
def test_mae_and_moco_v3_vits_have_fixed_sincos_position_embeddings(method):
    cls = {"mae": MAE, "moco_v3": MoCoV3}[method]
    vit = build_backbone("vit_tiny", 16, depth=1, **cls.backbone_kwargs)  # 4x4 grid of patches
    pe = vit.pos_embed
    assert not pe.requires_grad and torch.equal(pe[0, 0], torch.zeros(192))
    for r, c in ((0, 0), (1, 2), (3, 1)):
        # MAE: column first (np.meshgrid 'xy'); MoCo v3: row first (torch.meshgrid 'ij')
        a, b = (c, r) if method == "mae" else (r, c)
        torch.testing.assert_close(pe[0, 1 + r * 4 + c], _sincos(192, a, b), atol=1e-6, rtol=0)


def test_moco_v3_init_and_temperature():
    torch.manual_seed(0)
    cfg = make_config(MoCoV3Config, {"proj_hidden_dim": 16, "proj_dim": 8, "pred_hidden_dim": 16})
    vit = MoCoV3(build_backbone("vit_tiny", 16, depth=1, **MoCoV3.backbone_kwargs), 16, cfg)
    assert vit.temperature == 0.2
    qkv = vit.backbone.blocks[0].attn.qkv.weight
    assert qkv.abs().max() <= math.sqrt(6 / (192 + 192)) and qkv.abs().max() > 0.1
    assert vit.backbone.cls_token.abs().max() < 1e-4  # normal(std 1e-6)
    resnet = MoCoV3(build_backbone("resnet18", 16), 16, cfg)
    assert resnet.temperature == 1.0  # the paper's ResNet setting


def test_mae_uses_adamw_beta2_095():
    torch.manual_seed(0)
    m = MAE(
        build_backbone("vit_tiny", 16, depth=1, **MAE.backbone_kwargs),
        16,
        MAEConfig(decoder_dim=16, decoder_depth=1, decoder_heads=2),
    )
    opt = build_optimizer(m, OptimConfig(optimizer="adamw"), lr=1e-3)
    assert opt.defaults["betas"] == (0.9, 0.95)
    assert all(p is not m.backbone.pos_embed for g in opt.param_groups for p in g["params"])


def test_vit_mask_token_only_when_asked_and_old_checkpoints_load():
    plain = build_backbone("vit_tiny", 16, depth=1)
    masked = build_backbone("vit_tiny", 16, depth=1, mask_token=True)
    assert plain.mask_token is None and "mask_token" not in plain.state_dict()
    assert masked.mask_token.requires_grad
    plain.load_state_dict(masked.state_dict())  # an old checkpoint: a mask token too many
    masked.load_state_dict(plain.state_dict())  # and the other way: its own token is kept


def test_random_resized_crop_samples_the_whole_non_square_image():
    """A 2:1 image delivered stretched to a square, with its true size in image_hw: full-scale
    crops keep the aspect ratio range of the *original* (so they cover at most its height, a
    box of width h/w * 4/3 of the image), and no crop is limited to the centre square."""
    spec = augment.ViewSpec(size=8, scale=(0.9, 1.0))
    hw = torch.tensor([[100.0, 200.0]]).expand(4000, 2)
    p = augment.sample_view_params(
        4000, spec, generator=torch.Generator().manual_seed(0), image_hw=hw
    )
    x0, y0, w, h = p.box.unbind(1)
    assert (w * 200 / (h * 100)).max() <= 4 / 3 + 1e-4  # aspect of the crop in original pixels
    assert (h == 1).all()  # 90-100% of the area never fits a 2:1 image: the clamped fallback
    assert x0.min() < 0.05 and (x0 + w).max() > 0.95  # from the left edge to the right one
    sq = augment.sample_view_params(4000, spec, generator=torch.Generator().manual_seed(0))
    assert sq.box[:, 2].min() > 0.9  # a square image: nearly the whole image


def _barlow_weight_growth(images: torch.Tensor, optim: dict) -> float:
    """Norm of a backbone conv after 12 Barlow Twins steps over its norm at init."""
    from engine.build import apply_method_defaults, build_method
    from engine.optim import lr_at

    cfg = apply_method_defaults({"data": "x", "image_size": 16}, optim, "barlow_twins")
    torch.manual_seed(0)
    method = build_method(cfg)
    opt = build_optimizer(method, cfg.optim, cfg.optim.lr)
    conv = method.backbone.layer2[0].conv1.weight
    before = conv.norm().item()
    for step in range(12):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, 12, 0, cfg.optim.lr)
        loss = method({"image": images})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    return conv.norm().item() / before


def test_barlow_twins_uses_lars_so_its_large_loss_cannot_blow_up_the_weights(shapes_dir):
    from engine.media.images import load_images

    images = load_images(sorted(shapes_dir.rglob("*.png"))[:32], 16)
    cfg = OptimConfig(optimizer="lars", lars_trust=0.02)
    opt = build_optimizer(torch.nn.Linear(2, 2), cfg, lr=0.3)
    assert opt.param_groups[0]["trust_coef"] == 0.02
    defaults = get_method("barlow_twins").defaults
    assert (defaults["optimizer"], defaults["lr"], defaults["lars_trust"]) == ("lars", 0.3, 0.02)
    # measured on a 15-minute run: plain SGD at lr 0.1 grew the convs 700x and learning stalled
    assert _barlow_weight_growth(images, {}) < 1.5
    old_recipe = {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4}
    assert _barlow_weight_growth(images, old_recipe) > 3


def test_lars_clip_caps_each_tensors_rate_at_the_scheduled_lr():
    """solo-learn's clip_lr: step = min(lr, trust x |w| / |g|) x g, not lr x trust x |w| / |g|."""

    def first_step(clip: bool, lr: float) -> float:
        w = torch.nn.Parameter(torch.full((4, 4), 1.0))  # |w| = 4
        opt = LARS([w], lr=lr, trust_coef=0.02, clip=clip)
        w.grad = torch.full((4, 4), 0.01)  # |g| = 0.04, so trust x |w| / |g| = 2.0
        opt.step()
        return (1.0 - w.detach()[0, 0].item()) / 0.01  # the rate the step used

    assert first_step(False, 0.3) == pytest.approx(0.3 * 2.0, rel=1e-4)
    assert first_step(True, 0.3) == pytest.approx(0.3, rel=1e-4)  # capped at the lr
    assert first_step(True, 5.0) == pytest.approx(2.0, rel=1e-4)  # the trust rate when below it


def test_dino_and_moco_v3_train_a_small_resnet_with_their_lars_recipe_at_32_px():
    from engine.build import apply_method_defaults

    dino = apply_method_defaults({"image_size": 32}, {}, "dino")
    assert (dino.backbone, dino.optim.optimizer, dino.optim.lr) == ("resnet18_w32", "lars", 0.3)
    assert dino.optim.lars_clip and dino.optim.clip_grad == 0.0
    assert dino.method_args == {
        "out_dim": 4096,
        "ema_momentum": 0.99,
        "weight_decay_end": 1e-6,
        "use_bn_in_head": True,
        "n_local": 0,  # solo-learn's CIFAR DINO: two crops
        "global_scale_min": 0.08,
        "teacher_temp": 0.04,  # main_dino.py's default, no warm-up: 0.07 went uniform
        "warmup_teacher_temp": 0.04,
    }
    vit = apply_method_defaults({"image_size": 64}, {}, "dino")  # the paper's ViT recipe
    assert (vit.backbone, vit.optim.optimizer, vit.optim.lr, vit.method_args) == (
        "vit_tiny",
        "adamw",
        5e-4,
        {},
    )
    # the recipe follows the backbone: named at 64 px it applies, user values still win
    named = apply_method_defaults(
        {"image_size": 64, "backbone": "resnet18_w32", "method_args": {"out_dim": 512}},
        {"lr": 0.1},
        "dino",
    )
    assert (named.optim.optimizer, named.optim.lr, named.method_args["out_dim"]) == (
        "lars",
        0.1,
        512,
    )
    assert named.method_args["ema_momentum"] == 0.99
    assert (
        apply_method_defaults(
            {"image_size": 32, "backbone": "vit_tiny"}, {}, "dino"
        ).optim.optimizer
        == "adamw"
    )
    moco = apply_method_defaults({"image_size": 32}, {}, "moco_v3")
    assert (moco.backbone, moco.optim.optimizer, moco.method_args) == (
        "resnet18_w32",
        "lars",
        {"temperature": 0.2},
    )
    byol = get_method("byol").recipe("resnet18")  # LARS at every size, as in the paper
    assert (byol["optimizer"], byol["lr"], byol["lars_trust"]) == ("lars", 1.0, 0.02)


def test_dino_trains_a_resnet_with_multi_crop_and_its_teacher_follows(shapes_dir):
    from engine.build import apply_method_defaults, build_method
    from engine.media.images import load_images

    cfg = apply_method_defaults(
        {"image_size": 16, "method_args": {"out_dim": 64, "hidden_dim": 32}}, {}, "dino"
    )
    method = build_method(cfg)
    assert method.backbone.embed_dim == 256  # resnet18_w32
    # BatchNorm in the head at the official DINOHead(use_bn=True) indices: Linear, BN, GELU, ...
    keys = set(method.head.state_dict())
    assert {"mlp.1.running_mean", "mlp.4.running_mean", "mlp.6.weight"} <= keys
    images = load_images(sorted(shapes_dir.rglob("*.png"))[:8], 16)
    out = method({"image": images})
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 0
    out["loss"].backward()
    before = next(method.teacher_backbone.parameters()).detach().clone()
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.1)
    method.on_step_end(1, 10)
    assert not torch.equal(before, next(method.teacher_backbone.parameters()))


def test_instdisc_takes_the_authors_cifar_settings_at_32_px():
    """lemniscate.pytorch's cifar.py: batch 128 at lr 0.03 (0.06 per 256), T = 0.1; the
    ImageNet values of the paper (batch 256, lr 0.03, T = 0.07) stay at full size."""
    from engine.build import apply_method_defaults

    small = apply_method_defaults({"image_size": 32}, {}, "instdisc")
    assert (small.backbone, small.batch_size, small.optim.lr) == ("resnet18_w32", 128, 0.06)
    assert small.method_args == {"temperature": 0.1}
    full = apply_method_defaults({"image_size": 96}, {}, "instdisc")
    assert (full.backbone, full.batch_size, full.optim.lr, full.method_args) == (
        "resnet18",
        256,
        0.03,
        {},
    )


@pytest.mark.parametrize("size", [32, 64])
def test_every_image_method_builds_with_its_own_defaults(size):
    """What `selfsup train --method M --image-size S` builds when the user names nothing else
    (iBOT once inherited DINO's small-image ResNet and refused it). BEiT and SPOT's student
    need a run to point at (--tokenizer, --teacher): checked elsewhere."""
    from app.registry_all import load_all
    from engine.build import apply_method_defaults, build_method
    from engine.registry import list_methods

    load_all()
    needs_a_run = {"beit"}
    for spec in list_methods():
        if spec.data != "images" or spec.name in needs_a_run:
            continue
        cfg = apply_method_defaults({"data": "x", "image_size": size}, {}, spec.name)
        assert build_method(cfg) is not None, spec.name
