"""The image SSL methods: each learns on real pictures, trains through the trainer, and its state
(queues, centers, EMA teachers, schedules) does what the paper says."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import engine.methods  # noqa: F401  (registers the methods)
from engine.backbones import build_backbone
from engine.build import apply_method_defaults, train
from engine.config import make_config
from engine.data import load_images
from engine.errors import UserError
from engine.events import read_events
from engine.features import load_feature_extractor
from engine.methods.base import cosine_momentum, ema_update
from engine.methods.byol import BYOL, BYOLConfig
from engine.methods.dino import DINO, DINOConfig, default_local_size
from engine.methods.moco import MoCoV2, MoCoV2Config, MoCoV3, MoCoV3Config, split_forward
from engine.methods.supcon import SupCon, SupConConfig
from engine.registry import get_method

TINY_ARGS = {
    "moco_v2": dict(
        proj_hidden_dim=64, proj_dim=32, queue_size=24
    ),  # a 16-d head without BN collapses
    "moco_v3": dict(proj_hidden_dim=32, proj_dim=16, pred_hidden_dim=32),
    "byol": dict(proj_hidden_dim=32, proj_dim=16),
    "dino": dict(out_dim=64, hidden_dim=32, bottleneck_dim=16, n_local=2),
    "barlow_twins": dict(proj_hidden_dim=64, proj_dim=64),
    "supcon": dict(proj_dim=16),
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def shapes_batches(tmp_path_factory) -> tuple[torch.Tensor, torch.Tensor]:
    """36 real 16 px pictures of three shape/texture classes, shuffled once: 3 batches of 12."""
    from tests.conftest import write_shapes_folder

    root = write_shapes_folder(tmp_path_factory.mktemp("shapes"))
    files = sorted(root.rglob("*.png"))
    perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(0)).tolist()
    files = [files[i] for i in perm]
    labels = torch.tensor([["disc", "stripes", "checker"].index(f.parent.name) for f in files])
    return load_images(files, 16), labels


def _build(name: str, backbone: nn.Module, **overrides):
    spec = get_method(name)
    cfg = make_config(spec.config_cls, {**TINY_ARGS[name], **overrides})
    classes = {"moco_v2": MoCoV2, "moco_v3": MoCoV3, "byol": BYOL, "dino": DINO, "supcon": SupCon}
    if name == "barlow_twins":
        from engine.methods.barlow import BarlowTwins as cls
    else:
        cls = classes[name]
    return cls(backbone, 16, cfg)


def _learn(
    method: nn.Module,
    batches,
    optimizer: str,
    lr: float,
    steps: int = 12,
    key: str = "loss",
    cycle: int = 3,
) -> list[float]:
    """Cycle over `cycle` fixed batches of 12, each with its own fixed views (step context =
    batch index): the loss must fall by learning, not by luck of the augmentation draw."""
    images, labels = batches
    params = [p for p in method.parameters() if p.requires_grad]
    opt = (
        torch.optim.AdamW(params, lr=lr, weight_decay=0)
        if optimizer == "adamw"
        else torch.optim.SGD(params, lr=lr, momentum=0.9)
    )
    torch.manual_seed(0)
    out_values = []
    for s in range(steps):
        b = s % cycle
        method.set_step_context(0, b)
        out = method(
            {"image": images[b * 12 : (b + 1) * 12], "label": labels[b * 12 : (b + 1) * 12]}
        )
        assert torch.isfinite(out["loss"]), f"step {s}: loss {out['loss']}"
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        for group in opt.param_groups:  # the trainer's linear warm-up, over 4 steps
            group["lr"] = lr * min(1.0, (s + 1) / 4)
        opt.step()
        method.on_step_end(s + 1, 100)
        out_values.append(out[key].detach().item())
    return out_values


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# ----------------------------------------------------------------------------- learning


@pytest.mark.parametrize(
    "name,backbone,optimizer,lr,key,first,steps,cycle",
    [
        ("byol", "vit", "adamw", 1e-3, "loss", slice(0, 3), 12, 3),
        ("moco_v3", "vit", "adamw", 2e-4, "loss", slice(0, 3), 12, 3),
        ("barlow_twins", "vit", "adamw", 1e-3, "loss", slice(0, 3), 12, 3),
        # DINO's loss is H(teacher) + KL; centering raises the entropy on purpose, so the
        # student's progress is the KL to the teacher (the paper's fig. 7 monitor).
        ("dino", "vit", "adamw", 1e-3, "kl", slice(0, 3), 12, 3),
        # MoCo v2's queue starts as random vectors (easy negatives): compare once it holds keys;
        # its BN-free head starts slowly (as in the paper's curves), so it gets a few more steps.
        ("moco_v2", "resnet", "sgd", 0.05, "loss", slice(3, 6), 15, 3),
        # SupCon first collapses to the uniform loss log(23) (7 of 23 candidates are positives),
        # which generalises across batches for a dozen steps; on one batch it must beat that.
        ("supcon", "resnet", "sgd", 0.05, "loss", slice(0, 1), 6, 1),
    ],
)
def test_method_learns_on_real_pictures(
    shapes_batches, name, backbone, optimizer, lr, key, first, steps, cycle
):
    torch.manual_seed(0)
    bb = (
        build_backbone("vit_tiny", 16, depth=2)
        if backbone == "vit"
        else build_backbone("resnet18", 16)
    )
    values = _learn(_build(name, bb), shapes_batches, optimizer, lr, steps, key=key, cycle=cycle)
    assert all(math.isfinite(v) for v in values)
    # MoCo v2's BN-free head learns slowest (its 15 steps go from 3.02 to 2.74 here).
    ratio = 0.93 if name == "moco_v2" else 0.85
    assert _mean(values[-3:]) < ratio * _mean(values[first]), values
    if name == "supcon":
        assert values[-1] < math.log(23) - 0.3, values


@pytest.mark.parametrize("name", list(TINY_ARGS))
def test_method_trains_through_the_trainer(shapes_dir, tmp_path, name):
    """Registered defaults + trainer + checkpoint: 2 steps, finite loss, a loadable backbone
    (DINO's is the teacher, run here on a ResNet to cover its convnet path)."""
    run = tmp_path / name
    values = {
        "data": str(shapes_dir),
        "image_size": 16,
        "batch_size": 8,
        "max_steps": 2,
        "num_workers": 0,
        "log_every": 1,
        "run_dir": str(run),
        "method_args": TINY_ARGS[name],
    }
    if name == "dino":
        values["backbone"] = "resnet18"
    result = train(apply_method_defaults(values, {}, name))
    events = read_events(run)
    steps = [e for e in events if e["type"] == "step"]
    assert len(steps) == 2 and all(math.isfinite(e["losses"]["loss"]) for e in steps)
    assert events[-1]["type"] == "done" and result["step"] == 2
    fx = load_feature_extractor(run)
    assert fx.embed(torch.zeros(2, 3, 16, 16, dtype=torch.uint8)).shape[0] == 2
    if name == "dino":
        from engine.checkpoint import load_checkpoint

        model = load_checkpoint(run / "checkpoints" / "last.pt")["model"]
        w = fx.backbone.state_dict()["conv1.weight"]
        assert torch.equal(w, model["teacher_backbone.conv1.weight"])
        assert not torch.equal(w, model["backbone.conv1.weight"])


# ----------------------------------------------------------------------------- EMA, momentum


def test_ema_update_math():
    target, online = (
        nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)),
        nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)),
    )
    online[1].running_mean.fill_(3.0)
    t0, o = target[0].weight.detach().clone(), online[0].weight.detach().clone()
    ema_update(target, online, 0.9)
    assert torch.allclose(target[0].weight, 0.9 * t0 + 0.1 * o)
    # parameters only, as DINO / MoCo / BYOL: the target's BN statistics stay its own
    assert torch.equal(target[1].running_mean, torch.zeros(2))


def _ema_method(name: str):
    """A tiny EMA method on a ResNet-18 at 16 px (BN everywhere) and its (target, online) pair."""
    torch.manual_seed(0)
    bb = build_backbone("resnet18", 16)
    if name == "dino":
        m = _build("dino", bb)
        return m, m.teacher_backbone, m.backbone
    m = _build(name, bb)
    target = {"byol": "target", "moco_v2": "key_encoder", "moco_v3": "momentum_encoder"}[name]
    return m, getattr(m, target)[0], m.backbone


@pytest.mark.parametrize("name", ["byol", "moco_v2", "moco_v3", "dino"])
def test_ema_target_keeps_its_own_batch_norm_statistics(name, shapes_batches):
    """The target's running statistics come from its own forward passes, not the student's."""
    method, target, online = _ema_method(name)
    with torch.no_grad():  # as after some training: the student's first layer has moved
        online.conv1.weight.mul_(3.0)
    bn_t, bn_o = target.bn1, online.bn1
    seen = []
    bn_t.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    images = shapes_batches[0][:12]
    for step in range(2):
        method.set_step_context(0, step)
        method({"image": images, "label": torch.zeros(12, dtype=torch.long)})
        method.on_step_end(step + 1, 10)
    assert seen, "the target ran no forward pass"
    assert not torch.allclose(bn_t.running_mean, bn_o.running_mean, atol=1e-3)
    ref = torch.zeros_like(bn_t.running_mean)  # BN momentum 0.1 over the target's own inputs
    for x in seen:
        ref = 0.9 * ref + 0.1 * x.mean((0, 2, 3))
    assert torch.allclose(bn_t.running_mean, ref, atol=1e-5)
    assert int(bn_t.num_batches_tracked) == len(seen)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.99, 0, 100) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 50, 100) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 100, 100) == pytest.approx(1.0)


def test_byol_target_follows_cosine_momentum():
    m = BYOL(build_backbone("vit_tiny", 16, depth=1), 16, BYOLConfig(proj_hidden_dim=8, proj_dim=4))
    with torch.no_grad():
        m.projector[0].weight.add_(1.0)  # the online network moves; the target has not yet
    t_before = m.target[1][0].weight.detach().clone()
    m.on_step_end(25, 100)
    mom = cosine_momentum(0.99, 25, 100)
    assert torch.allclose(m.target[1][0].weight, mom * t_before + (1 - mom) * m.projector[0].weight)
    assert not any(p.requires_grad for p in m.target.parameters())


# ----------------------------------------------------------------------------- MoCo


def test_moco_queue_pointer_and_wraparound():
    m = MoCoV2(
        build_backbone("vit_tiny", 16, depth=1),
        16,
        MoCoV2Config(queue_size=10, proj_dim=4, proj_hidden_dim=8),
    )
    keys = [F.normalize(torch.randn(4, 4), dim=1) for _ in range(3)]
    m.enqueue(keys[0])
    assert int(m.queue_ptr) == 4 and torch.equal(m.queue[:4], keys[0])
    m.enqueue(keys[1])
    assert int(m.queue_ptr) == 8 and torch.equal(m.queue[4:8], keys[1])
    m.enqueue(keys[2])  # rows 8, 9, then wrap to 0, 1
    assert int(m.queue_ptr) == 2
    assert torch.equal(m.queue[8:10], keys[2][:2]) and torch.equal(m.queue[0:2], keys[2][2:])
    assert torch.equal(m.queue[2:4], keys[0][2:])  # the oldest survivors
    big = F.normalize(torch.randn(13, 4), dim=1)  # more keys than slots: the newest 10 stay
    m.enqueue(big)
    assert int(m.queue_ptr) == 2 and torch.equal(torch.roll(m.queue, -2, 0), big[3:])


def test_moco_v2_enqueues_the_key_encoders_normalised_keys(shapes_batches):
    torch.manual_seed(0)
    m = MoCoV2(
        build_backbone("resnet18", 16),
        16,
        MoCoV2Config(queue_size=24, proj_dim=16, proj_hidden_dim=32, shuffle_bn_splits=0),
    )
    images = shapes_batches[0][:8]
    m.set_step_context(0, 5)
    _, x_k = m.make_views(images, m.specs)
    with torch.no_grad():
        expected = F.normalize(m.key_encoder(x_k), dim=1)
    m.forward({"image": images, "label": shapes_batches[1][:8]})
    assert torch.allclose(m.queue[:8], expected, atol=1e-5) and int(m.queue_ptr) == 8


def test_shuffle_bn_split_forward_keeps_row_order():
    x = torch.arange(8.0)[:, None] * torch.ones(1, 3)
    centre = lambda c: c - c.mean(0)  # noqa: E731  (a BN-like statistic per sub-batch)
    perm = torch.tensor([7, 0, 5, 2, 1, 6, 3, 4])
    out = split_forward(centre, x, 2, perm)
    for chunk in (perm[:4], perm[4:]):  # each row is centred with the statistics of its sub-batch
        assert torch.allclose(out[chunk], x[chunk] - x[chunk].mean(0))
    assert torch.equal(split_forward(centre, x, 0), centre(x))


def test_moco_v3_vit_details():
    m = MoCoV3(
        build_backbone("vit_tiny", 16, depth=1),
        16,
        MoCoV3Config(proj_hidden_dim=8, proj_dim=4, pred_hidden_dim=8),
    )
    assert not any(
        p.requires_grad for p in m.backbone.patch_embed.parameters()
    )  # random patch projection
    assert isinstance(m.projector[-1], nn.BatchNorm1d) and not m.projector[-1].affine
    assert sum(isinstance(x, nn.Linear) for x in m.projector) == 3
    r = MoCoV3(
        build_backbone("resnet18", 16),
        16,
        MoCoV3Config(proj_hidden_dim=8, proj_dim=4, pred_hidden_dim=8),
    )
    assert sum(isinstance(x, nn.Linear) for x in r.projector) == 2 and isinstance(
        r.predictor[-1], nn.Linear
    )


# ----------------------------------------------------------------------------- DINO


def _tiny_dino(**kw) -> DINO:
    return DINO(
        build_backbone("vit_tiny", 16, depth=1), 16, DINOConfig(**{**TINY_ARGS["dino"], **kw})
    )


def test_dino_center_update():
    m = _tiny_dino(center_momentum=0.9)
    m.center.fill_(1.0)
    out = torch.randn(6, 64)
    m.update_center(out)
    assert torch.allclose(m.center, 0.9 * torch.ones(1, 64) + 0.1 * out.mean(0, keepdim=True))


def test_dino_teacher_temperature_and_last_layer_schedules():
    m = _tiny_dino(
        warmup_teacher_temp=0.04,
        teacher_temp=0.07,
        teacher_temp_warmup_frac=0.3,
        freeze_last_layer_frac=0.1,
    )
    assert float(m.teacher_temp) == pytest.approx(0.04) and bool(m.freeze_last)
    m.on_step_end(15, 100)  # half-way through the 30-step warm-up
    assert float(m.teacher_temp) == pytest.approx(0.055) and not bool(m.freeze_last)
    m.on_step_end(60, 100)
    assert float(m.teacher_temp) == pytest.approx(0.07)
    m.on_step_end(5, 100)
    assert bool(m.freeze_last)


def test_dino_frozen_last_layer_gets_no_gradient_and_teacher_sees_only_global_crops():
    m = _tiny_dino(n_local=3)
    seen = []
    m.teacher_backbone.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape))
    images = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)
    m({"image": images})["loss"].backward()
    assert m.head.last_v.grad is None and m.head.mlp[0].weight.grad is not None
    assert seen == [torch.Size([8, 3, 16, 16])]  # the two global crops of 4 images, not the locals
    m.freeze_last.fill_(False)
    m({"image": images})["loss"].backward()
    assert m.head.last_v.grad is not None and m.head.last_v.grad.abs().sum() > 0


def test_dino_local_crop_size():
    assert default_local_size(224, 16) == 96
    assert default_local_size(32, 4) == 16
    assert default_local_size(64, 8) == 24


# ----------------------------------------------------------------------------- SupCon


def test_supcon_refuses_unlabelled_images():
    m = SupCon(
        build_backbone("vit_tiny", 16, depth=1),
        16,
        SupConConfig(proj_dim=4),
        data="/photos/holiday",
    )
    batch = {
        "image": torch.zeros(4, 3, 16, 16, dtype=torch.uint8),
        "label": torch.tensor([0, -1, 1, 0]),
    }
    with pytest.raises(UserError, match=r"/photos/holiday: supcon needs labelled images"):
        m(batch)


def test_every_method_is_registered_with_description_and_defaults():
    for name in ["moco_v2", "moco_v3", "byol", "dino", "barlow_twins", "supcon"]:
        spec = get_method(name)
        assert spec.description and {"backbone", "optimizer", "lr", "weight_decay"} <= set(
            spec.defaults
        )
    assert Path(engine.methods.__file__).exists()
