"""engine.media: one extension table for every reader, one walker, one image reader."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.data import ImageFolderDataset, list_images
from engine.media.files import (
    IMAGE_EXTS,
    VIDEO_EXTS,
    is_frame_folder,
    is_image_file,
    list_frame_files,
    walk,
)
from engine.media.images import decode_image, read_rgb

ROOT = Path(__file__).resolve().parents[2]


def test_one_table_from_the_installed_decoders():
    for ext in (".jpg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"):
        assert ext in IMAGE_EXTS
    for ext in (".jp2", ".pnm", ".pbm", ".pgm", ".ppm"):  # issue 12 item 9: these were missed
        assert ext in IMAGE_EXTS
    for ext in (".pdf", ".h5", ".grib", ".bufr", ".palm"):  # save-only or stub plugins
        assert ext not in IMAGE_EXTS
    assert not set(IMAGE_EXTS) & set(VIDEO_EXTS)
    assert ".gif" not in VIDEO_EXTS and ".mpg" in VIDEO_EXTS  # the one decision for .gif
    import multimodal.imageio
    import video.io

    assert video.io.IMAGE_EXTS is IMAGE_EXTS and video.io.VIDEO_EXTS is VIDEO_EXTS
    assert not hasattr(multimodal.imageio, "IMAGE_EXTS")  # no second table


def test_every_listed_photo_format_decodes(tmp_path):
    rgb = np.zeros((10, 14, 3), np.uint8)
    rgb[:, :7] = (200, 40, 10)
    grey = Image.fromarray(rgb).convert("L")
    Image.fromarray(rgb).save(tmp_path / "a.ppm")
    Image.fromarray(rgb).save(tmp_path / "b.pnm")
    grey.save(tmp_path / "c.pgm")
    grey.convert("1").save(tmp_path / "d.pbm")
    Image.fromarray(rgb).save(tmp_path / "e.jp2")
    Image.fromarray(rgb).save(tmp_path / "f.gif")
    files = list_images(tmp_path)
    assert [p.name for p in files] == ["a.ppm", "b.pnm", "c.pgm", "d.pbm", "e.jp2", "f.gif"]
    ds = ImageFolderDataset(tmp_path, load_size=8)
    assert len(ds) == 6 and ds.skipped == []
    assert read_rgb(tmp_path / "a.ppm")[0, 0].tolist() == [200, 40, 10]
    assert decode_image(tmp_path / "d.pbm", 8).shape == (3, 8, 8)


def test_walker_skips_hidden_and_reports_dangling_links(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "sub" / "y.JPG")
    (tmp_path / ".cache").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / ".cache" / "z.png")
    Image.new("RGB", (4, 4)).save(tmp_path / ".hidden.png")
    (tmp_path / "clip.mp4").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    rel = lambda ps: [p.relative_to(tmp_path).as_posix() for p in ps]  # noqa: E731
    assert rel(walk([tmp_path])) == ["gone.jpg", "sub/y.JPG", "x.png"]
    assert rel(walk([tmp_path], videos=True)) == ["clip.mp4", "gone.jpg", "sub/y.JPG", "x.png"]
    assert walk([tmp_path / "x.png", tmp_path / "x.png"]) == [tmp_path / "x.png"]
    # the dataset counts the dangling link as one skipped file instead of failing later
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ImageFolderDataset(tmp_path, load_size=4)
    assert len(ds) == 2 and [p.name for p in ds.skipped] == ["gone.jpg"]
    assert any("skipped 1 unreadable" in str(w.message) for w in caught)
    assert not is_image_file(tmp_path / ".hidden.png")


def test_frame_folders_natural_order(tmp_path):
    for i in (10, 2, 1):
        Image.new("RGB", (4, 4)).save(tmp_path / f"f{i}.pgm")
    (tmp_path / "readme.txt").write_text("x")
    assert [p.name for p in list_frame_files(tmp_path)] == ["f1.pgm", "f2.pgm", "f10.pgm"]
    assert is_frame_folder(tmp_path) and not is_frame_folder(tmp_path / "readme.txt")


def test_keyframes_from_the_video_reader(tmp_path):
    pytest.importorskip("av")
    from engine.media.video import open_video
    from multimodal.imageio import video_key_frames
    from video.io import VideoWriter

    frames = np.zeros((30, 32, 32, 3), np.uint8)
    frames[:, :, :, 0] = np.arange(30)[:, None, None] * 8
    with VideoWriter(tmp_path / "v.mp4", fps=10, gop=10) as w:
        for f in frames:
            w.write(f)
    with open_video(tmp_path / "v.mp4", backend="pyav") as r:
        key_idx = r.key_indices()
        keys = r.keyframes(16)
    assert len(key_idx) >= 3 and key_idx[0] == 0
    assert [round(t, 3) for t, _ in keys] == [i / 10 for i in key_idx]
    assert [round(float(f[..., 0].mean()) / 8) for _, f in keys] == key_idx  # the right frames
    two = video_key_frames(tmp_path / "v.mp4", 16, max_frames=2)
    assert [round(t, 3) for t, _ in two] == [0.0, key_idx[-1] / 10]
    assert two[0][1].shape == (3, 16, 16)


def test_one_decoder_and_walker_and_layering():
    """No module keeps its own extension list, walker or PyAV decoder; multimodal never
    imports video (both sit above engine)."""
    sources = {
        p: p.read_text()
        for d in ("engine", "video", "multimodal")
        for p in (ROOT / d).rglob("*.py")
    }
    for p, text in sources.items():
        rel = p.relative_to(ROOT).as_posix()
        if rel.startswith("multimodal/"):
            assert not re.search(r"^\s*(from|import)\s+video\b", text, re.M), rel
        if rel.startswith("engine/media/"):
            continue
        assert not re.search(r"=\s*[({]\s*\"\.jpe?g\"", text), f"{rel}: its own extension list"
        assert "os.walk(" not in text, f"{rel}: its own file walker"
        if rel.startswith(("multimodal/", "engine/")):
            assert "av.open(" not in text, f"{rel}: its own PyAV decoder"
