"""Each figure's maths does what it claims, renders deterministically, and the CLI writes PNGs."""

from __future__ import annotations

import argparse
import hashlib
import io

import numpy as np
import pytest
import torch
from PIL import Image

from engine.backbones import build_backbone
from engine.errors import UserError
from engine.features import FeatureExtractor
from engine.visualize import (
    activation_attention,
    attention_arrays,
    attention_figure,
    cls_attention_maps,
    conv_attention_figure,
    embedding_figure,
    fit_patch_pca,
    mass_mask,
    nearest_neighbours,
    neighbours_figure,
    pca_2d,
    pca_figure,
    pca_images,
    pixel_features,
    tsne,
)
from engine.visualize.figures import colormap


def vit_extractor(size: int = 16) -> FeatureExtractor:
    torch.manual_seed(0)
    return FeatureExtractor(build_backbone("vit_tiny", size, depth=2), source="tiny vit")


def images(n: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, size, size, generator=g) * 255).to(torch.uint8)


def png_digest(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return hashlib.sha256(buf.getvalue()).hexdigest()


# ---- attention -------------------------------------------------------------------------------


def test_attention_maps_sum_to_one_and_mass_mask_is_minimal():
    ex = vit_extractor()
    maps = cls_attention_maps(ex, images())
    assert maps.shape == (3, 3, 4, 4)  # 3 heads, 4x4 patches
    torch.testing.assert_close(maps.sum((-2, -1)), torch.ones(3, 3))
    keep = mass_mask(maps, 0.6)
    kept = (maps * keep).sum((-2, -1))
    assert (kept >= 0.6 - 1e-6).all()
    # minimal: dropping the weakest kept patch falls below 60%
    weakest = torch.where(keep, maps, torch.full_like(maps, float("inf"))).flatten(2).min(-1).values
    assert (kept - weakest < 0.6).all()
    # hand example: shares 0.5, 0.3, 0.1, 0.1 -> keep the top two (0.8 >= 0.6; 0.5 alone is not)
    m = mass_mask(torch.tensor([[0.1, 0.5], [0.3, 0.1]]), 0.6)
    assert m.tolist() == [[False, True], [True, False]]


def test_attention_figure_is_deterministic_and_titled():
    ex = vit_extractor()
    a = attention_figure(ex, images(), names=["a", "b", "c"])
    b = attention_figure(ex, images(), names=["a", "b", "c"])
    assert png_digest(a) == png_digest(b)
    assert a.width > 3 * 128 and a.height > 3 * 128
    arrays = attention_arrays(ex, images())
    assert arrays["heads"].shape == (3, 3, 4, 4) and arrays["mask"].dtype == bool


def test_attention_needs_a_vit():
    ex = FeatureExtractor(build_backbone("resnet18", 16), source="resnet")
    with pytest.raises(UserError, match="ViT"):
        cls_attention_maps(ex, images())


# ---- PCA -------------------------------------------------------------------------------------


def test_pca_of_identical_images_is_identical_and_deterministic():
    ex = vit_extractor()
    imgs = images(2)
    same = torch.cat([imgs[:1], imgs[:1], imgs[1:]])
    rgb, fg = pca_images(ex.dense(same).float())
    assert np.array_equal(rgb[0], rgb[1]) and np.array_equal(fg[0], fg[1])
    rgb2, _ = pca_images(ex.dense(same).float())
    assert np.array_equal(rgb, rgb2)
    assert rgb.min() >= 0 and rgb.max() <= 1
    assert png_digest(pca_figure(ex, same)) == png_digest(pca_figure(ex, same))


def test_pca_separates_a_central_object_from_background():
    """Dense features: background patches near one vector, a central square near another."""
    g = torch.Generator().manual_seed(0)
    b, c, h, w = 4, 32, 8, 8
    bg, obj = torch.randn(c, generator=g), torch.randn(c, generator=g)
    dense = bg.view(1, c, 1, 1) + 0.1 * torch.randn(b, c, h, w, generator=g)
    truth = torch.zeros(b, h, w, dtype=torch.bool)
    truth[:, 2:6, 3:7] = True
    dense[:, :, 2:6, 3:7] += (obj - bg).view(1, c, 1, 1)
    _, fg = pca_images(dense)
    assert np.array_equal(fg, truth.numpy())  # the border rule picks the object side
    pca = fit_patch_pca(dense, foreground="all")
    assert pca.foreground(dense.permute(0, 2, 3, 1).reshape(-1, c)).all()


# ---- convolutional attention -----------------------------------------------------------------


def test_conv_attention_is_activation_energy_per_stage():
    torch.manual_seed(0)
    ex = FeatureExtractor(build_backbone("resnet18", 16), source="resnet").to("cpu")
    imgs = images(2)
    maps = activation_attention(ex, imgs, p=2)
    assert [m.shape[-1] for m in maps] == [16, 8, 4, 2]  # small-stem ResNet stages
    with torch.no_grad():
        a = ex.backbone.stages(ex.prepare(imgs))[2]
    energy = a.pow(2).sum(1)
    torch.testing.assert_close(maps[1], energy / energy.flatten(1).max(1).values[:, None, None])
    assert all(float(m.max()) == pytest.approx(1.0) for m in maps)
    fig = conv_attention_figure(ex, imgs)
    assert fig.width > 5 * 128
    with pytest.raises(UserError, match="convolutional"):
        activation_attention(vit_extractor(), imgs)


# ---- neighbours ------------------------------------------------------------------------------


def test_nearest_neighbours_exclude_self_and_pixel_space_groups_colours():
    db = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    idx, sim = nearest_neighbours(db[:2], db, 2, exclude=torch.tensor([0, 1]))
    assert idx.tolist() == [[1, 2], [0, 2]] and sim[0, 0] > sim[0, 1]
    red = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    red[:, 0] = 200
    red[1, :, :4] = 60  # same colour family, different layout
    blue = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    blue[:, 2] = 200
    blue[1, :, 4:] = 60
    database = torch.cat([red, blue])
    idx, _ = nearest_neighbours(
        pixel_features(database[:1]), pixel_features(database), 2, exclude=torch.tensor([0])
    )
    assert set(idx[0].tolist()) <= {1, 2}


def test_neighbours_figure_with_labels_renders():
    ex = vit_extractor()
    db = images(6, seed=1)
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    fig = neighbours_figure(
        ex, db[:2], db, 2, labels[:2], labels, torch.tensor([0, 1]), ["a", "b"], cell=48
    )
    assert fig.width >= 5 * 48 and fig.height > 2 * 48


# ---- embedding -------------------------------------------------------------------------------


def test_tsne_separates_clusters_and_pca_finds_the_main_axis():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 20, generator=g) * 8
    x = torch.cat([c + torch.randn(40, 20, generator=g) for c in centres])
    labels = torch.arange(3).repeat_interleave(40)
    y, kl = tsne(x, perplexity=15, iterations=400)
    assert y.shape == (120, 2) and np.isfinite(kl) and kl < 2.0
    d = torch.cdist(y, y)
    d.fill_diagonal_(float("inf"))
    assert (labels[d.argmin(1)] == labels).float().mean() == 1.0  # 1-NN in 2-D keeps the clusters
    y2, _ = tsne(x, perplexity=15, iterations=400)
    assert torch.equal(y, y2)  # deterministic
    line = torch.stack([torch.linspace(-5, 5, 50), 0.01 * torch.randn(50, generator=g)], 1)
    p = pca_2d(line)
    assert p[:, 0].var() > 100 * p[:, 1].var()
    fig = embedding_figure(x, labels, ["a", "b", "c"], perplexity=15)
    assert fig.width > 2 * 400


def test_colormap_is_monotone_in_luminance():
    c = colormap(np.linspace(0, 1, 9), 0, 1, "inferno").astype(float)
    lum = c @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.diff(lum) > 0)


# ---- reconstructions and the CLI -------------------------------------------------------------


@pytest.fixture
def mae_run(shapes_dir, tmp_path):
    import engine.methods.mae as mae_mod
    from engine.data import ImageFolderDataset
    from engine.trainer import Trainer
    from tests.engine.method_runs import tiny_run

    torch.manual_seed(0)
    decoder = {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2}
    cfg = tiny_run("mae", shapes_dir, tmp_path / "run", 2, decoder, {"lr": 1e-3}, batch_size=8)
    method = mae_mod.MAE(
        build_backbone("vit_tiny", 16, depth=2), 16, mae_mod.MAEConfig(**cfg.method_args)
    )
    run = tmp_path / "run"
    Trainer(cfg, method, ImageFolderDataset(shapes_dir, 16), run).fit()
    return run


def test_mae_reconstructions_paste_visible_patches_exactly(mae_run, shapes_dir):
    from engine.build import load_method
    from engine.data import list_images, load_images
    from engine.visualize.reconstructions import mae_figure, mae_reconstructions

    mae, _cfg = load_method(mae_run)
    imgs = load_images(list_images(shapes_dir)[:3], 16)
    r = mae_reconstructions(mae, imgs, seed=1)
    m = r["mask"].repeat(4, 1).repeat(4, 2)  # patch mask -> pixels
    assert r["mask"].mean() == pytest.approx(0.75)
    assert np.array_equal(r["pasted"][~m], r["original"][~m])
    assert np.array_equal(r["pasted"][m], r["reconstruction"][m])
    assert np.all(r["masked"][m] == 0.5)
    assert png_digest(mae_figure(mae, imgs, seed=1)) == png_digest(mae_figure(mae, imgs, seed=1))


def test_colorization_figure_shows_input_prediction_truth():
    cmod = pytest.importorskip("engine.methods.colorization")
    from engine.visualize.reconstructions import colorization_figure, colorization_predictions

    torch.manual_seed(0)
    model = cmod.Colorization(build_backbone("resnet18", 16), 16, cmod.ColorizationConfig())
    imgs = images(2)
    r = colorization_predictions(model, imgs)
    assert r["prediction"].shape == (2, 16, 16, 3)
    np.testing.assert_allclose(r["truth"], imgs.permute(0, 2, 3, 1).numpy() / 255, atol=1e-6)
    assert np.allclose(r["gray"][..., 0], r["gray"][..., 1], atol=1e-4)  # grey input
    assert colorization_figure(model, imgs).height > 2 * 128


def run_cli(*argv: str) -> int:
    from app.commands import visualize

    parser = argparse.ArgumentParser()
    visualize.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["visualize", *argv])
    return args.func(args)


def test_cli_writes_each_figure_into_the_run(mae_run, shapes_dir, tmp_path):
    common = ["--checkpoint", str(mae_run), "--images", str(shapes_dir), "--max-images", "4"]
    for kind in ("attention", "pca", "reconstruction"):
        assert run_cli(kind, *common) == 0
        im = Image.open(mae_run / "figures" / f"{kind}.png")
        assert im.width > 300 and im.height > 200
    assert (
        run_cli(
            "neighbours",
            *common[:4],
            "--max-images",
            "2",
            "--database",
            str(shapes_dir),
            "--k",
            "2",
        )
        == 0
    )
    assert (
        run_cli("embedding", *common[:4], "--out", str(tmp_path / "emb.png"), "--methods", "pca")
        == 0
    )
    assert (tmp_path / "emb.png").exists()
    with pytest.raises(UserError, match="convolutional"):
        run_cli("convattn", *common)
    with pytest.raises(UserError, match="no such image"):
        run_cli(
            "attention", "--checkpoint", str(mae_run), "--images", str(tmp_path / "missing.jpg")
        )
    export = tmp_path / "model.safetensors"
    from engine.features import export_backbone, load_feature_extractor

    export_backbone(load_feature_extractor(mae_run), export)
    with pytest.raises(UserError, match="--out"):
        run_cli("attention", "--checkpoint", str(export), "--images", str(shapes_dir))
