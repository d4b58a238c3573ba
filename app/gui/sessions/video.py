"""The Video page's state, Qt-free: the open video, the first-frame annotation kept while
scrubbing, the propagation's command line and its result (masks, keypoints, J&F), exports.

The page renders this and forwards input; it never keeps a copy of the state. Events:
`video_changed()` after a video is opened, `result_changed()` after a propagation's result is
loaded (or cleared)."""

from __future__ import annotations

import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from app.gui.sessions.events import Event
from app.gui.video_model import LoadedVideo, gt_first_mask, read_result

MASK_CACHE = 600  # decoded result masks kept for scrubbing


def object_ids(ids: np.ndarray | None) -> set[int]:
    """Painted objects of an id map (0 is background, 255 void)."""
    return {int(i) for i in np.unique(ids)} - {0, 255} if ids is not None else set()


class VideoSession:
    def __init__(self) -> None:
        self.video_changed = Event()
        self.result_changed = Event()
        self.video: LoadedVideo | None = None
        self.first_ids: np.ndarray | None = None  # the annotation, kept while scrubbing
        self.first_points: list[tuple[float, float, int]] = []
        self.result_dir: Path | None = None
        self.result: dict[str, Any] = {}
        self.keypoints: dict | None = None
        self.job_kind = ""  # "propagate" | "overlay" while a child process runs
        self.pending_out: Path | None = None  # where the running propagation writes
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()

    # ---- video -----------------------------------------------------------------------------
    def set_video(self, video: LoadedVideo) -> None:
        self.video = video
        self.first_ids, self.first_points = None, []
        self._clear_result()
        self.video_changed.emit()

    @property
    def has_ground_truth(self) -> bool:
        return self.video is not None and self.video.source.ground_truth is not None

    def ground_truth_mask(self) -> Path | None:
        return gt_first_mask(self.video.source) if self.video is not None else None

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

    # ---- annotation ------------------------------------------------------------------------
    def set_annotation(self, ids: np.ndarray | None, points: list) -> None:
        self.first_ids = ids.copy() if ids is not None else None
        self.first_points = [tuple(p) for p in points]

    @staticmethod
    def annotation_text(ids: np.ndarray | None, points: list) -> str:
        return f"{len(object_ids(ids))} object(s) painted, {len(points)} keypoint(s)"

    @staticmethod
    def has_marks(ids: np.ndarray | None, points: list) -> bool:
        return bool(object_ids(ids)) or bool(points)

    # ---- propagation -----------------------------------------------------------------------
    def propagate_args(
        self,
        ids: np.ndarray | None,
        points: list,
        features: str,
        options: dict[str, Any],
        out: Path,
    ) -> list[str]:
        """The `selfsup propagate` command line; writes the first-frame mask into `out`.
        Keeps the annotation as the one the result belongs to."""
        from app.gui.sessions.cli_args import flag_value
        from video.masks import write_mask

        v = self.video
        if v is None:
            raise ValueError("no video open")
        out.mkdir(parents=True, exist_ok=True)
        args = ["propagate", "--video", str(v.source.frames), "--out", str(out)]
        args += ["--checkpoint", features or "lab"]
        for k, val in options.items():
            args += ["--" + k.replace("_", "-"), flag_value(val)]
        if object_ids(ids):
            write_mask(out / "first.png", ids)
            args += ["--mask", str(out / "first.png")]
        if points:
            args += ["--points", *(f"{x:g},{y:g},{int(o)}" for x, y, o in points)]
        if v.source.ground_truth:
            args += ["--ground-truth", str(v.source.ground_truth)]
        self.set_annotation(ids, points)
        self.pending_out = out
        return args

    def overlay_plan(self, path: str | Path, alpha: float) -> list[str] | None:
        """None when the propagation's own overlay video is what was asked for (no keypoints,
        its default opacity): the page copies it. Else the `selfsup overlay` command line."""
        made = self.result.get("overlay")
        if (
            made
            and Path(made).exists()
            and not self.result.get("keypoints")
            and abs(alpha - 0.5) < 0.05
        ):
            return None
        args = ["overlay", "--video", str(self.video.source.frames), "--out", str(path)]
        args += ["--alpha", f"{alpha:.3f}"]
        masks = self.result.get("masks")
        if masks:
            args += ["--masks", str(Path(masks[0]).parent)]
        if self.result.get("keypoints"):
            args += ["--keypoints", self.result["keypoints"]]
        return args

    # ---- result ----------------------------------------------------------------------------
    def _clear_result(self) -> None:
        self.result_dir, self.result, self.keypoints = None, {}, None
        self._masks.clear()

    def load_result(self, out: str | Path) -> None:
        """A finished propagation (masks, keypoints, J&F) from its folder."""
        from video.pipeline import read_keypoints_csv

        out = Path(out)
        self._clear_result()
        self.result_dir, self.result = out, read_result(out)
        kp = self.result.get("keypoints")
        self.keypoints = read_keypoints_csv(kp) if kp and Path(kp).exists() else None
        self.result_changed.emit()

    @property
    def has_result(self) -> bool:
        return self.result_dir is not None

    @property
    def can_export_masks(self) -> bool:
        return self.has_result and bool(self.result.get("masks") or self.result.get("keypoints"))

    def result_mask(self, t: int, hw: tuple[int, int]) -> np.ndarray | None:
        """The propagated id map of frame t at size hw (cached), None where there is none."""
        if self.result_dir is None:
            return None
        if t in self._masks:
            self._masks.move_to_end(t)
            return self._masks[t]
        masks = self.result.get("masks") or []
        p = Path(masks[t]) if t < len(masks) else None
        if p is None or not p.exists():
            return None
        import cv2

        from video.masks import read_mask

        ids = read_mask(p)[0]
        if ids.shape != hw:
            ids = cv2.resize(ids, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)
        self._masks[t] = ids
        while len(self._masks) > MASK_CACHE:
            self._masks.popitem(last=False)
        return ids

    def keypoints_at(self, t: int, hw: tuple[int, int]) -> list[tuple[float, float, int]]:
        """Frame t's keypoints scaled from the video's size to a timeline frame of size hw."""
        kp, v = self.keypoints, self.video
        if kp is None or v is None or t >= len(kp["frames"]):
            return []
        sy, sx = hw[0] / v.size[0], hw[1] / v.size[1]
        return [(x * sx, y * sy, o) for (x, y), o in zip(kp["frames"][t], kp["objects"])]

    def summary(self) -> tuple[str, str]:
        """(progress line, results text) of the loaded result."""
        r = self.result
        secs, fps = r.get("seconds", 0), r.get("frames_per_s", 0)
        name = self.result_dir.name if self.result_dir else ""
        line = f"done in {secs:.1f}s ({fps:.1f} frames/s) · results in {name}"
        jf = r.get("jf")
        if jf:
            objs = ", ".join(f"object {k}: J {v['J']:.2f}" for k, v in jf["objects"].items())
            text = (
                f"<b>J&amp;F {jf['J&F']:.3f}</b> (J {jf['J']:.3f}, F {jf['F']:.3f}) against the "
                f"ground truth, {jf['frames']} frames scored (first and last excluded). {objs}"
            )
        elif r.get("masks"):
            text = "Masks ready: scrub the timeline. (No ground truth to score against.)"
        else:
            text = "Keypoints ready: scrub the timeline."
        return line, text

    def export_masks(self, folder: str | Path) -> Path:
        """DAVIS layout: <folder>/<sequence>/00000.png ... (palette PNGs), the keypoints CSV beside."""
        dest = Path(folder) / (self.video.source.name if self.video else "masks")
        dest.mkdir(parents=True, exist_ok=True)
        for p in self.result.get("masks") or []:
            shutil.copy2(p, dest / Path(p).name)
        kp = self.result.get("keypoints")
        if kp and Path(kp).exists():
            shutil.copy2(kp, dest / Path(kp).name)
        return dest

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
