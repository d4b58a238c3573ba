"""The CLIP method: losses against hand computations, training lowers the loss, temperature
clamp, LiT tower locking, and a run through the engine trainer whose checkpoint loads again."""

from __future__ import annotations

import math

import pytest
import torch

from engine.config import TrainConfig
from engine.errors import UserError
from multimodal.clip_method import Clip
from multimodal.config import ClipConfig
from multimodal.models import TINY_MODEL, create_clip, get_tokenizer

IMG = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TXT = torch.tensor([[1.0, 0.0], [0.6, 0.8]])


def _method(**kw) -> Clip:
    torch.manual_seed(0)
    return Clip.build(TrainConfig(image_size=32), ClipConfig(**kw))


def test_clip_loss_matches_hand_computation():
    # logits image->text = 10 * IMG TXT^T = [[10, 6], [0, 8]]; text->image is its transpose.
    i2t = (math.log1p(math.exp(-4)) + math.log1p(math.exp(-8))) / 2
    t2i = (math.log1p(math.exp(-10)) + math.log1p(math.exp(-2))) / 2
    loss = _method().loss_fn()(IMG, TXT, torch.tensor(10.0))
    assert loss.item() == pytest.approx((i2t + t2i) / 2, rel=1e-5)


def test_siglip_loss_matches_hand_computation():
    # logits = 10 * IMG TXT^T - 10 = [[0, -4], [-10, -2]]; -log sigmoid(z * logit), z = +1 on the diagonal
    terms = [
        math.log(2),
        math.log1p(math.exp(-4)),
        math.log1p(math.exp(-10)),
        math.log1p(math.exp(2)),
    ]
    m = _method(loss="siglip")
    assert m.model.logit_bias.item() == pytest.approx(
        -10.0
    ) and m.model.logit_scale.exp().item() == pytest.approx(10.0)
    loss = m.loss_fn()(IMG, TXT, torch.tensor(10.0), torch.tensor(-10.0))
    assert loss.item() == pytest.approx(sum(terms) / 2, rel=1e-5)


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_loss_stays_float32_under_bf16_autocast(loss):
    """Logits are cosines x up to 100: under CPU bf16 autocast the method's loss equals the
    float32 one, while open_clip's loss called under autocast is measurably off."""
    m = _method(loss=loss)
    with torch.no_grad():
        m.model.logit_scale.fill_(math.log(100.0))
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(64, 32, generator=g), dim=1)
    txt = torch.nn.functional.normalize(img + 0.3 * torch.randn(64, 32, generator=g), dim=1)
    exact = m.contrastive_loss(img, txt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = m.contrastive_loss(img, txt)
        args = [img, txt, m.model.logit_scale.exp()] + (
            [m.model.logit_bias] if loss == "siglip" else []
        )
        theirs = m.loss_fn()(*args)
    assert ours.dtype == torch.float32 and ours.item() == pytest.approx(exact.item(), rel=1e-6)
    assert abs(theirs.item() - exact.item()) > 1e-4 * abs(exact.item())


def _batch(make_photo_fn, tmp_path, n: int = 8) -> dict[str, torch.Tensor]:
    from multimodal.imageio import load_image

    imgs = torch.stack(
        [load_image(make_photo_fn(tmp_path / f"{i}.png", seed=i), 32) for i in range(n)]
    )
    words = ["cat", "dog", "car", "tree", "boat", "house", "bird", "fish", "lamp", "cup"]
    return {
        "image": imgs,
        "text": get_tokenizer(TINY_MODEL)([f"a photo of a {w}" for w in words[:n]]),
    }


def _loss(m: Clip, batch) -> float:
    m.set_step_context(0, 0)
    with torch.no_grad():
        return m(batch)["loss"].item()


def _steps(m: Clip, batch, steps: int, lr: float) -> None:
    """AdamW on the trainable parameters, as the trainer would (clamp after each step)."""
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr)
    for step in range(steps):
        m.set_step_context(0, step)
        loss = m(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        m.on_step_end(step + 1, steps)


def test_training_steps_lower_the_loss(make_photo_fn, tmp_path):
    m = _method()
    batch = _batch(make_photo_fn, tmp_path)
    before = _loss(m, batch)
    _steps(m, batch, 25, lr=2e-3)
    after = _loss(m, batch)
    assert before > 1.8  # about log(8) = 2.08 for an untrained model
    assert after < 0.7 * before


def test_logit_scale_is_clamped_at_100():
    m = _method()
    with torch.no_grad():
        m.model.logit_scale.fill_(math.log(500.0))
    m.on_step_end(1, 10)
    assert m.model.logit_scale.exp().item() == pytest.approx(100.0, rel=1e-5)


def test_locked_image_tower_stays_fixed_while_text_trains(make_photo_fn, tmp_path):
    m = _method(lock_image=True)
    visual0 = {k: v.clone() for k, v in m.model.visual.state_dict().items()}
    text0 = m.model.token_embedding.weight.clone()
    batch = _batch(make_photo_fn, tmp_path, 4)
    _steps(m, batch, 2, lr=1e-2)
    assert all(torch.equal(v, m.model.visual.state_dict()[k]) for k, v in visual0.items())
    assert not torch.equal(text0, m.model.token_embedding.weight)
    with pytest.raises(UserError, match="nothing to train"):
        _method(lock_image=True, lock_text=True)


def test_pretrained_tag_needs_its_native_image_size():
    with pytest.raises(UserError, match="expects --image-size 224"):
        Clip.build(TrainConfig(image_size=64), ClipConfig(model="ViT-B-32", pretrained="openai"))


def test_trainer_run_checkpoint_loads_through_pretrained_path(tmp_path, make_photo_fn):
    from engine.build import apply_method_defaults, train
    from multimodal.embedder import load_clip

    lines = ["filepath\ttitle"]
    for i in range(8):
        make_photo_fn(tmp_path / "img" / f"{i}.jpg", seed=i)
        lines.append(f"img/{i}.jpg\tphoto number {i}")
    (tmp_path / "caps.tsv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    cfg = apply_method_defaults(
        {
            "data": str(tmp_path / "caps.tsv"),
            "image_size": 32,
            "batch_size": 4,
            "max_steps": 3,
            "num_workers": 0,
            "run_dir": str(run),
            "log_every": 1,
        },
        {},
        "clip",
    )
    summary = train(cfg)
    assert summary["step"] == 3 and math.isfinite(summary["losses"]["loss"])
    ckpt = run / "checkpoints" / "last.pt"
    from_file = create_clip(TINY_MODEL, pretrained=str(ckpt), image_size=32)  # --pretrained PATH
    from_run = load_clip(run).model
    # a CLIP run is a model like any other: its image tower gives global features (kNN, probes)
    from engine.features import load_features, produces
    from engine.run import RunDir

    assert produces(run) == ("image_text", "global") and RunDir(run).config().backbone == TINY_MODEL
    tower = load_features(run, "global")
    assert tower.embed(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape == (2, tower.embed_dim)
    torch.manual_seed(0)
    fresh = create_clip(TINY_MODEL, image_size=32)
    sd = from_file.state_dict()
    assert all(torch.equal(v, from_run.state_dict()[k]) for k, v in sd.items())
    assert not all(torch.equal(v, fresh.state_dict()[k]) for k, v in sd.items())


def test_lit_with_an_own_image_model_locks_it_and_trains_head_and_text(make_photo_fn, tmp_path):
    """--image-tower: an exported engine backbone becomes the image tower; its weights and
    BatchNorm statistics stay as they were, the linear head and the text tower learn, and the
    image embedding is head(backbone(image re-normalised with the backbone's own statistics))."""
    from engine.backbones import build_backbone
    from engine.features import FeatureExtractor, export_backbone, load_features

    torch.manual_seed(0)
    ex = FeatureExtractor(build_backbone("resnet18", 32), source="tower")
    path = export_backbone(ex, tmp_path / "tower.safetensors")
    m = _method(image_tower=str(path))
    tower = m.model.visual
    frozen0 = {k: v.clone() for k, v in tower.backbone.state_dict().items()}
    head0, text0 = tower.head.weight.clone(), m.model.token_embedding.weight.clone()
    batch = _batch(make_photo_fn, tmp_path, 4)
    m.train()
    _steps(m, batch, 2, lr=1e-2)
    assert all(torch.equal(v, tower.backbone.state_dict()[k]) for k, v in frozen0.items())
    assert not torch.equal(head0, tower.head.weight)
    assert not torch.equal(text0, m.model.token_embedding.weight)
    own = load_features(path, "global")
    x = batch["image"][:2]
    with torch.no_grad():
        clip_x = (x.float() / 255 - m.mean) / m.std
        want = tower.head(own.embed(x))
        assert torch.allclose(tower(clip_x), want, atol=1e-4)


def test_augmentation_options_reach_the_training_view():
    """open_clip's default is a crop only; flips, colour jitter (p 0.8) and grayscale are opt-in
    (the demo turns on flips and jitter: the sample's colours are random)."""
    plain = _method().view
    assert (plain.flip_p, plain.jitter_p, plain.gray_p, plain.scale) == (0.0, 0.0, 0.0, (0.9, 1.0))
    v = _method(flip_p=0.5, color_jitter=0.4, gray_scale_prob=0.2).view
    assert (v.flip_p, v.jitter_p, v.brightness, v.saturation, v.hue, v.gray_p) == (
        0.5, 0.8, 0.4, 0.4, 0.1, 0.2,
    )  # fmt: skip
