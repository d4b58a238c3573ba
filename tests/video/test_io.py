"""Video reading: decord/PyAV parity, frame folders, corrupt files, writer, clip sampling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from engine.errors import UserError
from video.data import ClipDataset, clip_indices, find_sequences
from video.io import DecodeError, VideoWriter, open_video
from video.sample import render_motion_clip, write_frames


def test_decord_and_pyav_give_the_same_frames(sample):
    pytest.importorskip("decord")
    idx = [0, 47, 5, 6, 30, 12, 12, 1, 46, 23]  # random access, repeats, backwards jumps
    with (
        open_video(sample / "shapes.mp4", backend="decord") as d,
        open_video(sample / "shapes.mp4", backend="pyav") as a,
    ):
        assert (len(d), len(a)) == (48, 48)
        assert d.fps == pytest.approx(24.0) and a.fps == pytest.approx(24.0)
        x, y = d.frames(idx), a.frames(idx)
    assert x.shape == (10, 128, 128, 3) and x.dtype == np.uint8
    assert np.array_equal(x, y)  # same decoder, same colour conversion: bit-identical
    with (
        open_video(sample / "shapes.mp4", backend="decord", size=(64, 96)) as d,
        open_video(sample / "shapes.mp4", backend="pyav", size=(64, 96)) as a,
    ):
        x, y = d.frames(idx), a.frames(idx)
    assert x.shape == (10, 64, 96, 3)
    assert np.array_equal(x, y)  # resizing happens after decoding, the same way for every backend


def test_sequential_and_random_access_agree(sample):
    with open_video(sample / "shapes.mp4", backend="pyav") as r:
        seq = np.stack(list(r))
        assert seq.shape[0] == 48
        assert np.array_equal(r.frames([40, 3, 17]), seq[[40, 3, 17]])
        assert np.array_equal(r.frame(-1), seq[47])
        t = r.frames([2, 3], as_tensor=True)
        assert tuple(t.shape) == (2, 128, 128, 3)


def test_frame_folder_matches_the_video(sample, sample_frames_dir):
    with open_video(sample_frames_dir) as f, open_video(sample / "shapes.mp4") as v:
        assert f.backend == "folder" and len(f) == len(v) == 48
        a, b = f.frames([0, 20, 47]).astype(int), v.frames([0, 20, 47]).astype(int)
    assert np.abs(a - b).mean() < 6  # JPEG vs H.264 of the same rendered frames
    with open_video(sample_frames_dir, size=64) as f:
        assert f.frames([1]).shape == (1, 64, 64, 3)


def test_not_a_video_names_the_file(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n")
    for backend in ("auto", "pyav"):
        with pytest.raises(UserError, match="notes.mp4"):
            open_video(bad, backend=backend)
    with pytest.raises(UserError, match="not found"):
        open_video(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(UserError, match="empty"):
        open_video(tmp_path / "empty.mp4")


def test_truncated_video_reports_the_missing_frame(sample, tmp_path):
    data = (sample / "shapes.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the sample keeps its index (moov) at the start
    with open_video(cut, backend="pyav") as r:
        assert r.frames([0, 1]).shape[0] == 2  # the start still decodes
        with pytest.raises(DecodeError, match=r"cut\.mp4: frame \d+"):
            r.frames(range(len(r)))


def test_corrupt_frames_are_reported_not_hidden(sample, tmp_path):
    data = bytearray((sample / "shapes.mp4").read_bytes())
    rng = np.random.default_rng(0)
    mid = len(data) // 2
    data[mid : mid + 3000] = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    bad = tmp_path / "garbled.mp4"
    bad.write_bytes(bytes(data))
    with (
        open_video(bad, backend="pyav") as r,
        pytest.raises(DecodeError, match=r"garbled\.mp4: frame \d+"),
    ):
        r.frames(range(len(r)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with open_video(bad, on_error="warn") as r:
            frames = r.frames(range(len(r)))
            bad_frames = list(r.bad_frames)
    assert frames.shape[0] == 48
    assert bad_frames and all(0 < i < 48 for i in bad_frames)
    assert any("garbled.mp4: frame" in str(w.message) for w in caught)


def test_stream_choice_is_checked(sample):
    with pytest.raises(UserError, match="stream 3"):
        open_video(sample / "shapes.mp4", stream=3)


def test_writer_round_trip_odd_size(tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (5, 33, 47, 3), dtype=np.uint8)
    frames[:] = frames[:1]  # static: easy to compress, checks the padding path
    with VideoWriter(tmp_path / "v.mp4", fps=10) as w:
        for f in frames:
            w.write(f)
    assert not (tmp_path / "v.mp4.tmp").exists()
    with open_video(tmp_path / "v.mp4", backend="pyav") as r:
        assert len(r) == 5 and r.size == (34, 48)


def test_clip_indices_hand_cases():
    assert clip_indices(20, 4, 3, "uniform", k=0, n_clips=2) == [0, 3, 6, 9]
    assert clip_indices(20, 4, 3, "uniform", k=1, n_clips=2) == [10, 13, 16, 19]
    assert clip_indices(5, 4, 3, "uniform") == [0, 1, 2, 3]  # too short: stride shrinks to 1
    assert clip_indices(2, 4, 1, "uniform") == [0, 1, 1, 1]  # shorter than the clip: repeat the end
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = clip_indices(30, 4, 2, "random", rng=rng)
        assert idx[0] in range(0, 24) and np.all(np.diff(idx) == 2)
    with pytest.raises(UserError, match="sampling"):
        clip_indices(10, 2, 1, "bogus")


def test_clip_dataset_layouts_and_labels(sample, tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("left", "up"):
        for k in range(2):
            write_frames(
                tmp_path / "labelled" / cls / f"clip{k}", render_motion_clip(cls, 6, 24, rng)
            )
    (tmp_path / "labelled" / "up" / "broken.mp4").write_text("nope")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        ds = ClipDataset(tmp_path / "labelled", clip_len=3, stride=2, load_size=16)
    assert ds.classes == ["left", "up"] and len(ds.videos) == 4
    item = ds[3]
    assert (
        tuple(item["clip"].shape) == (3, 3, 16, 16)
        and item["clip"].dtype.is_floating_point is False
    )
    assert int(item["label"]) == ds.targets[ds.items[3][0]]
    davis = ClipDataset(sample, clip_len=4, stride=2, load_size=32)  # DAVIS layout: frames only
    assert find_sequences(sample) == [sample / "JPEGImages" / "480p" / "shapes"]
    assert davis.classes == [] and int(davis[0]["label"]) == -1
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no videos"):
        ClipDataset(tmp_path / "empty")


def test_shipped_sample_matches_its_generator(sample, sample_frames_dir, sample_masks_dir):
    from video.masks import read_mask
    from video.sample import render_sample

    frames, masks = render_sample()
    assert frames.shape == (48, 128, 128, 3) and set(np.unique(masks)) == {0, 1, 2}
    for t in (0, 23, 47):
        assert np.array_equal(read_mask(sample_masks_dir / f"{t:05d}.png")[0], masks[t])
    with open_video(sample_frames_dir) as r:
        assert np.abs(r.frames([0, 47]).astype(int) - frames[[0, 47]]).mean() < 3  # JPEG q92
    total = sum(p.stat().st_size for p in sample.rglob("*") if p.is_file())
    assert total < 1.5e6


_ENCODE = """
import sys, av, numpy as np
frames = np.load(sys.argv[3])
with av.open(sys.argv[1], "w") as c:
    s = c.add_stream(sys.argv[2], rate=10)
    s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
    for f in frames:
        for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
            c.mux(pkt)
    for pkt in s.encode():
        c.mux(pkt)
"""


def _encode(path, codec: str, frames: np.ndarray) -> None:
    """Encode in a fresh process: once decord is imported, its bundled FFmpeg breaks PyAV's
    libvpx encoders in the same process (avcodec_open2 returns EINVAL; seen here)."""
    import subprocess
    import sys

    np.save(str(path) + ".npy", frames)
    cmd = [sys.executable, "-c", _ENCODE, str(path), codec, str(path) + ".npy"]
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.mark.parametrize(
    "ext,codec", [("mkv", "libx264"), ("mov", "libx264"), ("avi", "mpeg4"), ("webm", "libvpx-vp9")]
)
def test_containers(tmp_path, ext, codec):
    frames = np.random.default_rng(0).integers(0, 255, (6, 32, 64, 3), dtype=np.uint8)
    _encode(tmp_path / f"v.{ext}", codec, frames)
    with (
        open_video(tmp_path / f"v.{ext}") as auto,
        open_video(tmp_path / f"v.{ext}", backend="pyav") as av_,
    ):
        assert len(auto) == len(av_) == 6
        assert np.array_equal(auto.frames([5, 0, 3]), av_.frames([5, 0, 3]))
    # decord returns 4-byte pixels for some widths (48 px): the auto backend falls back to PyAV
    _encode(tmp_path / f"w.{ext}", codec, frames[:, :, :48].copy())
    with open_video(tmp_path / f"w.{ext}") as r:
        assert r.frames([0]).shape == (1, 32, 48, 3)


# ----------------------------------------------------------------------------- frame counting
# Tiny generated files (32x32, 20 frames, red channel = 12 * source frame number) whose
# decoders show fewer frames than the container has packets, or carry no timestamps.

_X264 = "keyint=8:min-keyint=8:scenecut=0:bframes=2"


def _red(frames: np.ndarray) -> list[int]:
    return [round(float(f[..., 0].mean()) / 12) for f in frames]


def _write_h264(path, fmt: str, n: int = 20, pts_offset: int = 0, params: str = _X264) -> None:
    import av

    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=24)
        s.width = s.height = 32
        s.pix_fmt = "yuv420p"
        s.options = {"x264-params": params, "qp": "10"}
        for i in range(n):
            a = np.zeros((32, 32, 3), np.uint8)
            a[..., 0] = i * 12
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            f.pts = i + pts_offset
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def _cut_at_second_keyframe(src, dst, fmt: str) -> None:
    """Packets from the second keyframe on (an open-GOP I frame): its leading B-frames predict
    from the GOP that was cut away, so the decoder drops them."""
    import av

    with av.open(str(src)) as i, av.open(str(dst), "w", format=fmt) as o:
        st = i.streams.video[0]
        ost = o.add_stream_from_template(st)
        pkts = [p for p in i.demux(st) if p.size]
        start = [j for j, p in enumerate(pkts) if p.is_keyframe][1]
        off = pkts[start].dts
        for p in pkts[start:]:
            p.pts, p.dts = p.pts - off, p.dts - off
            p.stream = ost
            o.mux(p)


def test_edit_list_frames_are_not_counted(tmp_path):
    """pts starting at -3: the mp4 muxer writes an edit list that hides 3 decoded frames."""
    _write_h264(tmp_path / "e.mp4", "mp4", pts_offset=-3)
    with open_video(tmp_path / "e.mp4", backend="pyav") as r:
        assert len(r) == 17
        assert _red(r.frames(range(17))) == list(range(3, 20))  # no DecodeError in raise mode
        assert _red(r.frames([16, 0, 9])) == [19, 3, 12]


def test_open_gop_leading_frames_are_not_counted(tmp_path):
    _write_h264(tmp_path / "og.mp4", "mp4", params=_X264 + ":open-gop=1")
    _cut_at_second_keyframe(tmp_path / "og.mp4", tmp_path / "cut.mkv", "matroska")
    with open_video(tmp_path / "og.mp4", backend="pyav") as full:
        assert len(full) == 20 and _red(full.frames(range(20))) == list(range(20))
    with open_video(tmp_path / "cut.mkv", backend="pyav") as r:
        n = len(r)
        every = _red(r.frames(range(n)))  # raise mode: every counted frame decodes
        assert n == every[-1] - every[0] + 1 and every == list(range(every[0], 20))
        assert _red(r.frames([n - 1, 0, 5])) == [19, every[0], every[0] + 5]  # B-frames, seeks


def test_stream_without_timestamps(tmp_path):
    """A raw H.264 stream with B-frames: no packet has a pts or dts."""
    _write_h264(tmp_path / "raw.h264", "h264")
    with open_video(tmp_path / "raw.h264", backend="pyav") as r:
        assert len(r) == 20
        assert _red(r.frames(range(20))) == list(range(20))
        assert _red(r.frames([15, 2, 19, 0])) == [15, 2, 19, 0]  # backwards: decoded again
        assert r.time_of(12) == pytest.approx(12 / r.fps)  # raw H.264 has no timing: guessed fps


def test_decord_counts_what_pyav_decodes_and_falls_back_consistently(tmp_path):
    pytest.importorskip("decord")
    _write_h264(tmp_path / "e.mp4", "mp4", pts_offset=-3)
    with open_video(tmp_path / "e.mp4", backend="decord") as r:
        assert len(r) == 17  # decord alone counts 20: the 3 frames the edit list hides
        assert _red(r.frames([0, 16])) == [3, 19]
    _write_h264(tmp_path / "b.mp4", "mp4")  # a plain file: decord reads it ...
    with open_video(tmp_path / "b.mp4") as r:
        assert r.backend == "decord" and len(r) == 20
        assert _red(r.frames([4])) == [4]

        def broken(idx):
            raise RuntimeError("decord gave up")

        r._vr.get_batch = broken  # ... until it fails part-way: PyAV takes over, same indices
        assert _red(r.frames([19, 7])) == [19, 7]
