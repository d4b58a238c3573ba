"""Deterministic generated videos: the shipped sample (two textured objects with ground-truth
masks, DAVIS layout) and small labelled motion clips for CPC / linear-probe tests.

Run `python -m video.sample` to regenerate `assets/sample/video/`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from engine.checkpoint import atomic_write
from video.io import VideoWriter
from video.masks import write_mask

SEQ = "shapes"


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid, bilinearly upsampled."""
    import cv2

    g = rng.random((h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(g, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)[
        cell : cell + h, cell : cell + w
    ].clip(0, 1)


def _texture(rng, h, w, base, cell, amp) -> np.ndarray:
    n = _smooth_noise(rng, h, w, cell)[..., None]
    return np.clip(np.array(base, np.float32)[None, None] * (1 - amp + 2 * amp * n), 0, 255)


def _follow(tex: np.ndarray, x: float, y: float, size: int) -> np.ndarray:
    """The size x size window of a 2*size texture whose point (size, size) sits at (x, y)."""
    ix, iy = int(round(x)), int(round(y))
    return tex[size - iy : 2 * size - iy, size - ix : 2 * size - ix]


def _motion(t: int, n_frames: int, size: int, pad: int) -> dict[str, float]:
    """Where everything is at frame t: background offset, disc centre and radius, square corner."""
    s = t / max(1, n_frames - 1)
    return {
        "ox": int(round(pad * np.sin(2 * np.pi * s))),
        "oy": int(round(pad * 0.5 * s)),
        # object 1: disc of radius ~0.16*size on an ellipse, texture moves with it
        "cx": size * (0.5 + 0.25 * np.cos(2 * np.pi * s)),
        "cy": size * (0.45 + 0.2 * np.sin(2 * np.pi * s)),
        "r": size * (0.16 + 0.02 * np.sin(4 * np.pi * s)),
        # object 2: square of side 0.24*size crossing from top-left to bottom-right, in front
        "x0": size * (0.05 + 0.6 * s),
        "y0": size * (0.1 + 0.55 * s),
        "side": size * 0.24,
    }


PAD = 32


def render_sample(
    n_frames: int = 48, size: int = 128, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 [T, H, W, 3], masks uint8 [T, H, W] with ids 0, 1, 2).

    A slowly panning green-grey textured background; object 1 a textured red disc moving on an
    ellipse, object 2 a striped blue square crossing diagonally, which passes in front of the disc.
    """
    rng = np.random.default_rng(seed)
    pad = PAD
    bg = _texture(rng, size + 2 * pad, size + 2 * pad, (110, 140, 100), 12, 0.35)
    # object textures twice the frame size, cropped so that they move with the object
    tex1 = _texture(rng, 2 * size, 2 * size, (215, 70, 55), 6, 0.3)
    stripes = (np.sin(np.arange(2 * size) / 2.2)[None, :] * 0.25 + 1.0)[..., None]
    tex2 = np.clip(_texture(rng, 2 * size, 2 * size, (60, 90, 210), 8, 0.2) * stripes, 0, 255)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames, masks = [], []
    for t in range(n_frames):
        g = _motion(t, n_frames, size, pad)
        ox, oy = g["ox"], g["oy"]
        img = bg[pad + oy : pad + oy + size, pad + ox : pad + ox + size].copy()
        m = np.zeros((size, size), np.uint8)
        disc = (xx - g["cx"]) ** 2 + (yy - g["cy"]) ** 2 <= g["r"] ** 2
        img[disc] = _follow(tex1, g["cx"], g["cy"], size)[disc]
        m[disc] = 1
        x0, y0, side = g["x0"], g["y0"], g["side"]
        sq = (xx >= x0) & (xx < x0 + side) & (yy >= y0) & (yy < y0 + side)
        img[sq] = _follow(tex2, x0, y0, size)[sq]
        m[sq] = 2
        frames.append(img.astype(np.uint8))
        masks.append(m)
    return np.stack(frames), np.stack(masks)


def keypoint_tracks(
    masks: np.ndarray, per_object: int = 3, size: int = 128
) -> tuple[np.ndarray, list[int]]:
    """Ground-truth tracks (x, y) [T, P, 2] of points fixed on each object's texture and on the
    background, and the object id of each point. Textures move by the rounded object position
    (`_follow`) and the background by the pan, so every track is exact. Only points that stay
    visible and inside their object in every frame are kept (`masks` from render_sample)."""
    n = len(masks)
    moves = [_motion(t, n, size, PAD) for t in range(n)]
    shift = {
        0: [(-g["ox"], -g["oy"]) for g in moves],
        1: [(int(round(g["cx"])), int(round(g["cy"]))) for g in moves],
        2: [(int(round(g["x0"])), int(round(g["y0"]))) for g in moves],
    }
    step = max(2, size // 16)
    tracks, objects = [], []
    for obj, d in shift.items():
        kept = []
        for y in range(step // 2, size, step):
            for x in range(step // 2, size, step):
                path = np.array([(x + dx - d[0][0], y + dy - d[0][1]) for dx, dy in d])
                inside = ((path >= 2) & (path < size - 2)).all()
                if inside and all(masks[t][path[t][1], path[t][0]] == obj for t in range(n)):
                    kept.append(path)
        pick = np.linspace(0, len(kept) - 1, per_object).round().astype(int) if kept else []
        for i in pick:
            tracks.append(kept[i])
            objects.append(obj)
    return np.stack(tracks, 1).astype(np.float32), objects


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 24, crf: int = 20) -> None:
    """H.264 mp4 (yuv420p, moov atom first so a truncated file still opens), atomically."""
    with VideoWriter(path, fps=fps, crf=crf) as out:
        for f in frames:
            out.write(f)


def write_frames(folder: str | Path, frames: np.ndarray, quality: int = 92) -> None:
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:05d}.jpg", quality=quality)


def write_sample(root: str | Path, n_frames: int = 48, size: int = 128, seed: int = 0) -> Path:
    """root/shapes.mp4, root/JPEGImages/480p/shapes/*.jpg, root/Annotations/480p/shapes/*.png."""
    root = Path(root)
    frames, masks = render_sample(n_frames, size, seed)
    write_mp4(root / f"{SEQ}.mp4", frames)
    write_frames(root / "JPEGImages" / "480p" / SEQ, frames)
    for i, m in enumerate(masks):
        write_mask(root / "Annotations" / "480p" / SEQ / f"{i:05d}.png", m)
    write_keypoint_tracks(keypoints_path(root), *keypoint_tracks(masks, size=size))
    return root


def keypoints_path(root: str | Path) -> Path:
    """The sample's ground-truth keypoint tracks, in the CSV that `selfsup propagate` writes."""
    return Path(root) / "keypoints" / f"{SEQ}_keypoints.csv"


def write_keypoint_tracks(path: Path, tracks: np.ndarray, objects: list[int]) -> None:
    from video.annotations import KEYPOINTS_HEADER

    lines = [KEYPOINTS_HEADER] + [
        f"{t:05d},{k},{objects[k]},{x:.1f},{y:.1f}"
        for t, frame in enumerate(tracks)
        for k, (x, y) in enumerate(frame)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"))


MOTIONS = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}


def render_motion_clip(
    direction: str, n_frames: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """A textured background with a blob moving in one direction, wrapping around (torus)."""
    dx, dy = MOTIONS[direction]
    speed = rng.uniform(1.5, 3.0) * size / 32
    bg = _texture(rng, size, size, rng.uniform(60, 200, 3), max(2, size // 8), 0.4)
    blob = _texture(rng, size, size, rng.uniform(40, 230, 3), max(2, size // 10), 0.3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    x, y = rng.uniform(0, size, 2)
    r = size * rng.uniform(0.18, 0.28)
    out = []
    for _ in range(n_frames):
        ddx = np.minimum(np.abs(xx - x), size - np.abs(xx - x))
        ddy = np.minimum(np.abs(yy - y), size - np.abs(yy - y))
        inside = ddx**2 + ddy**2 <= r**2
        img = bg.copy()
        img[inside] = blob[inside]
        out.append(img.astype(np.uint8))
        x, y = (x + dx * speed) % size, (y + dy * speed) % size
    return np.stack(out)


def write_motion_clips(
    root: str | Path,
    per_class: int = 6,
    n_frames: int = 16,
    size: int = 32,
    seed: int = 0,
    as_video: bool = True,
) -> Path:
    """root/<direction>/<k>.mp4 (or frame folders): a labelled clip set, 4 motion classes."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for name in MOTIONS:
        for k in range(per_class):
            clip = render_motion_clip(name, n_frames, size, rng)
            if as_video:
                write_mp4(root / name / f"{k:02d}.mp4", clip, fps=12, crf=18)
            else:
                write_frames(root / name / f"{k:02d}", clip)
    return root


def main() -> None:
    p = argparse.ArgumentParser(description="regenerate the sample video assets")
    p.add_argument("--out", default="assets/sample/video")
    a = p.parse_args()
    root = write_sample(a.out)
    write_motion_clips(Path(a.out) / "motion", per_class=12)
    atomic_write(root / "README.md", lambda tmp: Path(tmp).write_text(README))
    print(f"wrote {root}")


README = """# Sample video (generated by `python -m video.sample`)

- `shapes.mp4`: 48 frames, 128x128, 24 fps; a textured red disc (object 1) and a striped blue
  square (object 2, in front) moving over a panning textured background.
- `JPEGImages/480p/shapes/*.jpg` and `Annotations/480p/shapes/*.png`: the same frames and
  palette-PNG ground truth for every frame (DAVIS layout; 0 = background).
- `keypoints/shapes_keypoints.csv`: exact ground-truth tracks of 9 points (3 on the background,
  3 on each object's texture, each visible in every frame), in `selfsup propagate`'s CSV format
  (frame,point,object,x,y; object 0 = background), for keypoint-tracking scores.
- `motion/<up|down|left|right>/*.mp4`: 48 labelled 32x32 clips of a blob moving in one direction,
  for CPC retrieval / linear-probe checks.
"""


if __name__ == "__main__":
    main()
