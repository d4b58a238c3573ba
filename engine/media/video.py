"""The video reader: one interface over decord, PyAV and folders of frames.

decord gives fast random access but is unmaintained (leaks, crashes next to Qt's xcb; its bundled
FFmpeg also breaks PyAV's libvpx encoders once both are loaded in one process; it returns 4-byte
pixels for some frame widths), so it is imported only inside `DecordReader`, checked on open, and
replaced by PyAV when it fails; everything else talks to `VideoReader`. PyAV is the fallback
and the only backend that can pick a stream or flag corrupt frames. Frames come back as uint8
[T, H, W, 3] RGB (numpy, or torch with `as_tensor=True`), resized on decode when `size` is set.
Frame folders are read with the image reader (`engine.media.images`).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from engine.errors import UserError
from engine.media.files import IMAGE_EXTS, list_frame_files
from engine.media.images import read_rgb

BACKENDS = ("auto", "decord", "pyav", "folder")

Size = tuple[int, int] | int | None


class DecodeError(UserError):
    """A frame inside an otherwise readable video could not be decoded."""


def output_size(orig_hw: tuple[int, int], size: Size) -> tuple[int, int]:
    """(H, W) after resizing: None keeps, int sets the shorter side, (H, W) is exact."""
    h, w = orig_hw
    if size is None:
        return h, w
    if isinstance(size, int):
        if h <= w:
            return size, max(1, round(w * size / h))
        return max(1, round(h * size / w)), size
    return int(size[0]), int(size[1])


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[T, H, W, 3] -> [T, *size, 3]: area averaging to shrink, bilinear to enlarge. Done here for
    every backend (not in decord's or swscale's own scaler) so all readers return the same pixels."""
    import cv2

    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    interp = cv2.INTER_AREA if h * w < frames.shape[1] * frames.shape[2] else cv2.INTER_LINEAR
    return (
        np.stack([cv2.resize(f, (w, h), interpolation=interp) for f in frames])
        if len(frames)
        else np.zeros((0, h, w, 3), np.uint8)
    )


class VideoReader:
    """Common interface; use `open_video` to get one."""

    backend = ""

    def __init__(self, path: str | Path, size: Size = None, on_error: str = "raise"):
        if on_error not in ("raise", "warn"):
            raise ValueError("on_error must be 'raise' or 'warn'")
        self.path = Path(path)
        self.on_error = on_error
        self.bad_frames: list[int] = []  # indices reported as corrupt or missing (on_error="warn")
        self._size = size
        self.fps: float = 0.0
        self.num_frames: int = 0
        self.orig_size: tuple[int, int] = (0, 0)  # (H, W) as stored

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of returned frames."""
        return output_size(self.orig_size, self._size)

    def __len__(self) -> int:
        return self.num_frames

    def frame(self, i: int) -> np.ndarray:
        return self.frames([i])[0]

    def frames(self, indices: Sequence[int], as_tensor: bool = False) -> np.ndarray | torch.Tensor:
        idx = [int(i) for i in indices]
        for i in idx:
            if not -self.num_frames <= i < self.num_frames:
                raise UserError(
                    f"{self.path}: frame {i} out of range (video has {self.num_frames} frames)"
                )
        idx = [i % self.num_frames for i in idx]
        out = self._read(idx) if idx else np.zeros((0, *self.orig_size, 3), np.uint8)
        out = resize_frames(out, self.size)
        return torch.from_numpy(out) if as_tensor else out

    def __iter__(self):
        """Sequential frames, decoded in chunks so memory stays bounded."""
        for start in range(0, self.num_frames, 16):
            yield from self.frames(range(start, min(start + 16, self.num_frames)))

    def _read(self, idx: list[int]) -> np.ndarray:
        raise NotImplementedError

    def key_indices(self) -> list[int]:
        """Frames that decode without others (every frame of a frame folder)."""
        return list(range(self.num_frames))

    def time_of(self, i: int) -> float:
        """Presentation time of frame i in seconds."""
        return i / self.fps if self.fps else float(i)

    def keyframes(self, max_frames: int = 16) -> list[tuple[float, np.ndarray]]:
        """(time in seconds, frame [H, W, 3]) for up to `max_frames` key frames, evenly spread
        over the video: each is decoded right after a seek to it, so long videos stay fast."""
        keys = self.key_indices()
        if len(keys) > max_frames:
            keys = [keys[i] for i in np.linspace(0, len(keys) - 1, max_frames).round().astype(int)]
        return [(self.time_of(i), f) for i, f in zip(keys, self.frames(keys))]

    def _report(self, index: int, problem: str) -> None:
        msg = f"{self.path}: frame {index} {problem}"
        if self.on_error == "raise":
            raise DecodeError(msg)
        if index in self.bad_frames:  # one report per frame
            return
        self.bad_frames.append(index)
        warnings.warn(msg, stacklevel=3)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, frames={self.num_frames}, fps={self.fps:.2f}, size={self.size})"


class DecordReader(VideoReader):
    """decord for speed, with the frame count of the PyAV reader (what the decoder shows; decord
    also counts frames an edit list or an open-GOP cut hides). Where the two disagree, or decord
    fails part-way, the PyAV reader reads instead, so indices mean the same frames throughout."""

    backend = "decord"

    def __init__(self, path, size: Size = None, on_error: str = "raise", num_threads: int = 0):
        super().__init__(path, size, on_error)
        import decord  # only here: keep decord out of processes that never decode

        self._decord = decord
        self._fallback: PyAVReader | None = None
        try:
            self._vr = decord.VideoReader(
                str(self.path), ctx=decord.cpu(0), num_threads=num_threads
            )
            first = self._vr[0].shape if len(self._vr) else (0, 0, 3)
        except (decord.DECORDError, RuntimeError) as e:  # decord raises RuntimeError on open
            raise UserError(
                f"{self.path}: cannot open video with decord ({_first_line(e)})"
            ) from None
        if first[-1] != 3:  # seen with odd widths (48 px): decord hands back padded 4-byte pixels
            raise UserError(f"{self.path}: decord decodes this file to {first[-1]} channels")
        self.orig_size = tuple(first[:2])
        self.fps = float(self._vr.get_avg_fps())
        self._pyav = PyAVReader(self.path, None, on_error)  # decides the frame count
        self.num_frames = len(self._pyav)
        if len(self._vr) != self.num_frames:
            self._fallback, self.backend = self._pyav, "pyav"

    def _read(self, idx):
        if self._fallback is None:
            try:
                return self._vr.get_batch(idx).asnumpy()
            except (self._decord.DECORDError, RuntimeError):
                # decord cannot say which frame broke, and sometimes fails on good files:
                # from here on read with PyAV, which decodes what it can and names bad frames
                self._fallback = self._pyav
        out = self._fallback.frames(idx)
        self.bad_frames = self._fallback.bad_frames
        return out

    def key_indices(self) -> list[int]:
        if self._fallback is not None:
            return self._fallback.key_indices()
        return [int(i) for i in self._vr.get_key_indices()]

    def close(self):
        self._vr = None
        if getattr(self, "_pyav", None) is not None:
            self._pyav.close()


class PyAVReader(VideoReader):
    """Random access by seeking to the keyframe before a target and decoding forward.

    The frame count is decided once, on open, as the number of frames the decoder will show:
    the index (presentation timestamps of every packet) is built by demuxing without decoding,
    leaving out packets the demuxer marks as discarded (outside an edit list); when packets come
    before the first keyframe or show before it (open-GOP leading frames of a cut), the start is
    decoded once and the ones the decoder drops are left out too. A stream without presentation
    timestamps (raw H.264, some AVI) is counted by decoding it once and read in decode-output
    order (random access then decodes forward from the start). Corrupt frames (ffmpeg's corrupt
    flag) and frames the decoder never produced are reported with their index.
    """

    backend = "pyav"

    def __init__(self, path, size: Size = None, on_error: str = "raise", stream: int = 0):
        super().__init__(path, size, on_error)
        import av

        self._av = av
        self._stream_no = stream
        self._container = None
        self._open()
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else 0.0
        self._index_packets()
        self.num_frames = len(self._pts)
        if self.num_frames == 0:
            self.close()
            raise UserError(f"{self.path}: video stream has no frames")
        cc = self._stream.codec_context
        self.orig_size = (cc.height, cc.width)
        self._iter = None
        self._next = -1  # index of the frame the open decode iterator yields next

    def _open(self) -> None:
        av = self._av
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as e:
            raise UserError(f"{self.path}: not a readable video ({_first_line(e)})") from None
        streams = self._container.streams.video
        if not streams:
            self.close()
            raise UserError(f"{self.path}: file has no video stream")
        if not 0 <= self._stream_no < len(streams):
            self.close()
            raise UserError(
                f"{self.path}: video stream {self._stream_no} requested, file has {len(streams)}"
            )
        self._stream = streams[self._stream_no]
        self._stream.thread_type = "AUTO"

    def _index_packets(self) -> None:
        pkts: list[tuple[int | None, bool]] = []  # (pts, keyframe) in decode order
        try:
            for pkt in self._container.demux(self._stream):
                if pkt.size == 0 or pkt.is_discard:  # discarded: the decoder never shows it
                    continue
                pkts.append((pkt.pts, bool(pkt.is_keyframe)))
        except self._av.error.FFmpegError as e:
            if not pkts:
                self.close()
                raise UserError(f"{self.path}: not a readable video ({_first_line(e)})") from None
            warnings.warn(
                f"{self.path}: stream ends early after {len(pkts)} packets ({_first_line(e)})",
                stacklevel=3,
            )
        self._ordinal = any(t is None for t, _ in pkts)
        if self._ordinal:  # no presentation timestamps: frames are numbered as they come out
            self._keys = [j for j, (_, k) in enumerate(pkts) if k]  # closed GOPs assumed
            n = self._count_decoded() if pkts else 0
            self._pts, self._is_key = list(range(n)), [False] * n
            self._keys = [j for j in self._keys if j < n]
        else:
            shown = self._shown_leading(pkts)
            kept = sorted(
                ((t, k) for t, k in pkts if shown is None or t in shown), key=lambda x: x[0]
            )
            self._pts, self._is_key = [t for t, _ in kept], [k for _, k in kept]
            self._keys = [i for i, k in enumerate(self._is_key) if k]
        self._pos = {t: i for i, t in enumerate(self._pts)}

    def _shown_leading(self, pkts: list[tuple[int | None, bool]]) -> set | None:
        """Timestamps of the frames the decoder shows, when some may be dropped: packets before
        the first keyframe, or showing before it (an open GOP cut from a longer stream). The
        start is decoded once to see which of them come out. None: nothing to check."""
        first = next((j for j, (_, k) in enumerate(pkts) if k), None)
        if first is None:
            return None
        kt = pkts[first][0]
        leading = {t for j, (t, _) in enumerate(pkts) if j < first or t < kt}
        if not leading:
            return None
        out = set()
        with contextlib.suppress(self._av.error.FFmpegError), self._av.open(str(self.path)) as c:
            for f in c.decode(c.streams.video[self._stream_no]):
                if f.pts is not None and f.pts >= kt:
                    break
                out.add(f.pts)
        return {t for t, _ in pkts} - (leading - out)

    def _count_decoded(self) -> int:
        n = 0
        with contextlib.suppress(self._av.error.FFmpegError), self._av.open(str(self.path)) as c:
            for _ in c.decode(c.streams.video[self._stream_no]):
                n += 1
        return n

    def key_indices(self) -> list[int]:
        return list(self._keys)

    def time_of(self, i: int) -> float:
        if self._ordinal:
            return super().time_of(i)
        return float(self._pts[i] * self._stream.time_base)

    def _seek(self, i: int) -> None:
        if self._ordinal:  # no timestamps to seek to: decode again from the start
            self.close()
            self._open()
            self._iter = self._decoded()
            self._next = 0
            return
        # the latest keyframe at or before i (in presentation order; fine for closed GOPs)
        k = i
        while k > 0 and not self._is_key[k]:
            k -= 1
        self._container.seek(self._pts[k], stream=self._stream, backward=True, any_frame=False)
        self._stream.codec_context.flush_buffers()
        self._iter = self._decoded()
        self._next = -1  # unknown until the first frame arrives

    def _decoded(self):
        """(index, frame) in presentation order; a packet that fails is reported, not fatal.

        Frames decoded after a failed packet and before the next keyframe may predict from the
        lost picture, so they are flagged as damaged too (ffmpeg conceals them silently).
        """
        damaged = False
        shown = 0  # frames out so far (the index of a frame when the stream has no timestamps)
        for pkt in self._container.demux(self._stream):
            damaged = damaged and not pkt.is_keyframe
            try:
                frames = pkt.decode()
            except self._av.error.FFmpegError as e:
                damaged = True
                i = None if self._ordinal else self._pos.get(pkt.pts)
                if i is not None:
                    self._report(i, f"failed to decode ({_first_line(e)})")
                continue
            for f in frames:
                i = (
                    (shown if shown < self.num_frames else None)
                    if self._ordinal
                    else self._pos.get(f.pts)
                )
                shown += 1
                if i is not None:
                    yield i, f, damaged

    def _convert(self, frame) -> np.ndarray:
        return frame.to_ndarray(format="rgb24")

    def _read(self, idx):
        out: dict[int, np.ndarray] = {}
        wanted = sorted(set(idx))
        for target in wanted:
            if target in out:
                continue
            # keep decoding forward when no keyframe lies between us and the target
            if (
                self._iter is None
                or self._next < 0
                or target < self._next
                or any(self._is_key[self._next + 1 : target + 1])
            ):
                self._seek(target)
            out.update(self._decode_until(target, set(wanted)))
        return np.stack([out[i] for i in idx])

    def _decode_until(self, target: int, wanted: set[int]) -> dict[int, np.ndarray]:
        got: dict[int, np.ndarray] = {}
        last = None
        for i, frame, damaged in self._iter:
            self._next = i + 1
            if i < target:
                if i in wanted:
                    got[i] = self._checked(frame, i, damaged)
                last = frame
                continue
            if i > target:  # the decoder skipped the target: it could not be decoded
                self._report(target, "is missing from the decoded stream")
                got[target] = self._convert(last if last is not None else frame)
                if i in wanted:
                    got[i] = self._checked(frame, i, damaged)
                return got
            got[i] = self._checked(frame, i, damaged)
            return got
        self._iter = None
        self._report(target, "could not be decoded (stream ends early)")
        got[target] = (
            self._convert(last) if last is not None else np.zeros((*self.orig_size, 3), np.uint8)
        )
        return got

    def _checked(self, frame, i: int, damaged: bool) -> np.ndarray:
        if frame.is_corrupt:
            self._report(i, "is corrupt")
        elif damaged:
            self._report(i, "depends on a frame that failed to decode")
        return self._convert(frame)

    def close(self):
        if getattr(self, "_container", None) is not None:
            self._container.close()
            self._container = None


class FolderReader(VideoReader):
    """A folder of frame images (e.g. DAVIS `JPEGImages/480p/<seq>/`), in natural sort order."""

    backend = "folder"

    def __init__(self, path, size: Size = None, on_error: str = "raise", fps: float = 24.0):
        super().__init__(path, size, on_error)
        if not self.path.is_dir():
            raise UserError(f"{self.path}: not a folder of frames")
        self.files = list_frame_files(self.path)
        if not self.files:
            raise UserError(f"{self.path}: folder has no frame images ({', '.join(IMAGE_EXTS)})")
        self.num_frames = len(self.files)
        self.fps = float(fps)
        first = self._load(0)
        self.orig_size = first.shape[:2]

    def _load(self, i: int) -> np.ndarray:
        try:
            return read_rgb(self.files[i])
        except Exception as e:  # noqa: BLE001 - any decoder failure is the file's fault
            raise DecodeError(
                f"{self.files[i]}: cannot read image (frame {i} of {self.path}; {_first_line(e)})"
            ) from None

    def _read(self, idx):
        import cv2

        out = []
        for i in idx:
            try:
                img = self._load(i)
                if img.shape[:2] != tuple(self.orig_size):
                    h, w = self.orig_size
                    raise DecodeError(
                        f"{self.files[i]}: frame {i} is {img.shape[1]}x{img.shape[0]}, the first frame {w}x{h}"
                    )
            except DecodeError as e:
                if self.on_error == "raise":
                    raise
                self.bad_frames.append(i)
                warnings.warn(str(e), stacklevel=3)
                if "cannot read" in str(e):
                    img = out[-1] if out else np.zeros((*self.orig_size, 3), np.uint8)
                else:
                    img = cv2.resize(img, self.orig_size[::-1], interpolation=cv2.INTER_AREA)
            out.append(img)
        return np.stack(out)


def open_video(
    path: str | Path,
    size: Size = None,
    backend: str = "auto",
    stream: int = 0,
    on_error: str = "raise",
    fps: float = 24.0,
) -> VideoReader:
    """Open a video file or a frame folder.

    backend "auto" (or env SELFSUP_VIDEO_BACKEND) tries decord, then PyAV for files decord cannot
    open; a non-default `stream`, or on_error="warn" (decord cannot flag corrupt frames) goes to PyAV.
    `fps` is only used for frame folders, which carry no timing.
    """
    path = Path(path)
    backend = os.environ.get("SELFSUP_VIDEO_BACKEND", backend) if backend == "auto" else backend
    if backend not in BACKENDS:
        raise UserError(f"unknown video backend '{backend}'; choose one of: {', '.join(BACKENDS)}")
    if not path.exists():
        raise UserError(f"{path}: video not found")
    if path.is_dir() or backend == "folder":
        return FolderReader(path, size, on_error, fps=fps)
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty")
    if backend == "pyav" or stream != 0 or on_error == "warn":
        return PyAVReader(path, size, on_error, stream=stream)
    if backend == "decord":
        return DecordReader(path, size, on_error)
    try:
        return DecordReader(path, size, on_error)
    except (UserError, ImportError):
        return PyAVReader(path, size, on_error, stream=stream)


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]
