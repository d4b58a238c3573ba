"""Features page on a small ViT export and the sample: attention heads with the mass slider,
PCA across images, neighbours with class borders, and the scatter plot with hover."""

from __future__ import annotations

import numpy as np
import pytest

from tests.app.helpers import SAMPLE_IMAGES, wait_until


@pytest.fixture(scope="module")
def vit_export(tmp_path_factory):
    import torch

    from engine.backbones import build_backbone
    from engine.features import FeatureExtractor, export_backbone

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "vit.safetensors"
    export_backbone(FeatureExtractor(build_backbone("vit_tiny", 32), image_size=32), path)
    return path


def test_features_page_renders_every_view(window, qtbot, vit_export):
    page = window.features_page
    window.show_page("features")
    page.model_picker.set_path(str(vit_export), emit=False)
    page.images_picker.set_path(str(SAMPLE_IMAGES / "val"), emit=False)
    page.n_spin.setValue(4)
    page.compute_btn.click()
    wait_until(
        qtbot,
        lambda: page.fs is not None and not page.computing and page._xy is not None,
        180,
        "features",
    )
    fs = page.fs
    assert len(fs.files) == 120 and len(fs.classes) == 6 and fs.is_vit
    heads = fs.attention["heads"].shape[1]
    assert len(page.att_grid.views) == 3 + heads  # image, mean, mask, every head
    # the mass slider changes the kept-patch mask: fewer patches for less mass
    page.mass_slider.setValue(20)
    small = page.att_grid.views[2].caption
    page.mass_slider.setValue(90)
    assert small != page.att_grid.views[2].caption
    assert len(page.pca_grid.views) == 2 * 4  # the images and their PCA maps
    # neighbours: a query and 6 neighbours, by features and by pixels; never the query itself
    assert len(page.nn_grid.views) == 2 * 7
    assert all("query" not in v.caption for i, v in enumerate(page.nn_grid.views) if i % 7)
    # scatter: one point per image, coloured by class; hovering shows that image
    assert len(page.scatter.points()) == 120
    page.show_point(7)
    assert page.hover_view.pixmap() is not None and fs.label_name(7) in page.hover_caption.text()
    assert np.isfinite(page._xy).all()
    # the ViT's attention rows sum to one over the patches (engine.visualize renormalises)
    np.testing.assert_allclose(fs.attention["heads"].sum(axis=(-2, -1)), 1.0, rtol=1e-4)


def test_features_page_reports_bad_model_in_one_line(window, qtbot, tmp_path):
    from app.gui.errors import dialogs

    bad = tmp_path / "model.pt"
    bad.write_text("not a checkpoint")
    page = window.features_page
    page.model_picker.set_path(str(bad), emit=False)
    page.images_picker.set_path(str(SAMPLE_IMAGES / "val"), emit=False)
    page.compute()
    wait_until(qtbot, lambda: not page.computing, 60, "the failure")
    assert dialogs.last_message.startswith(str(bad)) and "\n" not in dialogs.last_message
    assert page.compute_btn.isEnabled()


def test_two_models_side_by_side_and_published_names(window, qtbot, vit_export, tmp_path):
    """The pickers offer the published models; a second model's features on the same images
    fill the Compare tab (computed here on the test's thread: the threaded compute path is the
    first test's)."""
    from app.gui.features_model import compute_pair

    page = window.features_page
    names = [page.published.itemData(i) for i in range(page.published.count())]
    assert "dino:vits16" in names and "dinov2:vits14_reg" in names  # offered by name
    page.compare.setCurrentIndex(names.index("dino:vits8"))
    assert page.compare_source() == "dino:vits8"
    page.compare.setEditText(str(vit_export))  # any model source typed in works too
    assert page.compare_source() == str(vit_export)
    page.session.request(str(vit_export), page.compare_source(), str(SAMPLE_IMAGES / "val"))
    pair = compute_pair(str(vit_export), page.compare_source(), SAMPLE_IMAGES / "val", 0, 3)
    page.session.set_features(pair)
    assert page.other.map_size == page.fs.map_size and page.other.chosen == page.fs.chosen
    assert len(page.cmp_grid.views) == 5 * 3  # image, A looks, A PCA, B looks, B PCA per row
    assert "A = " in page.cmp_note.text() and "B = " in page.cmp_note.text()
    wait_until(qtbot, lambda: page._xy is not None, 120, "the scatter plot (before teardown)")
