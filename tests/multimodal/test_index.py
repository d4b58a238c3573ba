"""The collection index: incremental updates, atomic swaps, resume, unreadable files, models."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from engine.errors import UserError
from multimodal.imageio import load_image
from multimodal.index import POINTER, Index, Indexer, build_index
from multimodal.search import Searcher, query_vector


def _consistent(idx: Index, embedder) -> None:
    """Every row's embedding is the embedding of the file its row names; files <-> rows agree."""
    assert len(idx.paths) == len(idx.embeddings) == idx.meta["count"]
    fresh = embedder.embed_images(
        torch.stack([load_image(p, embedder.image_size) for p in idx.paths])
    ).numpy()
    np.testing.assert_allclose(np.asarray(idx.embeddings), fresh, atol=1e-5)
    assert sorted(idx.files) == sorted(set(idx.paths))
    assert all(idx.files[p][2] == idx.paths.count(p) for p in idx.files)


def _build(folder, paths, emb, **kw):
    return build_index(folder, paths, emb, num_workers=0, batch_size=4, progress=False, **kw)


def test_incremental_add_change_delete(tmp_path, photos, tiny_embedder, make_photo_fn):
    idx_dir = tmp_path / "idx"
    s = _build(idx_dir, [photos], tiny_embedder)
    assert (s.added, s.rows) == (6, 6)
    _consistent(Index(idx_dir), tiny_embedder)

    make_photo_fn(photos / "new1.png", seed=50)
    make_photo_fn(photos / "b" / "new2.jpg", seed=51)
    changed = photos / "a" / "p0.jpg"
    make_photo_fn(changed, seed=99)
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    (photos / "b" / "c" / "p5.png").unlink()
    s = _build(idx_dir, [], tiny_embedder)  # no paths: the roots the index already covers
    assert (s.added, s.changed, s.removed, s.unchanged, s.rows) == (2, 1, 1, 4, 7)
    idx = Index(idx_dir)
    assert idx.meta["generation"] == 2
    assert not any(p.endswith("p5.png") for p in idx.paths)
    _consistent(idx, tiny_embedder)
    assert sorted(p.name for p in idx_dir.iterdir() if not p.name.startswith(".")) == [
        "db-2.sqlite",
        "emb-2.npy",
        POINTER,
    ]

    s = _build(idx_dir, [photos], tiny_embedder)
    assert (s.unchanged, s.embedded, s.rows) == (7, 0, 7)


def test_unreadable_files_are_listed_not_fatal(tmp_path, photos, tiny_embedder, make_photo_fn):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (photos / "empty.png").write_bytes(b"")
    s = _build(tmp_path / "idx", [photos], tiny_embedder)
    assert s.rows == 6 and sorted(os.path.basename(p) for p, _ in s.failed) == [
        "broken.jpg",
        "empty.png",
    ]
    idx = Index(tmp_path / "idx")
    assert [os.path.basename(p) for p, _ in idx.errors] == ["broken.jpg", "empty.png"]
    s = _build(tmp_path / "idx", [], tiny_embedder)
    assert s.failed == [] and s.embedded == 0  # unchanged bad files are not retried ...
    assert len(Index(tmp_path / "idx").errors) == 2  # ... but stay listed
    make_photo_fn(photos / "broken.jpg", seed=7)  # fixed by the user
    s = _build(tmp_path / "idx", [], tiny_embedder)
    assert (s.changed, s.rows) == (1, 7) and len(Index(tmp_path / "idx").errors) == 1


def test_interrupted_update_keeps_old_index_and_resumes(
    tmp_path, photos, tiny_embedder, make_photo_fn
):
    idx_dir = tmp_path / "idx"
    _build(idx_dir, [photos / "a"], tiny_embedder)
    for i in range(8):
        make_photo_fn(photos / "a" / f"more{i}.png", seed=100 + i)

    calls = []

    def kill_after_two_batches(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the process died here

    indexer = Indexer(
        idx_dir,
        tiny_embedder,
        batch_size=2,
        num_workers=0,
        progress=False,
        on_progress=kill_after_two_batches,
    )
    indexer.chunk_items = 2  # a chunk per batch
    with pytest.raises(KeyboardInterrupt):
        indexer.update([photos / "a"])
    old = Index(idx_dir)  # still the complete previous generation
    assert (old.meta["generation"], len(old)) == (1, 3)
    _consistent(old, tiny_embedder)

    s = Indexer(idx_dir, tiny_embedder, batch_size=2, num_workers=0, progress=False).update(
        [photos / "a"]
    )
    assert s.resumed == 4 and s.embedded == 4 and s.rows == 11
    _consistent(Index(idx_dir), tiny_embedder)
    assert not (idx_dir / "work").exists()


def test_crash_before_the_pointer_swap_leaves_a_readable_index(
    tmp_path, photos, tiny_embedder, make_photo_fn, monkeypatch
):
    import multimodal.index as index_mod

    idx_dir = tmp_path / "idx"
    _build(idx_dir, [photos], tiny_embedder)
    make_photo_fn(photos / "late.png", seed=77)
    real = index_mod.atomic_write

    def dying_write(path, fn):
        if os.path.basename(path) == POINTER:
            raise SystemExit("killed")  # new generation files written, pointer not yet swapped
        return real(path, fn)

    monkeypatch.setattr(index_mod, "atomic_write", dying_write)
    with pytest.raises(SystemExit):
        _build(idx_dir, [], tiny_embedder)
    monkeypatch.setattr(index_mod, "atomic_write", real)
    idx = Index(idx_dir)
    assert (idx.meta["generation"], len(idx)) == (1, 6)
    _consistent(idx, tiny_embedder)
    s = _build(idx_dir, [], tiny_embedder)  # the next run finishes the job from the saved chunks
    assert (s.resumed, s.embedded, s.rows) == (1, 0, 7)
    # the killed run's generation 2 is never written over in place: 3, and 2 is cleaned up
    assert sorted(p.name for p in idx_dir.iterdir() if not p.name.startswith(".")) == [
        "db-3.sqlite",
        "emb-3.npy",
        POINTER,
    ]


def test_index_refuses_a_different_model(tmp_path, photos, tiny_embedder):
    _build(tmp_path / "idx", [photos], tiny_embedder)
    other = _other_model(tmp_path)
    with pytest.raises(UserError, match="index was made by selfsup-tiny"):
        _build(tmp_path / "idx", [photos], other)
    s = _build(tmp_path / "idx", [photos], other, rebuild=True)
    assert s.rows == 6 and Index(tmp_path / "idx").model["fingerprint"] == other.spec["fingerprint"]


def test_exact_duplicate_of_the_query_image_comes_first(tmp_path, photos, tiny_embedder):
    _build(tmp_path / "idx", [photos], tiny_embedder)
    target = photos / "b" / "c" / "p4.jpg"
    query = shutil.copy(target, tmp_path / "query.jpg")
    hits = Searcher(Index(tmp_path / "idx")).search(
        query_vector(tiny_embedder, image=query), k=3, check_exact=True
    )
    assert hits[0].path == str(target) and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert hits[1].score < hits[0].score


def _write_video(video, n: int = 30) -> None:
    """n frames at 10 fps, a key frame every second (10 frames)."""
    av = pytest.importorskip("av")
    video.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(video), "w") as out:
        stream = out.add_stream(
            "libx264", rate=10, options={"g": "10", "keyint_min": "10", "sc_threshold": "0"}
        )
        stream.width = stream.height = 48
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            frame = np.full((48, 48, 3), (i * 8) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_video_key_frames_are_indexed(tmp_path, tiny_embedder):
    _write_video(tmp_path / "clips" / "v.mp4")
    s = _build(tmp_path / "idx", [tmp_path / "clips"], tiny_embedder, videos=True)
    idx = Index(tmp_path / "idx")
    assert s.rows == 3 and idx.frames == pytest.approx([0.0, 1.0, 2.0])
    assert (
        _build(tmp_path / "idx2", [tmp_path / "clips"], tiny_embedder).rows == 0
    )  # videos are opt-in


def test_updates_keep_the_recorded_video_settings(tmp_path, tiny_embedder, make_photo_fn):
    """`selfsup index` without --videos (and the app's worker, which passes False) used to
    drop every video row of an index built with videos."""
    clips = tmp_path / "clips"
    _write_video(clips / "v.mp4")
    make_photo_fn(clips / "p.png", seed=3)
    idx_dir = tmp_path / "idx"
    s = _build(idx_dir, [clips], tiny_embedder, videos=True, max_video_frames=2)
    assert s.rows == 3 and Index(idx_dir).meta["max_video_frames"] == 2
    make_photo_fn(clips / "q.png", seed=4)
    s = _build(idx_dir, [], tiny_embedder)  # the CLI without --videos: None
    assert (s.removed, s.added, s.rows) == (0, 1, 4)
    _write_video(clips / "w.mp4", n=25)
    s = Indexer(idx_dir, tiny_embedder, videos=False, num_workers=0, progress=False).update()
    assert (s.removed, s.added, s.rows) == (0, 1, 6)  # the new video at the recorded 2 frames
    idx = Index(idx_dir)
    assert sorted(os.path.basename(p) for p in idx.paths).count("w.mp4") == 2
    assert idx.meta["videos"] is True and idx.meta["max_video_frames"] == 2
    s = _build(idx_dir, [clips], tiny_embedder, rebuild=True)  # starting over: photos only
    assert s.rows == 2 and Index(idx_dir).meta["videos"] is False


def test_dangling_link_and_vanished_file_are_listed_not_fatal(
    tmp_path, photos, tiny_embedder, monkeypatch
):
    import multimodal.index as index_mod

    (photos / "a" / "gone.jpg").symlink_to(photos / "nowhere.jpg")
    idx_dir = tmp_path / "idx"
    s = _build(idx_dir, [photos], tiny_embedder)
    assert s.rows == 6 and [(os.path.basename(p), "dangling" in e) for p, e in s.failed] == [
        ("gone.jpg", True)
    ]
    assert [os.path.basename(p) for p, _ in Index(idx_dir).errors] == ["gone.jpg"]

    real_walk = index_mod.walk_files
    victim = photos / "b" / "c" / "p5.png"

    def walk_then_delete(paths, videos=False):
        found = real_walk(paths, videos)
        victim.unlink()  # deleted between the walk and the stat
        return found

    monkeypatch.setattr(index_mod, "walk_files", walk_then_delete)
    s = _build(idx_dir, [], tiny_embedder)
    assert [os.path.basename(p) for p, _ in s.failed] == ["p5.png"] and s.rows == 5
    idx = Index(idx_dir)
    _consistent(idx, tiny_embedder)
    assert sorted(os.path.basename(p) for p, _ in idx.errors) == ["gone.jpg", "p5.png"]
    monkeypatch.setattr(index_mod, "walk_files", real_walk)
    s = _build(idx_dir, [], tiny_embedder)  # the vanished file drops out; the link stays listed
    assert (s.removed, s.failed, s.rows) == (0, [], 5)
    assert [os.path.basename(p) for p, _ in Index(idx_dir).errors] == ["gone.jpg"]


def _other_model(tmp_path):
    from multimodal.embedder import load_clip
    from multimodal.models import create_clip

    torch.manual_seed(123)
    torch.save(create_clip("selfsup-tiny").state_dict(), tmp_path / "other.pt")
    return load_clip("selfsup-tiny", pretrained=str(tmp_path / "other.pt"), image_size=32)


@pytest.mark.parametrize("stage", ["chunks", "embeddings", "db", "pointer"])
def test_killed_rebuild_keeps_serving_the_old_model(
    tmp_path, photos, tiny_embedder, monkeypatch, stage
):
    """--rebuild with model B killed at each stage: the index still serves model A's vectors,
    consistent with its rows; a later update with A, then a rebuild with B, finish cleanly."""
    import multimodal.index as index_mod

    idx_dir = tmp_path / "idx"
    _build(idx_dir, [photos], tiny_embedder)
    other = _other_model(tmp_path)
    real = index_mod.atomic_write

    def dying_write(path, fn):
        name = os.path.basename(path)
        if stage == "pointer" and name == POINTER:
            raise SystemExit("killed")  # everything of the new generation written
        real(path, fn)
        if (stage, name[:2]) in (("chunks", "c-"), ("embeddings", "em"), ("db", "db")):
            raise SystemExit("killed")  # right after this file was complete

    monkeypatch.setattr(index_mod, "atomic_write", dying_write)
    with pytest.raises(SystemExit):
        _build(idx_dir, [photos], other, rebuild=True)
    monkeypatch.setattr(index_mod, "atomic_write", real)
    idx = Index(idx_dir)
    assert idx.model["fingerprint"] == tiny_embedder.spec["fingerprint"]
    _consistent(idx, tiny_embedder)  # model A's vectors, not B's written over them

    s = _build(idx_dir, [photos], tiny_embedder)  # an update with A repairs: nothing to embed
    assert (s.unchanged, s.embedded, s.rows) == (6, 0, 6)
    _consistent(Index(idx_dir), tiny_embedder)
    s = _build(idx_dir, [photos], other, rebuild=True)
    idx = Index(idx_dir)
    assert s.rows == 6 and idx.model["fingerprint"] == other.spec["fingerprint"]
    _consistent(idx, other)
    g = idx.meta["generation"]
    assert sorted(p.name for p in idx_dir.iterdir() if not p.name.startswith(".")) == [
        f"db-{g}.sqlite",
        f"emb-{g}.npy",
        POINTER,
    ]


def test_photo_formats_gif_first_frame_and_exif_orientation(tmp_path, tiny_embedder):
    from PIL import Image

    root = tmp_path / "formats"
    root.mkdir()
    red, blue = Image.new("RGB", (40, 40), (220, 20, 20)), Image.new("RGB", (40, 40), (20, 20, 220))
    for ext in ("png", "bmp", "tiff", "webp"):
        red.save(root / f"red.{ext}")
    red.save(root / "anim.gif", save_all=True, append_images=[blue], duration=100)
    half = Image.new("RGB", (40, 20), (220, 20, 20))  # stored: red on the left, blue on the right
    half.paste((20, 20, 220), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    half.save(root / "rotated.jpg", exif=exif, quality=95)
    s = _build(tmp_path / "idx", [root], tiny_embedder)
    assert s.rows == 6 and not s.failed
    idx = Index(tmp_path / "idx")
    vec = dict(zip([os.path.basename(p) for p in idx.paths], np.asarray(idx.embeddings)))
    np.testing.assert_allclose(vec["anim.gif"], vec["red.png"], atol=1e-4)  # the first frame
    shown = load_image(root / "rotated.jpg", 20)  # displayed upright: red on top, blue below
    assert shown[0, :5].float().mean() > 150 and shown[2, -5:].float().mean() > 150
