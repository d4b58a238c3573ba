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
from video.annotations import KEYPOINTS_HEADER
from video.io import FolderReader, VideoReader, VideoWriter, open_video
from video.jf import evaluate_sequence, mean_over_objects
from video.masks import DAVIS_PALETTE, object_ids, read_mask, write_mask
from video.propagation import PropagationConfig, propagate_keypoints, propagate_masks

Progress = Callable[[int, int], None]  # (frames done, total)
StageProgress = Callable[[int, int, str], None]  # (done, total, stage)


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
    """{"objects": [id per point], "frames": [[[x, y] per point] per frame], "names": [frame
    name per entry of frames]} from our CSV (frames in file order)."""
    path = Path(path)
    try:
        rows = path.read_text().splitlines()
    except OSError:
        raise UserError(f"{path}: keypoints CSV not found") from None
    if not rows or rows[0] != KEYPOINTS_HEADER:
        raise UserError(f"{path}: not a keypoints CSV (expected the header {KEYPOINTS_HEADER})")
    frames: dict[str, list] = {}
    objects: dict[int, int] = {}
    try:
        for row in rows[1:]:
            if not row.strip():
                continue
            frame, point, obj, x, y = row.split(",")
            objects[int(point)] = int(obj)
            frames.setdefault(frame, []).append([float(x), float(y)])
    except ValueError:
        raise UserError(f"{path}: malformed row '{row}'") from None
    return {
        "objects": [objects[k] for k in sorted(objects)],
        "frames": list(frames.values()),
        "names": list(frames),
    }


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
    masks: list[Path | None] | None = None,
    keypoints: str | Path | None = None,
    alpha: float = 0.5,
    progress: StageProgress | None = None,
    trail: int = 12,
) -> Path:
    """The overlay video: masks tinted in their palette colours (masks[t] for frame t; None or
    past the end: none), keypoints as dots in their object's colour with their track over the
    last `trail` frames, streamed frame by frame. Keypoints are matched to frames by name."""
    import cv2

    masks = [Path(p) if p is not None else None for p in masks or []]
    kp = read_keypoints_csv(keypoints) if keypoints else None
    with open_video(video) as reader:
        n = len(reader)
        names = frame_names(reader)
        by_name = dict(zip(kp["names"], kp["frames"])) if kp else {}
        history: list[list] = []
        writer = VideoWriter(out, fps=reader.fps or 24.0)
        try:
            for t, frame in enumerate(reader):
                img = frame
                if t < len(masks) and masks[t] is not None:
                    ids, pal = read_mask(masks[t])
                    img = overlay(frame, ids, pal, alpha)
                img = np.ascontiguousarray(img)
                pts = by_name.get(names[t])
                history = (history + [pts])[-trail:] if pts is not None else []
                if kp is not None and pts is not None:
                    r = max(3, img.shape[0] // 80)
                    for k, obj in enumerate(kp["objects"]):
                        colour = tuple(int(v) for v in DAVIS_PALETTE[obj % 256])
                        track = np.array(
                            [[round(h[k][0]), round(h[k][1])] for h in history], np.int32
                        )
                        if len(track) > 1:
                            cv2.polylines(img, [track], False, colour, max(1, r // 2))
                        c = (int(round(pts[k][0])), int(round(pts[k][1])))
                        cv2.circle(img, c, r, colour, -1)
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
    keyframes: str | Path | dict | None = None,
    **options: Any,
) -> dict[str, Any]:
    """`selfsup propagate`: a first-frame mask and/or keypoints (frame 0 keyframe) and/or
    keyframes (a folder, a JSON, or {t: Keyframe}) through a video with `propagate_keyframes`
    (options: mode, from_frame, exports, cancel, cache, cache_dir, cache_mem_mb, cache_disk_gb);
    the overlay video is among the exports unless write_overlay is False."""
    from video.annotations import Keyframe, load_keyframes

    if mask is None and not points and keyframes is None:
        raise UserError("give keyframes, a first-frame mask and/or keypoints to propagate")
    with open_video(video, backend=backend) as reader:
        hw, names = reader.size, frame_names(reader)
    kfs: dict[int, Keyframe] = {}
    if keyframes is not None:
        kfs = (
            dict(keyframes) if isinstance(keyframes, dict) else load_keyframes(keyframes, names, hw)
        )
    if mask is not None or points:
        first = kfs.setdefault(0, Keyframe(0))
        if mask is not None:
            ids = read_mask(mask, size=hw)[0]
            if not object_ids(ids):
                raise UserError(f"{mask}: the mask has no object (every pixel is background 0)")
            first.ids = ids
        for k, p in enumerate(points or []):
            obj = int(p[2]) if len(p) > 2 else k + 1
            if not (0 <= p[0] < hw[1] and 0 <= p[1] < hw[0]):
                raise UserError(
                    f"{video}: point ({p[0]}, {p[1]}) lies outside the {hw[1]}x{hw[0]} frame"
                )
            first.points[k] = (float(p[0]), float(p[1]), obj)
    exports = list(options.pop("exports", None) or ["png"])
    if write_overlay and "overlay" not in exports:
        exports.append("overlay")
    return propagate_keyframes(
        video,
        kfs,
        out_dir,
        features,
        cfg,
        impl,
        device,
        exports=exports,
        ground_truth=ground_truth,
        progress=progress,
        backend=backend,
        **options,
    )


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
    rows, objects = [], []
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
        objects.append(res["objects"])
        total_frames += n
        total_s += dt
    return {
        "sequences": rows,
        **mean_over_objects(objects),
        "frames": total_frames,
        "fps": total_frames / max(total_s, 1e-9),
    }


# ----------------------------------------------------------------------------- keyframes

EXPORTS = ("png", "coco", "ffv1", "csv", "overlay")
DRIFT_THRESHOLD = 0.5  # relative change of an object's area from one frame to the next


def drift_scores(areas: np.ndarray, ok: np.ndarray, keyframe: np.ndarray) -> np.ndarray:
    """Per frame: the largest relative change of an object's area since the previous frame
    (|a_t - a_t-1| / max(a_t, a_t-1)), 0 where either frame has no result or t is a keyframe
    (a jump at a correction is intended). Objects under 0.05% of the frame in both are ignored."""
    n = len(areas)
    out = np.zeros(n, np.float32)
    if n < 2 or areas.shape[1] == 0:
        return out
    a, b = areas[1:], areas[:-1]
    big = np.maximum(a, b)
    rel = np.where(big > 5e-4, np.abs(a - b) / np.maximum(big, 1e-12), 0.0).max(1)
    valid = ok[1:] & ok[:-1] & ~keyframe[1:]
    out[1:] = np.where(valid, rel, 0.0)
    return out


def write_timeline(
    path: Path,
    n: int,
    keys: list[int],
    covered: np.ndarray,
    done: np.ndarray,
    areas: np.ndarray,
) -> dict[str, Any]:
    """<name>_timeline.json: {"frames": [{"t", "state", "area", "drift"}], "keyframes",
    "drift_threshold", "look_first"}; state keyframe | done | pending (will get labels, not
    yet) | none (no keyframe reaches it in this mode); area = fraction of the frame covered by
    objects; drift = drift_scores; look_first = the 20 frames with the highest drift above the
    threshold."""
    from engine.checkpoint import atomic_write

    kf = np.zeros(n, bool)
    kf[keys] = True
    ok = done | kf
    drift = drift_scores(areas, ok, kf)
    frames = []
    for t in range(n):
        state = "keyframe" if kf[t] else "done" if done[t] else "pending" if covered[t] else "none"
        frames.append(
            {
                "t": t,
                "state": state,
                "area": round(float(areas[t].sum()), 5) if ok[t] else None,
                "drift": round(float(drift[t]), 4),
            }
        )
    flagged = [int(t) for t in np.argsort(-drift, kind="stable") if drift[t] > DRIFT_THRESHOLD]
    doc = {
        "frames": frames,
        "keyframes": keys,
        "drift_threshold": DRIFT_THRESHOLD,
        "look_first": flagged[:20],
        "counts": {
            s: sum(f["state"] == s for f in frames) for s in ("keyframe", "done", "pending", "none")
        },
    }
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc)))
    return doc


def _ranges(ts: list[int]) -> list[list[int]]:
    """[1, 2, 3, 7] -> [[1, 3], [7, 7]] (inclusive)."""
    out: list[list[int]] = []
    for t in sorted(set(ts)):
        if out and out[-1][1] == t - 1:
            out[-1][1] = t
        else:
            out.append([t, t])
    return out


def _open_array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 array on disk of this shape (zeros when absent or of another shape)."""
    try:
        arr = np.load(path, mmap_mode="r+")
        if arr.shape == shape and arr.dtype == np.float32:
            return arr
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)


def score_keyframe_run(
    masks: list[Path], gt_dir: str | Path, names: list[str], keys: list[int], objects: list[int]
) -> dict[str, Any] | None:
    """J&F on the frames that are not keyframes and have both a result and a ground-truth PNG
    named like the frame (every frame scored; the DAVIS protocol's [1:-1] cut is for a single
    first-frame annotation and is what `score_masks` gives)."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise UserError(f"{gt_dir}: no such folder of ground-truth PNGs")
    gts = {p.stem: p for p in gt_dir.glob("*.png")}
    ks = set(keys)
    pairs = [
        (read_mask(m)[0], read_mask(gts[names[t]])[0])
        for t, m in enumerate(masks)
        if t not in ks and names[t] in gts and m.exists()
    ]
    if not pairs:
        return None
    r = evaluate_sequence([p for p, _ in pairs], [g for _, g in pairs], objects, False)
    return {"J": r["J"], "F": r["F"], "J&F": r["J&F"], "frames": r["frames"]}


def propagate_keyframes(
    video: str | Path,
    keyframes,
    out_dir: str | Path,
    features,
    cfg: PropagationConfig | None = None,
    impl: str = "local",
    device: str = "cpu",
    mode: str = "forward",
    from_frame: int = 0,
    exports: tuple[str, ...] | list[str] = ("png",),
    ground_truth: str | Path | None = None,
    progress: StageProgress | None = None,
    cancel: Callable[[], bool] | None = None,
    backend: str = "auto",
    cache: bool = True,
    cache_dir: str | Path | None = None,
    cache_mem_mb: float = 256,
    cache_disk_gb: float = 4.0,
    sigma: float | None = None,
) -> dict[str, Any]:
    """Masks and/or keypoints from keyframes through a video (video.keyframes has the rules),
    resumable and incremental; writes out_dir/<name>/<frame>.png, <name>_timeline.json, the
    chosen exports and out_dir/result.json, and returns the result.

    keyframes: {t: video.annotations.Keyframe} or a folder / JSON for `load_keyframes`. cancel()
    True stops after the current frame (result "stopped": true; a new run continues)."""
    import dataclasses
    import hashlib

    import torch

    from engine.checkpoint import atomic_write
    from video.annotations import Keyframe, load_keyframes, write_coco, write_mask_videos
    from video.feature_cache import FeatureCache, video_key
    from video.keyframes import KeyframePropagation, Stopped, Track, covered, digest
    from video.propagation import (
        Propagator,
        ids_to_onehot,
        keypoint_heatmaps,
        labels_to_ids,
        upsample,
    )

    bad = [e for e in exports if e not in EXPORTS]
    if bad:
        raise UserError(f"unknown export '{bad[0]}'; choose from {', '.join(EXPORTS)}")
    cfg = cfg or PropagationConfig()
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    reader = open_video(video, backend=backend)
    try:
        n, hw, names = len(reader), reader.size, frame_names(reader)
        kfs: dict[int, Keyframe] = (
            keyframes if isinstance(keyframes, dict) else load_keyframes(keyframes, names, hw)
        )
        if not kfs:
            raise UserError("no keyframes: annotate at least one frame")
        if not 0 <= from_frame < n:
            raise UserError(f"--from-frame {from_frame}: the video has frames 0..{n - 1}")
        name = Path(video).stem if Path(video).is_file() else Path(video).name
        seq_dir, state_dir = out_dir / name, out_dir / f".{name}.state"
        prop = Propagator(features, cfg, impl, device)
        size = prop.input_size(hw)
        model_key = repr(features)

        def compute(idx: list[int]) -> torch.Tensor:
            return prop.embed(torch.from_numpy(reader.frames(idx)))

        fc = FeatureCache(
            compute,
            video,
            model_key,
            size,
            cache_dir,
            int(cache_mem_mb * (1 << 20)),
            int(cache_disk_gb * (1 << 30)),
            enabled=cache,
        )
        settings = {
            k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("batch_frames", "tile")
        }
        base_key = hashlib.sha1(
            json.dumps([settings, model_key, video_key(video), list(size), list(hw)]).encode()
        ).hexdigest()[:20]

        def prefetch(frames: list[int]) -> None:
            todo = sorted(t for t in frames if not fc.has(t))
            bs = max(1, cfg.batch_frames)
            for i in range(0, len(todo), bs):
                fc.get(todo[i : i + bs])
                if progress:
                    progress(min(i + bs, len(todo)), len(todo), "features")

        job = KeyframePropagation(
            n, fc.get, prop, state_dir, base_key, mode, cancel, progress, prefetch
        )
        stride = getattr(features, "stride", None)
        result: dict[str, Any] = {
            "out": str(out_dir),
            "video": str(video),
            "features": model_key,
            "frames": n,
            "mode": mode,
            "from_frame": from_frame,
            "keyframes": sorted(kfs),
            "feature_size": list(size),
        }
        tracks = []
        mask_keys = sorted(t for t, k in kfs.items() if k.ids is not None)
        objs: list[int] = sorted({o for t in mask_keys for o in object_ids(kfs[t].ids)})
        areas = None
        if mask_keys:
            if not objs:
                raise UserError("the keyframe masks have no object (every pixel is background 0)")
            ids = [0, *objs]
            areas = _open_array(state_dir / "areas.npy", (n, len(objs)))
            mask_track = Track(
                "masks",
                {t: digest(kfs[t].ids, ids) for t in mask_keys},
                lambda t: ids_to_onehot(kfs[t].ids, ids),
            )

            def emit_mask(t: int, soft) -> None:
                m = (
                    kfs[t].ids
                    if soft is None
                    else labels_to_ids(soft, hw, ids, cfg.norm_mask, stride)
                )
                write_mask(seq_dir / f"{names[t]}.png", m)
                areas[t] = [float((m == o).mean()) for o in objs]

            tracks.append((mask_track, emit_mask))
        point_keys = sorted(t for t, k in kfs.items() if k.points)
        points_arr = None
        if point_keys:
            pids = sorted(kfs[point_keys[0]].points)
            for t in point_keys:
                if sorted(kfs[t].points) != pids:
                    raise UserError(
                        f"keyframe {t} places points {sorted(kfs[t].points)}, keyframe {point_keys[0]} places {pids}: every keypoint keyframe must place all points"
                    )
            point_obj = [kfs[point_keys[0]].points[k][2] for k in pids]
            if sigma is None:
                sigma = 0.5 * (stride or 8) * hw[0] / size[0]
            points_arr = _open_array(state_dir / "points.npy", (n, len(pids), 2))

            def xy(t):
                return np.asarray([kfs[t].points[k][:2] for k in pids], np.float32)

            point_track = Track(
                "keypoints",
                {t: digest(xy(t), sigma) for t in point_keys},
                lambda t: keypoint_heatmaps(xy(t), hw, sigma),
                down="area",
            )

            def emit_points(t: int, soft) -> None:
                if soft is None:
                    points_arr[t] = xy(t)
                    return
                arg = upsample(soft, hw).flatten(1).argmax(1).cpu().numpy()
                points_arr[t] = np.stack([arg % hw[1], arg // hw[1]], 1)

            tracks.append((point_track, emit_points))
        stopped = False
        try:
            for track, emit in tracks:
                job.run(track, emit, from_frame)
        except Stopped:
            stopped = True
        finally:
            if areas is not None:
                areas.flush()
            if points_arr is not None:
                points_arr.flush()
        fps = reader.fps or 24.0
    finally:
        reader.close()

    main_track = tracks[0][0]
    done = job.done_frames(main_track)
    cov = covered(main_track.keys, n, mode)
    timeline = write_timeline(
        out_dir / f"{name}_timeline.json",
        n,
        sorted(kfs),
        cov,
        done,
        areas if areas is not None else np.zeros((n, 0), np.float32),
    )
    result.update(
        stopped=stopped,
        propagated=job.steps,
        written=len(job.emitted),
        written_ranges=_ranges(job.emitted),
        timeline=str(out_dir / f"{name}_timeline.json"),
        states=timeline["counts"],
        look_first=timeline["look_first"],
        cache=fc.stats(),
    )
    mask_done = job.done_frames(tracks[0][0]) if mask_keys else np.zeros(n, bool)
    masks = [seq_dir / f"{names[t]}.png" for t in range(n)]
    if mask_keys:
        result.update(
            objects=objs,
            masks_dir=str(seq_dir),
            masks=[str(p) for t, p in enumerate(masks) if mask_done[t]],
        )
    exported: dict[str, Any] = {}
    if point_keys:
        pdone = job.done_frames(point_track)
        lines = [KEYPOINTS_HEADER] + [
            f"{names[t]},{k},{point_obj[k]},{x:.1f},{y:.1f}"
            for t in range(n)
            if pdone[t]
            for k, (x, y) in enumerate(points_arr[t])
        ]
        csv = out_dir / f"{name}_keypoints.csv"
        atomic_write(csv, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))
        result["keypoints"] = str(csv)
        exported["csv"] = str(csv)
    if not stopped:
        empty = np.zeros(hw, np.uint8)

        def id_maps():
            for t in range(n):
                yield read_mask(masks[t])[0] if mask_done[t] else empty

        if mask_keys and "png" in exports:
            exported["png"] = str(seq_dir)
        if mask_keys and "coco" in exports:
            exported["coco"] = str(
                write_coco(out_dir / f"{name}_coco.json", id_maps(), names, hw, objs)
            )
        if mask_keys and "ffv1" in exports:
            vids = write_mask_videos(out_dir / f"{name}_masks", id_maps(), objs, fps)
            exported["ffv1"] = {str(o): str(p) for o, p in vids.items()}
        if "overlay" in exports:
            exported["overlay"] = str(
                render_overlay(
                    video,
                    out_dir / f"{name}_overlay.mp4",
                    [m if mask_done[t] else None for t, m in enumerate(masks)]
                    if mask_keys
                    else None,
                    result.get("keypoints"),
                    progress=progress,
                )
            )
            result["overlay"] = exported["overlay"]
    result["exports"] = exported
    if mask_keys and ground_truth:
        result["jf_unannotated"] = score_keyframe_run(masks, ground_truth, names, sorted(kfs), objs)
        if sorted(kfs) == [0] and all(mask_done):
            result["jf"] = score_masks(masks, Path(ground_truth))
    result["seconds"] = time.perf_counter() - t_start
    result["frames_per_s"] = len(job.emitted) / max(1e-9, result["seconds"])
    result.setdefault("overlay", None)
    atomic_write(
        out_dir / "result.json", lambda tmp: Path(tmp).write_text(json.dumps(result, indent=1))
    )
    return result
