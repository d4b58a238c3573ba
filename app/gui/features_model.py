"""What the Features page shows, computed off the GUI thread (Qt-free: plain arrays).

One call loads a feature extractor and a sample of a labelled image folder, embeds it, and
computes the attention maps / patch features of a few chosen images with `engine.visualize`
(and, for an object-centric model, the slot masks of those images). The page then renders
overlays from these arrays; sliders only redo the cheap parts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engine.run import RunDir

MAX_DATABASE = 600  # images embedded for neighbours and the scatter plot
DISPLAY = 128  # images are decoded at least this large for display, then resized for the model


@dataclass
class FeatureSet:
    source: str
    arch: str
    image_size: int
    map_size: int
    files: list[Path]
    labels: np.ndarray  # [N] int, -1 unlabelled
    classes: list[str]
    images: torch.Tensor  # uint8 [N, 3, S, S] (the database at the model's input size)
    display: torch.Tensor  # uint8 [N, 3, D, D] the same images at a size worth looking at
    emb: torch.Tensor  # [N, D] global features
    pix: torch.Tensor  # [N, P] pixel-space descriptors
    chosen: list[int]  # indices (into files) of the images shown in attention / PCA
    dense: torch.Tensor  # [n, C, h, w] of the chosen images
    attention: dict[str, np.ndarray] | None = None  # ViT: heads [n,H,h,w], mean [n,h,w]
    stages: list[np.ndarray] = field(default_factory=list)  # ResNet: [n, h_s, w_s] per stage
    # object-centric models ("slots" feature kind): soft masks of the chosen images [n, K, h, w]
    # (sum 1 over K), the default kind of mask; slot_masks holds every kind the model gives
    slots: np.ndarray | None = None
    slot_masks: dict[str, np.ndarray] = field(default_factory=dict)  # SLOT_MASKS key -> masks
    slots_hint: str = ""  # a model without slots: which methods give them

    @property
    def is_vit(self) -> bool:
        return self.attention is not None

    def rgb(self, i: int) -> np.ndarray:
        from engine.visualize.figures import to_rgb_array

        return to_rgb_array(self.display[i])

    def label_name(self, i: int) -> str:
        lab = int(self.labels[i])
        return self.classes[lab] if 0 <= lab < len(self.classes) else Path(self.files[i]).stem


# The kinds of slot mask a slot model gives (its extractor's `which`), the default first.
SLOT_MASKS = {"decoder": "decoder masks", "slots": "slot-attention masks"}


def pick_evenly(n: int, k: int) -> list[int]:
    """k indices spread over range(n) (files are sorted by class, so this spans classes)."""
    if k >= n:
        return list(range(n))
    return sorted({round(i * (n - 1) / max(1, k - 1)) for i in range(k)})


def list_labelled(folder: str | Path) -> tuple[list[Path], list[int], list[str]]:
    from engine.data import ImageFolderDataset

    ds = ImageFolderDataset(folder, load_size=8)
    return ds.files, ds.targets, ds.classes


def auto_map_size(model_size: int) -> int:
    """Attention/PCA maps at twice the training size (at least 64 px, at most 224), a multiple
    of 16 so any ViT patch size divides it: at 32 px a ResNet's last stage is only 4x4."""
    return int(min(224, max(64, 2 * model_size)) // 16 * 16)


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size:
        return images
    x = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)


def compute_features(
    source: str,
    folder: str | Path,
    map_size: int = 0,
    n_show: int = 8,
    max_database: int = MAX_DATABASE,
) -> FeatureSet:
    """Embeddings of up to `max_database` images at the model's own input size; attention and
    patch features of `n_show` of them at `map_size` (0 = auto_map_size)."""
    from engine.data import load_images
    from engine.features import load_features, produces
    from engine.visualize import attention_arrays, conv_attention_arrays, pixel_features
    from engine.visualize.neighbours import embed_batched

    ex = load_features(source, "global")
    size = int(ex.image_size)
    map_size = int(map_size or auto_map_size(size))
    files, targets, classes = list_labelled(folder)
    keep = pick_evenly(len(files), max_database)
    files = [files[i] for i in keep]
    labels = np.asarray([targets[i] for i in keep], dtype=np.int64)
    display = load_images(files, max(size, map_size, DISPLAY))
    images = _resize(display, size)
    emb = embed_batched(ex, images)
    chosen = pick_evenly(len(files), n_show)
    sel = _resize(display[chosen], map_size)
    with torch.no_grad():
        dense = ex.dense(sel).float().cpu()
    fs = FeatureSet(
        str(ex.source or source),
        str(ex.arch.get("name", "?")),
        size,
        map_size,
        files,
        labels,
        classes,
        images,
        display,
        emb,
        pixel_features(images),
        chosen,
        dense,
    )
    if ex.has_attention:
        fs.attention = attention_arrays(ex, sel)
    else:
        try:
            fs.stages = conv_attention_arrays(ex, sel)
        except Exception:  # noqa: BLE001 - a backbone without stages simply has no maps
            fs.stages = []
    if "slots" in produces(source):
        fs.slot_masks = slot_masks_of(load_features(source, "slots"), display[chosen])
        fs.slots = next(iter(fs.slot_masks.values()), None)
    else:
        fs.slots_hint = no_slots_hint()  # here, off the GUI thread: it imports every method
    return fs


def slot_masks_of(ex, images: torch.Tensor) -> dict[str, np.ndarray]:
    """A "slots" extractor's soft masks [n, K, h, w] of uint8 images, for each kind of mask it
    gives (SLOT_MASKS: a slot model's decoder masks and its slot attention's), the default
    first; an extractor without `which` gives its one kind."""
    if not hasattr(ex, "which"):
        return {"": ex.masks(images).float().cpu().numpy()}
    default = ex.which
    out = {}
    for which in sorted(SLOT_MASKS, key=lambda w: w != default):
        ex.which = which
        try:
            out[which] = ex.masks(images).float().cpu().numpy()
        except NotImplementedError:  # a slot model without a decoder
            continue
        finally:
            ex.which = default
    return out


@functools.cache
def slot_methods() -> tuple[str, ...]:
    """The methods whose runs give slot masks (imports every method module: seconds, once)."""
    from engine.registry import get_method, method_names

    names = []
    for name in method_names():
        try:
            if "slots" in get_method(name).produces:
                names.append(name)
        except Exception:  # noqa: BLE001 - a method whose optional dependency is missing
            continue
    return tuple(names)


def no_slots_hint() -> str:
    names = ", ".join(slot_methods()) or "none is loaded"
    return f"This model has no slots: only object-centric runs give slot masks ({names})."


def slot_colour(k: int) -> tuple[int, int, int]:
    from engine.visualize.figures import PALETTE

    return PALETTE[k % len(PALETTE)]


def slot_segmentation(masks: np.ndarray, size: int) -> np.ndarray:
    """Soft masks [K, h, w] -> the winning slot of each pixel [size, size] (bilinear upsampling,
    then argmax over the slots: what FG-ARI / mBO score, engine.evaluation.objects)."""
    from engine.evaluation.objects import labels_from_masks

    return labels_from_masks(torch.from_numpy(masks)[None], (size, size))[0].numpy()


def slot_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Each pixel of uint8 [H, W, 3] tinted by its slot's colour, slot borders in white."""
    colours = np.asarray([slot_colour(k) for k in range(int(labels.max()) + 1)], np.float64)
    out = image * (1 - alpha) + colours[labels] * alpha
    edge = np.zeros_like(labels, bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    out[edge] = 255
    return (out + 0.5).astype(np.uint8)


def slot_panels(
    fs: FeatureSet, row: int, which: str, cell: int, thumb: int
) -> tuple[list[tuple], list[tuple]]:
    """The row-th shown image of a slot model: (image, its segmentation coloured per slot) at
    `cell` px, and each slot's soft mask as a grey thumbnail (white = 1) framed in its colour,
    captioned with its share of the image."""
    from engine.visualize.figures import resize

    masks = fs.slot_masks.get(which, fs.slots)[row]  # [K, h, w]
    i = fs.chosen[row]
    img = resize(fs.rgb(i), cell)
    labels = slot_segmentation(masks, cell)
    used = len(np.unique(labels))
    big = [
        (img, fs.label_name(i)),
        (slot_overlay(img, labels), f"{used} of {len(masks)} slots used"),
    ]
    small = []
    for k, m in enumerate(masks):
        grey = (np.clip(m, 0, 1) * 255 + 0.5).astype(np.uint8)
        grey = resize(np.repeat(grey[..., None], 3, axis=2), thumb, nearest=True)
        small.append((grey, f"{k}: {float(m.mean()):.0%}", slot_colour(k)))
    return big, small


def slots_note(fs: FeatureSet, which: str) -> str:
    masks = fs.slot_masks.get(which, fs.slots)
    k, h, w = masks.shape[1:]
    what = SLOT_MASKS.get(which, "masks")
    return (
        f"{k} slots, {what} on a {h}x{w} patch grid. Colours: the slot that wins each pixel "
        "(argmax, what FG-ARI / mBO score); grey: each slot's soft mask (white = all of the "
        "pixel) and its share of the image."
    )


def embedding_2d(fs: FeatureSet, method: str = "pca") -> np.ndarray:
    from engine.visualize import pca_2d, tsne

    x = torch.nn.functional.normalize(fs.emb.double(), dim=1)
    if method == "tsne":
        y, _ = tsne(x, perplexity=min(30.0, max(2.0, (len(x) - 1) / 3)), iterations=500)
        return y.numpy()
    return pca_2d(x).numpy()


def default_images_for(run_or_source: str | Path) -> str:
    """The data a run was trained on, preferring its sibling val/ split when there is one."""
    data = Path(RunDir(run_or_source).config_dict().get("data", "") or "")
    if not str(data) or str(data) == ".":
        return ""
    if data.name == "train" and (data.parent / "val").is_dir():
        return str(data.parent / "val")
    return str(data) if data.is_dir() else ""


def look_map(fs: FeatureSet, row: int) -> tuple[np.ndarray, str]:
    """Where a model looks in its row-th shown image: the mean last-layer [CLS] attention of a
    ViT, the last stage's activation energy of a ResNet."""
    if fs.is_vit:
        return fs.attention["mean"][row], "attention"
    if fs.stages:
        return fs.stages[-1][row], "activation energy"
    return np.zeros((1, 1), np.float32), "no map"


def comparison_panels(a: FeatureSet, b: FeatureSet, cell: int) -> list[tuple[np.ndarray, str]]:
    """Rows of [image | A looks | A PCA | B looks | B PCA] on the same images: two models side by
    side (e.g. a model trained here against DINO)."""
    from engine.visualize import pca_images
    from engine.visualize.figures import heat_overlay, resize

    pca = {id(fs): pca_images(fs.dense, foreground="all")[0] for fs in (a, b)}
    names = {id(a): "A", id(b): "B"}
    panels = []
    for row, i in enumerate(a.chosen):
        img = resize(a.rgb(i), cell)
        panels.append((img, a.label_name(i)))
        for fs in (a, b):
            m, what = look_map(fs, row)
            panels.append(
                (heat_overlay(img, m, 0.0, float(m.max()) or 1.0), f"{names[id(fs)]}: {what}")
            )
            rgb = (pca[id(fs)][row] * 255 + 0.5).astype(np.uint8)
            panels.append((resize(rgb, cell, nearest=True), f"{names[id(fs)]}: PCA"))
    return panels


def compute_pair(
    source: str, other: str, folder: str | Path, map_size: int = 0, n_show: int = 8
) -> tuple[FeatureSet, FeatureSet | None]:
    """The features of one model, and of a second one on the same images at the same map size."""
    a = compute_features(source, folder, map_size, n_show)
    b = compute_features(other, folder, a.map_size, n_show) if other else None
    return a, b
