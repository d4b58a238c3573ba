"""What a generative pretext model outputs: MAE reconstructions beside the masked input (He et al.
2022, Fig. 2), and colorization predictions beside the grey input and the ground truth (Zhang et
al. 2016, Fig. 1). These need the whole trained method (decoder, colour head), not just the
backbone, so the method is rebuilt from the checkpoint's config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.augment import MEAN, STD, normalize, to_float
from engine.masking import KeepMask, random_masking, unpatchify
from engine.visualize.figures import Panel, grid_figure, resize, to_rgb_array


def _denormalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)


@torch.no_grad()
def mae_reconstructions(
    mae, images: torch.Tensor, mask_ratio: float | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Arrays [B, H, W, 3] in [0, 1]: original, masked (grey where hidden), reconstruction and
    reconstruction with the visible patches pasted back; plus the patch mask [B, h, w].
    Images are resized to the model's training size. Masking: the method's own rule (random
    with a fixed seed, or AttMask)."""
    device = next(mae.parameters()).device
    size = mae.image_size
    x = to_float(images.to(device))
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
    xn = normalize(x)
    p = mae.backbone.patch_size
    n = mae.backbone.num_patches(size, size)
    ratio = mae.cfg.mask_ratio if mask_ratio is None else mask_ratio
    if mae.cfg.masking == "random" or mask_ratio is not None:
        g = torch.Generator(device="cpu").manual_seed(seed)
        km = random_masking(x.shape[0], n, ratio, "cpu", generator=g)
        km = KeepMask(km.ids_keep.to(device), km.ids_restore.to(device), km.mask.to(device))
    else:
        mae.set_step_context(seed, 0)
        km = mae.choose_mask(xn)
    recon = _denormalize(unpatchify(mae.reconstruct(xn, km), p, size, size))
    pix = (
        km.mask.reshape(-1, size // p, size // p)
        .repeat_interleave(p, 1)
        .repeat_interleave(p, 2)[:, None]
    )
    masked = torch.where(pix, torch.full_like(x, 0.5), x)
    pasted = torch.where(pix, recon, x)
    to_np = lambda t: t.permute(0, 2, 3, 1).cpu().numpy()  # noqa: E731
    return {
        "original": to_np(x),
        "masked": to_np(masked),
        "reconstruction": to_np(recon),
        "pasted": to_np(pasted),
        "mask": km.mask.reshape(-1, size // p, size // p).cpu().numpy(),
    }


def mae_figure(
    mae,
    images: torch.Tensor,
    mask_ratio: float | None = None,
    seed: int = 0,
    names: list[str] | None = None,
    cell: int = 128,
) -> Image.Image:
    r = mae_reconstructions(mae, images, mask_ratio, seed)
    rows = []
    for i in range(len(r["original"])):
        pct = f"{r['mask'][i].mean():.0%}"
        rows.append(
            [
                Panel(resize(to_rgb_array(r[k][i]), cell), t)
                for k, t in (
                    ("masked", f"masked {pct}"),
                    ("reconstruction", "reconstruction"),
                    ("pasted", "recon. + visible"),
                    ("original", "original"),
                )
            ]
        )
    note = (
        "norm_pix_loss models predict normalised patches; each patch is shown with the original's mean and std"
        if mae.cfg.norm_pix_loss
        else ""
    )
    return grid_figure(
        rows,
        f"MAE reconstructions ({mae.backbone.arch.get('name')}, masking: {mae.cfg.masking})",
        cell,
        row_labels=names,
        note=note,
    )


@torch.no_grad()
def colorization_predictions(model, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Arrays [B, H, W, 3] in [0, 1]: the grey input (same lightness), the predicted colours
    (annealed mean of the predicted distribution), and the ground truth."""
    from engine.color import gray_rgb
    from engine.methods.colorization import colorize

    device = next(model.parameters()).device
    x = to_float(images.to(device))
    pred = colorize(model, x)
    to_np = lambda t: t.permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy()  # noqa: E731
    return {"gray": to_np(gray_rgb(x)), "prediction": to_np(pred), "truth": to_np(x)}


def colorization_figure(
    model, images: torch.Tensor, names: list[str] | None = None, cell: int = 128
) -> Image.Image:
    r = colorization_predictions(model, images)
    rows = [
        [
            Panel(resize(to_rgb_array(r[k][i]), cell), t)
            for k, t in (
                ("gray", "input (L only)"),
                ("prediction", "predicted colour"),
                ("truth", "ground truth"),
            )
        ]
        for i in range(len(r["truth"]))
    ]
    return grid_figure(
        rows,
        f"Colorization predictions ({model.backbone.arch.get('name')}, annealed mean T={model.cfg.temperature})",
        cell,
        row_labels=names,
    )


@dataclass
class Reconstruction:
    """A generative pretext run's "reconstruction" features (MethodSpec.features): its own
    output as a figure."""

    method: Any
    image_size: int
    draw: Callable[..., Image.Image]  # (method, images, names, **opts) -> figure

    def figure(self, images: torch.Tensor, names: list[str] | None = None, **opts) -> Image.Image:
        return self.draw(self.method, images, names, **opts)


def mae_method_figure(method, images, names=None, mask_ratio=None, seed: int = 0, **_):
    return mae_figure(method, images, mask_ratio, seed, names)


def colorization_method_figure(method, images, names=None, **_):
    return colorization_figure(method, images, names)


def pixelcnn_samples_figure(method, images, names=None, n_samples: int = 8, seed: int = 0, **_):
    """A likelihood model's figure: samples drawn sub-pixel by sub-pixel, and the held-out
    images with the model's bits per dimension on them."""
    g = torch.Generator(device=next(method.parameters()).device).manual_seed(seed)
    samples = method.sample(n_samples, method.image_size, generator=g)
    bpd = method.evaluate_bits(images)
    cell = 96
    rows = [
        [
            Panel(resize(to_rgb_array(s), cell, nearest=True), f"sample {i}")
            for i, s in enumerate(samples)
        ],
        [
            Panel(resize(to_rgb_array(x), cell, nearest=True), (names or [""] * len(images))[i])
            for i, x in enumerate(images[:n_samples])
        ],
    ]
    return grid_figure(
        rows, title=f"PixelCNN samples (top); held-out images: {bpd:.3f} bits/dim (bottom)"
    )
