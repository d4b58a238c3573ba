"""Features page, Slots tab: the slot masks of a tiny slot_attention run (a random 2-block ViT
encoder through --init-from, 2 steps at 16 px on the objects sample, as tests/engine/
test_slots.py) computed Qt-free with the other features, then rendered one row per shown image;
a plain ViT export has no slots, and the tab says which methods give them."""

from __future__ import annotations

import numpy as np
import pytest

from tests.app.helpers import SAMPLE_IMAGES, wait_until

N_SHOW, DATABASE = 3, 24


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    import torch

    from engine.backbones import build_backbone
    from engine.features import FeatureExtractor, export_backbone

    torch.manual_seed(0)
    vit = build_backbone("vit_tiny", 16, depth=2)
    out = tmp_path_factory.mktemp("encoder") / "vit2.safetensors"
    return str(export_backbone(FeatureExtractor(vit, image_size=16, source="random"), out))


@pytest.fixture(scope="module")
def slot_features(encoder, tmp_path_factory):
    import torch

    import engine.methods  # noqa: F401
    from app.gui.features_model import compute_features
    from engine.build import train
    from engine.objects_sample import objects_root
    from tests.engine.method_runs import tiny_run

    data = objects_root() / "images" / "train"
    run = tmp_path_factory.mktemp("slots") / "run"
    torch.manual_seed(0)
    small = {"slot_dim": 32, "slot_mlp_dim": 64}
    train(tiny_run("slot_attention", data, run, 2, small, init_from=encoder))
    return compute_features(str(run), data, n_show=N_SHOW, max_database=DATABASE)


@pytest.fixture(scope="module")
def plain_features(encoder):
    from app.gui.features_model import compute_features

    return compute_features(encoder, SAMPLE_IMAGES / "val", n_show=N_SHOW, max_database=DATABASE)


def test_slot_run_gives_the_slot_masks_of_the_shown_images(slot_features):
    fs = slot_features
    assert fs.slots.shape == (N_SHOW, 5, 4, 4)  # 5 slots on the 4x4 patch grid of 16 px
    np.testing.assert_allclose(fs.slots.sum(1), 1.0, atol=1e-5)
    assert list(fs.slot_masks) == ["decoder", "slots"]  # decoder masks first (the default)
    np.testing.assert_allclose(fs.slot_masks["slots"].sum(1), 1.0, atol=1e-5)
    assert fs.slots is fs.slot_masks["decoder"] and not fs.slots_hint


def test_plain_model_has_no_slots_and_names_the_methods_that_do(plain_features):
    fs = plain_features
    assert fs.slots is None and fs.slot_masks == {}
    assert "slot_attention" in fs.slots_hint and "spot" in fs.slots_hint


def test_slots_tab_renders_a_row_per_image_and_is_disabled_without_slots(
    window, qtbot, slot_features, plain_features
):
    page = window.features_page
    window.show_page("features")
    page.session.set_features((slot_features, None))
    page.tabs.setCurrentIndex(page.slots_index)
    assert (
        page.tabs.isTabEnabled(page.slots_index) and page.tabs.tabText(page.slots_index) == "Slots"
    )
    assert len(page.slot_rows) == N_SHOW
    big, small = page.slot_rows[0].findChildren(type(page.att_grid))
    assert len(big.views) == 2 and len(small.views) == 5  # image + segmentation, one per slot
    assert "used" in big.views[1].caption and "5 slots" in page.slot_note.text()
    assert page.slot_which.isVisibleTo(page) and page.slot_which.count() == 2
    page.slot_which.setCurrentIndex(1)  # slot attention's masks: re-rendered from the arrays
    assert len(page.slot_rows) == N_SHOW and "slot-attention" in page.slot_note.text()

    page.session.set_features((plain_features, None))
    assert not page.tabs.isTabEnabled(page.slots_index) and page.slot_rows == []
    assert page.tabs.currentIndex() != page.slots_index
    assert "slot_attention" in page.tabs.tabToolTip(page.slots_index)
    assert page.slot_note.text() == plain_features.slots_hint
    wait_until(qtbot, lambda: page._xy is not None, 60, "the scatter plot (before teardown)")
