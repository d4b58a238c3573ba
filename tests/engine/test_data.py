"""ImageFolderDataset on small temporary folders: labels, layouts, EXIF, bad files, errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from engine.config import TrainConfig
from engine.data import ImageFolderDataset, default_load_size, load_images
from engine.errors import UserError
from engine.registry import build_dataset


def save(path: Path, colour=(200, 30, 30), size=(20, 16), mode="RGB", **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGB", size, colour)
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, **kw)
    return path


def noisy_jpeg(path: Path, size: int = 64) -> Path:
    arr = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95)
    return path


def test_class_folders_nested_and_item_format(tmp_path):
    save(tmp_path / "cat" / "a.png")
    save(tmp_path / "cat" / "deeper" / "b.JPG", colour=(10, 200, 10))
    save(tmp_path / "dog" / "c.jpeg")
    save(tmp_path / "dog" / "d.WebP")
    save(tmp_path / "dog" / "e.bmp")
    save(tmp_path / "dog" / "f.TIFF")
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    save(tmp_path / "dog" / ".hidden.png")  # editor / OS droppings are ignored
    ds = ImageFolderDataset(tmp_path, load_size=12)
    assert ds.classes == ["cat", "dog"] and ds.labelled
    assert len(ds) == 6 and ds.targets == [0, 0, 1, 1, 1, 1]
    assert [p.name for p in ds.files][:2] == ["a.png", "b.JPG"]
    item = ds[1]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 12, 12)
    assert item["label"].dtype == torch.int64 and int(item["label"]) == 0 and item["index"] == 1
    assert (item["image"][:, 6, 6].int() - torch.tensor([10, 200, 10])).abs().max() <= 3
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 12, 12) and batch["label"].tolist() == [0, 0, 1, 1]


def test_unlabelled_and_mixed_layouts(tmp_path):
    save(tmp_path / "flat" / "x.png")
    save(tmp_path / "flat" / "y.png")
    ds = ImageFolderDataset(tmp_path / "flat", 8)
    assert ds.classes == [] and ds.targets == [-1, -1] and int(ds[0]["label"]) == -1
    save(tmp_path / "flat" / "sub" / "z.png")  # loose files + a folder: not a class layout
    ds = ImageFolderDataset(tmp_path / "flat", 8)
    assert len(ds) == 3 and set(ds.targets) == {-1}
    with pytest.raises(UserError, match="outside a class folder"):
        ImageFolderDataset(tmp_path / "flat", 8, labels=True)
    assert ImageFolderDataset(tmp_path / "flat" / "sub", 8, labels=False).targets == [-1]


def test_resize_shorter_side_then_centre_crop(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)  # wide: left half red, right half blue
    arr[:, :20, 0] = 255
    arr[:, 20:, 2] = 255
    Image.fromarray(arr).save(tmp_path / "wide.png")
    img = load_images([tmp_path / "wide.png"], 10)[0]
    assert img.shape == (3, 10, 10)
    assert img[0, :, :4].min() > 200 and img[2, :, -4:].min() > 200  # centre crop keeps both halves


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), dtype=np.uint8)  # stored wide: left half red, right half blue
    arr[:, :20, 0] = 255
    arr[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored left edge becomes the top
    Image.fromarray(arr).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    img = ImageFolderDataset(tmp_path, 20)[0]["image"].int()
    assert img.shape == (3, 20, 20)
    top, bottom = img[:, :6], img[:, -6:]
    assert top[0].float().mean() > 200 and top[2].float().mean() < 60  # red on top
    assert bottom[2].float().mean() > 200 and bottom[0].float().mean() < 60  # blue below


def test_modes_become_rgb(tmp_path):
    save(tmp_path / "gray.png", colour=(100, 100, 100), mode="L")
    save(tmp_path / "palette.png", colour=(0, 0, 255), mode="P")
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "transparent.png")
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "deep.png")
    ds = ImageFolderDataset(tmp_path, 8)
    by_name = {p.name: ds[i]["image"] for i, p in enumerate(ds.files)}
    assert all(t.shape == (3, 8, 8) for t in by_name.values())
    assert by_name["gray.png"][:, 0, 0].tolist() == [100, 100, 100]
    assert by_name["palette.png"][:, 0, 0].tolist() == [0, 0, 255]
    assert by_name["transparent.png"][:, 0, 0].tolist() == [255, 255, 255]  # on white
    assert by_name["deep.png"][:, 0, 0].tolist() == [255, 255, 255]


def test_bad_files_skipped_with_one_counted_warning(tmp_path):
    for i in range(3):
        save(tmp_path / "a" / f"ok{i}.png")
    (tmp_path / "a" / "empty.png").write_bytes(b"")
    (tmp_path / "a" / "text.jpg").write_text("hello, I am not a JPEG")
    good = (tmp_path / "a" / "ok0.png").read_bytes()
    (tmp_path / "a" / "garbage.jpg").write_bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4)
    (tmp_path / "a" / "broken.png").write_bytes(good[:8] + b"\x00" * 40)  # PNG magic, no header
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ImageFolderDataset(tmp_path, 8)
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and "skipped 4 unreadable" in msgs[0] and "and 1 more" in msgs[0]
    assert len(ds) == 3 and sorted(p.name for p in ds.skipped) == [
        "broken.png",
        "empty.png",
        "garbage.jpg",
        "text.jpg",
    ]


def test_truncated_file_is_substituted_at_load_time(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    noisy_jpeg(tmp_path / "0.jpg")
    data = noisy_jpeg(tmp_path / "1.jpg").read_bytes()
    (tmp_path / "1.jpg").write_bytes(data[: len(data) // 3])  # header fine, scan data cut
    noisy_jpeg(tmp_path / "2.jpg", size=48)
    ds = ImageFolderDataset(tmp_path, 16)
    assert len(ds) == 3  # the header check cannot see the truncation
    with pytest.warns(UserWarning, match="1.jpg: cannot decode"):
        item = ds[1]
    assert item["index"] == 2 and torch.equal(item["image"], ds[2]["image"])
    assert [p.name for p in ds.bad_files] == ["1.jpg"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds[1]["index"] == 2  # known bad: skipped without retrying or warning again
    assert len(ds.bad_files) == 1


def test_empty_missing_and_all_bad_folders_raise_user_error(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "nope")):
        ImageFolderDataset(tmp_path / "nope", 8)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=r"empty: no images found"):
        ImageFolderDataset(tmp_path / "empty", 8)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_text("nope")
    with pytest.warns(UserWarning), pytest.raises(UserError, match="none of the 1 image files"):
        ImageFolderDataset(tmp_path / "bad", 8)
    save(tmp_path / "f.png")
    with pytest.raises(UserError, match="not a folder"):
        ImageFolderDataset(tmp_path / "f.png", 8)


def test_load_images_and_registry(tmp_path):
    a = save(tmp_path / "k" / "a.png", size=(30, 30))
    b = save(tmp_path / "k" / "b.jpg", size=(50, 20))
    out = load_images([a, b], 16)
    assert out.shape == (2, 3, 16, 16) and out.dtype == torch.uint8
    (tmp_path / "bad.png").write_text("x")
    with pytest.raises(UserError, match="bad.png: cannot read image"):
        load_images([a, tmp_path / "bad.png"], 16)
    with pytest.raises(UserError, match="missing.png: image not found"):
        load_images([tmp_path / "missing.png"], 16)
    assert (
        default_load_size(32) == 32
        and default_load_size(64) == 73
        and default_load_size(224) == 255
    )
    ds = build_dataset("images", TrainConfig(data=str(tmp_path / "k"), image_size=64))
    assert isinstance(ds, ImageFolderDataset) and ds[0]["image"].shape == (3, 73, 73)


def _tall_image(path: Path) -> Path:
    """20 wide x 60 tall: red top third, green middle, blue bottom third. The centre square
    (shorter side 20) is the green band only."""
    arr = np.zeros((60, 20, 3), np.uint8)
    arr[:20, :, 0] = 255
    arr[20:40, :, 1] = 255
    arr[40:, :, 2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def test_training_items_are_whole_images_with_their_size(tmp_path):
    _tall_image(tmp_path / "k" / "tall.png")
    whole = build_dataset("images", TrainConfig(data=str(tmp_path / "k"), image_size=16))[0]
    assert whole["image"].shape == (3, 16, 16) and whole["hw"].tolist() == [60, 20]
    img = whole["image"].int()
    assert img[0, 0, 8] > 240 and img[2, 15, 8] > 240  # top row red, bottom row blue: all kept
    centre = ImageFolderDataset(tmp_path / "k", load_size=16)[0]  # evaluation: centre square
    assert "hw" not in centre and centre["image"][1].int().min() > 200  # green band only
    assert centre["image"][0].int().max() < 30 and centre["image"][2].int().max() < 30


def test_crops_of_a_tall_image_reach_its_top_and_bottom_rows(tmp_path):
    """Method.make_views with the batch's "hw": over many crops the top (red) and bottom (blue)
    bands appear, which a centre square never shows; each crop's aspect in the original's
    pixels stays in the spec's ratio range, so a crop shows a shape undistorted."""
    from engine import augment
    from engine.methods.base import Method

    _tall_image(tmp_path / "k" / "tall.png")
    ds = build_dataset("images", TrainConfig(data=str(tmp_path / "k"), image_size=16))
    n = 400
    batch = {
        "image": ds[0]["image"][None].expand(n, -1, -1, -1).contiguous(),
        "hw": ds[0]["hw"][None].expand(n, 2),
    }
    spec = augment.ViewSpec(size=8, flip_p=0, jitter_p=0, gray_p=0, blur_p=0, normalize=False)
    m = Method()
    m.set_step_context(seed=0, step=3)
    (v,) = m.make_views(batch, [spec])
    red = (v[:, 0] > 0.8).flatten(1).any(1).float().mean()
    blue = (v[:, 2] > 0.8).flatten(1).any(1).float().mean()
    assert red > 0.2 and blue > 0.2
    centre = ImageFolderDataset(tmp_path / "k", load_size=16)[0]["image"]
    (c,) = m.make_views({"image": centre[None].expand(n, -1, -1, -1)}, [spec])
    assert (c[:, 0] > 0.5).sum() == 0 and (c[:, 2] > 0.5).sum() == 0
    # the draws behind the views: true-pixel aspect within ratio (3/4, 4/3)
    p = augment.sample_view_params(
        n, spec, generator=torch.Generator().manual_seed(0), image_hw=batch["hw"]
    )
    aspect = p.box[:, 2] * 20 / (p.box[:, 3] * 60)
    assert aspect.min() >= 3 / 4 - 1e-4 and aspect.max() <= 4 / 3 + 1e-4
    assert (p.box[:, 1] + p.box[:, 3]).max() > 0.9 and p.box[:, 1].min() < 0.1


def test_centre_boxes_are_the_evaluation_square():
    from engine import augment

    b = augment.centre_boxes(torch.tensor([[60, 20], [10, 10], [50, 100]]))
    expect = [[0.0, 1 / 3, 1.0, 1 / 3], [0.0, 0.0, 1.0, 1.0], [0.25, 0.0, 0.5, 1.0]]
    assert torch.allclose(b, torch.tensor(expect))
