"""Annotations in and out: keyframes (masks and/or keypoints on any frame), and the standard
exchange formats of propagated results.

Keyframes come from
- a folder: palette PNGs named after their frame (the frame file's stem for a frame folder,
  00042.png or 42.png for a video file) and optionally `keypoints.csv` (frame,point,object,x,y,
  the format `selfsup propagate` writes; `frame` is a frame name or index);
- our JSON: {"keyframes": [{"frame": 42, "mask": "m.png" (relative to the JSON), "points":
  [[x, y, object], ...]}]};
- a COCO JSON with run-length (or polygon) masks: every image that has annotations is a keyframe.

Exports (streamed frame by frame, each file written atomically):
- COCO run-length JSON (`write_coco`): one image per frame, one category per object, one
  annotation per object and frame with `segmentation` = compressed RLE from pycocotools'
  encoder, `iscrowd` 0, `bbox`, `area`. An object's identity across frames is its
  (category_id, track_id) pair; here both equal the object id (`attributes.track_id` too, as
  CVAT writes it).
- per-object binary mask videos (`write_mask_videos`): FFV1 (lossless) in .mkv, gray 0/255,
  one file per object; `read_mask_video` gives back the exact masks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.checkpoint import atomic_write
from engine.errors import UserError
from video.masks import object_ids, read_mask

KEYPOINTS_HEADER = "frame,point,object,x,y"


@dataclass
class Keyframe:
    """A user annotation on frame t: an id map (0 background, 1..N objects, 255 void) and/or
    keypoints {point number: (x, y, object)}."""

    t: int
    ids: np.ndarray | None = None
    points: dict[int, tuple[float, float, int]] = field(default_factory=dict)


def _frame_index(token: str, names: list[str], where: str) -> int:
    lookup = {n: i for i, n in enumerate(names)}
    if token in lookup:
        return lookup[token]
    try:
        t = int(token)
    except ValueError:
        raise UserError(f"{where}: '{token}' names no frame of the video") from None
    if not 0 <= t < len(names):
        raise UserError(f"{where}: frame {t} out of range (the video has {len(names)} frames)")
    return t


def _check_mask(ids: np.ndarray, hw: tuple[int, int], where: str) -> np.ndarray:
    if tuple(ids.shape) != tuple(hw):
        raise UserError(
            f"{where}: mask is {ids.shape[1]}x{ids.shape[0]} but the video frames are {hw[1]}x{hw[0]}"
        )
    return ids


def _check_points(kf: Keyframe, hw: tuple[int, int], where: str) -> None:
    h, w = hw
    for k, (x, y, _) in kf.points.items():
        if not (0 <= x < w and 0 <= y < h):
            raise UserError(
                f"{where}: point {k} ({x}, {y}) of frame {kf.t} lies outside the {w}x{h} frame"
            )


def read_keypoints_rows(path: Path, names: list[str]) -> dict[int, dict[int, tuple]]:
    """{frame index: {point: (x, y, object)}} from a keypoints CSV."""
    rows = path.read_text().splitlines()
    if not rows or rows[0].strip() != KEYPOINTS_HEADER:
        raise UserError(f"{path}: not a keypoints CSV (expected the header {KEYPOINTS_HEADER})")
    out: dict[int, dict[int, tuple]] = {}
    for row in rows[1:]:
        if not row.strip():
            continue
        try:
            frame, point, obj, x, y = row.split(",")
            out.setdefault(_frame_index(frame, names, str(path)), {})[int(point)] = (
                float(x),
                float(y),
                int(obj),
            )
        except ValueError:
            raise UserError(f"{path}: malformed row '{row}'") from None
    return out


def load_keyframes(src: str | Path, names: list[str], hw: tuple[int, int]) -> dict[int, Keyframe]:
    """Keyframes from a folder, our JSON or a COCO JSON (see the module docstring); `names` are
    the video's frame names (index = position), hw its frame size."""
    src = Path(src)
    if not src.exists():
        raise UserError(f"{src}: keyframes not found")
    kfs: dict[int, Keyframe] = {}
    if src.is_dir():
        pngs = sorted(p for p in src.iterdir() if p.suffix.lower() == ".png")
        for p in pngs:
            t = _frame_index(p.stem, names, str(p))
            kfs[t] = Keyframe(t, _check_mask(read_mask(p)[0], hw, str(p)))
        csv = src / "keypoints.csv"
        if csv.exists():
            for t, pts in read_keypoints_rows(csv, names).items():
                kfs.setdefault(t, Keyframe(t)).points = pts
    else:
        try:
            doc = json.loads(src.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{src}: not a readable JSON file ({str(e)[:100]})") from None
        if isinstance(doc, dict) and "annotations" in doc and "images" in doc:
            for t, ids in read_coco(src, names, hw, doc).items():
                kfs[t] = Keyframe(t, ids)
        elif isinstance(doc, dict) and isinstance(doc.get("keyframes"), list):
            for i, item in enumerate(doc["keyframes"]):
                where = f"{src}: keyframes[{i}]"
                if not isinstance(item, dict) or "frame" not in item:
                    raise UserError(f"{where} has no 'frame'")
                t = _frame_index(str(item["frame"]), names, where)
                kf = kfs.setdefault(t, Keyframe(t))
                if item.get("mask"):
                    mp = Path(item["mask"])
                    mp = mp if mp.is_absolute() else src.parent / mp
                    kf.ids = _check_mask(read_mask(mp)[0], hw, str(mp))
                try:
                    for k, p in enumerate(item.get("points") or []):
                        kf.points[k] = (
                            float(p[0]),
                            float(p[1]),
                            int(p[2]) if len(p) > 2 else k + 1,
                        )
                except (TypeError, ValueError, IndexError):
                    raise UserError(f"{where}: points must be [[x, y, object], ...]") from None
        else:
            raise UserError(f'{src}: neither a keyframes JSON ({{"keyframes": [...]}}) nor COCO')
    kfs = {t: kf for t, kf in kfs.items() if kf.ids is not None or kf.points}
    if not kfs:
        raise UserError(f"{src}: holds no annotated frame")
    for kf in kfs.values():
        _check_points(kf, hw, str(src))
    return dict(sorted(kfs.items()))


def write_keyframes_json(path: str | Path, kfs: dict[int, Keyframe]) -> Path:
    """Our keyframes JSON with its masks as palette PNGs in <path stem>_masks/ beside it."""
    from video.masks import write_mask

    path = Path(path)
    mask_dir = path.with_name(path.stem + "_masks")
    items = []
    for t, kf in sorted(kfs.items()):
        item: dict[str, Any] = {"frame": t}
        if kf.ids is not None:
            write_mask(mask_dir / f"{t:05d}.png", kf.ids)
            item["mask"] = f"{mask_dir.name}/{t:05d}.png"
        if kf.points:
            item["points"] = [list(kf.points[k]) for k in sorted(kf.points)]
        items.append(item)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps({"keyframes": items}, indent=1)))
    return path


# ----------------------------------------------------------------------------- COCO RLE


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Binary [H, W] -> COCO compressed RLE {"size": [H, W], "counts": str} (pycocotools)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_coco(
    path: str | Path,
    id_maps: Iterable[np.ndarray],
    names: list[str],
    hw: tuple[int, int],
    objects: list[int],
) -> Path:
    """COCO instance masks of every frame (see the module docstring), written atomically."""
    from pycocotools import mask as mask_utils

    h, w = hw
    images, anns = [], []
    for t, ids in enumerate(id_maps):
        images.append(
            {"id": t + 1, "file_name": f"{names[t]}.jpg", "width": w, "height": h, "frame_id": t}
        )
        for o in objects:
            m = ids == o
            if not m.any():
                continue
            rle = encode_rle(m)
            x, y, bw, bh = mask_utils.toBbox({**rle, "counts": rle["counts"].encode()}).tolist()
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": t + 1,
                    "category_id": o,
                    "track_id": o,
                    "attributes": {"track_id": o},
                    "segmentation": rle,
                    "area": int(m.sum()),
                    "bbox": [x, y, bw, bh],
                    "iscrowd": 0,
                }
            )
    doc = {
        "info": {"description": "selfsup propagate", "frames": len(images)},
        "licenses": [],
        "images": images,
        "categories": [{"id": o, "name": f"object {o}", "supercategory": ""} for o in objects],
        "annotations": anns,
    }
    path = Path(path)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc)))
    return path


def read_coco(
    path: str | Path, names: list[str], hw: tuple[int, int], doc: dict | None = None
) -> dict[int, np.ndarray]:
    """{frame index: id map} from COCO instance masks (RLE, uncompressed RLE or polygons).
    Frames: an image's `frame_id`, else its file name's stem among the frame names, else its
    position among the images sorted by id. Objects: each (category_id, track_id) pair, numbered
    1..N in order of first appearance (just category_id when there is no track_id)."""
    from pycocotools import mask as mask_utils

    path = Path(path)
    doc = doc if doc is not None else json.loads(path.read_text())
    h, w = hw
    lookup = {n: i for i, n in enumerate(names)}
    images = sorted(doc.get("images") or [], key=lambda im: im.get("id", 0))
    frame_of: dict[Any, int] = {}
    for pos, im in enumerate(images):
        if "frame_id" in im:
            t = int(im["frame_id"])
        elif Path(str(im.get("file_name", ""))).stem in lookup:
            t = lookup[Path(str(im["file_name"])).stem]
        else:
            t = pos
        if not 0 <= t < len(names):
            raise UserError(f"{path}: image {im.get('id')} maps to frame {t}, outside the video")
        if (im.get("height", h), im.get("width", w)) != (h, w):
            raise UserError(
                f"{path}: image {im.get('id')} is {im.get('width')}x{im.get('height')}, the video {w}x{h}"
            )
        frame_of[im["id"]] = t
    objs: dict[tuple, int] = {}
    out: dict[int, np.ndarray] = {}
    for a in doc.get("annotations") or []:
        if a.get("image_id") not in frame_of:
            raise UserError(f"{path}: annotation {a.get('id')} names no image")
        track = a.get("track_id", (a.get("attributes") or {}).get("track_id"))
        key = (a.get("category_id"), track)
        obj = objs.setdefault(key, len(objs) + 1)
        if obj > 254:
            raise UserError(f"{path}: more than 254 objects")
        seg = a.get("segmentation")
        try:
            if isinstance(seg, dict):
                rle = (
                    mask_utils.frPyObjects(seg, h, w)
                    if isinstance(seg.get("counts"), list)
                    else {"size": seg["size"], "counts": str(seg["counts"]).encode()}
                )
            else:
                rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
            m = mask_utils.decode(rle).astype(bool)
        except (TypeError, KeyError, ValueError) as e:
            raise UserError(f"{path}: annotation {a.get('id')}: bad segmentation ({e})") from None
        t = frame_of[a["image_id"]]
        ids = out.setdefault(t, np.zeros((h, w), np.uint8))
        ids[m] = obj
    return out


# ----------------------------------------------------------------------------- FFV1 mask videos


class MaskVideoWriter:
    """One lossless FFV1 .mkv per object (gray, 255 = the object), streamed, renamed into place
    on close."""

    def __init__(self, out_stem: str | Path, objects: list[int], fps: float = 24.0):
        import av

        self.paths = {o: Path(f"{out_stem}_obj{o}.mkv") for o in objects}
        self._tmp = {o: p.with_name(p.stem + ".tmp.mkv") for o, p in self.paths.items()}
        self._c, self._s = {}, {}
        from fractions import Fraction

        rate = Fraction(fps or 24.0).limit_denominator(1001)
        for o, tmp in self._tmp.items():
            tmp.parent.mkdir(parents=True, exist_ok=True)
            c = av.open(str(tmp), "w", format="matroska")
            self._c[o] = c
            self._s[o] = None
            self._rate = rate
        self._av = av

    def write(self, ids: np.ndarray) -> None:
        for o, c in self._c.items():
            s = self._s[o]
            if s is None:
                s = self._s[o] = c.add_stream("ffv1", rate=self._rate)
                s.width, s.height, s.pix_fmt = ids.shape[1], ids.shape[0], "gray"
            frame = self._av.VideoFrame.from_ndarray(
                np.ascontiguousarray((ids == o).astype(np.uint8) * 255), format="gray"
            )
            for pkt in s.encode(frame):
                c.mux(pkt)

    def close(self) -> dict[int, Path]:
        for o, c in self._c.items():
            if self._s[o] is not None:
                for pkt in self._s[o].encode():
                    c.mux(pkt)
            c.close()
            os.replace(self._tmp[o], self.paths[o])
        return self.paths


def write_mask_videos(
    out_stem: str | Path, id_maps: Iterable[np.ndarray], objects: list[int], fps: float = 24.0
) -> dict[int, Path]:
    w = MaskVideoWriter(out_stem, objects, fps)
    for ids in id_maps:
        w.write(ids)
    return w.close()


def read_mask_video(path: str | Path) -> Iterator[np.ndarray]:
    """Binary masks (bool [H, W]) of a mask video, frame by frame."""
    import av

    try:
        with av.open(str(path)) as c:
            for f in c.decode(c.streams.video[0]):
                yield f.to_ndarray(format="gray") > 127
    except (av.error.FFmpegError, OSError) as e:
        raise UserError(f"{path}: not a readable mask video ({str(e)[:100]})") from None


__all__ = [
    "Keyframe", "KEYPOINTS_HEADER", "MaskVideoWriter", "encode_rle", "load_keyframes",
    "object_ids", "read_coco", "read_keypoints_rows", "read_mask_video", "write_coco",
    "write_keyframes_json", "write_mask_videos",
]  # fmt: skip
