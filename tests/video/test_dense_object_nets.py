"""Dense Object Nets: the pixel-wise contrastive loss by hand, the correspondences it learns from
(homographies, forward-backward-checked Farneback flow), PCK, the sample's keypoint tracks, a
tiny run whose loss falls, and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import video.methods  # noqa: F401
from engine.build import train
from tests.engine.method_runs import assert_stop_and_resume_replay, step_values, tiny_run
from video import correspondence as corr
from video.methods.dense_object_nets import pixelwise_contrastive_loss


def test_pixelwise_contrastive_loss_by_hand():
    da = torch.zeros(1, 1, 2)
    db = torch.tensor([[[0.3, 0.4]]])  # ||da - db|| = 0.5, squared 0.25
    dneg = torch.tensor([[[[0.3, 0.0], [0.6, 0.0], [0.1, 0.0]]]])  # distances 0.3, 0.6, 0.1
    ok = torch.tensor([[[True, True, False]]])  # the third lies too near the match
    total, match, nonmatch = pixelwise_contrastive_loss(da, db, dneg, torch.ones(1), ok, margin=0.5)
    assert match.item() == pytest.approx(0.25)
    # hinge (0.5 - 0.3)^2 = 0.04 for the one hard negative; 0.6 is beyond the margin, 0.1 masked
    assert nonmatch.item() == pytest.approx(0.04)
    assert total.item() == pytest.approx(0.29)
    # a pair without correspondences (weight 0) adds nothing
    two = pixelwise_contrastive_loss(
        torch.cat([da, da]),
        torch.cat([db, db + 5]),
        torch.cat([dneg, dneg]),
        torch.tensor([1.0, 0.0]),
        torch.cat([ok, ok]),
        0.5,
    )
    assert two[1].item() == pytest.approx(0.25) and two[2].item() == pytest.approx(0.04)


def _texture(h: int = 48, w: int = 48, seed: int = 0) -> torch.Tensor:
    """A smooth random RGB image, uint8 [1, 3, h, w]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 6, w // 6, generator=g)
    img = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def test_homography_fits_its_points_and_its_matches_show_the_same_colour():
    dst = torch.tensor([[[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]])
    src = dst + torch.tensor([[[0.1, 0.0], [0.0, -0.1], [-0.2, 0.1], [0.05, 0.05]]])
    h = corr.homography_from_points(dst, src)
    assert torch.allclose(corr.apply_homography(h, dst), src, atol=1e-5)
    img = _texture()
    warped, valid, match = corr.homography_pairs(img.float(), h)
    pts = corr.sample_valid_pixels(
        valid, torch.rand(1, 50, generator=torch.Generator().manual_seed(1))
    )
    assert valid[0, pts[0, :, 1].long(), pts[0, :, 0].long()].all()
    here = corr.sample_descriptors(warped, pts, (48, 48))
    there = corr.sample_descriptors(img.float(), match(pts), (48, 48))
    assert (here - there).abs().max() < 2.0  # same colour up to bilinear rounding


def test_flow_correspondences_recover_a_known_shift():
    big = _texture(64, 64, seed=3)[0].permute(1, 2, 0).numpy()
    a, b = big[8:56, 8:56], big[6:54, 5:53]  # b is a moved 3 px right and 2 px down
    flow, valid = corr.consistent_flow(a, b)
    inner = valid[12:-12, 12:-12]
    assert inner.mean() > 0.9
    med = np.median(flow[12:-12, 12:-12][inner], axis=0)
    assert med == pytest.approx([3.0, 2.0], abs=0.3)


def test_valid_pixels_are_drawn_only_where_valid():
    valid = torch.zeros(2, 4, 4, dtype=torch.bool)
    valid[0, 1, 2] = valid[0, 3, 0] = True
    pts = corr.sample_valid_pixels(valid, torch.tensor([[0.1, 0.9], [0.3, 0.7]]))
    assert pts[0].tolist() == [[2.5, 1.5], [0.5, 3.5]]
    assert pts[1].tolist() == [
        [3.5, 3.5],
        [3.5, 3.5],
    ]  # nothing valid: the last pixel, weighted out


def test_pck_by_hand():
    pred = torch.tensor([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    res = corr.pck(pred, torch.zeros(3, 2), thresholds=(1, 5))
    assert res["pck@1"] == pytest.approx(1 / 3) and res["pck@5"] == pytest.approx(2 / 3)
    assert res["median_px"] == pytest.approx(5.0)


def test_raw_pixels_find_matches_on_warped_texture():
    """The evaluation itself: a stride-1 Lab descriptor matches a strongly textured image's
    warped pairs far above what a random guess would (PCK@2 of a random pixel ~ 0.5%)."""
    from video.features import LabFeatures

    imgs = torch.cat([_texture(32, 32, seed=s) for s in range(4)])
    res = corr.correspondence_pck(LabFeatures(stride=1), imgs, points=32)
    assert res["pck@2"] > 0.3, res


def test_sample_tracks_follow_their_objects(sample, sample_masks_dir):
    from video.masks import read_mask
    from video.pipeline import read_keypoints_csv
    from video.sample import keypoints_path

    tracks = read_keypoints_csv(keypoints_path(sample))
    xy, objects = np.array(tracks["frames"]), tracks["objects"]
    masks = sorted(sample_masks_dir.glob("*.png"))
    assert xy.shape == (len(masks), 9, 2) and sorted(set(objects)) == [0, 1, 2]
    for t in (0, len(masks) // 2, len(masks) - 1):
        m = read_mask(masks[t])[0]
        for k, (x, y) in enumerate(xy[t]):
            assert m[int(y), int(x)] == objects[k]
    moved = np.abs(xy[len(masks) // 2] - xy[0]).max(1)
    assert (moved > 5).sum() >= 6  # objects and the panning background move


def _cfg(data, run, steps, **kw):
    return tiny_run(
        "dense_object_nets", data, run, steps, {"matches": 64, "nonmatches_per_match": 8},
        image_size=32, batch_size=8, **kw,
    )  # fmt: skip


def test_loss_falls_on_the_sample_video(sample, tmp_path):
    data = sample / "JPEGImages" / "480p"
    torch.manual_seed(0)
    train(_cfg(data, tmp_path / "run", 20, checkpoint_every=100), callbacks=())
    losses = step_values(tmp_path / "run")
    first, last = (
        np.mean([losses[s] for s in (1, 2, 3)]),
        np.mean([losses[s] for s in (14, 15, 16)]),
    )
    assert last < 0.8 * first, losses
    from engine.features import load_features

    feats = load_features(tmp_path / "run", "dense")
    out = feats(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert out.shape == (2, 32, 4, 4) and feats.stride == 8
    # the untrained baseline is rebuilt through the method: the same kind of extractor
    from engine.features import random_init_features

    base = random_init_features(tmp_path / "run", "dense")
    assert type(base) is type(feats) and base(torch.zeros(1, 3, 32, 32)).shape == (1, 32, 4, 4)
    assert not torch.equal(base.method.net.head.weight, feats.method.net.head.weight)
    # the Video page offers the run's descriptors as propagation features (dense, not global)
    from app.gui.paths import Settings, recent_models

    settings = Settings(tmp_path / "settings.json")
    settings.add_recent("runs", tmp_path / "run")
    assert recent_models(settings, "dense") == [str((tmp_path / "run").resolve())]
    assert recent_models(settings, "global") == []


def test_stop_and_resume_replays_exactly(sample, tmp_path):
    data = sample / "JPEGImages" / "480p"
    assert_stop_and_resume_replay(lambda run: _cfg(data, run, 4), tmp_path)
