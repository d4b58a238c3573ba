"""Image-text retrieval recall@K on a held-out caption file (both directions).

Text -> image: a caption scores a hit at K when its own image is among the K most similar
images. Image -> text: an image scores a hit when any of its captions is among the K most
similar captions (the Flickr30k / COCO protocol used by CLIP).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from engine.errors import UserError
from multimodal.data import read_captions
from multimodal.imageio import load_image

KS = (1, 5, 10)


def recall_at_k(
    sim: torch.Tensor, caption_image: torch.Tensor, ks: tuple[int, ...] = KS
) -> dict[str, float]:
    """sim: [T, I] caption-image similarities; caption_image: [T] image index of each caption."""
    t, n_img = sim.shape
    # text -> image: rank of the true image = images scoring at least as high (ties count
    # against it: collapsed embeddings, where everything ties, must not score R@1 = 1)
    true = sim[torch.arange(t), caption_image]
    t2i_rank = (sim >= true[:, None]).sum(1) - 1
    # image -> text: best rank over the image's captions, against every other caption
    sim_it = sim.T  # [I, T]
    own = caption_image[None, :] == torch.arange(n_img)[:, None]  # [I, T]
    best_own = sim_it.masked_fill(~own, float("-inf")).max(1).values
    i2t_rank = ((sim_it >= best_own[:, None]) & ~own).sum(1)
    out = {}
    for k in ks:
        out[f"t2i_R@{k}"] = float((t2i_rank < k).float().mean())
        out[f"i2t_R@{k}"] = float((i2t_rank < k).float().mean())
    return out


def chance_recall(n_images: int, n_captions: int, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Expected recall of random scores: k / I for text->image; 1 - C(T-m, k) / C(T, k) for
    image->text with m = T / I captions per image."""
    m = n_captions / n_images
    out = {}
    for k in ks:
        out[f"t2i_R@{k}"] = min(1.0, k / n_images)
        p_miss = 1.0
        for j in range(min(k, n_captions)):
            p_miss *= max(0.0, (n_captions - m - j) / (n_captions - j))
        out[f"i2t_R@{k}"] = 1 - p_miss
    return out


class _Images(Dataset):
    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            return {"image": load_image(self.paths[i], self.size)}
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{self.paths[i]}: cannot decode image ({e})") from None


@torch.no_grad()
def retrieval_eval(
    embedder: Any,
    captions: str | Path,
    image_key: str = "filepath",
    caption_key: str = "title",
    separator: str = "",
    batch_size: int = 128,
    num_workers: int = 2,
    max_images: int = 0,
) -> dict[str, Any]:
    caps = read_captions(captions, image_key, caption_key, separator)
    images: list[Path] = []
    index: dict[Path, int] = {}
    texts, owner = [], []
    for r in caps.records:
        if r.path not in index:
            if max_images and len(images) >= max_images:
                continue
            index[r.path] = len(images)
            images.append(r.path)
        texts.append(r.caption)
        owner.append(index[r.path])
    if len(images) < 2:
        raise UserError(f"{captions}: retrieval needs captions of at least 2 images")
    loader = DataLoader(
        _Images(images, embedder.image_size), batch_size=batch_size, num_workers=num_workers
    )
    img = torch.cat([embedder.embed_images(b["image"]) for b in loader])
    txt = embedder.embed_texts(texts)
    owner_t = torch.tensor(owner)
    result = recall_at_k(txt @ img.T, owner_t)
    chance = chance_recall(len(images), len(texts))
    return {
        **result,
        "chance": chance,
        "images": len(images),
        "captions": len(texts),
        "file": str(captions),
    }
