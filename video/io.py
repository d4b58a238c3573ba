"""Video files for the video layer: the reader lives in `engine.media.video` (shared with the
photo index); this module re-exports it under the names video code and the app use, and owns
`VideoWriter`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine.media.files import IMAGE_EXTS, VIDEO_EXTS, is_frame_folder, list_frame_files
from engine.media.video import (
    BACKENDS,
    DecodeError,
    DecordReader,
    FolderReader,
    PyAVReader,
    Size,
    VideoReader,
    open_video,
    output_size,
    resize_frames,
)

__all__ = [
    "BACKENDS", "IMAGE_EXTS", "VIDEO_EXTS", "DecodeError", "DecordReader", "FolderReader",
    "PyAVReader", "Size", "VideoReader", "VideoWriter", "is_frame_folder", "list_frame_files",
    "open_video", "output_size", "resize_frames",
]  # fmt: skip


class VideoWriter:
    """H.264 mp4 written frame by frame with PyAV (yuv420p: odd sizes are padded by one pixel),
    to a temporary name renamed into place on close, so a crash never leaves half a video."""

    def __init__(self, path: str | Path, fps: float = 24.0, crf: int = 20, gop: int = 12):
        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        self._container = av.open(
            str(self._tmp), "w", format="mp4", options={"movflags": "+faststart"}
        )
        self._fps, self._crf, self._gop = fps, crf, gop
        self._stream = None
        self.frames_written = 0

    def write(self, frame: np.ndarray) -> None:
        """frame: uint8 [H, W, 3] RGB; every frame must have the first frame's size."""
        from fractions import Fraction

        import av

        h, w = frame.shape[:2]
        if self._stream is None:
            rate = Fraction(self._fps).limit_denominator(1001)
            self._stream = self._container.add_stream("libx264", rate=rate)
            self._stream.width, self._stream.height = w + w % 2, h + h % 2
            self._stream.pix_fmt = "yuv420p"
            self._stream.options = {"crf": str(self._crf), "preset": "medium", "g": str(self._gop)}
        if (h + h % 2, w + w % 2) != (self._stream.height, self._stream.width):
            raise ValueError(
                f"frame {w}x{h} differs from the video's {self._stream.width}x{self._stream.height}"
            )
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24")
        for pkt in self._stream.encode(vf):
            self._container.mux(pkt)
        self.frames_written += 1

    def close(self) -> None:
        if self._container is None:
            return
        if self._stream is not None:
            for pkt in self._stream.encode():
                self._container.mux(pkt)
        self._container.close()
        self._container = None
        if self.frames_written:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None and self._container is not None:  # failed: drop the partial file
            self._container.close()
            self._container = None
            self._tmp.unlink(missing_ok=True)
            return
        self.close()
