"""Propagation from any number of keyframes, resumable, recomputing only what a change affects.

Keyframes split the video into intervals; a frame's context never reaches back past a keyframe,
so each interval depends only on its own frames' features and on its bounding keyframes:
- forward: from keyframe a to the frame before the next keyframe b, context = keyframe a + the
  last n frames of this pass (DINO's protocol with the keyframe in place of the first frame);
- backward: the same from keyframe b down to a + 1 (the video reversed);
- blend: both passes between a and b, soft labels mixed by distance, weight (b - t) / (b - a) on
  the forward pass; before the first keyframe backward only, after the last forward only.
Forward mode leaves the frames before the first keyframe unlabelled; backward mode those after
the last one.

Each interval has a fingerprint (the mode of its pass, its bounds, the labels of the keyframes
it uses, the features and settings); a frame counts as done only under the fingerprint it was
computed with. A correction at keyframe t therefore recomputes t..next keyframe in forward mode
(previous..next keyframe in blend mode), and nothing else. The state lives in a folder: one done
byte per frame, the fingerprints, and the soft labels of the last n frames of the open pass
(float32, exact), so a killed run continues bit for bit where it stopped; the blend's backward
pass keeps its labels for the forward pass as float16 files (the same rounding whether or not the
run was interrupted).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.checkpoint import atomic_write
from engine.errors import UserError
from video.feature_cache import save_npy
from video.propagation import Propagator

MODES = ("forward", "blend", "backward")


class Stopped(Exception):
    """The user cancelled; everything done so far is on disk and a new run resumes it."""


@dataclass
class Interval:
    kind: str  # "fwd" | "bwd" | "blend"
    a: int  # keyframe before (-1: none)
    b: int  # keyframe after (n: none)

    @property
    def frames(self) -> range:
        return range(self.a + 1, self.b)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.a}:{self.b}"


def intervals(keys: list[int], n: int, mode: str) -> list[Interval]:
    """The passes a set of keyframes implies (see the module docstring)."""
    if mode not in MODES:
        raise UserError(f"unknown propagation mode '{mode}'; choose {', '.join(MODES)}")
    ks = sorted(keys)
    out = []
    bounds = [-1, *ks, n]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a <= 1:
            continue
        has_a, has_b = a >= 0, b < n
        if mode == "forward":
            kind = "fwd" if has_a else None
        elif mode == "backward":
            kind = "bwd" if has_b else None
        else:
            kind = "blend" if has_a and has_b else ("fwd" if has_a else "bwd")
        if kind:
            out.append(Interval(kind, a, b))
    return out


def covered(keys: list[int], n: int, mode: str) -> np.ndarray:
    """bool [n]: frames that get labels in this mode (keyframes included)."""
    c = np.zeros(n, bool)
    c[list(keys)] = True
    for iv in intervals(keys, n, mode):
        c[iv.a + 1 : iv.b] = True
    return c


@dataclass
class Track:
    """One kind of label carried through the video. `digest[t]` identifies the annotation of
    each keyframe t (its keys are the keyframes); `make(t)` gives its labels, float [K, H, W] at
    frame resolution, when needed (so many full-size keyframes are never all in memory); `down`
    takes them to feature resolution ("nearest-exact" for masks as DINO, "area" for keypoint
    heatmaps)."""

    name: str
    digest: dict[int, str]
    make: Callable[[int], torch.Tensor]
    down: str = "nearest-exact"

    @property
    def keys(self) -> list[int]:
        return sorted(self.digest)


def digest(*arrays: Any) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
    return h.hexdigest()[:16]


Emit = Callable[[int, torch.Tensor | None], None]  # (t, soft [K, h, w] or None for a keyframe)


class KeyframePropagation:
    """Runs tracks through a video whose features come from `feats(indices) -> [B, C, h, w]`
    (a `video.feature_cache.FeatureCache.get`), keeping its state in `state_dir`.

    `steps` counts label transfers (propagated frames) and `emitted` lists the frames written,
    keyframes included, in this run; `cancel()` True stops after the current frame (Stopped)."""

    def __init__(
        self,
        n: int,
        feats: Callable[[list[int]], torch.Tensor],
        prop: Propagator,
        state_dir: str | Path,
        base_key: str,
        mode: str = "forward",
        cancel: Callable[[], bool] | None = None,
        progress: Callable[[int, int, str], None] | None = None,
        prefetch: Callable[[list[int]], None] | None = None,
    ):
        if mode not in MODES:
            raise UserError(f"unknown propagation mode '{mode}'; choose {', '.join(MODES)}")
        self.n, self.feats, self.prop, self.mode = n, feats, prop, mode
        self.state_dir = Path(state_dir)
        self.base_key = base_key
        self.cancel = cancel or (lambda: False)
        self.progress = progress
        self.prefetch = prefetch
        self.steps = 0
        self.emitted: list[int] = []

    # ------------------------------------------------------------------ state on disk

    def _open_state(self, track: Track) -> tuple[Path, np.memmap]:
        """The track's folder and its owner array: per frame, a 32-bit id of the pass (or the
        keyframe annotation) that produced the stored result, 0 = nothing."""
        d = self.state_dir / track.name
        d.mkdir(parents=True, exist_ok=True)
        try:
            state = json.loads((d / "state.json").read_text())
            if state.get("n") != self.n or state.get("base") != self.base_key:
                raise ValueError
        except (OSError, ValueError):  # another video, model or settings: start afresh
            shutil.rmtree(d)
            d.mkdir(parents=True)
            state = {"n": self.n, "base": self.base_key}
            atomic_write(d / "state.json", lambda tmp: Path(tmp).write_text(json.dumps(state)))
        path = d / "owner.u32"
        if not path.exists() or path.stat().st_size != 4 * self.n:
            with open(path, "wb") as f:
                f.write(bytes(4 * self.n))
        return d, np.memmap(path, dtype=np.uint32, mode="r+", shape=(self.n,))

    def _pass_id(self, track: Track, iv: Interval | None, t: int | None = None) -> int:
        """The id a frame's result carries. A forward pass's frames depend on keyframe a and the
        frames after it only, so its id leaves out b: inserting a keyframe inside it keeps the
        frames before the new keyframe valid (a backward pass likewise leaves out a)."""
        if iv is None:
            parts = [self.base_key, track.name, "kf", str(t), track.digest[t]]
        elif iv.kind == "fwd":
            parts = [self.base_key, track.name, "fwd", str(iv.a), track.digest[iv.a]]
        elif iv.kind == "bwd":
            parts = [self.base_key, track.name, "bwd", str(iv.b), track.digest[iv.b]]
        else:
            parts = [self.base_key, track.name, iv.key, track.digest[iv.a], track.digest[iv.b]]
        return int(hashlib.sha1("|".join(parts).encode()).hexdigest()[:8], 16) or 1

    def expected(self, track: Track) -> np.ndarray:
        """uint32 [n]: the id each frame's result must carry under the current keyframes."""
        exp = np.zeros(self.n, np.uint32)
        for iv in intervals(track.keys, self.n, self.mode):
            exp[iv.a + 1 : iv.b] = self._pass_id(track, iv)
        for t in track.keys:
            exp[t] = self._pass_id(track, None, t)
        return exp

    # ------------------------------------------------------------------ running

    def done_frames(self, track: Track) -> np.ndarray:
        """bool [n]: frames whose stored result is current (after or without a run)."""
        _, owner = self._open_state(track)
        exp = self.expected(track)
        return (np.asarray(owner) == exp) & (exp != 0)

    def plan(self, track: Track, from_frame: int = 0) -> tuple[list[int], list[Interval]]:
        """(keyframes to write, intervals to run) from the interval holding from_frame on."""
        _, owner = self._open_state(track)
        exp = self.expected(track)
        ok = np.asarray(owner) == exp
        todo_k = [t for t in track.keys if t >= from_frame and not ok[t]]
        todo_iv = [
            iv
            for iv in intervals(track.keys, self.n, self.mode)
            if iv.b > from_frame and not ok[iv.a + 1 : iv.b].all()
        ]
        return todo_k, todo_iv

    def run(self, track: Track, emit: Emit, from_frame: int = 0) -> dict[str, Any]:
        d, owner = self._open_state(track)
        todo_k, todo_iv = self.plan(track, from_frame)
        total = len(todo_k) + sum(len(iv.frames) for iv in todo_iv)
        count = [0]

        def tick():
            count[0] += 1
            if self.progress:
                self.progress(count[0], total, track.name)

        def emitter(pid: int) -> Callable:
            def out(t, soft):
                emit(t, soft)
                self.emitted.append(t)
                owner[t] = pid
                owner.flush()
                tick()

            return out

        for t in todo_k:
            if self.cancel():
                raise Stopped
            emitter(self._pass_id(track, None, t))(t, None)
        anchors: dict[int, tuple] = {}

        def anchor(t: int):
            if t not in anchors:
                f = self.feats([t])[0]
                anchors[t] = (f, self.prop.downsample(track.make(t), f.shape[-2:], track.down))
            return anchors[t]

        for iv in todo_iv:
            pid = self._pass_id(track, iv)
            frames = list(iv.frames)
            if self.prefetch and iv.kind != "fwd":
                self.prefetch(frames)

            def is_done(t, pid=pid):
                return int(owner[t]) == pid

            tag = f"r{pid:08x}"
            if iv.kind == "fwd":
                self._pass(d, tag, frames, anchor(iv.a), is_done, emitter(pid))
            elif iv.kind == "bwd":
                self._pass(d, tag, frames[::-1], anchor(iv.b), is_done, emitter(pid))
            else:
                self._blend(d, pid, iv, frames, anchor(iv.a), anchor(iv.b), is_done, emitter(pid))
            # complete: its rings and backward labels are not needed, except the last frames of
            # a forward pass (removing the next keyframe then continues from there)
            keep = (
                frames[-self.prop.cfg.n_last :] if iv.kind == "fwd" and self.prop.cfg.n_last else []
            )
            self._drop_files(d, iv, set(keep))
        return {"track": track.name, "frames": total}

    def _blend(self, d, pid, iv, frames, fwd_anchor, bwd_anchor, is_done, out):
        """The backward pass first (its labels kept as float16 files), then the forward pass,
        each frame's soft labels mixed by distance to the two keyframes."""
        back = d / "back"
        back.mkdir(exist_ok=True)

        def name(t: int) -> Path:
            return back / f"b{pid:08x}_{t}.npy"

        def have_back(t: int) -> bool:
            return name(t).exists()

        def keep_back(t: int, soft: torch.Tensor) -> None:
            save_npy(name(t), soft.cpu().numpy().astype(np.float16))

        if not all(have_back(t) or is_done(t) for t in frames):
            self._pass(d, f"s{pid:08x}", frames[::-1], bwd_anchor, have_back, keep_back)
        span = float(iv.b - iv.a)

        def blended(t: int, soft: torch.Tensor) -> None:
            wf = (iv.b - t) / span
            bs = torch.from_numpy(np.load(name(t)).astype(np.float32))
            out(t, wf * soft + (1 - wf) * bs.to(soft.device))

        self._pass(d, f"r{pid:08x}", frames, fwd_anchor, is_done, blended)

    @staticmethod
    def _drop_files(d: Path, iv: Interval, keep: set[int] = frozenset()) -> None:
        for f in [*d.glob("*.npy"), *d.glob("back/*.npy")]:
            t = int(f.stem.split("_")[1])
            if iv.a < t < iv.b and t not in keep:
                f.unlink(missing_ok=True)

    def _pass(
        self,
        d: Path,
        tag: str,
        frames: list[int],
        anchor: tuple,
        is_done: Callable[[int], bool],
        out: Callable[[int, torch.Tensor], None],
    ) -> None:
        """One pass over `frames` (in pass order) from `anchor`; frames already done are
        skipped when the last n before the first missing one left their soft labels in the
        ring (files <tag>_<t>.npy); otherwise the pass starts over."""
        prop, n_last = self.prop, max(0, self.prop.cfg.n_last)
        start = 0
        while start < len(frames) and is_done(frames[start]):
            start += 1
        if start == len(frames):
            return
        ring = frames[max(0, start - n_last) : start]
        if not all((d / f"{tag}_{t}.npy").exists() for t in ring):
            start, ring = 0, []
        recent = []
        if ring:
            fs = self.feats(ring)
            for f, t in zip(fs, ring):
                recent.append(
                    (
                        f.to(prop.device),
                        torch.from_numpy(np.load(d / f"{tag}_{t}.npy")).to(prop.device),
                    )
                )
        prop.restore([anchor], recent)
        bs = max(1, prop.cfg.batch_frames)
        for i0 in range(start, len(frames), bs):
            chunk = frames[i0 : i0 + bs]
            fs = self.feats(chunk)
            for j, (t, f) in enumerate(zip(chunk, fs)):
                if self.cancel():
                    raise Stopped
                f = f.to(prop.device)
                soft = prop.step(f)
                self.steps += 1
                if n_last:
                    save_npy(d / f"{tag}_{t}.npy", soft.cpu().numpy())
                out(t, soft)
                old = i0 + j - n_last
                if old >= 0:
                    (d / f"{tag}_{frames[old]}.npy").unlink(missing_ok=True)
