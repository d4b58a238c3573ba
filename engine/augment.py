"""Batched SSL augmentations that run on the training device, inside the method's forward.

Per-image PIL pipelines in DataLoader workers are the usual bottleneck of SSL training, so the
workers only decode and resize; every random transform here works on a whole batch at once with
per-sample parameters and no Python loop over the batch:

- random resized crop + horizontal flip: two small matrix products with per-sample resampling
  matrices (triangle filter whose support widens when a crop is shrunk, i.e. bilinear with
  antialiasing like PIL / torchvision ``antialias=True``; a flip just reverses a matrix). This is
  faster on CPU than ``affine_grid`` + ``grid_sample`` (measured 1 ms vs 40 ms for 256x3x32x32)
  and, unlike ``grid_sample``, does not alias when a large image is cropped to a small view.
- colour jitter: brightness, contrast, saturation and hue are each ``x -> clamp(M x + v)`` with a
  per-sample 3x3 matrix, applied in a random order per sample (as torchvision / SimCLR do) with
  a clamp to [0, 1] after each step. Hue is a rotation of the chroma plane in YIQ space, which
  keeps luma fixed; it approximates torchvision's HSV hue shift (a rotation of the same hue circle)
  at a fraction of the cost (NVIDIA DALI's hue does the same); it differs from HSV most for
  saturated colours, which the rotation can push out of gamut before the clamp.
- grayscale (ITU-R 601 luma, as torchvision), Gaussian blur with a per-sample sigma (kernel about
  10% of the view size as in SimCLR, reflect padding, again as two matrix products), solarization
  (invert pixels >= 0.5) and ImageNet normalisation.

Video clips share parameters across frames: pass a [B, T, C, H, W] tensor (parameters sampled for
B clips) or repeat the parameters yourself with ``ViewParams.repeat_interleave``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

from engine.errors import UserError

MEAN = (
    0.485,
    0.456,
    0.406,
)  # ImageNet statistics, the convention every pretrained backbone expects
STD = (0.229, 0.224, 0.225)
_LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))
_YIQ_TO_RGB = torch.linalg.inv(torch.tensor(_RGB_TO_YIQ, dtype=torch.float64)).tolist()


@dataclass
class ViewSpec:
    """One view of an SSL recipe. Defaults: SimCLR's CIFAR recipe (colour strength s=0.5, i.e.
    brightness/contrast/saturation 0.8*s = 0.4 and hue 0.2*s = 0.1), which is also BYOL's jitter
    except BYOL's saturation 0.2. Probabilities are per sample."""

    size: int = 32
    scale: tuple[float, float] = (0.08, 1.0)  # crop area as a fraction of the image
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # crop aspect ratio range (log-uniform)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    gray_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    normalize: bool = True

    def __post_init__(self) -> None:
        self.scale, self.ratio = tuple(self.scale), tuple(self.ratio)  # lists from JSON configs
        self.blur_sigma = tuple(self.blur_sigma)
        problems = []
        if int(self.size) < 1:
            problems.append(f"size must be >= 1, got {self.size}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1:
            problems.append(f"scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            problems.append(f"ratio must satisfy 0 < min <= max, got {self.ratio}")
        if not 0 <= self.blur_sigma[0] <= self.blur_sigma[1]:
            problems.append(f"blur_sigma must satisfy 0 <= min <= max, got {self.blur_sigma}")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            problems.append(f"hue must be in [0, 0.5], got {self.hue}")
        if problems:
            raise UserError("augmentation: " + "; ".join(problems))


@dataclass
class ViewParams:
    """Per-sample random draws for one view; all tensors have the batch as first dimension."""

    box: Tensor  # [B, 4] float: x0, y0, w, h as fractions of the source image
    flip: Tensor  # [B] bool
    jitter: Tensor  # [B, 4] float: brightness, contrast, saturation, hue (identity = 1, 1, 1, 0)
    order: Tensor  # [B, 4] long: order in which the four jitter ops are applied
    gray: Tensor  # [B] bool
    sigma: Tensor  # [B] float: blur sigma in pixels of the view, 0 = no blur
    solarize: Tensor  # [B] bool

    def __len__(self) -> int:
        return self.box.shape[0]

    def to(self, device: torch.device | str) -> ViewParams:
        return ViewParams(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def repeat_interleave(self, n: int) -> ViewParams:
        """Repeat each sample's draws n times: one clip's params for each of its n frames."""
        return ViewParams(
            **{f.name: getattr(self, f.name).repeat_interleave(n, dim=0) for f in fields(self)}
        )


def to_float(images: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float input is returned as float32 unchanged."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def normalize(x: Tensor) -> Tensor:
    """Subtract ImageNet MEAN and divide by STD over the channel dimension (dim -3)."""
    mean = torch.tensor(MEAN, device=x.device, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(STD, device=x.device, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


# ----------------------------------------------------------------------------- sampling


def _rand(shape: tuple[int, ...], device, generator: torch.Generator | None) -> Tensor:
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, device=generator.device, generator=generator).to(device)


def _uniform(lo: float, hi: float, shape, device, generator) -> Tensor:
    return lo + (hi - lo) * _rand(shape, device, generator)


def _sample_boxes(batch: int, spec: ViewSpec, hw, device, generator, attempts: int = 10) -> Tensor:
    """torchvision's RandomResizedCrop draw, vectorised: the first of 10 (area, log-ratio) draws
    that fits inside the image, else the central crop with the ratio clamped. Continuous boxes.
    hw: the image size (h, w), or one size per sample [B, 2]."""
    hw_t = torch.as_tensor(hw, dtype=torch.float32, device=device).reshape(-1, 2)
    h_img, w_img = hw_t[:, :1], hw_t[:, 1:]  # [B or 1, 1]
    area = h_img * w_img * _uniform(*spec.scale, (batch, attempts), device, generator)
    log_r = _uniform(
        math.log(spec.ratio[0]), math.log(spec.ratio[1]), (batch, attempts), device, generator
    )
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect)
    h = torch.sqrt(area / aspect)
    ok = (w <= w_img) & (h <= h_img)
    first = ok.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fitting draw
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    found = ok.any(dim=1)
    h_img, w_img = h_img[:, 0], w_img[:, 0]
    in_ratio = w_img / h_img  # fallback: the whole image, its ratio clamped into spec.ratio
    fw = torch.where(in_ratio > spec.ratio[1], h_img * spec.ratio[1], w_img)
    fh = torch.where(in_ratio < spec.ratio[0], w_img / spec.ratio[0], h_img)
    w = torch.where(found, w, fw.expand_as(w))
    h = torch.where(found, h, fh.expand_as(h))
    u = _rand((batch, 2), device, generator)
    x0 = u[:, 0] * (w_img - w)
    y0 = u[:, 1] * (h_img - h)
    return torch.stack([x0 / w_img, y0 / h_img, w / w_img, h / h_img], dim=1).expand(batch, 4)


def centre_boxes(hw: Tensor) -> Tensor:
    """The largest centred square of each image of size hw [B, 2] (h, w), as boxes (x0, y0, w, h)
    in fractions of the image: the evaluation geometry (shorter side, centre crop) applied to an
    image the loader delivered stretched to a square."""
    hw = hw.float()
    side = hw.min(dim=1).values
    fh, fw = side / hw[:, 0], side / hw[:, 1]
    return torch.stack([(1 - fw) / 2, (1 - fh) / 2, fw, fh], dim=1)


def sample_view_params(
    batch: int,
    spec: ViewSpec,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
    image_hw: tuple[int, int] | Tensor = (1, 1),
) -> ViewParams:
    """Draw every random choice of one view for `batch` samples. `image_hw` is the source size,
    (h, w) or one per sample [B, 2]; only the aspect ratio matters. Boxes are fractions of the
    image, so an image delivered stretched to a square (see the data loader) is cropped as the
    original: the crop covers the scale range of the *whole* image at the right aspect."""
    d = device
    box = _sample_boxes(batch, spec, image_hw, d, generator)
    flip = _rand((batch,), d, generator) < spec.flip_p
    jitter_on = _rand((batch,), d, generator) < spec.jitter_p
    lo_hi = [(max(0.0, 1 - s), 1 + s) for s in (spec.brightness, spec.contrast, spec.saturation)]
    lo_hi.append((-spec.hue, spec.hue))
    u = _rand((batch, 4), d, generator)
    lo = torch.tensor([a for a, _ in lo_hi], device=d)
    hi = torch.tensor([b for _, b in lo_hi], device=d)
    identity = torch.tensor([1.0, 1.0, 1.0, 0.0], device=d)
    jitter = torch.where(jitter_on[:, None], lo + (hi - lo) * u, identity)
    order = torch.argsort(_rand((batch, 4), d, generator), dim=1)
    gray = _rand((batch,), d, generator) < spec.gray_p
    blur_on = _rand((batch,), d, generator) < spec.blur_p
    sigma = _uniform(*spec.blur_sigma, (batch,), d, generator)
    sigma = torch.where(blur_on, sigma, torch.zeros_like(sigma))
    solarize = _rand((batch,), d, generator) < spec.solarize_p
    return ViewParams(box, flip, jitter, order, gray, sigma, solarize)


# ----------------------------------------------------------------------------- applying


def _resample_matrix(
    start: Tensor, length: Tensor, in_size: int, out_size: int, flip: Tensor | None
) -> Tensor:
    """[B, out, in] weights taking pixels [start, start+length) of a line to out_size pixels:
    a triangle (bilinear) filter, widened by the shrink factor so downscaling is antialiased."""
    step = length / out_size  # source pixels per output pixel, [B]
    i = torch.arange(out_size, device=start.device, dtype=start.dtype)
    centres = start[:, None] + (i + 0.5) * step[:, None]  # [B, out] in source pixel units
    if flip is not None:
        centres = torch.where(flip[:, None], centres.flip(1), centres)
    src = torch.arange(in_size, device=start.device, dtype=start.dtype) + 0.5
    support = step.clamp(min=1.0)[:, None, None]
    w = (1 - (src[None, None, :] - centres[:, :, None]).abs() / support).clamp(min=0)
    # Only pixels inside the box contribute (crop, then resize, like torchvision); a box thinner
    # than one pixel falls back to its neighbours rather than to nothing.
    end = (start + length)[:, None, None]
    inside = (src >= start[:, None, None] - 1e-4) & (src <= end + 1e-4)
    wi = w * inside
    w = torch.where(wi.sum(-1, keepdim=True) > 0, wi, w)
    return w / w.sum(-1, keepdim=True).clamp(min=1e-8)


def _crop_flip(x: Tensor, params: ViewParams, size: int) -> Tensor:
    _, _, h, w = x.shape
    box = params.box.to(x.dtype)
    rx = _resample_matrix(box[:, 0] * w, box[:, 2] * w, w, size, params.flip)  # [B, S, W]
    ry = _resample_matrix(box[:, 1] * h, box[:, 3] * h, h, size, None)  # [B, S, H]
    x = torch.matmul(x, rx.transpose(1, 2).unsqueeze(1))  # [B, C, H, S]
    return torch.matmul(ry.unsqueeze(1), x)  # [B, C, S, S]


def _jitter_matrices(f: Tensor) -> Tensor:
    """[B, 4, 3, 3]: the linear part of brightness, contrast, saturation and hue per sample."""
    b = f.shape[0]
    eye = torch.eye(3, device=f.device, dtype=f.dtype).expand(b, 3, 3)
    luma = torch.tensor(_LUMA, device=f.device, dtype=f.dtype).expand(3, 3)  # rows = luma weights
    bright = f[:, 0, None, None] * eye
    contrast = f[:, 1, None, None] * eye  # + (1 - f) * mean luma, added as a bias
    sat = f[:, 2, None, None] * eye + (1 - f[:, 2, None, None]) * luma
    yiq = torch.tensor(_RGB_TO_YIQ, device=f.device, dtype=f.dtype)
    theta = f[:, 3] * 2 * math.pi
    cos, sin = torch.cos(theta), torch.sin(theta)
    rot = torch.zeros(b, 3, 3, device=f.device, dtype=f.dtype)
    rot[:, 0, 0] = 1
    # this sign turns the hue the same way as torchvision's adjust_hue for positive factors
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, sin, -sin, cos
    hue = torch.tensor(_YIQ_TO_RGB, device=f.device, dtype=f.dtype) @ rot @ yiq
    return torch.stack([bright, contrast, sat, hue], dim=1)


def _color_jitter(x: Tensor, params: ViewParams) -> Tensor:
    b, c, h, w = x.shape
    mats = _jitter_matrices(params.jitter.to(x.dtype))
    luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype)
    rows = torch.arange(b, device=x.device)
    x = x.reshape(b, c, h * w)
    for k in range(4):  # position in the per-sample random order, not a loop over the batch
        op = params.order[:, k]
        m = mats[rows, op]  # [B, 3, 3]
        mean = x.mean(2) @ luma  # mean luma of each image, [B]
        fc = params.jitter[:, 1].to(x.dtype)
        bias = torch.where(op == 1, (1 - fc) * mean, torch.zeros_like(mean))
        x = torch.baddbmm(bias[:, None, None].expand(b, 3, 1), m, x).clamp_(0, 1)
    return x.view(b, c, h, w)


def _grayscale(x: Tensor, mask: Tensor) -> Tensor:
    luma = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    gray = (x * luma).sum(1, keepdim=True).expand_as(x)
    return torch.where(mask[:, None, None, None], gray, x)


def blur_kernel_size(size: int) -> int:
    """SimCLR: a kernel 10% of the image side, made odd (23 at 224 px, 3 at 32 px)."""
    k = max(3, int(0.1 * size))
    return k if k % 2 else k + 1


@functools.lru_cache(maxsize=32)
def _reflect_band(n: int, r: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """[2r+1, n, n] one-hot: tap t of output row i reads source row reflect(i + t - r)."""
    src = torch.arange(n)[:, None] + torch.arange(-r, r + 1)
    src = src.abs()
    src = torch.where(src > n - 1, 2 * (n - 1) - src, src).clamp(0, n - 1)
    return torch.nn.functional.one_hot(src, n).permute(1, 0, 2).to(device=device, dtype=dtype)


def _blur(x: Tensor, sigma: Tensor) -> Tensor:
    """Per-sample Gaussian blur with reflect padding, as G x G^T with a banded [B, S, S] G."""
    b, _, h, w = x.shape
    k = blur_kernel_size(min(h, w))
    r = k // 2
    taps = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.dtype).clamp(min=1e-6)[:, None]
    kern = torch.exp(-(taps[None] ** 2) / (2 * s**2))
    kern = kern / kern.sum(1, keepdim=True)
    delta = (taps == 0).to(x.dtype).expand_as(kern)
    kern = torch.where(sigma[:, None] > 0, kern, delta)  # [B, K]

    gy = torch.einsum("bt,tij->bij", kern, _reflect_band(h, r, x.device, x.dtype))
    gx = gy if w == h else torch.einsum("bt,tij->bij", kern, _reflect_band(w, r, x.device, x.dtype))
    x = torch.matmul(x, gx.transpose(1, 2).unsqueeze(1))
    return torch.matmul(gy.unsqueeze(1), x)


def _solarize(x: Tensor, mask: Tensor, threshold: float = 0.5) -> Tensor:
    return torch.where(mask[:, None, None, None] & (x >= threshold), 1 - x, x)


def apply_view(images: Tensor, spec: ViewSpec, params: ViewParams) -> Tensor:
    """Crop, flip, jitter, grayscale, blur, solarize and normalise a batch with given params.
    images: uint8 [0, 255] or float [0, 1], [B, C, H, W] or clips [B, T, C, H, W] (params for B
    clips, shared by their frames). Returns float32 [B, 3, size, size] (or [B, T, 3, size, size])."""
    if images.dim() == 5:
        b, t = images.shape[:2]
        if len(params) == b:
            params = params.repeat_interleave(t)
        out = apply_view(images.flatten(0, 1), spec, params)
        return out.view(b, t, *out.shape[1:])
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got {tuple(images.shape)}")
    if len(params) != images.shape[0]:
        raise ValueError(f"params for {len(params)} samples, images for {images.shape[0]}")
    params = params.to(images.device)
    with torch.autocast(images.device.type, enabled=False):
        x = _crop_flip(to_float(images), params, spec.size)
        if spec.jitter_p > 0:
            x = _color_jitter(x, params)
        if spec.gray_p > 0:
            x = _grayscale(x, params.gray)
        if spec.blur_p > 0:
            x = _blur(x, params.sigma)
        if spec.solarize_p > 0:
            x = _solarize(x, params.solarize)
        return normalize(x) if spec.normalize else x


def augment_view(
    images: Tensor, spec: ViewSpec, generator: torch.Generator | None = None
) -> Tensor:
    """Sample params for the batch (or for the clips of a [B, T, C, H, W] batch) and apply them."""
    params = sample_view_params(
        images.shape[0], spec, images.device, generator, image_hw=tuple(images.shape[-2:])
    )
    return apply_view(images, spec, params)


# ----------------------------------------------------------------------------- paper recipes


def crop_view(size: int, scale_min: float, normalize: bool = True, gray_p: float = 0.0) -> ViewSpec:
    """Random resized crop of [scale_min, 1] of the image and a horizontal flip, nothing else:
    the view of the pretext and masked-modelling methods, whose targets colour changes would
    corrupt (colorization, inpainting, MAE, MaskFeat) or which do not need them (rotation)."""
    return ViewSpec(
        size=size,
        scale=(scale_min, 1.0),
        jitter_p=0.0,
        gray_p=gray_p,
        blur_p=0.0,
        normalize=normalize,
    )


def whole_view(size: int, flip_p: float = 0.5) -> ViewSpec:
    """The whole image, resized, optionally flipped, nothing else: what a target network sees
    (OBoW's teacher, DeepCluster's clustering pass, the slot models' frozen encoder)."""
    return ViewSpec(
        size=size, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=flip_p, jitter_p=0.0, gray_p=0.0,
        blur_p=0.0,
    )  # fmt: skip


def simclr_views(size: int, strength: float | None = None) -> list[ViewSpec]:
    """SimCLR (Chen et al. 2020): two identical views. Colour strength s=1.0 on ImageNet, s=0.5
    and no blur in the CIFAR recipe, which we use for images of at most 64 px."""
    small = size <= 64
    s = strength if strength is not None else (0.5 if small else 1.0)
    spec = ViewSpec(
        size=size,
        brightness=0.8 * s,
        contrast=0.8 * s,
        saturation=0.8 * s,
        hue=0.2 * s,
        blur_p=0.0 if small else 0.5,
    )
    return [spec, replace(spec)]


def mocov2_views(size: int, blur: bool = True) -> list[ViewSpec]:
    """MoCo v2 (Chen et al. 2020, main_moco.py --aug-plus): crop scale (0.2, 1), jitter
    0.4/0.4/0.4/0.1 with p=0.8, gray p=0.2, blur p=0.5 (none at <= 64 px, as the CIFAR recipes),
    flip. SupCon's reference code uses the same without blur (`blur=False`)."""
    spec = ViewSpec(
        size=size,
        scale=(0.2, 1.0),
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        blur_p=0.5 if blur and size > 64 else 0.0,
    )
    return [spec, replace(spec)]


def _byol_base(size: int, scale: tuple[float, float] = (0.08, 1.0)) -> ViewSpec:
    return ViewSpec(size=size, scale=scale, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1)


def byol_views(size: int) -> list[ViewSpec]:
    """BYOL (Grill et al. 2020) asymmetric pair: view 1 always blurred, never solarized; view 2
    blurred with p=0.1 and solarized with p=0.2. Jitter 0.4/0.4/0.2/0.1 with p=0.8, gray p=0.2.
    At <= 64 px no blur (solo-learn's and lightly's CIFAR recipes: a 3-tap kernel only smears)."""
    base = _byol_base(size)
    b1, b2 = (1.0, 0.1) if size > 64 else (0.0, 0.0)
    return [replace(base, blur_p=b1, solarize_p=0.0), replace(base, blur_p=b2, solarize_p=0.2)]


def dino_views(
    global_size: int,
    local_size: int,
    n_local: int,
    global_scale: tuple[float, float] = (0.4, 1.0),
    local_scale: tuple[float, float] = (0.05, 0.4),
) -> list[ViewSpec]:
    """DINO (Caron et al. 2021) multi-crop: two global crops (BYOL's asymmetric blur/solarize)
    then n_local small crops with blur p=0.5. Scales are the DINO repository defaults (0.4, 1) and
    (0.05, 0.4); its README uses a wider global range such as (0.14, 1) for some runs. Images of
    <= 64 px get no blur at all (as byol_views)."""
    g1, g2 = byol_views(global_size)
    local = replace(_byol_base(local_size, local_scale), blur_p=0.5 if global_size > 64 else 0.0)
    return [
        replace(g1, scale=global_scale),
        replace(g2, scale=global_scale),
        *[replace(local) for _ in range(n_local)],
    ]
