"""Video sources for the Video page, Qt-free: file or DAVIS layout, frames for the timeline,
ground-truth lookup, and reading propagation results back."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TIMELINE_BYTES = 256 * 2**20  # frames kept in memory for scrubbing; larger videos are downscaled


@dataclass
class VideoSource:
    frames: Path  # a video file or a folder of frames
    name: str
    ground_truth: Path | None = None  # folder of annotation PNGs, one per frame
    davis_root: Path | None = None
    sequences: tuple[str, ...] = ()


def _res_dir(root: Path, kind: str) -> Path | None:
    base = root / kind
    if not base.is_dir():
        return None
    for res in ("480p", "Full-Resolution"):
        if (base / res).is_dir():
            return base / res
    subs = [p for p in base.iterdir() if p.is_dir()]
    return subs[0] if subs else None


def resolve_source(path: str | Path, sequence: str | None = None) -> VideoSource:
    """A video file, a folder of frames, or a DAVIS root (JPEGImages/<res>/<seq>, with the
    matching Annotations/<res>/<seq> used as ground truth)."""
    from engine.errors import UserError
    from video.io import VIDEO_EXTS, is_frame_folder

    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise UserError(f"{path}: no such video or folder")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTS:
            raise UserError(f"{path}: not a video file ({', '.join(VIDEO_EXTS)})")
        ann = _res_dir(path.parent, "Annotations")
        gt = ann / path.stem if ann is not None and (ann / path.stem).is_dir() else None
        return VideoSource(path, path.stem, gt)
    jpeg = _res_dir(path, "JPEGImages")
    if jpeg is not None:
        seqs = tuple(sorted(p.name for p in jpeg.iterdir() if p.is_dir()))
        if not seqs:
            raise UserError(f"{jpeg}: no sequences in this DAVIS folder")
        seq = sequence if sequence in seqs else seqs[0]
        ann = _res_dir(path, "Annotations")
        gt = ann / seq if ann is not None and (ann / seq).is_dir() else None
        return VideoSource(jpeg / seq, seq, gt, path, seqs)
    if is_frame_folder(path):
        parts = list(path.parts)
        gt = None
        if "JPEGImages" in parts:
            parts[parts.index("JPEGImages")] = "Annotations"
            cand = Path(*parts)
            gt = cand if cand.is_dir() else None
        return VideoSource(path, path.name, gt)
    raise UserError(
        f"{path}: neither a video file, a folder of frames, nor a DAVIS folder (JPEGImages/480p/<sequence>)"
    )


@dataclass
class LoadedVideo:
    source: VideoSource
    first: np.ndarray  # uint8 [H, W, 3] full resolution (masks are drawn at this size)
    timeline: np.ndarray  # uint8 [T, h, w, 3], possibly downscaled for memory
    fps: float
    size: tuple[int, int]  # (H, W) of the video
    bad_frames: list[int]
    names: list[str] = field(default_factory=list)  # frame names as `selfsup propagate` writes them

    @property
    def num_frames(self) -> int:
        return len(self.timeline)


def load_video(src: VideoSource, budget: int = TIMELINE_BYTES) -> LoadedVideo:
    """All frames for the timeline (PyAV or frame folders: decord stays out of the GUI process)."""
    import cv2

    from video.io import open_video
    from video.pipeline import frame_names

    with open_video(
        src.frames, backend="folder" if src.frames.is_dir() else "pyav", on_error="warn"
    ) as r:
        n, (h, w), fps = r.num_frames, r.size, r.fps
        scale = min(1.0, (budget / max(1, n * h * w * 3)) ** 0.5)
        th, tw = max(2, round(h * scale)), max(2, round(w * scale))
        first = None
        out = np.empty((n, th, tw, 3), np.uint8)
        for t, frame in enumerate(r):
            if first is None:
                first = frame.copy()
            out[t] = (
                frame if scale == 1.0 else cv2.resize(frame, (tw, th), interpolation=cv2.INTER_AREA)
            )
        bad = list(r.bad_frames)
        names = frame_names(r)
    return LoadedVideo(src, first, out, fps, (h, w), bad, names)


def gt_first_mask(src: VideoSource) -> Path | None:
    if src.ground_truth is None:
        return None
    from video.io import list_frame_files

    files = [p for p in list_frame_files(src.ground_truth) if p.suffix.lower() == ".png"]
    return files[0] if files else None


def read_result(out: Path) -> dict:
    try:
        return json.loads((out / "result.json").read_text())
    except (OSError, ValueError):
        return {}
