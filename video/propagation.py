"""Label propagation through a video with any dense feature extractor (the DINO / CRW protocol).

For each new frame t, its L2-normalised features attend to a context of the first frame and the
last `n_last` frames. For each target position, source positions outside a (2r+1)^2 square window
(in feature cells) are dropped, the rest are weighted exp(cos / T), only the weights >= the k-th
largest are kept (ties included), they are normalised to sum 1, and the target's label is the
weighted mean of the sources' soft labels. The soft labels at feature resolution then join the
context (DINO keeps the soft map, not its argmax). The first frame's labels enter at feature
resolution by nearest-neighbour downsampling (DINO's read_seg: PIL resize with NEAREST). Output
masks as DINO's eval_video_segmentation.py: bilinear upsampling by the feature stride (the patch
size), each channel rescaled to [0, 1] (norm_mask), argmax, then a nearest resize of the id map
to the frame size.

Two implementations of the same arithmetic:
- `dense_affinity_labels`: the plain reference, the full [M*N, N] affinity with a window mask,
  exactly the way DINO's evaluation script writes it (chunked over targets to bound memory).
- `local_affinity_labels`: targets in tiles; each tile only computes affinities against the
  union of its targets' windows. Same dot products, same threshold rule, same sums; it skips
  the (N - window) columns that the mask zeroes anyway.
Identical masks by construction, not by luck: BLAS sums a dot product in an order that depends on
the matrix shapes (1-ulp differences, measured), so both round the unit-norm features to integers
in [-2047, 2047] (a 0.05% grid) first. Every product and partial sum is then an integer below 2^24,
exact in float32 (and in TF32 on GPUs) in any order; the kept weights are summed in a canonical
order. Memory stays bounded on long videos: only the context's features and labels are kept.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from engine.errors import UserError
from video.config import PropagationConfig

FeatureFn = Callable[[torch.Tensor], torch.Tensor]  # uint8 [B, 3, H, W] -> [B, C, h, w]


# ----------------------------------------------------------------------------- the core


def _propagate_rows(
    logits: torch.Tensor,
    far: torch.Tensor | None,
    m: int,
    src_index: torch.Tensor,
    labels: torch.Tensor,
    cfg: PropagationConfig,
) -> torch.Tensor:
    """Shared by both implementations, so their arithmetic is identical bit for bit.

    logits [T, M*S]: cosine / temperature of each target (row) to each candidate source; far
    [T, S] True outside the window (None = no window); src_index [M*S] each candidate's global
    index in the context; labels [M*N_total, K] indexed by it. Weights exp(cos / T), zero outside the window, keep those
    >= the row's k-th largest (ties included), normalise, average the labels. The kept entries
    are summed in a canonical order (weight descending, then source index), one at a time, so the
    result does not depend on how many candidates a row had.
    """
    # exp((cos - 1) / T): the same weights up to a constant that the normalisation removes, and
    # in (0, 1] so a small temperature cannot overflow float32 (cos <= 1)
    w = logits.sub_(1.0 / cfg.temperature).exp_()
    if far is not None:
        w.view(w.shape[0], m, -1).masked_fill_(far[:, None, :], 0.0)
    n = w.shape[1]
    k = min(cfg.topk, n)
    kk = min(n, k + 8)
    while True:
        vals, idx = torch.topk(w, kk, dim=1)  # sorted, descending
        kth = vals[:, k - 1 : k]
        if kk == n or not bool((vals[:, -1:] >= kth).any()):  # ties past kk: look further
            break
        kk = min(n, 2 * kk)
    gidx = src_index[idx]
    order = torch.argsort(gidx, dim=1, stable=True)
    vals, gidx = vals.gather(1, order), gidx.gather(1, order)
    order = torch.argsort(-vals, dim=1, stable=True)
    vals, gidx = vals.gather(1, order), gidx.gather(1, order)
    vals = vals * (vals >= kth)
    total = torch.zeros_like(vals[:, 0])
    for j in range(kk):
        total += vals[:, j]
    total.clamp_(min=1e-30)  # every weight underflowed (T tiny, all far): label 0, not NaN
    out = torch.zeros(vals.shape[0], labels.shape[1], device=labels.device, dtype=labels.dtype)
    for j in range(kk):
        out += (vals[:, j] / total)[:, None] * labels[gidx[:, j]]
    return out


QUANT = 2047  # integer grid of the unit-norm features (see the module docstring)


def _quantize(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.float() * QUANT)


def _outside_window(
    ty: torch.Tensor, tx: torch.Tensor, sy: torch.Tensor, sx: torch.Tensor, r: int
) -> torch.Tensor:
    """[T, S]: source cell outside the (2r+1)^2 square around each target cell."""
    return ((ty[:, None] - sy[None]).abs() > r) | ((tx[:, None] - sx[None]).abs() > r)


def dense_affinity_labels(
    feat: torch.Tensor,
    ctx_feats: torch.Tensor,
    ctx_labels: torch.Tensor,
    cfg: PropagationConfig,
    chunk: int = 512,
) -> torch.Tensor:
    """Reference. feat [C, h, w] normalised, ctx_feats [M, C, h, w], ctx_labels [M, K, h, w] -> [K, h, w].

    The full affinity of every target to every source of every context frame, then the window
    mask, as DINO's script does (targets chunked only to bound memory)."""
    c, h, w = feat.shape
    m, k = ctx_labels.shape[:2]
    n = h * w
    src = ctx_feats.reshape(m, c, n).transpose(1, 2).reshape(m * n, c)  # [M*N, C]
    labels = ctx_labels.reshape(m, k, n).transpose(1, 2).reshape(m * n, k)  # [M*N, K]
    tgt = _quantize(feat.reshape(c, n).t())  # [N, C]
    src = _quantize(src)
    scale = 1.0 / (QUANT * QUANT * cfg.temperature)
    grid = torch.arange(n, device=feat.device)
    ys, xs = grid // w, grid % w
    everything = torch.arange(m * n, device=feat.device)
    out = torch.empty(n, k, device=feat.device, dtype=ctx_labels.dtype)
    for t0 in range(0, n, chunk):
        t1 = min(n, t0 + chunk)
        logits = (tgt[t0:t1] @ src.t()).mul_(scale)  # [T, M*N] cosine / T
        far = _outside_window(ys[t0:t1], xs[t0:t1], ys, xs, cfg.radius) if cfg.radius > 0 else None
        out[t0:t1] = _propagate_rows(logits, far, m, everything, labels, cfg)
    return out.t().reshape(k, h, w)


_MASKS: dict[tuple, dict[tuple, torch.Tensor]] = {}


def local_affinity_labels(
    feat: torch.Tensor, ctx_feats: torch.Tensor, ctx_labels: torch.Tensor, cfg: PropagationConfig
) -> torch.Tensor:
    """Fast path, same arithmetic: each tile of targets against the union of its windows only."""
    if cfg.radius <= 0:
        return dense_affinity_labels(feat, ctx_feats, ctx_labels, cfg)
    c, h, w = feat.shape
    m, k = ctx_labels.shape[:2]
    r, t = cfg.radius, max(1, cfg.tile)
    dev = feat.device
    src_all = _quantize(ctx_feats.permute(0, 2, 3, 1))  # [M, h, w, C]
    scale = 1.0 / (QUANT * QUANT * cfg.temperature)
    labels = ctx_labels.permute(0, 2, 3, 1).reshape(-1, k)  # [M*h*w, K], global source index
    gidx_all = torch.arange(m * h * w, device=dev).view(m, h, w)
    tgt_all = _quantize(feat.permute(1, 2, 0))  # [h, w, C]
    out = torch.empty(h, w, k, device=dev, dtype=ctx_labels.dtype)
    masks = _MASKS.setdefault((r, str(dev)), {})  # the window mask only depends on tile geometry
    if len(masks) > 64:
        masks.clear()
    for y0 in range(0, h, t):
        y1 = min(h, y0 + t)
        sy0, sy1 = max(0, y0 - r), min(h, y1 + r)
        for x0 in range(0, w, t):
            x1 = min(w, x0 + t)
            sx0, sx1 = max(0, x0 - r), min(w, x1 + r)
            key = (y0 - sy0, sy1 - y0, y1 - y0, x0 - sx0, sx1 - x0, x1 - x0)
            if key not in masks:
                ty = torch.arange(y0, y1, device=dev).repeat_interleave(x1 - x0)
                tx = torch.arange(x0, x1, device=dev).repeat(y1 - y0)
                sy = torch.arange(sy0, sy1, device=dev).repeat_interleave(sx1 - sx0)
                sx = torch.arange(sx0, sx1, device=dev).repeat(sy1 - sy0)
                masks[key] = _outside_window(ty, tx, sy, sx, r)
            tgt = tgt_all[y0:y1, x0:x1].reshape(-1, c)  # [T, C]
            src = src_all[:, sy0:sy1, sx0:sx1].reshape(-1, c)  # [M*S, C]
            gidx = gidx_all[:, sy0:sy1, sx0:sx1].reshape(-1)  # [M*S]
            res = _propagate_rows((tgt @ src.t()).mul_(scale), masks[key], m, gidx, labels, cfg)
            out[y0:y1, x0:x1] = res.reshape(y1 - y0, x1 - x0, k)
    return out.permute(2, 0, 1)


IMPLEMENTATIONS = {"local": local_affinity_labels, "dense": dense_affinity_labels}


# ----------------------------------------------------------------------------- the loop


class Propagator:
    """Holds the context and steps: the anchors (the keyframe the pass started from; the first
    frame in the classic protocol) + the last n propagated frames (features, soft labels).
    `restore` puts back a saved context, so a pass resumed on another run continues exactly."""

    def __init__(
        self,
        features: FeatureFn,
        cfg: PropagationConfig | None = None,
        impl: str = "local",
        device: str | torch.device = "cpu",
    ):
        if impl not in IMPLEMENTATIONS:
            raise UserError(f"unknown propagation implementation '{impl}'; choose local or dense")
        self.features, self.cfg, self.impl = (
            features,
            cfg or PropagationConfig(),
            IMPLEMENTATIONS[impl],
        )
        self.device = torch.device(device)
        self.anchors: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.recent: deque = deque(maxlen=max(0, self.cfg.n_last))

    def input_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        """Frame size fed to the features: shorter side rescaled, then each side a stride multiple."""
        h, w = hw
        if self.cfg.short_side:
            s = self.cfg.short_side / min(h, w)
            h, w = round(h * s), round(w * s)
        if self.cfg.max_side and max(h, w) > self.cfg.max_side:
            s = self.cfg.max_side / max(h, w)
            h, w = round(h * s), round(w * s)
        st = int(getattr(self.features, "stride", 1) or 1)
        return max(st, h // st * st), max(st, w // st * st)

    @torch.no_grad()
    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] or [B, 3, H, W] -> L2-normalised features [B, C, h, w]."""
        x = frames.to(self.device)
        if x.shape[-1] == 3 and x.shape[1] != 3:
            x = x.permute(0, 3, 1, 2)
        size = self.input_size(tuple(x.shape[-2:]))
        if tuple(x.shape[-2:]) != size:
            x = (
                F.interpolate(
                    x.float(), size=size, mode="bilinear", align_corners=False, antialias=True
                )
                .round()
                .clamp(0, 255)
                .to(torch.uint8)
            )
        f = self.features(x.contiguous()).float()
        return F.normalize(f, dim=1)

    def reset(self, feat0: torch.Tensor, labels0: torch.Tensor, mode: str = "nearest-exact"):
        """feat0 [C, h, w]; labels0 [K, H, W] float at frame resolution -> [K, h, w]. Masks are
        sampled nearest (DINO; "nearest-exact" is PIL's pixel-centre rule); keypoint heatmaps
        pass mode="area" so a peak between cell centres is not lost."""
        small = F.interpolate(
            labels0[None].float().to(self.device), size=feat0.shape[-2:], mode=mode
        )[0]
        self.anchors = [(feat0, small)]
        self.recent.clear()
        return small

    def downsample(self, labels: torch.Tensor, hw: tuple[int, int], mode: str = "nearest-exact"):
        """[K, H, W] labels at frame resolution -> [K, h, w] at feature resolution (as reset)."""
        return F.interpolate(labels[None].float().to(self.device), size=hw, mode=mode)[0]

    def restore(self, anchors: list[tuple[torch.Tensor, torch.Tensor]], recent: list) -> None:
        """Context = anchors (keyframes: features, soft labels at feature resolution) + the last
        propagated (features, soft labels), oldest first (only the last n_last are kept)."""
        self.anchors = list(anchors)
        self.recent.clear()
        for fr in recent:
            if self.cfg.n_last > 0:
                self.recent.append(fr)

    @torch.no_grad()
    def step(self, feat: torch.Tensor) -> torch.Tensor:
        if not self.anchors:
            raise RuntimeError("call reset() with the first frame before step()")
        ctx = [*self.anchors, *self.recent]
        feats = torch.stack([f for f, _ in ctx])
        labels = torch.stack([lab for _, lab in ctx])
        out = self.impl(feat, feats, labels, self.cfg)
        if self.cfg.n_last > 0:
            self.recent.append((feat, out))
        return out


def upsample(soft: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(soft[None], size=hw, mode="bilinear", align_corners=False)[0]


def labels_to_ids(
    soft: torch.Tensor,
    hw: tuple[int, int],
    ids: list[int],
    norm_mask: bool = True,
    factor: int | None = None,
) -> np.ndarray:
    """Soft [K, h, w] -> object-id map [H, W] (channel c stands for ids[c]), as DINO: bilinear
    upsampling by `factor` (the feature stride; default round(H / h)), norm_mask, argmax, nearest
    resize of the ids to H x W."""
    f = factor or max(1, round(hw[0] / soft.shape[-2]))
    size = (soft.shape[-2] * f, soft.shape[-1] * f)
    up = F.interpolate(soft[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    if norm_mask:
        lo = up.flatten(1).min(1).values.view(-1, 1, 1)
        hi = up.flatten(1).max(1).values.view(-1, 1, 1)
        up = torch.where(hi > 0, (up - lo) / (hi - lo).clamp(min=1e-12), up)
    idx = up.argmax(0)
    if tuple(idx.shape) != tuple(hw):
        idx = F.interpolate(idx[None, None].float(), size=hw, mode="nearest-exact")[0, 0].long()
    return np.asarray(ids, np.uint8)[idx.cpu().numpy()]


def ids_to_onehot(ids_map: np.ndarray, ids: list[int]) -> torch.Tensor:
    """[H, W] ids -> float [K, H, W]; pixels of other ids (e.g. void 255) are all-zero."""
    t = torch.from_numpy(np.asarray(ids_map))
    return torch.stack([(t == i).float() for i in ids])


def _batches(frames: Iterable, n: int) -> Iterator[list]:
    buf = []
    for f in frames:
        buf.append(f)
        if len(buf) == n:
            yield buf
            buf = []
    if buf:
        yield buf


def propagate_soft(
    prop: Propagator,
    frames: Iterable[np.ndarray],
    labels0: torch.Tensor,
    mode: str = "nearest-exact",
) -> Iterator[torch.Tensor]:
    """Yield soft labels at feature resolution for every frame (the first from labels0)."""
    started = False
    for chunk in _batches(frames, max(1, prop.cfg.batch_frames)):
        feats = prop.embed(torch.from_numpy(np.stack(chunk)))
        for f in feats:
            if not started:
                started = True
                yield prop.reset(f, labels0, mode)
            else:
                yield prop.step(f)


def propagate_masks(
    frames: Iterable[np.ndarray],
    first_ids: np.ndarray,
    features: FeatureFn,
    cfg: PropagationConfig | None = None,
    impl: str = "local",
    device="cpu",
) -> Iterator[np.ndarray]:
    """Object-id maps for every frame (frames: uint8 [H, W, 3]); the first is `first_ids` itself."""
    from video.masks import object_ids

    prop = Propagator(features, cfg, impl, device)
    objs = object_ids(first_ids)
    if not objs:
        raise UserError("the first-frame mask has no object (all pixels are background)")
    ids = [0, *objs]
    onehot = ids_to_onehot(first_ids, ids)
    hw = first_ids.shape
    for t, soft in enumerate(propagate_soft(prop, frames, onehot)):
        stride = getattr(features, "stride", None)
        yield first_ids if t == 0 else labels_to_ids(soft, hw, ids, prop.cfg.norm_mask, stride)


def keypoint_heatmaps(points: np.ndarray, hw: tuple[int, int], sigma: float) -> torch.Tensor:
    """Gaussian heatmaps [P, H, W] around (x, y) points, sigma in pixels."""
    h, w = hw
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    pts = torch.as_tensor(points, dtype=torch.float32)
    d2 = (xx[None] - pts[:, 0, None, None]) ** 2 + (yy[None] - pts[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma**2))


def propagate_keypoints(
    frames: Iterable[np.ndarray],
    points: np.ndarray,
    features: FeatureFn,
    cfg: PropagationConfig | None = None,
    sigma: float | None = None,
    impl: str = "local",
    device="cpu",
) -> Iterator[np.ndarray]:
    """(x, y) of each keypoint in every frame: heatmaps propagated like labels, decoded by argmax
    of the upsampled map. sigma defaults to half a feature cell (in pixels of the frame)."""
    prop = Propagator(features, cfg, impl, device)
    it = iter(frames)
    first = next(it, None)
    if first is None:
        return
    hw = first.shape[:2]
    if sigma is None:
        fh = prop.input_size(hw)[0]
        sigma = 0.5 * getattr(features, "stride", 8) * hw[0] / fh
    heat = keypoint_heatmaps(np.asarray(points, np.float32).reshape(-1, 2), hw, sigma)

    def chain():
        yield first
        yield from it

    for t, soft in enumerate(propagate_soft(prop, chain(), heat, mode="area")):
        if t == 0:
            yield np.asarray(points, np.float32).reshape(-1, 2)
            continue
        up = upsample(soft, hw).flatten(1)
        arg = up.argmax(1).cpu().numpy()
        yield np.stack([arg % hw[1], arg // hw[1]], 1).astype(np.float32)
