"""Zero-shot with a constructed model whose answer is known, and retrieval recall by hand."""

from __future__ import annotations

import zlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.features import FeatureExtractor
from multimodal.retrieval import chance_recall, recall_at_k
from multimodal.zeroshot import TEMPLATES, text_classifier, zeroshot_eval

COLOUR_AXES = {"red": 0, "green": 1, "blue": 2}


class MeanColour(nn.Module):
    """Image 'embedding' = mean colour minus grey: a red photo points along the red axis."""

    embed_dim = 3

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # the extractor finds its device from parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3)) - x.mean((1, 2, 3))[:, None]


class ColourCLIP:
    """A constructed CLIP: a prompt embeds to the axis of the colour word it contains (plus
    template-dependent noise that the prompt ensemble averages out)."""

    image_size = 16

    def __init__(self):
        self.features = FeatureExtractor(MeanColour(), mean=(0, 0, 0), std=(1, 1, 1), image_size=16)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        out = torch.stack(
            [
                torch.randn(3, generator=torch.Generator().manual_seed(zlib.crc32(t.encode())))
                * 0.3
                for t in texts
            ]
        )
        for i, t in enumerate(texts):
            for word, axis in COLOUR_AXES.items():
                if word in t:
                    out[i, axis] += 1.0
        return F.normalize(out, dim=-1)


def test_zeroshot_with_a_constructed_model(tmp_path, make_photo_fn):
    colours = {"red": (200, 40, 40), "green": (40, 190, 50), "blue": (40, 60, 210)}
    for name, rgb in colours.items():
        for i in range(4):
            make_photo_fn(tmp_path / "val" / name / f"{i}.png", seed=i, colour=rgb)
    r = zeroshot_eval(ColourCLIP(), tmp_path / "val", num_workers=0)
    assert r["top1"] == 1.0 and r["chance_top1"] == pytest.approx(1 / 3)
    assert r["images"] == 12 and r["per_class_top1"] == {"blue": 1.0, "green": 1.0, "red": 1.0}


def test_recall_at_k_by_hand():
    # 3 images; captions 0,1 -> image 0, caption 2 -> image 1, caption 3 -> image 2
    sim = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # caption 0: own image first
            [0.2, 0.5, 0.3],  # caption 1: own image (0) ranked 3rd
            [0.1, 0.4, 0.8],  # caption 2: own image (1) ranked 2nd
            [0.0, 0.1, 0.7],  # caption 3: own image first
        ]
    )
    owner = torch.tensor([0, 0, 1, 2])
    r = recall_at_k(sim, owner, ks=(1, 2, 3))
    assert (
        r["t2i_R@1"] == pytest.approx(2 / 4)
        and r["t2i_R@2"] == pytest.approx(3 / 4)
        and r["t2i_R@3"] == 1.0
    )
    # image 0: captions by score 0.9(c0, own) -> rank 0; image 1: 0.5(c1), 0.4(c2 own) -> rank 1;
    # image 2: 0.8(c2), 0.7(c3 own) -> rank 1
    assert r["i2t_R@1"] == pytest.approx(1 / 3) and r["i2t_R@2"] == 1.0


def test_recall_ties_count_against_the_true_item():
    """Collapsed embeddings (every score equal) are at chance or worse, never perfect."""
    owner = torch.tensor([0, 0, 1, 2, 3])
    r = recall_at_k(torch.zeros(5, 4), owner, ks=(1, 3, 4))
    assert r["t2i_R@1"] == 0.0 and r["t2i_R@3"] == 0.0 and r["t2i_R@4"] == 1.0
    # image 0 has 2 of the 5 captions (3 others tie with them), images 1-3 one (4 others tie)
    assert r["i2t_R@1"] == 0.0 and r["i2t_R@4"] == 0.25
    # caption 0 ties image 1 (t2i), and caption 1 ties caption 0 for image 0 (i2t): both
    # true items go second
    sim = torch.tensor([[0.5, 0.5, 0.1], [0.5, 0.9, 0.1], [0.0, 0.1, 0.7]])
    r = recall_at_k(sim, torch.tensor([0, 1, 2]), ks=(1, 2))
    assert r["t2i_R@1"] == pytest.approx(2 / 3) and r["t2i_R@2"] == 1.0
    assert r["i2t_R@1"] == pytest.approx(2 / 3) and r["i2t_R@2"] == 1.0


def test_chance_recall():
    c = chance_recall(n_images=100, n_captions=500, ks=(1, 5))
    assert c["t2i_R@1"] == pytest.approx(0.01) and c["t2i_R@5"] == pytest.approx(0.05)
    assert c["i2t_R@1"] == pytest.approx(5 / 500)
    assert c["i2t_R@5"] == pytest.approx(
        1 - (495 * 494 * 493 * 492 * 491) / (500 * 499 * 498 * 497 * 496)
    )


def test_prompt_ensemble_averages_unit_embeddings():
    m = ColourCLIP()
    w = text_classifier(m, ["red", "blue"], TEMPLATES[:4])
    manual = F.normalize(m.embed_texts([t.format("red") for t in TEMPLATES[:4]]).mean(0), dim=0)
    assert torch.allclose(w[0], manual, atol=1e-6) and torch.allclose(w.norm(dim=1), torch.ones(2))
