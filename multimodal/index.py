"""A collection index: CLIP embeddings of every photo (and video key frame) under some folders.

On disk (one folder):
- `index.json`: the pointer: generation, file names, the model that made the embeddings, roots.
- `emb-<g>.npy`: float32 [N, D] unit vectors, opened memory-mapped.
- `db-<g>.sqlite`: `items(row, path, frame)`, `files(path, size, mtime_ns, nrows)`,
  `errors(path, size, mtime_ns, message)`.
- `work/`: the update in progress: finished chunks of new embeddings (`c-<rank>-<seq>.npy` +
  `.json`, the json written last), reused by the next run if this one is killed.

An update writes generation g+1 beside g and then replaces `index.json` (os.replace), so a reader
sees either the old or the new index, never a mix. Only new or changed files (size, mtime) are
embedded; files gone from disk are dropped; unreadable files are listed in `errors` and retried
only once they change. Under torchrun each rank embeds every world-th file and rank 0 merges.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from engine import distributed as D
from engine.checkpoint import atomic_write
from engine.errors import UserError
from multimodal.imageio import is_video, load_image, video_key_frames, walk_files

FORMAT = "selfsup-index-v1"
POINTER = "index.json"
IMAGE_FRAME = -1.0  # `frame` of a still image; video key frames store their time in seconds


@dataclass
class FileEntry:
    path: str
    size: int
    mtime_ns: int
    error: str = ""  # the file could not even be stat'ed (dangling link, deleted meanwhile)


@dataclass
class UpdateStats:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    resumed: int = 0  # files whose embeddings came from an interrupted run's chunks
    failed: list[tuple[str, str]] = field(default_factory=list)  # newly unreadable (path, why)
    rows: int = 0
    seconds: float = 0.0
    decode_wait_s: float = 0.0  # time the model waited for decoded batches
    model_s: float = 0.0
    embedded: int = 0  # images/frames embedded by this process in this run

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["failed"] = [{"path": p, "error": e} for p, e in self.failed]
        return d


# ----------------------------------------------------------------------------- reading


class Index:
    """A read-only view of one generation: embeddings (memory-mapped) and row -> (path, frame)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        for attempt in range(3):  # a writer may swap generations between our two reads
            self.meta = read_pointer(self.folder)
            try:
                self._open()
                return
            except (FileNotFoundError, sqlite3.OperationalError):
                if attempt == 2:
                    raise UserError(
                        f"{self.folder}: index files missing for generation {self.meta['generation']}"
                    ) from None
                time.sleep(0.05)

    def _open(self) -> None:
        db_path = self.folder / self.meta["db"]
        if not db_path.is_file():
            raise FileNotFoundError(db_path)
        n, d = self.meta["count"], self.meta["dim"]
        emb_path = self.folder / self.meta["embeddings"]
        self.embeddings = np.load(emb_path, mmap_mode="r") if n else np.zeros((0, d), np.float32)
        if self.embeddings.shape != (n, d):
            raise UserError(
                f"{emb_path}: shape {self.embeddings.shape} does not match the index ({n}, {d})"
            )
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as con:
            rows = con.execute("SELECT path, frame FROM items ORDER BY row").fetchall()
            self.errors = con.execute("SELECT path, message FROM errors ORDER BY path").fetchall()
            self.files = {
                p: (s, m, k)
                for p, s, m, k in con.execute("SELECT path, size, mtime_ns, nrows FROM files")
            }
        if len(rows) != n:
            raise UserError(f"{db_path}: {len(rows)} rows for {n} embeddings")
        self.paths = [r[0] for r in rows]
        self.frames = [r[1] for r in rows]

    @property
    def model(self) -> dict[str, Any]:
        return self.meta["model"]

    def __len__(self) -> int:
        return len(self.paths)


def read_pointer(folder: Path) -> dict[str, Any]:
    p = folder / POINTER
    if not p.is_file():
        raise UserError(
            f"{folder}: not an index (no {POINTER}); build one with `selfsup index PATH --index {folder}`"
        )
    try:
        meta = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: unreadable index pointer ({e})") from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{p}: unknown index format {meta.get('format')!r}")
    return meta


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("fingerprint") == b.get("fingerprint") and a.get("embed_dim") == b.get("embed_dim")


def describe_model(spec: dict[str, Any]) -> str:
    extra = f" pretrained={spec['pretrained']}" if spec.get("pretrained") else ""
    return f"{spec.get('source') or spec.get('model')}{extra} (weights {spec.get('fingerprint')})"


# ----------------------------------------------------------------------------- decoding


class _DecodeSet(Dataset):
    """Decodes one file per item in a worker: a photo -> 1 image, a video -> its key frames."""

    def __init__(self, entries: list[FileEntry], size: int, max_video_frames: int):
        self.entries, self.size, self.max_video_frames = entries, size, max_video_frames

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.entries[i].path
        try:
            if is_video(path):
                frames = video_key_frames(path, self.size, self.max_video_frames)
                return {
                    "i": i,
                    "images": torch.stack([f for _, f in frames]),
                    "frames": [t for t, _ in frames],
                    "error": "",
                }
            return {
                "i": i,
                "images": load_image(path, self.size)[None],
                "frames": [IMAGE_FRAME],
                "error": "",
            }
        except Exception as e:  # any decoder failure is a listed, never fatal, error
            msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            return {"i": i, "images": None, "frames": [], "error": msg}


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


# ----------------------------------------------------------------------------- writing


class _ChunkWriter:
    """Buffers new embeddings and writes them as resumable chunks in work/."""

    def __init__(self, work: Path, rank: int, every_items: int = 2048, every_s: float = 30.0):
        self.work, self.rank, self.every_items, self.every_s = work, rank, every_items, every_s
        self.seq = 1 + max(
            (int(p.stem.split("-")[2]) for p in work.glob(f"c-{rank}-*.json")), default=-1
        )
        self.vecs: list[np.ndarray] = []
        self.items: list[dict[str, Any]] = []
        self.t = time.monotonic()

    def add(
        self, entry: FileEntry, vecs: np.ndarray | None, frames: list[float], error: str = ""
    ) -> None:
        self.items.append({**entry.__dict__, "frames": frames, "error": error})
        if vecs is not None:
            self.vecs.append(vecs.astype(np.float32))
        n = sum(len(v) for v in self.vecs)
        if n >= self.every_items or time.monotonic() - self.t > self.every_s:
            self.flush()

    def flush(self) -> None:
        if not self.items:
            return
        stem = self.work / f"c-{self.rank}-{self.seq:06d}"
        vecs = np.concatenate(self.vecs) if self.vecs else np.zeros((0, 0), np.float32)
        atomic_write(stem.with_suffix(".npy"), lambda tmp: _save_npy(tmp, vecs))
        atomic_write(
            stem.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(self.items))
        )
        self.seq += 1
        self.vecs, self.items, self.t = [], [], time.monotonic()


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, arr)
        f.flush()
        os.fsync(f.fileno())


def _load_chunks(work: Path) -> list[tuple[dict[str, Any], np.ndarray]]:
    """(item, its vectors) for every item of every complete chunk (json present) in work/."""
    out = []
    for js in sorted(work.glob("c-*.json")):
        try:
            items = json.loads(js.read_text())
            vecs = np.load(js.with_suffix(".npy"), mmap_mode="r")
        except (OSError, ValueError):
            continue  # a chunk cut short by a kill: its files are simply embedded again
        row = 0
        for it in items:
            k = len(it["frames"]) if not it["error"] else 0
            out.append((it, vecs[row : row + k]))
            row += k
    return out


class Indexer:
    """Builds or updates the index in `folder` with `embedder` (see module docstring).

    Like the model, the recorded settings carry over to updates: an index built with videos
    keeps indexing them (`videos` True adds them; None or False keeps what the index records,
    so an update from a caller that does not mention videos never drops their rows; --rebuild
    starts from the given settings), and `max_video_frames` None means the recorded value.
    """

    def __init__(
        self,
        folder: str | Path,
        embedder: Any,
        batch_size: int = 64,
        num_workers: int = 2,
        videos: bool | None = None,
        max_video_frames: int | None = None,
        progress: bool = True,
        on_progress: Callable[[int, int], None] | None = None,
    ):
        self.folder = Path(folder)
        self.embedder, self.batch_size, self.num_workers = embedder, batch_size, num_workers
        self._videos_arg, self._max_frames_arg = videos, max_video_frames
        self.videos, self.max_video_frames = bool(videos), int(max_video_frames or 16)
        self.progress, self.on_progress = progress, on_progress
        self.work = self.folder / "work"
        self.chunk_items = 2048

    # -- plan --------------------------------------------------------------------------------
    def _current(self, rebuild: bool) -> Index | None:
        if rebuild or not (self.folder / POINTER).exists():
            return None
        idx = Index(self.folder)
        if not same_model(idx.model, self.embedder.spec):
            raise UserError(
                f"{self.folder}: index was made by {describe_model(idx.model)}, not {describe_model(self.embedder.spec)}; "
                "use that model, another --index folder, or --rebuild"
            )
        return idx

    def _restore_settings(self, cur: Index | None) -> None:
        rec = cur.meta if cur else {}
        self.videos = bool(self._videos_arg or rec.get("videos", False))
        self.max_video_frames = int(self._max_frames_arg or rec.get("max_video_frames", 16))

    def _prepare_work(self, base_generation: int) -> None:
        plan = {
            "base_generation": base_generation,
            "fingerprint": self.embedder.spec["fingerprint"],
        }
        plan_path = self.work / "plan.json"
        if plan_path.exists():
            try:
                if json.loads(plan_path.read_text()) == plan:
                    return  # resume: keep the finished chunks
            except (OSError, json.JSONDecodeError):
                pass
        if self.work.exists():
            for p in self.work.iterdir():
                p.unlink()
        self.work.mkdir(parents=True, exist_ok=True)
        atomic_write(plan_path, lambda tmp: Path(tmp).write_text(json.dumps(plan)))

    # -- run ---------------------------------------------------------------------------------
    def update(self, paths: Iterable[str | Path] = (), rebuild: bool = False) -> UpdateStats:
        """Embed what is new or changed under `paths` (+ the roots already indexed), drop what is gone."""
        if D.rank() != 0:
            return self._update(paths, rebuild)
        self.folder.mkdir(parents=True, exist_ok=True)
        with _writer_lock(self.folder):
            return self._update(paths, rebuild)

    def _update(self, paths: Iterable[str | Path], rebuild: bool) -> UpdateStats:
        t0 = time.perf_counter()
        rank, world = D.rank(), D.world_size()
        stats = UpdateStats()
        cur = None
        if rank == 0:
            cur = self._current(rebuild)
            self._prepare_work(cur.meta["generation"] if cur else 0)
        _barrier()
        if cur is None and rank != 0 and not rebuild and (self.folder / POINTER).exists():
            cur = Index(self.folder)
        self._restore_settings(cur)
        roots = sorted(
            {str(Path(p).expanduser().resolve()) for p in paths}
            | set(cur.meta.get("roots", []) if cur else [])
        )
        if not roots:
            raise UserError("nothing to index: give one or more folders or files")
        for r in roots:
            if not Path(r).exists() and r in {str(Path(p).expanduser().resolve()) for p in paths}:
                raise UserError(f"{r}: no such file or folder")
        on_disk = [
            _entry(p) for p in walk_files([r for r in roots if Path(r).exists()], self.videos)
        ]
        known = {**(cur.files if cur else {})}
        known_err = {}
        if cur:
            with sqlite3.connect(f"file:{self.folder / cur.meta['db']}?mode=ro", uri=True) as con:
                known_err = {
                    p: (s, m) for p, s, m in con.execute("SELECT path, size, mtime_ns FROM errors")
                }
        todo: list[FileEntry] = []
        for e in on_disk:
            if e.path in known and known[e.path][:2] == (e.size, e.mtime_ns):
                stats.unchanged += 1
            elif e.path in known_err and known_err[e.path] == (e.size, e.mtime_ns):
                stats.unchanged += 1  # still the same unreadable file: not retried
            elif e.error:  # listed in errors by _merge; nothing to decode
                stats.failed.append((e.path, e.error))
                stats.changed += e.path in known or e.path in known_err
                stats.added += e.path not in known and e.path not in known_err
            else:
                todo.append(e)
                stats.changed += e.path in known or e.path in known_err
                stats.added += e.path not in known and e.path not in known_err
        disk_paths = {e.path for e in on_disk}
        stats.removed = sum(1 for p in known if p not in disk_paths)

        done = (
            {(it["path"], it["size"], it["mtime_ns"]) for it, _ in _load_chunks(self.work)}
            if self.work.exists()
            else set()
        )
        remaining = [e for e in todo if (e.path, e.size, e.mtime_ns) not in done]
        stats.resumed = len(todo) - len(remaining)
        self._embed(remaining[rank::world], rank, stats)
        _barrier()
        if rank == 0:
            self._merge(cur, on_disk, todo, roots, stats)
        _barrier()
        stats.seconds = time.perf_counter() - t0
        return stats

    def _embed(self, entries: list[FileEntry], rank: int, stats: UpdateStats) -> None:
        writer = _ChunkWriter(self.work, rank, self.chunk_items)
        if not entries:
            return
        ds = _DecodeSet(entries, self.embedder.image_size, self.max_video_frames)
        loader = DataLoader(
            ds,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=_collate,
            prefetch_factor=4 if self.num_workers else None,
        )
        bar = _bar(len(entries), self.progress and rank == 0)
        done = 0
        t = time.perf_counter()
        for items in loader:
            t1 = time.perf_counter()
            stats.decode_wait_s += t1 - t
            good = [it for it in items if not it["error"]]
            vecs = None
            if good:
                batch = torch.cat([it["images"] for it in good])
                vecs = self.embedder.embed_images(batch).numpy()
                stats.embedded += len(batch)
            row = 0
            for it in items:
                entry = entries[it["i"]]
                if it["error"]:
                    writer.add(entry, None, [], it["error"])
                    continue
                k = len(it["frames"])
                writer.add(entry, vecs[row : row + k], it["frames"])
                row += k
            done += len(items)
            bar.update(len(items))
            if self.on_progress:
                self.on_progress(done, len(entries))
            t = time.perf_counter()
            stats.model_s += t - t1
        writer.flush()
        bar.close()

    def _merge(
        self,
        cur: Index | None,
        on_disk: list[FileEntry],
        todo: list[FileEntry],
        roots: list[str],
        stats: UpdateStats,
    ) -> None:
        """Write generation g+1 (kept rows + new chunks) beside g, then swap the pointer."""
        todo_set = {(e.path, e.size, e.mtime_ns) for e in todo}
        new = {}
        for it, vecs in _load_chunks(self.work):
            key = (it["path"], it["size"], it["mtime_ns"])
            if key in todo_set:
                new[it["path"]] = (it, vecs)
        missing = [e.path for e in todo if e.path not in new]
        if missing:
            raise UserError(
                f"{self.folder}: {len(missing)} files were not embedded (e.g. {missing[0]}); run the update again"
            )
        gen = _next_generation(self.folder, cur)
        dim = self.embedder.dim
        items: list[tuple[str, float]] = []
        files, errors = [], []
        sources: list[tuple[str, Any]] = []  # ("old", row indices) or ("new", array) in row order
        todo_paths = {e.path for e in todo}
        failed_now = set(stats.failed)  # stat failures found by _update
        for e in on_disk:
            if e.path in todo_paths:
                it, vecs = new[e.path]
                if it["error"]:
                    errors.append((e.path, e.size, e.mtime_ns, it["error"]))
                    stats.failed.append((e.path, it["error"]))
                    continue
                sources.append(("new", vecs))
                items.extend((e.path, f) for f in it["frames"])
                files.append((e.path, e.size, e.mtime_ns, len(it["frames"])))
            elif e.error and (e.path, e.error) in failed_now:
                errors.append((e.path, e.size, e.mtime_ns, e.error))
            elif cur and e.path in cur.files and cur.files[e.path][:2] == (e.size, e.mtime_ns):
                rows = cur_rows(cur, e.path)
                if sources and sources[-1][0] == "old" and sources[-1][1].stop == rows[0]:
                    sources[-1] = (
                        "old",
                        range(sources[-1][1].start, rows[-1] + 1),
                    )  # one contiguous copy
                else:
                    sources.append(("old", range(rows[0], rows[-1] + 1)))
                items.extend((e.path, cur.frames[r]) for r in rows)
                files.append((e.path, e.size, e.mtime_ns, len(rows)))
            else:  # an unchanged unreadable file
                errors.append((e.path, e.size, e.mtime_ns, _old_error(self.folder, cur, e.path)))
        emb_name, db_name = f"emb-{gen}.npy", f"db-{gen}.sqlite"
        n = len(items)
        if n:
            atomic_write(
                self.folder / emb_name, lambda tmp: _write_embeddings(tmp, sources, cur, n, dim)
            )
        atomic_write(self.folder / db_name, lambda tmp: _write_db(tmp, items, files, errors))
        meta = {
            "format": FORMAT,
            "generation": gen,
            "embeddings": emb_name,
            "db": db_name,
            "count": n,
            "dim": dim,
            "model": self.embedder.spec,
            "roots": roots,
            "videos": self.videos,
            "max_video_frames": self.max_video_frames,
            "updated": time.time(),
        }
        atomic_write(
            self.folder / POINTER, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1))
        )
        for p in self.folder.iterdir():  # old generations, stale temp files, the finished work
            if p.name not in (POINTER, emb_name, db_name, "work") and (
                p.name.startswith(("emb-", "db-")) or p.suffix == ".tmp"
            ):
                with contextlib.suppress(OSError):  # still open elsewhere (Windows): next update
                    p.unlink(missing_ok=True)
        for p in self.work.iterdir():
            p.unlink()
        self.work.rmdir()
        stats.rows = n


def cur_rows(idx: Index, path: str) -> list[int]:
    """Rows of one file in an index (a file's rows are contiguous: it is written in one piece)."""
    if not hasattr(idx, "_rows_by_path"):
        by: dict[str, list[int]] = {}
        for r, p in enumerate(idx.paths):
            by.setdefault(p, []).append(r)
        idx._rows_by_path = by  # type: ignore[attr-defined]
    return idx._rows_by_path.get(path, [])  # type: ignore[attr-defined]


def _old_error(folder: Path, cur: Index | None, path: str) -> str:
    if cur is None:
        return ""
    return dict(cur.errors).get(path, "")


def _write_embeddings(
    tmp: Path, sources: list[tuple[str, Any]], cur: Index | None, n: int, dim: int
) -> None:
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim))
    row = 0
    for kind, src in sources:
        block = cur.embeddings[src.start : src.stop] if kind == "old" else src  # type: ignore[union-attr]
        out[row : row + len(block)] = block
        row += len(block)
    out.flush()
    del out
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())


def _write_db(tmp: Path, items: list[tuple[str, float]], files: list, errors: list) -> None:
    Path(tmp).unlink(missing_ok=True)
    con = sqlite3.connect(tmp)
    try:
        con.executescript(
            "CREATE TABLE items(row INTEGER PRIMARY KEY, path TEXT NOT NULL, frame REAL NOT NULL);"
            "CREATE TABLE files(path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, nrows INTEGER);"
            "CREATE TABLE errors(path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, message TEXT);"
        )
        con.executemany(
            "INSERT INTO items VALUES (?, ?, ?)", ((r, p, f) for r, (p, f) in enumerate(items))
        )
        con.executemany("INSERT INTO files VALUES (?, ?, ?, ?)", files)
        con.executemany("INSERT INTO errors VALUES (?, ?, ?, ?)", errors)
        con.execute("CREATE INDEX items_path ON items(path)")
        con.commit()
    finally:
        con.close()


@contextlib.contextmanager
def _writer_lock(folder: Path):
    """One writer per index: a second `selfsup index` on the same folder fails fast."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a concurrent writer is the user's risk
        yield
        return
    with open(folder / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{folder}: another `selfsup index` is updating this index right now"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _entry(p: Path) -> FileEntry:
    """The file's (size, mtime); a dangling link or a file deleted since the walk gets an
    error entry (size and mtime of the link itself, or -1) instead of stopping the update."""
    try:
        st = p.stat()
        return FileEntry(str(p), st.st_size, st.st_mtime_ns)
    except OSError as e:
        try:
            lst = p.lstat()
            size, mtime = lst.st_size, lst.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        why = "dangling symlink" if p.is_symlink() else "cannot stat file"
        return FileEntry(str(p), size, mtime, f"{why} ({e.strerror or type(e).__name__})")


_GENERATION = re.compile(r"^(?:emb|db)-(\d+)\.")


def _next_generation(folder: Path, cur: Index | None) -> int:
    """One more than any generation on disk: files of a killed update, or the live generation
    when the pointer was not read (--rebuild), are never overwritten in place."""
    on_disk = [int(m.group(1)) for p in folder.iterdir() if (m := _GENERATION.match(p.name))]
    return max([cur.meta["generation"] if cur else 0, *on_disk]) + 1


def _barrier() -> None:
    if D.is_dist():
        torch.distributed.barrier()


def _bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="file", disable=not enabled, dynamic_ncols=True, mininterval=0.5)


def build_index(
    folder: str | Path, paths: Iterable[str | Path], embedder: Any, **kwargs: Any
) -> UpdateStats:
    """Create or update the index in `folder` over `paths` (see Indexer for the options)."""
    rebuild = kwargs.pop("rebuild", False)
    return Indexer(folder, embedder, **kwargs).update(paths, rebuild=rebuild)
