"""Per-frame propagation features cached in memory and on disk, per (video, model, input size).

Features are stored as the integers the propagation works on anyway (`video.propagation`
quantises unit-norm features to round(x * 2047) before every dot product), as int16 .npy files,
one per frame: exact, half the size of float32, and a frame read back from the cache gives
the very same masks as one computed now (the propagation always goes through the
same int16 round trip, cached or not).

Two bounds, least recently used first: `mem_bytes` for the frames kept in RAM, `disk_bytes` for
the whole cache folder (every video and model together; file modification times are the "last
used" clock, refreshed on read). The folder is $SELFSUP_FEATURE_CACHE, else `engine.cache.cache_dir()/features/`,
unless given; each entry holds a meta.json naming its video, model and size (`selfsup propagate
--cache-info` lists them). Everything in it can be deleted at any time.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.checkpoint import atomic_write

QUANT = 2047  # must equal video.propagation.QUANT (checked there)


def save_npy(path: Path, arr: np.ndarray) -> None:
    """np.save, atomically (np.save on a path would append .npy to the temporary name)."""

    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, arr)

    atomic_write(path, write)


def default_root() -> Path:
    """$SELFSUP_FEATURE_CACHE, else the user's cache folder's features/."""
    if os.environ.get("SELFSUP_FEATURE_CACHE"):
        return Path(os.environ["SELFSUP_FEATURE_CACHE"]).expanduser()
    from engine.cache import cache_dir

    return cache_dir() / "features"


def video_key(video: str | Path) -> str:
    """Changes when the file (or a frame folder's listing, first and last file) changes."""
    from engine.cache import files_key
    from engine.media.files import list_frame_files

    p = Path(video).resolve()
    if p.is_dir():
        files = list_frame_files(p)
        return files_key([p, *(files[:1] + files[-1:])], len(files))
    return files_key([p])


def quantize(feats: torch.Tensor) -> torch.Tensor:
    """Unit-norm float features -> int16 on the propagation's integer grid."""
    return torch.round(feats.float() * QUANT).to(torch.int16)


def dequantize(q: torch.Tensor) -> torch.Tensor:
    """int16 grid -> float features whose re-quantisation gives back exactly q."""
    return q.float() / QUANT


class FeatureCache:
    """feats(indices) -> float [B, C, h, w] through memory, disk, then `compute(indices)`.

    compute returns unit-norm float features for a list of frame indices (it decodes and runs
    the model); counts: `hits_mem`, `hits_disk`, `computed` (frames whose features were computed),
    `evicted` (files removed for the disk bound)."""

    def __init__(
        self,
        compute: Callable[[list[int]], torch.Tensor],
        video: str | Path,
        model: str,
        size: tuple[int, int],
        root: str | Path | None = None,
        mem_bytes: int = 256 << 20,
        disk_bytes: int = 4 << 30,
        enabled: bool = True,
    ):
        import hashlib

        self.compute = compute
        self.root = Path(root) if root else default_root()
        self.mem_bytes, self.disk_bytes, self.enabled = int(mem_bytes), int(disk_bytes), enabled
        vk = video_key(video)
        mk = hashlib.sha1(model.encode()).hexdigest()[:12]
        self.dir = self.root / f"{vk}-{mk}-{size[0]}x{size[1]}"
        self._mem: OrderedDict[int, torch.Tensor] = OrderedDict()
        self._mem_used = 0
        self.hits_mem = self.hits_disk = self.computed = self.evicted = 0
        self._disk_used: int | None = None
        self.meta = {"video": str(Path(video).resolve()), "model": model, "size": list(size)}
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
            meta = self.dir / "meta.json"
            if not meta.exists():
                atomic_write(meta, lambda tmp: Path(tmp).write_text(json.dumps(self.meta)))

    def _path(self, t: int) -> Path:
        return self.dir / f"f{t:07d}.npy"

    def _remember(self, t: int, q: torch.Tensor) -> None:
        if t in self._mem:
            self._mem.move_to_end(t)
            return
        self._mem[t] = q
        self._mem_used += self._cost(q)
        while self._mem_used > self.mem_bytes and len(self._mem) > 1:
            _, old = self._mem.popitem(last=False)
            self._mem_used -= self._cost(old)

    @staticmethod
    def _cost(q: torch.Tensor) -> int:
        """Bytes a kept frame costs: its data plus the tensor's own bookkeeping (about 1 KB,
        which dominates for small frames)."""
        return q.numel() * q.element_size() + 1024

    def _load(self, t: int) -> torch.Tensor | None:
        if t in self._mem:
            self._mem.move_to_end(t)
            self.hits_mem += 1
            return self._mem[t]
        if not self.enabled:
            return None
        p = self._path(t)
        try:
            q = torch.from_numpy(np.load(p))
            os.utime(p)  # the LRU clock
        except (OSError, ValueError):
            return None
        self.hits_disk += 1
        self._remember(t, q)
        return q

    def _store(self, t: int, q: torch.Tensor) -> None:
        self._remember(t, q)
        if not self.enabled:
            return
        arr = q.numpy()
        try:
            save_npy(self._path(t), arr)
        except OSError:
            return  # a full or read-only disk costs speed, not correctness
        self._disk_used = self.disk_used() + arr.nbytes + 128
        if self._disk_used > self.disk_bytes:
            self.evict(int(self.disk_bytes * 0.9))

    def get(self, indices: Sequence[int]) -> torch.Tensor:
        """float [B, C, h, w] for the frames (dequantised int16, see the module docstring)."""
        got = {t: self._load(t) for t in indices}
        missing = [t for t, q in got.items() if q is None]
        if missing:
            q = quantize(self.compute(missing)).cpu()
            self.computed += len(missing)
            for t, qt in zip(missing, q):
                qt = qt.clone()
                got[t] = qt
                self._store(t, qt)
        return dequantize(torch.stack([got[t] for t in indices]))

    def has(self, t: int) -> bool:
        return t in self._mem or (self.enabled and self._path(t).exists())

    # ------------------------------------------------------------------ disk bound

    def _files(self) -> list[tuple[float, int, Path]]:
        out = []
        if not self.root.is_dir():
            return out
        for entry in os.scandir(self.root):
            if not entry.is_dir():
                continue
            for f in os.scandir(entry.path):
                if f.name.endswith(".npy"):
                    st = f.stat()
                    out.append((st.st_mtime, st.st_size, Path(f.path)))
        return out

    def disk_used(self) -> int:
        if self._disk_used is None:
            self._disk_used = sum(s for _, s, _ in self._files())
        return self._disk_used

    def evict(self, target: int) -> None:
        """Remove the least recently used feature files of every entry until <= target bytes."""
        files = sorted(self._files(), key=lambda x: x[0])
        total = sum(s for _, s, _ in files)
        for _, size, path in files:
            if total <= target:
                break
            try:
                path.unlink()
            except OSError:
                continue
            total -= size
            self.evicted += 1
        self._disk_used = total

    def stats(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir),
            "computed": self.computed,
            "hits_memory": self.hits_mem,
            "hits_disk": self.hits_disk,
            "evicted": self.evicted,
            "memory_bytes": self._mem_used,
            "memory_bound": self.mem_bytes,
            "disk_bytes": self.disk_used() if self.enabled else 0,
            "disk_bound": self.disk_bytes,
        }


def cache_info(root: str | Path | None = None) -> dict[str, Any]:
    """Every entry of the cache folder: video, model, size, frames, bytes, last used."""
    root = Path(root) if root else default_root()
    entries = []
    if root.is_dir():
        for d in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                meta = json.loads((d / "meta.json").read_text())
            except (OSError, ValueError):
                meta = {}
            files = [f.stat() for f in os.scandir(d) if f.name.endswith(".npy")]
            entries.append(
                {
                    **meta,
                    "key": d.name,
                    "frames": len(files),
                    "bytes": sum(s.st_size for s in files),
                    "last_used": time.strftime(
                        "%Y-%m-%d %H:%M",
                        time.localtime(max((s.st_mtime for s in files), default=0)),
                    ),
                }
            )
    return {"root": str(root), "entries": entries, "bytes": sum(e["bytes"] for e in entries)}
