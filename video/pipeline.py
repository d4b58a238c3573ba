"""End-to-end jobs on disk: propagate a first-frame mask and keypoints through a video into PNG
masks, a keypoints CSV and an overlay video, score them with J&F, and evaluate propagation on a
DAVIS-layout folder. `selfsup propagate` / `selfsup overlay` (which the desktop app runs) and the
benchmark all call these."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import UserError
from video.io import FolderReader, VideoReader, VideoWriter, open_video
from video.jf import evaluate_sequence
from video.masks import DAVIS_PALETTE, object_ids, read_mask, write_mask
from video.propagation import PropagationConfig, propagate_keypoints, propagate_masks

Progress = Callable[[int, int], None]  # (frames done, total)
StageProgress = Callable[[int, int, str], None]  # (done, total, stage)
KEYPOINTS_HEADER = "frame,point,object,x,y"


def overlay(
    frame: np.ndarray, ids: np.ndarray, palette: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """Objects tinted with their palette colour, their outline drawn solid."""
    from video.jf import boundary_map

    out = frame.astype(np.float32)
    fg = ids > 0
    colours = palette[ids].astype(np.float32)
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[fg]
    edge = np.zeros_like(fg)
    for i in object_ids(ids):
        edge |= boundary_map(ids == i)
    out[edge] = colours[edge]
    return out.clip(0, 255).astype(np.uint8)


def frame_names(reader: VideoReader) -> list[str]:
    """Output names: the frame files' stems for a frame folder (DAVIS), else 00000, 00001, ..."""
    if isinstance(reader, FolderReader):
        return [p.stem for p in reader.files]
    return [f"{i:05d}" for i in range(len(reader))]


@dataclass
class PropagationResult:
    out_dir: Path
    frames: int
    seconds: float
    objects: list[int]
    overlay: Path | None = None
    masks: list[Path] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / max(self.seconds, 1e-9)


def propagate_video(
    video: str | Path,
    mask: str | Path,
    out_dir: str | Path,
    features,
    cfg: PropagationConfig | None = None,
    impl: str = "local",
    device: str = "cpu",
    write_overlay: bool = True,
    progress: Progress | None = None,
    backend: str = "auto",
) -> PropagationResult:
    """Masks to out_dir/<name>/<frame>.png (palette of the input mask) and out_dir/<name>_overlay.mp4."""
    reader = open_video(video, backend=backend)
    first_ids, palette = read_mask(mask, size=reader.size)
    objs = object_ids(first_ids)
    if not objs:
        raise UserError(f"{mask}: the mask has no object (every pixel is background 0)")
    name = Path(video).stem if Path(video).is_file() else Path(video).name
    seq_dir = Path(out_dir) / name
    names = frame_names(reader)
    writer = (
        VideoWriter(Path(out_dir) / f"{name}_overlay.mp4", fps=reader.fps or 24.0)
        if write_overlay
        else None
    )
    result = PropagationResult(Path(out_dir), len(reader), 0.0, objs)
    frames_for_overlay: list[np.ndarray] = []

    def frames():
        for f in reader:
            if writer is not None:
                frames_for_overlay.append(f)
            yield f

    t0 = time.perf_counter()
    try:
        for t, ids in enumerate(propagate_masks(frames(), first_ids, features, cfg, impl, device)):
            path = seq_dir / f"{names[t]}.png"
            write_mask(path, ids, palette)
            result.masks.append(path)
            if writer is not None:
                writer.write(overlay(frames_for_overlay.pop(0), ids, palette))
            if progress:
                progress(t + 1, len(reader))
    finally:
        reader.close()
        if writer is not None:
            writer.close()
    result.seconds = time.perf_counter() - t0
    result.overlay = writer.path if writer is not None and writer.frames_written else None
    return result


def propagate_points(
    video: str | Path,
    points: list[tuple[float, float]] | list[tuple[float, float, int]],
    out_dir: str | Path,
    features,
    cfg: PropagationConfig | None = None,
    impl: str = "local",
    device: str = "cpu",
    progress: Progress | None = None,
    backend: str = "auto",
) -> Path:
    """Keypoints (x, y in pixels of the first frame, optionally the object id they belong to)
    through the video -> <name>_keypoints.csv, one row per frame and point:
    frame,point,object,x,y (object = point number + 1 when not given)."""
    from engine.checkpoint import atomic_write

    reader = open_video(video, backend=backend)
    h, w = reader.size
    objects = [int(p[2]) if len(p) > 2 else k + 1 for k, p in enumerate(points)]
    points = [(float(p[0]), float(p[1])) for p in points]
    bad = [p for p in points if not (0 <= p[0] < w and 0 <= p[1] < h)]
    if bad:
        reader.close()
        raise UserError(f"{video}: point {bad[0]} lies outside the {w}x{h} frame")
    name = Path(video).stem if Path(video).is_file() else Path(video).name
    names = frame_names(reader)
    lines = [KEYPOINTS_HEADER]
    try:
        for t, xy in enumerate(
            propagate_keypoints(
                iter(reader),
                np.asarray(points, np.float32),
                features,
                cfg,
                impl=impl,
                device=device,
            )
        ):
            lines += [f"{names[t]},{k},{objects[k]},{x:.1f},{y:.1f}" for k, (x, y) in enumerate(xy)]
            if progress:
                progress(t + 1, len(reader))
    finally:
        reader.close()
    out = Path(out_dir) / f"{name}_keypoints.csv"
    atomic_write(out, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
    return out


def read_keypoints_csv(path: str | Path) -> dict[str, Any]:
    """{"objects": [id per point], "frames": [[[x, y] per point] per frame]} from our CSV."""
    rows = Path(path).read_text().splitlines()
    if not rows or rows[0] != KEYPOINTS_HEADER:
        raise UserError(f"{path}: not a keypoints CSV (expected the header {KEYPOINTS_HEADER})")
    frames: dict[str, list] = {}
    objects: dict[int, int] = {}
    try:
        for row in rows[1:]:
            frame, point, obj, x, y = row.split(",")
            objects[int(point)] = int(obj)
            frames.setdefault(frame, []).append([float(x), float(y)])
    except ValueError:
        raise UserError(f"{path}: malformed row '{row}'") from None
    return {"objects": [objects[k] for k in sorted(objects)], "frames": list(frames.values())}


def score_masks(masks: list[Path], gt_dir: Path) -> dict[str, Any] | None:
    """J&F of predicted mask PNGs against a folder of annotation PNGs, one per frame; None when
    the folder holds another number of frames (nothing comparable)."""
    from video.io import list_frame_files

    gts = (
        [p for p in list_frame_files(gt_dir) if p.suffix.lower() == ".png"]
        if Path(gt_dir).is_dir()
        else []
    )
    if len(gts) != len(masks):
        return None
    r = evaluate_sequence([read_mask(p)[0] for p in masks], [read_mask(p)[0] for p in gts])
    return {
        "J": r["J"],
        "F": r["F"],
        "J&F": r["J&F"],
        "frames": r["frames"],
        "objects": {str(k): v for k, v in r["objects"].items()},
    }


def render_overlay(
    video: str | Path,
    out: str | Path,
    masks: list[Path] | None = None,
    keypoints: str | Path | None = None,
    alpha: float = 0.5,
    progress: StageProgress | None = None,
) -> Path:
    """The overlay video: masks tinted in their palette colours, keypoints as dots in their
    object's colour, streamed frame by frame."""
    import cv2

    masks = [Path(p) for p in masks or []]
    kp = read_keypoints_csv(keypoints) if keypoints else None
    with open_video(video) as reader:
        n = len(reader)
        writer = VideoWriter(out, fps=reader.fps or 24.0)
        try:
            for t, frame in enumerate(reader):
                img = frame
                if t < len(masks):
                    ids, pal = read_mask(masks[t])
                    img = overlay(frame, ids, pal, alpha)
                img = np.ascontiguousarray(img)
                if kp is not None and t < len(kp["frames"]):
                    r = max(3, img.shape[0] // 80)
                    for (x, y), obj in zip(kp["frames"][t], kp["objects"]):
                        c = (int(round(x)), int(round(y)))
                        cv2.circle(img, c, r, tuple(int(v) for v in DAVIS_PALETTE[obj % 256]), -1)
                        cv2.circle(img, c, r, (255, 255, 255), 1)
                writer.write(img)
                if progress:
                    progress(t + 1, n, "overlay video")
        finally:
            writer.close()
    return Path(out)


def run_propagation(
    video: str | Path,
    out_dir: str | Path,
    features,
    cfg: PropagationConfig | None = None,
    mask: str | Path | None = None,
    points: list[tuple[float, ...]] | None = None,
    ground_truth: str | Path | None = None,
    impl: str = "local",
    device: str = "cpu",
    write_overlay: bool = True,
    progress: StageProgress | None = None,
    backend: str = "auto",
) -> dict[str, Any]:
    """Masks and/or keypoints through a video, scored against ground truth when given; the
    result (paths, speed, J&F) is returned and written to out_dir/result.json."""
    from engine.checkpoint import atomic_write

    if mask is None and not points:
        raise UserError("give a first-frame mask and/or keypoints to propagate")
    out_dir = Path(out_dir)
    result: dict[str, Any] = {"out": str(out_dir), "features": repr(features)}
    t0, done_frames = time.perf_counter(), 0

    def stage(name: str) -> Progress | None:
        return (lambda d, n: progress(d, n, name)) if progress else None

    if mask is not None:
        res = propagate_video(
            video,
            mask,
            out_dir,
            features,
            cfg,
            impl,
            device,
            write_overlay,
            stage("masks"),
            backend,
        )
        result.update(
            frames=res.frames,
            masks=[str(p) for p in res.masks],
            overlay=str(res.overlay) if res.overlay else None,
            objects=res.objects,
        )
        done_frames += res.frames
    if points:
        csv = propagate_points(
            video, points, out_dir, features, cfg, impl, device, stage("keypoints"), backend
        )
        result["keypoints"] = str(csv)
        frames = len(read_keypoints_csv(csv)["frames"])
        result.setdefault("frames", frames)
        done_frames += frames
    result["seconds"] = time.perf_counter() - t0
    result["frames_per_s"] = done_frames / max(1e-9, result["seconds"])
    if mask is not None and ground_truth:
        result["jf"] = score_masks([Path(p) for p in result["masks"]], Path(ground_truth))
    atomic_write(
        out_dir / "result.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1))
    )
    return result


# ----------------------------------------------------------------------------- DAVIS


def davis_resolution_dir(root: Path, kind: str) -> Path:
    base = root / kind
    if not base.is_dir():
        raise UserError(f"{root}: not a DAVIS folder (no {kind}/ inside)")
    for res in ("480p", "Full-Resolution", "1080p"):
        if (base / res).is_dir():
            return base / res
    subs = sorted(p for p in base.iterdir() if p.is_dir())
    if not subs:
        raise UserError(f"{base}: empty")
    return base


def davis_sequences(
    root: str | Path, sequences: list[str] | None = None
) -> list[tuple[str, Path, Path]]:
    """(name, frames folder, annotations folder) of the chosen sequences of a DAVIS root."""
    root = Path(root)
    images, annots = (
        davis_resolution_dir(root, "JPEGImages"),
        davis_resolution_dir(root, "Annotations"),
    )
    available = sorted(
        p.name for p in images.iterdir() if p.is_dir() and (annots / p.name).is_dir()
    )
    if not available:
        raise UserError(f"{root}: no sequence has both frames and annotations")
    chosen = sequences or available
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise UserError(
            f"{root}: unknown sequence(s) {', '.join(unknown)}; available: {', '.join(available)}"
        )
    return [(s, images / s, annots / s) for s in chosen]


def evaluate_davis(
    root: str | Path,
    features,
    cfg: PropagationConfig | None = None,
    sequences: list[str] | None = None,
    impl: str = "local",
    device: str = "cpu",
    out_dir: str | Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    max_frames: int = 0,
) -> dict[str, Any]:
    """Propagate each sequence from its first-frame ground truth; J, F, J&F per sequence and
    overall (mean over all objects of all sequences, as the DAVIS benchmark reports)."""
    rows, all_j, all_f = [], [], []
    total_frames, total_s = 0, 0.0
    for name, img_dir, ann_dir in davis_sequences(root, sequences):
        reader = FolderReader(img_dir)
        n = min(len(reader), max_frames) if max_frames else len(reader)
        ann = {p.stem: p for p in ann_dir.glob("*.png")}
        names = frame_names(reader)[:n]
        if names[0] not in ann:
            raise UserError(f"{ann_dir}: no annotation for the first frame {names[0]}")
        gts = [read_mask(ann[s], size=reader.size)[0] if s in ann else None for s in names]
        preds = []
        t0 = time.perf_counter()
        frames = (reader.frame(i) for i in range(n))
        for t, ids in enumerate(propagate_masks(frames, gts[0], features, cfg, impl, device)):
            preds.append(ids)
            if out_dir is not None:
                write_mask(Path(out_dir) / name / f"{names[t]}.png", ids, DAVIS_PALETTE)
            if progress:
                progress(name, t + 1, n)
        dt = time.perf_counter() - t0
        keep = [i for i, g in enumerate(gts) if g is not None]
        res = evaluate_sequence(
            [preds[i] for i in keep], [gts[i] for i in keep], objects=object_ids(gts[0])
        )
        rows.append(
            {
                "sequence": name,
                "J": res["J"],
                "F": res["F"],
                "J&F": res["J&F"],
                "objects": len(res["objects"]),
                "frames": n,
                "fps": n / max(dt, 1e-9),
            }
        )
        all_j += [v["J"] for v in res["objects"].values()]
        all_f += [v["F"] for v in res["objects"].values()]
        total_frames += n
        total_s += dt
    j, f = float(np.mean(all_j)), float(np.mean(all_f))
    return {
        "sequences": rows,
        "J": j,
        "F": f,
        "J&F": (j + f) / 2,
        "frames": total_frames,
        "fps": total_frames / max(total_s, 1e-9),
    }
