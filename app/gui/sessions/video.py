"""The Video page's state, Qt-free: the open video, the keyframes (masks and keypoints painted on
any frame), the propagation's command line, its result (masks, keypoints, timeline, J&F) and
the exports.

The page renders this and forwards input; it never keeps a copy of the state. Events:
`video_changed()` after a video is opened, `keyframes_changed()` after a keyframe is made,
changed or removed, `result_changed()` after a propagation's result is loaded (or cleared).

Keyframes are held at the video's resolution in video coordinates ({t: Keyframe}); the canvas
may show a smaller timeline frame, so `marks_at` scales down and `edit` scales back, changing
only the pixels the user changed. Each video has one output folder (`run_folder`): the
keyframes JSON, the masks, the command's resumable state and its result live there, so a
correction recomputes only the frames it governs, a stopped run continues, and reopening the
video brings its keyframes and result back.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.gui.sessions.events import Event
from app.gui.video_model import LoadedVideo, read_result

MASK_CACHE = 600  # decoded result masks kept for scrubbing
MODES = ("forward", "blend", "backward")  # video.keyframes.MODES (kept Qt-free and torch-free)
EXPORT_FORMATS = {
    "png": "DAVIS PNGs",
    "coco": "COCO JSON (RLE)",
    "ffv1": "FFV1 mask videos",
    "csv": "keypoints CSV",
    "overlay": "overlay video",
}
KEYFRAMES_FILE = "keyframes.json"


def object_ids(ids: np.ndarray | None) -> set[int]:
    """Painted objects of an id map (0 is background, 255 void)."""
    return {int(i) for i in np.unique(ids)} - {0, 255} if ids is not None else set()


def _resize_ids(ids: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if ids.shape == tuple(hw):
        return ids
    import cv2

    return cv2.resize(ids, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


@dataclass
class TimelineModel:
    """What the timeline bar paints, per frame of the video."""

    n: int = 0
    states: list[str] = field(default_factory=list)  # keyframe | done | pending | none | ""
    keyframes: list[int] = field(default_factory=list)  # the session's keyframes, now
    changed: list[int] = field(default_factory=list)  # keyframes edited since the last run
    recomputed: list[tuple[int, int]] = field(default_factory=list)  # last run, inclusive
    flagged: list[int] = field(default_factory=list)  # abrupt mask-area changes, in time order

    def recomputed_frames(self) -> set[int]:
        return {t for a, b in self.recomputed for t in range(a, b + 1)}


class VideoSession:
    def __init__(self, root: str | Path | None = None) -> None:
        """root: the folder holding one output folder per video (None: no restore on open)."""
        self.video_changed = Event()
        self.keyframes_changed = Event()
        self.result_changed = Event()
        self.root = Path(root) if root is not None else None
        self.video: LoadedVideo | None = None
        self.keyframes: dict[int, Any] = {}  # {t: video.annotations.Keyframe}
        self.changed: set[int] = set()  # keyframes edited or removed since the last run started
        self.mode = "forward"
        self.result_dir: Path | None = None
        self.result: dict[str, Any] = {}
        self.timeline: dict[str, Any] = {}
        self.keypoints: dict | None = None
        self.job_kind = ""  # "propagate" | "export" while a child process runs
        self.pending_out: Path | None = None  # where the running command writes
        self.export_to: tuple[Path, list[str]] | None = None  # (folder, formats) of an export
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._mask_paths: dict[str, Path] = {}
        self._kp_index: dict[str, int] = {}

    # ---- video -----------------------------------------------------------------------------
    def set_video(self, video: LoadedVideo) -> None:
        self.video = video
        self.keyframes, self.changed = {}, set()
        self._clear_result()
        if self.root is not None:
            self.restore()
        self.video_changed.emit()

    @property
    def names(self) -> list[str]:
        """Frame names as the command writes them (frame files' stems, else 00000, ...)."""
        v = self.video
        if v is None:
            return []
        return list(v.names) if v.names else [f"{t:05d}" for t in range(v.num_frames)]

    @property
    def has_ground_truth(self) -> bool:
        return self.video is not None and self.video.source.ground_truth is not None

    def ground_truth_mask(self, t: int = 0) -> Path | None:
        """The ground-truth PNG of frame t (named like the frame), the first one for frame 0."""
        if not self.has_ground_truth:
            return None
        from app.gui.video_model import gt_first_mask

        gt = self.video.source.ground_truth
        names = self.names
        p = gt / f"{names[t]}.png" if t < len(names) else None
        if p is not None and p.exists():
            return p
        return gt_first_mask(self.video.source) if t == 0 else None

    def describe(self) -> str:
        v = self.video
        if v is None:
            return ""
        h, w = v.size
        gt = " · ground truth available" if self.has_ground_truth else ""
        bad = f" · {len(v.bad_frames)} frames could not be decoded" if v.bad_frames else ""
        return f"{v.source.name}: {v.num_frames} frames, {w}x{h}, {v.fps:.0f} fps{gt}{bad}"

    def frame_text(self, t: int) -> str:
        v = self.video
        if v is None:
            return "frame – / –"
        return f"frame {t + 1} / {v.num_frames}" + (f" · {t / v.fps:.1f}s" if v.fps else "")

    def frame(self, t: int) -> np.ndarray:
        """Frame t as the canvas shows it (the first at full resolution, the others from the
        timeline, which may be downscaled)."""
        v = self.video
        return v.first if t == 0 else v.timeline[t]

    def run_folder(self) -> Path | None:
        """The one output folder of this video (same video -> same folder, every time)."""
        if self.root is None or self.video is None:
            return None
        src = self.video.source
        tag = hashlib.sha1(str(Path(src.frames).resolve()).encode()).hexdigest()[:8]
        return self.root / f"{src.name}-{tag}"

    def restore(self) -> None:
        """The keyframes and the result left in this video's folder by an earlier session."""
        from video.annotations import load_keyframes

        out = self.run_folder()
        if out is None:
            return
        kf = out / KEYFRAMES_FILE
        if kf.exists():
            try:
                self.keyframes = load_keyframes(kf, self.names, self.video.size)
            except Exception:  # noqa: BLE001 - an unreadable leftover is not the user's problem
                self.keyframes = {}
        if (out / "result.json").exists():
            self.load_result(out, emit=False)
            self.mode = self.result.get("mode", self.mode)

    # ---- keyframes -------------------------------------------------------------------------
    def is_keyframe(self, t: int) -> bool:
        return t in self.keyframes

    def _base_ids(self, t: int) -> np.ndarray | None:
        """Frame t's id map at video size: its keyframe's mask, else the propagated one."""
        kf = self.keyframes.get(t)
        if kf is not None and kf.ids is not None:
            return kf.ids
        return self.result_mask(t, self.video.size)

    def _base_points(self, t: int) -> list[tuple[float, float, int]]:
        kf = self.keyframes.get(t)
        if kf is not None and kf.points:
            return [tuple(kf.points[k]) for k in sorted(kf.points)]
        return self.keypoints_at(t, self.video.size)

    def marks_at(self, t: int, hw: tuple[int, int]) -> tuple[np.ndarray | None, list]:
        """(id map, keypoints) the canvas shows on frame t at size hw: the keyframe's own
        marks, else the propagated ones (a correction starts from what was propagated)."""
        if self.video is None:
            return None, []
        ids = self._base_ids(t)
        h, w = self.video.size
        sy, sx = hw[0] / h, hw[1] / w
        pts = [(x * sx, y * sy, int(o)) for x, y, o in self._base_points(t)]
        return (_resize_ids(ids, hw).copy() if ids is not None else None), pts

    def edit(self, t: int, ids: np.ndarray | None, points: list) -> bool:
        """The canvas's marks on frame t after an edit (at the canvas's size): the parts that
        differ from what frame t showed make t a keyframe (or change its keyframe). Returns
        whether anything changed."""
        from video.annotations import Keyframe

        if self.video is None:
            return False
        H, W = self.video.size
        hw = ids.shape if ids is not None else (H, W)
        shown_ids, shown_pts = self.marks_at(t, hw)
        base = self._base_ids(t)
        kf = self.keyframes.get(t)
        new_ids = None
        if ids is not None:
            before = shown_ids if shown_ids is not None else np.zeros(hw, np.uint8)
            diff = ids != before
            if diff.any():
                if tuple(hw) == (H, W):
                    new_ids = ids.astype(np.uint8).copy()
                else:  # only the pixels the user changed, at full resolution
                    new_ids = (base if base is not None else np.zeros((H, W), np.uint8)).copy()
                    up = _resize_ids(ids.astype(np.uint8), (H, W))
                    changed = _resize_ids(diff.astype(np.uint8), (H, W)).astype(bool)
                    new_ids[changed] = up[changed]
        pts = [(float(x), float(y), int(o)) for x, y, o in points]
        new_pts = None
        if pts != [(float(x), float(y), int(o)) for x, y, o in shown_pts]:
            sy, sx = H / hw[0], W / hw[1]
            new_pts = {k: (x * sx, y * sy, o) for k, (x, y, o) in enumerate(pts)}
        if new_ids is None and new_pts is None:
            return False
        kf = kf or Keyframe(t)
        if new_ids is not None:
            kf.ids = new_ids
        if new_pts is not None:
            kf.points = new_pts
        if kf.ids is None and not kf.points:
            self.keyframes.pop(t, None)
        else:
            self.keyframes[t] = kf
        self.changed.add(t)
        self.keyframes_changed.emit()
        return True

    def set_keyframe_mask(self, t: int, ids: np.ndarray) -> None:
        """A whole mask (a loaded PNG or the ground truth, at video size) as frame t's keyframe."""
        from video.annotations import Keyframe

        kf = self.keyframes.setdefault(t, Keyframe(t))
        kf.ids = _resize_ids(ids.astype(np.uint8), self.video.size).copy()
        self.changed.add(t)
        self.keyframes_changed.emit()

    def remove_keyframe(self, t: int) -> bool:
        if self.keyframes.pop(t, None) is None:
            return False
        self.changed.add(t)
        self.keyframes_changed.emit()
        return True

    def clear_keyframes(self) -> None:
        self.changed |= set(self.keyframes)
        self.keyframes = {}
        self.keyframes_changed.emit()

    def problem(self) -> str | None:
        """Why the keyframes cannot be propagated as they are (None: they can)."""
        kfs = self.keyframes
        has_obj = any(object_ids(k.ids) for k in kfs.values())
        with_pts = [t for t in sorted(kfs) if kfs[t].points]
        if not has_obj and not with_pts:
            return "mark at least one object on any frame: paint a mask, load a PNG, or place a keypoint"
        counts = {t: len(kfs[t].points) for t in with_pts}
        if len(set(counts.values())) > 1:
            a, b = with_pts[0], next(t for t in with_pts if counts[t] != counts[with_pts[0]])
            return (
                f"frame {b + 1} has {counts[b]} keypoint(s) but frame {a + 1} has {counts[a]}: "
                "every frame with keypoints must place all of them (propagate first, then move them)"
            )
        return None

    def keyframes_text(self, t: int) -> str:
        ks = sorted(self.keyframes)
        listed = ", ".join(str(k + 1) for k in ks[:12]) + (" …" if len(ks) > 12 else "")
        head = f"{len(ks)} keyframe(s): {listed}" if ks else "no keyframes yet"
        kf = self.keyframes.get(t)
        if kf is not None:
            n_obj, n_pts = len(object_ids(kf.ids)), len(kf.points)
            edited = " (changed: propagate again)" if t in self.changed else ""
            here = f"frame {t + 1} is a keyframe: {n_obj} object(s), {n_pts} keypoint(s){edited}"
        elif self.has_result and self._base_ids(t) is not None:
            here = f"frame {t + 1}: propagated. Paint or move a keypoint to correct it."
        else:
            here = f"frame {t + 1}: paint objects or place keypoints to make it a keyframe."
        return f"{here}<br>{head}"

    @staticmethod
    def annotation_text(ids: np.ndarray | None, points: list) -> str:
        return f"{len(object_ids(ids))} object(s) painted, {len(points)} keypoint(s)"

    @staticmethod
    def has_marks(ids: np.ndarray | None, points: list) -> bool:
        return bool(object_ids(ids)) or bool(points)

    # ---- propagation -----------------------------------------------------------------------
    def write_keyframes(self, out: Path) -> Path:
        """keyframes.json (+ keyframes_masks/) in out; masks of removed keyframes are deleted."""
        from video.annotations import write_keyframes_json

        path = out / KEYFRAMES_FILE
        mask_dir = path.with_name(path.stem + "_masks")
        if mask_dir.is_dir():
            keep = {f"{t:05d}.png" for t, k in self.keyframes.items() if k.ids is not None}
            for p in mask_dir.glob("*.png"):
                if p.name not in keep:
                    p.unlink()
        return write_keyframes_json(path, self.keyframes)

    def propagate_args(
        self,
        features: str,
        options: dict[str, Any],
        out: Path | None = None,
        exports: list[str] | tuple[str, ...] = ("png",),
    ) -> list[str]:
        """The `selfsup propagate` command line of the session's keyframes and mode; writes the
        keyframes into `out` (default: the video's own folder)."""
        from app.gui.sessions.cli_args import flag_value

        v = self.video
        if v is None:
            raise ValueError("no video open")
        out = Path(out) if out is not None else self.run_folder()
        if out is None:
            raise ValueError("no output folder")
        out.mkdir(parents=True, exist_ok=True)
        kf = self.write_keyframes(out)
        args = ["propagate", "--video", str(v.source.frames), "--out", str(out)]
        args += ["--checkpoint", features or "lab"]
        for k, val in options.items():
            args += ["--" + k.replace("_", "-"), flag_value(val)]
        args += ["--keyframes", str(kf), "--mode", self.mode, "--export", *(exports or ["png"])]
        if v.source.ground_truth:
            args += ["--ground-truth", str(v.source.ground_truth)]
        self.changed = set()
        self.pending_out = out
        return args

    # ---- result ----------------------------------------------------------------------------
    def _clear_result(self) -> None:
        self.result_dir, self.result, self.keypoints, self.timeline = None, {}, None, {}
        self._masks.clear()
        self._mask_paths, self._kp_index = {}, {}

    def load_result(self, out: str | Path, emit: bool = True) -> None:
        """A finished (or stopped) propagation from its folder: masks, keypoints, timeline, J&F."""
        from video.pipeline import read_keypoints_csv

        out = Path(out)
        self._clear_result()
        self.result_dir, self.result = out, read_result(out)
        self._mask_paths = {Path(p).stem: Path(p) for p in self.result.get("masks") or []}
        kp = self.result.get("keypoints")
        if kp and Path(kp).exists():
            self.keypoints = read_keypoints_csv(kp)
            self._kp_index = {n: i for i, n in enumerate(self.keypoints.get("names", []))}
        tl = self.result.get("timeline")
        try:
            self.timeline = json.loads(Path(tl).read_text()) if tl else {}
        except (OSError, ValueError):
            self.timeline = {}
        if emit:
            self.result_changed.emit()

    @property
    def has_result(self) -> bool:
        return self.result_dir is not None and bool(self.result)

    @property
    def can_export_masks(self) -> bool:
        return self.has_result and bool(self.result.get("masks") or self.result.get("keypoints"))

    def result_mask(self, t: int, hw: tuple[int, int]) -> np.ndarray | None:
        """The propagated id map of frame t at size hw (cached), None where there is none."""
        if self.result_dir is None or self.video is None:
            return None
        names = self.names
        p = self._mask_paths.get(names[t]) if t < len(names) else None
        if p is None or not p.exists():
            return None
        cached = self._masks.get(t)
        if cached is None:
            from video.masks import read_mask

            cached = self._masks[t] = read_mask(p)[0]
            while len(self._masks) > MASK_CACHE:
                self._masks.popitem(last=False)
        else:
            self._masks.move_to_end(t)
        return _resize_ids(cached, hw)

    def keypoints_at(self, t: int, hw: tuple[int, int]) -> list[tuple[float, float, int]]:
        """Frame t's propagated keypoints scaled from the video's size to a frame of size hw."""
        kp, v = self.keypoints, self.video
        if kp is None or v is None:
            return []
        names = self.names
        i = self._kp_index.get(names[t]) if t < len(names) and self._kp_index else None
        if i is None:
            if self._kp_index or t >= len(kp["frames"]):
                return []
            i = t
        sy, sx = hw[0] / v.size[0], hw[1] / v.size[1]
        return [(x * sx, y * sy, o) for (x, y), o in zip(kp["frames"][i], kp["objects"])]

    def timeline_model(self) -> TimelineModel:
        n = self.video.num_frames if self.video is not None else 0
        frames = self.timeline.get("frames") or []
        states = [f.get("state", "") for f in frames] if len(frames) == n else [""] * n
        flagged = sorted(int(t) for t in self.timeline.get("look_first") or [] if 0 <= t < n)
        ranges = [(int(a), int(b)) for a, b in self.result.get("written_ranges") or []]
        return TimelineModel(
            n, states, sorted(self.keyframes), sorted(self.changed), ranges, flagged
        )

    def next_flagged(self, t: int) -> int | None:
        """The next frame after t whose mask area jumps (wrapping round), None when none does."""
        flagged = self.timeline_model().flagged
        if not flagged:
            return None
        return next((f for f in flagged if f > t), flagged[0])

    def summary(self) -> tuple[str, str]:
        """(progress line, results text) of the loaded result."""
        r = self.result
        secs = r.get("seconds", 0)
        name = self.result_dir.name if self.result_dir else ""
        ranges = r.get("written_ranges") or []
        span = ", ".join(f"{a + 1}–{b + 1}" if b > a else f"{a + 1}" for a, b in ranges[:4])
        what = f"frames {span} recomputed" if ranges else "nothing to recompute"
        if r.get("stopped"):
            line = f"stopped after {secs:.1f}s · {what} · Propagate continues from there"
        else:
            line = f"done in {secs:.1f}s · {what} · results in {name}"
        st = r.get("states") or {}
        states = (
            f"{st.get('keyframe', 0)} keyframe(s), {st.get('done', 0)} propagated, "
            f"{st.get('pending', 0)} pending, {st.get('none', 0)} not reached ({r.get('mode', '')})"
            if st
            else ""
        )
        jf = r.get("jf")
        jfu = r.get("jf_unannotated")
        if jf:
            objs = ", ".join(f"object {k}: J {v['J']:.2f}" for k, v in jf["objects"].items())
            text = (
                f"<b>J&amp;F {jf['J&F']:.3f}</b> (J {jf['J']:.3f}, F {jf['F']:.3f}) against the "
                f"ground truth, {jf['frames']} frames scored (first and last excluded). {objs}"
            )
        elif jfu:
            text = (
                f"<b>J&amp;F {jfu['J&F']:.3f}</b> (J {jfu['J']:.3f}, F {jfu['F']:.3f}) against "
                f"the ground truth on the {jfu['frames']} frames that are not keyframes."
            )
        elif r.get("masks"):
            text = "Masks ready: scrub the timeline. (No ground truth to score against.)"
        else:
            text = "Keypoints ready: scrub the timeline."
        look = self.timeline.get("look_first") or []
        if look:
            text += f"<br>Look first at frame(s) {', '.join(str(t + 1) for t in sorted(look)[:8])}: the mask area jumps there."
        return line, (f"{states}<br>{text}" if states else text)

    # ---- exports ---------------------------------------------------------------------------
    def export_masks(self, folder: str | Path) -> Path:
        """DAVIS layout: <folder>/<sequence>/00000.png ... (palette PNGs of the labelled frames)."""
        dest = Path(folder) / (self.video.source.name if self.video else "masks")
        dest.mkdir(parents=True, exist_ok=True)
        for p in self.result.get("masks") or []:
            shutil.copy2(p, dest / Path(p).name)
        return dest

    def copy_exports(self, folder: str | Path, formats: list[str]) -> dict[str, list[Path]]:
        """Copy what the command wrote for each format into folder; {format: files}. A format
        the result has nothing for (keypoints CSV without keypoints) maps to []."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        made = self.result.get("exports") or {}
        out: dict[str, list[Path]] = {}

        def copy(src: str | Path) -> Path:
            dst = folder / Path(src).name
            shutil.copy2(src, dst)
            return dst

        for fmt in formats:
            if fmt == "png":
                dest = self.export_masks(folder) if self.result.get("masks") else None
                out[fmt] = sorted(dest.glob("*.png")) if dest else []
            elif fmt == "csv":
                kp = self.result.get("keypoints")
                out[fmt] = [copy(kp)] if kp and Path(kp).exists() else []
            elif fmt == "ffv1":
                out[fmt] = [copy(p) for _, p in sorted((made.get("ffv1") or {}).items())]
            else:
                out[fmt] = [copy(made[fmt])] if made.get(fmt) else []
        return out

    @staticmethod
    def exports_text(written: dict[str, list[Path]], folder: Path) -> str:
        done = [f"{EXPORT_FORMATS[f]} ({len(p)} file(s))" for f, p in written.items() if p]
        missing = [EXPORT_FORMATS[f] for f, p in written.items() if not p]
        text = f"exported to {folder}: " + (", ".join(done) or "nothing")
        return text + (f"; nothing to write for {', '.join(missing)}" if missing else "")

    @staticmethod
    def progress_text(e: dict[str, Any]) -> str:
        """A `progress` record of the child's --events stream as one line."""
        total = int(e.get("total") or 0)
        stage = e.get("stage", "")
        fps = f" · {e['rate']:.1f} frames/s" if e.get("rate") else ""
        return f"{stage}: {e['done']} / {total}{fps}" if total else stage

    def finished_text(self, cancelled: bool) -> str:
        what = "propagation" if self.job_kind == "propagate" else "export"
        return f"{what} cancelled" if cancelled else "failed"
