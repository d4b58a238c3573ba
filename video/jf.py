"""DAVIS region similarity J and boundary F-measure, as defined by the DAVIS 2017 evaluation.

J = |pred ∩ gt| / |pred ∪ gt| (both empty -> 1).
F = 2PR / (P + R) between the one-pixel boundaries of pred and gt, where a boundary pixel counts
as matched when the other boundary lies within a disk of radius ceil(0.008 * image diagonal).
Per sequence, as davis2017-evaluation's semi-supervised task (davis2017/evaluation.py,
DAVISEvaluation.evaluate): the ground truth is cut to frames [1:-1] (`all_gt_masks[:, 1:-1]`,
the first frame is given and the last is dropped too) and scored with `void_pixels=None`
(`_evaluate_semisupervised(all_gt_masks, all_res_masks, None, metric)`), so void (255) pixels
are plain background; objects are 1..max id of the first ground-truth frame (davis.py,
get_all_masks); each object's mean over the scored frames (np.nanmean: NaN for a sequence of 2
frames or fewer, which has none), then the mean over objects. `region_j` / `boundary_f` still
take a void mask for other uses.
"""

from __future__ import annotations

import math

import numpy as np

BOUND_TH = 0.008


def region_j(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> float:
    pred, gt = pred.astype(bool), gt.astype(bool)
    if void is not None:
        keep = ~void.astype(bool)
        pred, gt = pred & keep, gt & keep
    union = np.logical_or(pred, gt).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, gt).sum() / union)


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary: pixels that differ from their right, lower or lower-right
    neighbour (the last row/column compare only along the image edge), as DAVIS's seg2bmap
    does for a map of the mask's own size."""
    m = mask.astype(bool)
    right = np.zeros_like(m)
    down = np.zeros_like(m)
    diag = np.zeros_like(m)
    right[:, :-1] = m[:, 1:]
    down[:-1, :] = m[1:, :]
    diag[:-1, :-1] = m[1:, 1:]
    b = (m ^ right) | (m ^ down) | (m ^ diag)
    b[-1, :] = m[-1, :] ^ right[-1, :]
    b[:, -1] = m[:, -1] ^ down[:, -1]
    b[-1, -1] = False
    return b


def disk(radius: int) -> np.ndarray:
    """Binary disk structuring element: offsets with dx^2 + dy^2 <= r^2."""
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y <= r * r).astype(np.uint8)


def _dilate(b: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    return cv2.dilate(b.astype(np.uint8), disk(radius)).astype(bool)


def boundary_f(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH
) -> float:
    pred, gt = pred.astype(bool), gt.astype(bool)
    if void is not None:
        keep = ~void.astype(bool)
        pred, gt = pred & keep, gt & keep
    h, w = gt.shape
    r = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(h, w))
    bp, bg = boundary_map(pred), boundary_map(gt)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:  # P = 1, R = 0 or P = 0, R = 1: F = 0
        return 0.0
    precision = float((bp & _dilate(bg, r)).sum() / n_p)
    recall = float((bg & _dilate(bp, r)).sum() / n_g)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def evaluate_sequence(
    preds: list[np.ndarray] | np.ndarray,
    gts: list[np.ndarray] | np.ndarray,
    objects: list[int] | None = None,
    skip_first_last: bool = True,
) -> dict:
    """J, F and J&F of one sequence from id maps (uint8 [H, W] per frame), as the DAVIS 2017
    semi-supervised evaluation (see the module docstring): frames [1:-1], no void mask.

    Objects default to 1..max id of the first ground-truth frame (255 read as 0). Returns
    per-object means and the sequence means {"J", "F", "J&F", "objects": {id: {"J", "F"}},
    "frames": n}; NaN when no frame is scored (2 frames or fewer)."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predicted frames vs {len(gts)} ground-truth frames")
    if objects is None:
        first = np.where(np.asarray(gts[0]) == 255, 0, np.asarray(gts[0]))
        objects = list(range(1, int(first.max()) + 1))
    frames = range(1, len(gts) - 1) if skip_first_last else range(len(gts))
    per_obj = {}
    for o in objects:
        js = [region_j(preds[t] == o, gts[t] == o) for t in frames]
        fs = [boundary_f(preds[t] == o, gts[t] == o) for t in frames]
        per_obj[o] = {
            "J": float(np.mean(js)) if js else float("nan"),
            "F": float(np.mean(fs)) if fs else float("nan"),
        }
    return {**mean_over_objects([per_obj]), "objects": per_obj, "frames": len(frames)}


def mean_over_objects(per_sequence_objects: list[dict]) -> dict[str, float]:
    """{"J", "F", "J&F"}: means over every object of every sequence (each an evaluate_sequence
    "objects" dict), as DAVIS's global means; NaN when there is none."""
    objs = [v for objects in per_sequence_objects for v in objects.values()]
    j = float(np.mean([v["J"] for v in objs])) if objs else float("nan")
    f = float(np.mean([v["F"] for v in objs])) if objs else float("nan")
    return {"J": j, "F": f, "J&F": (j + f) / 2}
