"""Pixel correspondences between two images, and how well dense features find them.

Dense Object Nets learns from known correspondences; this module makes them and scores them:
- random homographies (a warped copy of an image: every pixel's match is known exactly),
- optical flow between consecutive video frames (OpenCV's Farneback), kept only where the
  forward and backward flows agree (Sundaram et al.'s check, as used for flow-based tracking),
- PCK: the fraction of query points whose nearest-descriptor match in the other image lies
  within a threshold (in pixels) of the true match.

Points are (x, y) in pixels, pixel centres at integer + 0.5 (grid_sample, align_corners=False).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PCK_THRESHOLDS = (1.0, 2.0, 4.0, 8.0)


# ---- homographies -------------------------------------------------------------------------
def random_homographies(
    n: int, strength: float, max_rotation: float, generator: torch.Generator, device="cpu"
) -> Tensor:
    """[n, 3, 3] maps from the warped image's normalised coordinates ([-1, 1]) to the source's:
    a rotation by up to `max_rotation` degrees, then each corner moved by up to `strength`
    (a fraction of the half-width), so both perspective and scale change."""
    corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], device=device)
    u = torch.rand(n, 5, 2, generator=generator, device=generator.device).to(device)
    angle = (u[:, 4, 0] * 2 - 1) * max_rotation * torch.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    src = torch.einsum("nij,kj->nki", rot, corners) + (u[:, :4] * 2 - 1) * strength
    return homography_from_points(corners.expand(n, 4, 2), src)


def homography_from_points(dst: Tensor, src: Tensor) -> Tensor:
    """The [n, 3, 3] H with H (dst, 1) ~ (src, 1) for 4 point pairs each (the DLT, h33 = 1)."""
    x, y = dst[..., 0], dst[..., 1]
    u, v = src[..., 0], src[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)  # [n, 8, 8]
    b = torch.cat([u, v], 1)  # [n, 8]
    h = torch.linalg.solve(a.double(), b.double()).to(dst.dtype)
    return torch.cat([h, torch.ones_like(h[:, :1])], 1).view(-1, 3, 3)


def apply_homography(h: Tensor, pts: Tensor) -> Tensor:
    """pts [n, P, 2] normalised coordinates -> H pts, dehomogenised."""
    p = torch.cat([pts, torch.ones_like(pts[..., :1])], -1) @ h.transpose(1, 2)
    return p[..., :2] / p[..., 2:].clamp(min=1e-8)


def to_normalised(pts: Tensor, hw: tuple[int, int]) -> Tensor:
    h, w = hw
    scale = pts.new_tensor([2.0 / w, 2.0 / h])
    return pts * scale - 1


def to_pixels(pts: Tensor, hw: tuple[int, int]) -> Tensor:
    h, w = hw
    return (pts + 1) * pts.new_tensor([w / 2.0, h / 2.0])


def pixel_grid(hw: tuple[int, int], device="cpu") -> Tensor:
    """[H*W, 2] pixel centres (x, y), row-major."""
    h, w = hw
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"
    )
    return torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5


def warp_by_homography(images: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """(warped [n, C, H, W], valid [n, H, W]): each warped pixel samples the source at H(p);
    valid where that lies inside the source."""
    n, _, hh, ww = images.shape
    grid = to_normalised(pixel_grid((hh, ww), images.device), (hh, ww)).expand(n, -1, -1)
    src = apply_homography(h, grid)
    warped = F.grid_sample(
        images, src.view(n, hh, ww, 2), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    valid = (src.abs() <= 1).all(-1).view(n, hh, ww)
    return warped, valid


def homography_pairs(
    images: Tensor, h: Tensor
) -> tuple[Tensor, Tensor, Callable[[Tensor], Tensor]]:
    """(warped images, valid [n, H, W], match(pts) -> source pixels of warped-image pixels)."""
    hw = tuple(images.shape[-2:])
    warped, valid = warp_by_homography(images, h)

    def match(pts: Tensor) -> Tensor:
        return to_pixels(apply_homography(h, to_normalised(pts, hw)), hw)

    return warped, valid, match


# ---- optical flow -------------------------------------------------------------------------
def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow [H, W, 2] from uint8 gray a to b; window scaled to the image (15 px at 240p)."""
    import cv2

    win = max(5, round(15 * min(a.shape) / 240) | 1)
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, win, 3, 5, 1.1, 0)


def consistent_flow(frame_a: np.ndarray, frame_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flow a->b [H, W, 2], valid [H, W]) for uint8 RGB frames: valid where the target lies in
    the frame and the backward flow returns to the start, |w + w_back|^2 < 0.01 (|w|^2 +
    |w_back|^2) + 0.5 (Sundaram, Brox and Keutzer 2010)."""
    import cv2

    ga = cv2.cvtColor(np.ascontiguousarray(frame_a), cv2.COLOR_RGB2GRAY)
    gb = cv2.cvtColor(np.ascontiguousarray(frame_b), cv2.COLOR_RGB2GRAY)
    fwd, bwd = farneback(ga, gb), farneback(gb, ga)
    h, w = ga.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    tx, ty = xs + fwd[..., 0], ys + fwd[..., 1]
    back = cv2.remap(bwd, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = ((fwd + back) ** 2).sum(-1)
    bound = 0.01 * ((fwd**2).sum(-1) + (back**2).sum(-1)) + 0.5
    inside = (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)
    return fwd, (err < bound) & inside


def flow_pairs(frames_a: Tensor, frames_b: Tensor) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """(valid [n, H, W], match(pts) -> pixels in b) for uint8 frames [n, 3, H, W]: flow
    correspondences from a to b, read at the nearest pixel of each point."""
    flows, valids = [], []
    for a, b in zip(frames_a, frames_b, strict=True):
        f, v = consistent_flow(a.permute(1, 2, 0).cpu().numpy(), b.permute(1, 2, 0).cpu().numpy())
        flows.append(torch.from_numpy(f))
        valids.append(torch.from_numpy(v))
    flow = torch.stack(flows).to(frames_a.device)  # [n, H, W, 2]
    w = flow.shape[2]

    def match(pts: Tensor) -> Tensor:
        ix = pts.floor().long()
        idx = (ix[..., 1] * w + ix[..., 0]).clamp(0, flow.shape[1] * w - 1)
        return pts + torch.gather(flow.flatten(1, 2), 1, idx[..., None].expand(-1, -1, 2))

    return torch.stack(valids).to(frames_a.device), match


def sample_valid_pixels(valid: Tensor, u: Tensor) -> Tensor:
    """Pixel centres [n, P, 2] drawn uniformly among each image's valid pixels, by inverting the
    cumulative count with uniforms u [n, P] (so the draw is a function of u alone). An image
    without valid pixels gets its last pixel; callers weight it out."""
    n, h, w = valid.shape
    cum = valid.flatten(1).long().cumsum(1)  # [n, H*W]
    total = cum[:, -1:].clamp(min=1)
    target = (u * total).floor().long().clamp(max=total - 1) + 1
    idx = torch.searchsorted(cum, target).clamp(max=h * w - 1)
    return torch.stack([idx % w, idx // w], -1).float() + 0.5


# ---- evaluation ---------------------------------------------------------------------------
def descriptors_at_pixels(dense: Tensor, hw: tuple[int, int]) -> Tensor:
    """A feature map [B, C, h, w] upsampled bilinearly to the image (as Dense Object Nets reads
    its descriptors): [B, H*W, C]."""
    up = F.interpolate(dense.float(), size=hw, mode="bilinear", align_corners=False)
    return up.flatten(2).transpose(1, 2)


def sample_descriptors(dense: Tensor, pts: Tensor, hw: tuple[int, int]) -> Tensor:
    """Descriptors [B, P, C] at sub-pixel points [B, P, 2] of an image of size hw."""
    grid = to_normalised(pts, hw)[:, :, None]  # [B, P, 1, 2]
    out = F.grid_sample(dense, grid.to(dense.dtype), mode="bilinear", align_corners=False)
    return out[..., 0].transpose(1, 2)


@torch.no_grad()
def nearest_matches(dense_a: Tensor, dense_b: Tensor, pts_a: Tensor, hw: tuple[int, int]) -> Tensor:
    """For query pixels pts_a [B, P, 2] in image a, the pixel of image b whose descriptor is
    nearest in L2 (the paper's best match): [B, P, 2]."""
    da = sample_descriptors(dense_a.float(), pts_a, hw)
    db = descriptors_at_pixels(dense_b, hw)
    idx = torch.cdist(da, db).argmin(-1)
    return pixel_grid(hw, idx.device)[idx]


def pck(
    pred: Tensor, true: Tensor, thresholds: Sequence[float] = PCK_THRESHOLDS
) -> dict[str, float]:
    """{"pck@T": fraction of points within T pixels, ..., "median_px": median error}."""
    err = (pred.float() - true.float()).norm(dim=-1).flatten()
    out = {f"pck@{t:g}": float((err <= t).float().mean()) for t in thresholds}
    out["median_px"] = float(err.median()) if err.numel() else float("nan")
    return out


def warped_pair_set(
    images: Tensor, seed: int = 0, points: int = 64, strength: float = 0.2, max_rotation: float = 20
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Held-out evaluation pairs, the same for every model: (warped uint8 [n,3,H,W], source
    uint8, query pixels in the warped image [n, P, 2], their true pixels in the source)."""
    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    h = random_homographies(n, strength, max_rotation, g)
    warped, valid, match = homography_pairs(images.float(), h)
    # a margin of 2 px inside the valid area, so no query sits on the black border's blur
    valid = -F.max_pool2d(-valid[:, None].float(), 5, 1, 2)[:, 0] > 0.5
    q = sample_valid_pixels(valid, torch.rand(n, points, generator=g))
    return warped.round().clamp(0, 255).to(torch.uint8), images, q, match(q)


@torch.no_grad()
def correspondence_pck(
    features: Callable[[Tensor], Tensor],
    images: Tensor,
    seed: int = 0,
    points: int = 64,
    batch: int = 16,
    thresholds: Sequence[float] = PCK_THRESHOLDS,
) -> dict[str, float]:
    """PCK of nearest-descriptor matching on warped copies of uint8 images [n, 3, H, W], for any
    dense feature source (a callable uint8 images -> [B, C, h, w])."""
    warped, source, q, true = warped_pair_set(images, seed, points)
    hw = tuple(images.shape[-2:])
    preds = []
    for i in range(0, len(images), batch):
        fa, fb = features(warped[i : i + batch]), features(source[i : i + batch])
        preds.append(nearest_matches(fa.cpu(), fb.cpu(), q[i : i + batch], hw))
    return pck(torch.cat(preds), true, thresholds) | {"pairs": len(images), "points": points}


def folder_images(folder: str | Path, size: int, limit: int = 200) -> Tensor:
    """Up to `limit` images under a folder (sorted, evenly spread), uint8 [n, 3, size, size]."""
    from engine.errors import UserError
    from engine.media.files import walk
    from engine.media.images import load_images

    files = walk([folder])
    if not files:
        raise UserError(f"{folder}: no images found")
    pick = np.linspace(0, len(files) - 1, min(limit, len(files))).round().astype(int)
    return load_images([files[i] for i in sorted(set(pick))], size)


def keypoint_tracking_pck(
    features: Callable[[Tensor], Tensor],
    video: str | Path,
    truth_csv: str | Path,
    cfg=None,
    impl: str = "local",
    device="cpu",
    thresholds: Sequence[float] = PCK_THRESHOLDS,
) -> dict[str, float]:
    """PCK of keypoints propagated from the first frame (the project's label propagation of
    Gaussian heatmaps) against ground-truth tracks, over every later frame."""
    from engine.errors import UserError
    from video.io import open_video
    from video.pipeline import read_keypoints_csv
    from video.propagation import propagate_keypoints

    truth = torch.tensor(read_keypoints_csv(truth_csv)["frames"])  # [T, P, 2]
    with open_video(video) as reader:
        if len(reader) != len(truth):
            raise UserError(f"{truth_csv}: {len(truth)} frames of tracks for {len(reader)} frames")
        preds = list(
            propagate_keypoints(
                iter(reader), truth[0].numpy(), features, cfg, impl=impl, device=device
            )
        )
    pred = torch.from_numpy(np.stack(preds[1:]))
    return pck(pred, truth[1:], thresholds) | {"frames": len(truth), "points": truth.shape[1]}
