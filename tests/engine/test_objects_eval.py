"""FG-ARI and mBO (engine/evaluation/objects.py) on hand-computed masks, the objects sample's
determinism and layout, and the evaluation loop on the sample and on DAVIS frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.evaluation.objects import (
    best_overlaps,
    data_kind,
    evaluate_slots,
    fg_ari,
    labels_from_masks,
    mbo,
)
from engine.objects_sample import objects_root, read_mask, render, sample_pairs


def t(xs):
    return torch.tensor(xs)


def test_perfect_split_scores_one_under_any_relabelling():
    true = t([0, 0, 1, 1, 2, 2, 3])
    pred = t([7, 7, 4, 4, 9, 9, 5])  # the same partition, other names (background too)
    assert fg_ari(pred, true) == pytest.approx(1.0)
    assert mbo(pred, true) == pytest.approx(1.0)


def test_fg_ari_by_hand():
    # foreground true [1,1,1,2,2,2], pred [1,1,2,2,3,3]; contingency rows (2,1,0), (0,1,2).
    # Pairs: sum C(n_ij,2) = 1+1 = 2; rows C(3,2)*2 = 6; columns C(2,2)*3 = 3; C(6,2) = 15.
    # expected = 6*3/15 = 1.2, max = (6+3)/2 = 4.5, ARI = (2-1.2)/(4.5-1.2) = 0.8/3.3.
    # The background pixels (true 0) are ignored whatever they are predicted as.
    true = t([0, 0, 1, 1, 1, 2, 2, 2])
    pred = t([1, 3, 1, 1, 2, 2, 3, 3])
    assert fg_ari(pred, true) == pytest.approx(0.8 / 3.3)
    # true [1,1,2,2], pred [1,1,1,2]: sum C = 1, rows 1+1 = 2, cols 3+0 = 3, C(4,2) = 6;
    # expected 2*3/6 = 1 = index, so ARI = 0 (chance level)
    assert fg_ari(t([1, 1, 1, 2]), t([1, 1, 2, 2])) == pytest.approx(0.0)


def test_fg_ari_degenerate_cases_score_one():
    # one true object and one predicted segment over it: denominator 0, OCLF's convention is 1
    assert fg_ari(t([0, 0, 0]), t([1, 1, 1])) == 1.0
    assert fg_ari(t([0, 1]), t([0, 0])) == 1.0  # no foreground at all


def test_mbo_by_hand():
    # object 1 = pixels 2..5; segment 5 covers 0..2 (IoU 1/6), segment 1 covers 3..5 (IoU 3/4);
    # object 2 = pixels 6..7, segment 2 exactly (IoU 1). mBO = (3/4 + 1) / 2.
    true = t([0, 0, 1, 1, 1, 1, 2, 2])
    pred = t([5, 5, 5, 1, 1, 1, 2, 2])
    assert best_overlaps(pred, true).tolist() == pytest.approx([0.75, 1.0])
    assert mbo(pred, true) == pytest.approx(0.875)
    assert np.isnan(mbo(pred, torch.zeros(8, dtype=torch.long)))  # no object: not scored


def test_labels_from_soft_masks_resize_then_argmax():
    m = torch.zeros(1, 2, 2, 2)
    m[0, 0] = torch.tensor([[0.9, 0.2], [0.6, 0.1]])
    m[0, 1] = 1 - m[0, 0]
    assert labels_from_masks(m, (2, 2))[0].tolist() == [[0, 1], [0, 1]]
    assert labels_from_masks(m, (4, 4)).shape == (1, 4, 4)


def test_objects_sample_is_deterministic_and_committed():
    pairs = sample_pairs()
    assert len(pairs) == 240 and all(i.is_file() and m.is_file() for i, m in pairs[::37])
    img, mask = render("val", 3)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert np.array_equal(mask, read_mask(objects_root() / "masks" / "val" / "obj_val_003.png"))
    k = int(mask.max())
    assert 2 <= k <= 4 and set(np.unique(mask).tolist()) == set(range(k + 1))
    assert data_kind(objects_root()) == "objects"


class OneSlot:
    """Every pixel in slot 0 of 3 (slots 1, 2 empty)."""

    image_size, num_slots = 32, 3

    def masks(self, images):
        out = torch.zeros(images.shape[0], 3, 4, 4)
        out[:, 0] = 1
        return out


def test_evaluate_one_slot_everywhere_on_the_objects_sample():
    # one segment over the image: FG-ARI 0 on every image (>= 2 objects in one predicted
    # cluster: index = expected = sum over objects of n_k(n_k-1) < max), mBO = object area / 64^2
    r = evaluate_slots(OneSlot(), objects_root(), "val")
    assert r["images"] == 40 and r["kind"] == "objects" and r["mask_size"] == 64
    assert r["fg_ari"] == pytest.approx(0.0, abs=1e-12)
    areas = []
    for _, m in sample_pairs(splits={"val": 40}):
        mask = read_mask(m)
        areas.append(np.mean([(mask == k).sum() / mask.size for k in range(1, mask.max() + 1)]))
    assert r["mbo"] == pytest.approx(float(np.mean(areas)))


def test_evaluate_on_davis_frames(shared_data):
    davis = shared_data / "davis2016-train-mini"
    if not davis.is_dir():
        pytest.skip(f"{davis} is absent")
    assert data_kind(davis) == "davis"
    r = evaluate_slots(OneSlot(), davis, every=40, mask_size=64)
    assert r["kind"] == "davis" and "fg_ari" not in r and r["images"] >= 5
    assert 0.0 < r["mbo"] < 1.0  # one segment: IoU = object area / frame area
