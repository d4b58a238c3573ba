"""J and F against hand-made cases, and the DAVIS conventions (tolerance, first/last frames)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from video.jf import boundary_f, boundary_map, disk, evaluate_sequence, region_j


def square(h=100, w=100, y=20, x=30, s=40):
    m = np.zeros((h, w), bool)
    m[y : y + s, x : x + s] = True
    return m


def brute_f(pred, gt, r):
    """F from the definition: a boundary pixel is matched if the other boundary has a pixel
    within Euclidean distance r (independent of the dilation code)."""
    bp, bg = np.argwhere(boundary_map(pred)), np.argwhere(boundary_map(gt))
    d = np.sqrt(((bp[:, None, :] - bg[None, :, :]) ** 2).sum(-1))
    p, rc = (d.min(1) <= r).mean(), (d.min(0) <= r).mean()
    return 2 * p * rc / (p + rc) if p + rc else 0.0


def test_perfect_and_empty():
    g = square()
    assert region_j(g, g) == 1.0 and boundary_f(g, g) == 1.0
    empty = np.zeros_like(g)
    assert region_j(empty, g) == 0.0 and boundary_f(empty, g) == 0.0
    assert region_j(g, empty) == 0.0 and boundary_f(g, empty) == 0.0
    assert (
        region_j(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    )  # DAVIS: both empty = 1


def test_shifted_square_by_hand():
    g = square()
    # shift right by 3: intersection 37x40, union 43x40
    assert region_j(np.roll(g, 3, 1), g) == pytest.approx(37 / 43)
    # tolerance on a 100x100 image: ceil(0.008 * sqrt(2) * 100) = 2 pixels
    assert math.ceil(0.008 * math.hypot(100, 100)) == 2
    assert boundary_f(np.roll(g, 2, 1), g) == 1.0  # within tolerance everywhere
    f3 = boundary_f(np.roll(g, 3, 1), g)
    assert f3 == pytest.approx(brute_f(np.roll(g, 3, 1), g, 2))
    assert 0.4 < f3 < 0.7  # the vertical sides (half the boundary) are 3 px apart: unmatched
    far = np.roll(g, 50, 0)  # disjoint, boundaries > 2 px apart except nothing
    assert region_j(far, g) == 0.0 and boundary_f(far, g) == 0.0


def test_boundary_map_hand_case():
    m = np.zeros((5, 5), bool)
    m[1:3, 1:3] = True
    b = boundary_map(m)
    # pixels differing from their right/lower/lower-right neighbour
    expected = np.array(
        [
            [1, 1, 1, 0, 0],
            [1, 0, 1, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0],
        ],
        bool,
    )
    assert np.array_equal(b, expected)
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


def test_void_pixels_are_ignored():
    g = square()
    pred = g.copy()
    pred[:10] = True  # wrong rows, but declared void
    void = np.zeros_like(g)
    void[:10] = True
    assert region_j(pred, g, void) == 1.0 and boundary_f(pred, g, void) == 1.0


def test_sequence_excludes_first_and_last_frames():
    g = square().astype(np.uint8)
    gts = [g * 1 for _ in range(5)]
    preds = [g * 1 for _ in range(5)]
    preds[0] = np.zeros_like(g)  # first and last frames are not scored
    preds[4] = np.zeros_like(g)
    res = evaluate_sequence(preds, gts)
    assert res["J"] == 1.0 and res["F"] == 1.0 and res["frames"] == 3
    preds[2] = np.roll(g, 3, 1)
    res = evaluate_sequence(preds, gts)
    assert res["J"] == pytest.approx((1 + 37 / 43 + 1) / 3)


def test_objects_are_scored_separately_then_averaged():
    g = np.zeros((60, 60), np.uint8)
    g[5:25, 5:25] = 1
    g[30:50, 30:50] = 2
    p = g.copy()
    p[p == 2] = 0  # object 2 missed entirely
    res = evaluate_sequence([g, p, g], [g, g, g])
    assert res["objects"][1]["J"] == 1.0 and res["objects"][2]["J"] == 0.0
    assert res["J"] == 0.5 and res["F"] == 0.5 and res["J&F"] == 0.5


def test_sequence_scores_void_as_background_as_davis2017_evaluation():
    """davis2017-evaluation, evaluation.py: semi-supervised sequences are scored on
    all_gt_masks[:, 1:-1] with _evaluate_semisupervised(..., None, metric), i.e. no void mask."""
    g = np.zeros((20, 20), np.uint8)
    g[5:15, 5:15] = 1  # a 10 x 10 object
    g_void = g.copy()
    g_void[15, 5:15] = 255  # a void row just below it
    p = np.zeros_like(g)
    p[5:16, 5:15] = 1  # the prediction also covers the void row: 110 pixels
    res = evaluate_sequence([g, p, g], [g, g_void, g])
    # by hand: intersection 100, union 110 (the void row counts as background); the boundaries
    # (bottom edge one row lower) lie within the 1-px tolerance of each other: F = 1
    assert res["frames"] == 1 and res["objects"][1]["J"] == pytest.approx(100 / 110)
    assert res["F"] == 1.0 and res["J&F"] == pytest.approx((100 / 110 + 1) / 2)


def test_sequences_of_two_frames_or_fewer_have_no_score():
    g = square().astype(np.uint8)
    for n in (1, 2):
        res = evaluate_sequence([g] * n, [g] * n)
        assert res["frames"] == 0 and np.isnan(res["J"]) and np.isnan(res["J&F"])


def test_objects_come_from_the_first_ground_truth_frame():
    g0 = np.zeros((20, 20), np.uint8)
    g0[2:8, 2:8], g0[10:18, 10:18] = 1, 2
    g1 = g0.copy()
    g1[10:18, 10:18] = 0  # object 2 gone from the middle frame: it still counts (J = 1 there)
    res = evaluate_sequence([g0, g1, g0], [g0, g1, g0])
    assert sorted(res["objects"]) == [1, 2] and res["J"] == 1.0
