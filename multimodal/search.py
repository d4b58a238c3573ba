"""Top-k search over an index: exact brute force, fast enough to be interactive at 1M vectors.

Exact search is one matrix-vector product. On a GPU that is the whole story. On a CPU the product
is limited by memory bandwidth, so above `FP16_MIN_ROWS` rows a first pass scans a compact copy
and then a small candidate set is re-scored exactly; the first pass cannot change the answer.

- int8 (the default where an exact int8 product runs: fbgemm's on prepacked rows, or
  torch._int_mm; multimodal.int8_rows): each row x is stored as round(s x) with
  s = 127 / max|x| (a quarter of the float32 bytes), the query as round(t q) with
  t = 127 / max|q| (63 where fbgemm's AVX2 kernel needs 7-bit queries). The int32 dot
  product is exact, so with e_x <= 1/(2s) and e_q <= 1/(2t) per component the approximate score
  a = <round(s x), round(t q)> / (s t) is within B = |x|_1/(2t) + |q|_1/(2s) + n/(4st) of <x, q>.
  Every row with a + B >= the k-th best of a - B is re-scored: the true top k are among them.
- float16: with u = 2^-11, every approximate score is within B = (3u + u^2 + n 2^-24) |q| max|x|
  of the exact one, so every true top-k row has an approximate score >= (k-th best) - 2B.
The result is identical to the float32 scan (up to ties); `bench/bench_search.py` times both.

faiss (optional) takes over beyond `FAISS_MIN_ROWS`, where even that scan stops being
interactive; its hits are re-scored exactly and `check_exact` compares them with brute force.
"""

from __future__ import annotations

import json
import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.errors import UserError
from multimodal.index import IMAGE_FRAME, Index, describe_model, same_model
from multimodal.int8_rows import Int8Rows, int8_available

FP16_MIN_ROWS = 200_000
FAISS_MIN_ROWS = 5_000_000
CHUNK = 262_144


@dataclass
class Hit:
    rank: int
    score: float
    path: str
    frame: float  # -1 for a photo, else the key frame's time in seconds
    row: int

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        if self.frame == IMAGE_FRAME:
            d.pop("frame")
        return d


def rescore(
    emb: np.ndarray, cand: np.ndarray, q: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k best of candidate rows by float64 dot products, ties by row: the one final ranking
    every strategy ends with, so they agree bit for bit whenever their candidates hold the top k."""
    cand = np.unique(np.asarray(cand, dtype=np.int64))
    if len(cand) == 0:
        return cand, np.zeros(0, np.float32)
    scores = np.asarray(read_rows(emb, cand), dtype=np.float64) @ q.astype(np.float64)
    order = np.lexsort((cand, -scores))[:k]
    return cand[order], scores[order].astype(np.float32)


PARALLEL_READS = 32


def read_rows(emb: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """emb[rows]; on an index's memory-mapped file, by parallel reads. At 10M vectors the
    float32 file (20 GB) does not stay in the page cache beside the int8 copy, so the re-score's
    few hundred rows are random disk reads: one after another they cost 5.5 s per query here
    (measured), while 32 in flight overlap their latency."""
    if len(rows) < PARALLEL_READS or not _whole_file_map(emb):
        return np.asarray(emb[rows])
    row_bytes = emb.shape[1] * emb.dtype.itemsize
    out = np.empty((len(rows), emb.shape[1]), dtype=emb.dtype)
    fd = os.open(emb.filename, os.O_RDONLY)
    try:

        def read(part: np.ndarray) -> None:  # one task per slice: no per-row dispatch cost
            for i in part:
                data = os.pread(fd, row_bytes, emb.offset + int(rows[i]) * row_bytes)
                out[i] = np.frombuffer(data, dtype=emb.dtype)

        list(_reader_pool().map(read, np.array_split(np.arange(len(rows)), PARALLEL_READS)))
    finally:
        os.close(fd)
    return out


_POOL: ThreadPoolExecutor | None = None


def _reader_pool() -> ThreadPoolExecutor:
    """One pool for the process: starting 32 threads per query would cost more than the reads
    when the rows are already in the page cache (1M vectors)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(PARALLEL_READS, thread_name_prefix="search-read")
    return _POOL


def _whole_file_map(emb: np.ndarray) -> bool:
    """A memmap of a whole C-ordered array file (np.load(..., mmap_mode="r")), not a view of
    one: only then are `offset` and the row stride those of the file."""
    return (
        isinstance(emb, np.memmap)
        and isinstance(emb.base, mmap.mmap)
        and emb.filename is not None
        and emb.ndim == 2
        and emb.flags.c_contiguous
    )


SCAN_BLOCK = 1024


def block_maxima(x: torch.Tensor) -> torch.Tensor:
    """The maximum of each SCAN_BLOCK consecutive scores (the last block may be shorter): one
    streaming pass, after which the k-th best is bounded from ~1,000 maxima instead of a top-k
    over 1M scores (9 ms of a 45-70 ms query)."""
    full = len(x) // SCAN_BLOCK * SCAN_BLOCK
    maxima = x[:full].view(-1, SCAN_BLOCK).amax(1)
    return torch.cat([maxima, x[full:].amax().view(1)]) if full < len(x) else maxima


def kth_lower_bound(x: torch.Tensor, k: int) -> float:
    """A value <= the k-th largest of x: the k-th largest block maximum (k distinct entries of x
    reach it). A lower k-th only widens the candidate set, so the search stays exact."""
    maxima = block_maxima(x)
    return float(torch.topk(maxima if len(maxima) >= k else x, k).values[-1])


def _near_top(scores: np.ndarray, k: int, slack: float) -> np.ndarray:
    """Indices scoring within `slack` of the k-th best (all of them when there are <= k)."""
    if k <= 0:
        return np.zeros(0, np.int64)
    if len(scores) <= k:
        return np.arange(len(scores))
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    return np.flatnonzero(scores >= kth - slack)


def max_row_norm(emb: np.ndarray) -> float:
    norm2 = 0.0
    for s in range(0, len(emb), CHUNK):
        block = np.asarray(emb[s : s + CHUNK], dtype=np.float32)
        norm2 = max(norm2, float(np.einsum("ij,ij->i", block, block).max()))
    return float(np.sqrt(norm2))


def exact_topk(
    emb: np.ndarray, q: np.ndarray, k: int, max_norm: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: float32 scores in chunks (bounded memory on a memory-mapped index), keeping
    every row within float32's rounding bound (n 2^-23 |q| |x|) of the k-th best, then `rescore`."""
    q = np.asarray(q, dtype=np.float32)
    slack = (
        2
        * emb.shape[1]
        * 2.0**-23
        * float(np.linalg.norm(q))
        * (max_row_norm(emb) if max_norm is None else max_norm)
    )
    cand = []
    for s in range(0, len(emb), CHUNK):
        sc = np.asarray(emb[s : s + CHUNK], dtype=np.float32) @ q
        cand.append(s + _near_top(sc, k, slack))
    return rescore(emb, np.concatenate(cand) if cand else np.zeros(0, np.int64), q, k)


class Searcher:
    """Queries against one index; keeps the float16 copy / GPU copy / faiss index between queries."""

    def __init__(
        self, index: Index, device: str | torch.device = "cpu", use_faiss: bool | None = None
    ):
        self.index = index
        self.device = torch.device(device)
        self.emb = index.embeddings
        self._max_norm: float | None = None
        self._half: torch.Tensor | None = None
        self._int8: Int8Rows | None = None
        self.first_pass = "int8" if int8_available() else "fp16"
        self.int8_kernel = "auto"  # or "int_mm": bench_search.py times both
        self._gpu: torch.Tensor | None = None
        self._faiss = None
        self.use_faiss = (
            use_faiss
            if use_faiss is not None
            else len(self.emb) >= FAISS_MIN_ROWS and _faiss_available()
        )
        self.last_strategy = ""
        self.last_candidates = 0

    # -- strategies --------------------------------------------------------------------------
    def topk(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(-1)
        n = len(self.emb)
        if n == 0 or k <= 0:  # nothing to rank (every strategy below assumes a k-th score)
            self.last_strategy = "empty"
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self.device.type == "cuda":
            self.last_strategy = "exact-gpu"
            return self._topk_gpu(q, k)
        if self.use_faiss:
            self.last_strategy = "faiss"
            return self._topk_faiss(q, k)
        if n >= FP16_MIN_ROWS:
            self.last_strategy = f"exact-{self.first_pass}-rescored"
            return self._topk_int8(q, k) if self.first_pass == "int8" else self._topk_fp16(q, k)
        self.last_strategy = "exact-fp32"
        return exact_topk(self.emb, q, k, self.max_norm)

    @property
    def max_norm(self) -> float:
        """Largest row norm (1 for CLIP's unit vectors), measured once: it scales the error bounds."""
        if self._max_norm is None:
            self._max_norm = max_row_norm(self.emb)
        return self._max_norm

    def _topk_gpu(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._gpu is None:
            self._gpu = torch.from_numpy(np.asarray(self.emb, dtype=np.float32)).to(self.device)
        s = self._gpu @ torch.from_numpy(q).to(self.device)
        slack = (
            2
            * self.emb.shape[1]
            * 2.0**-23
            * float(np.linalg.norm(q))
            * float(self._gpu.norm(dim=1).max())
        )
        kth = torch.topk(s, min(k, len(s))).values[-1]
        cand = torch.nonzero(s >= kth - slack).flatten().cpu().numpy()
        return rescore(self.emb, cand, q, k)

    def _half_copy(self) -> torch.Tensor | None:
        """The float16 copy, or None where this platform's float16 product breaks the bound."""
        if self._half is None:
            half = torch.empty(self.emb.shape, dtype=torch.float16)
            for s in range(0, len(self.emb), CHUNK):
                half[s : s + CHUNK] = torch.from_numpy(
                    np.array(self.emb[s : s + CHUNK], dtype=np.float32)
                )
            probe = np.random.default_rng(0).standard_normal(self.emb.shape[1]).astype(np.float32)
            probe /= np.linalg.norm(probe)
            rows = slice(0, min(len(self.emb), 65536))
            err = np.abs(
                (half[rows] @ torch.from_numpy(probe).half()).float().numpy()
                - np.asarray(self.emb[rows]) @ probe
            ).max()
            self._half = half if err <= self.error_bound(probe) / 2 else torch.empty(0)
        return self._half if self._half.numel() else None

    def error_bound(self, q: np.ndarray) -> float:
        u = 2.0**-11
        qn = float(np.linalg.norm(q))
        n = self.emb.shape[1]
        return (3 * u + u * u + n * 2.0**-24) * qn * self.max_norm * 1.01

    def _topk_fp16(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        half = self._half_copy()
        if half is None:  # float16 accumulates in float16 here: plain float32 scan
            return exact_topk(self.emb, q, k, self.max_norm)
        approx = half @ torch.from_numpy(q).half()  # stays float16: no 1M-element conversions
        kth = float(torch.topk(approx, min(k, len(approx))).values[-1])
        limit = (
            kth - 2 * self.error_bound(q) - abs(kth) * 2.0**-10
        )  # + one float16 ulp: the compare rounds it
        cand = torch.nonzero(approx >= limit).flatten().numpy()
        self.last_candidates = len(cand)
        return rescore(self.emb, cand, q, k)

    def _int8_copy(self) -> Int8Rows:
        """The rows as int8 codes (multimodal.int8_rows: packed for fbgemm where exact here)."""
        if self._int8 is None:
            self._int8 = Int8Rows.build(self.emb, self.int8_kernel)
        return self._int8

    def _topk_int8(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self._int8_copy()
        inv_scale, l1 = rows.inv_scale, rows.l1
        qt = torch.from_numpy(q)
        q_top = float(qt.abs().max())
        if q_top == 0:
            return exact_topk(self.emb, q, k, self.max_norm)
        inv_t = q_top / rows.query_max
        approx = rows.dots(torch.round(qt / inv_t).to(torch.int8))
        approx *= inv_scale
        approx *= inv_t
        # the per-row bound of the module docstring, widened by 1e-4 relative (float32
        # arithmetic); first with its largest value, so only rows near the top get their own
        c_x = 0.5 * inv_t * 1.0001
        c_s = (0.5 * float(qt.abs().sum()) + 0.25 * rows.dim * inv_t) * 1.0001
        widest = c_x * rows.l1_max + c_s * rows.inv_scale_max
        kth = kth_lower_bound(approx, min(k, len(approx)))
        near = torch.nonzero(approx >= kth - 2.0001 * widest - abs(kth) * 1e-6).flatten()
        a = approx[near]
        bound = l1[near] * c_x + inv_scale[near] * c_s + a.abs() * 1e-6
        # the k-th best lower bound of all rows is among `near` (every row outside lies below
        # the k best approximate scores minus the widest bound)
        lower = float(torch.topk(a - bound, min(k, len(a))).values[-1])
        cand = near[a + bound >= lower].numpy()
        self.last_candidates = len(cand)
        return rescore(self.emb, cand, q, k)

    def _topk_faiss(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._faiss is None:
            self._faiss = build_faiss(np.asarray(self.emb, dtype=np.float32))
        _, idx = self._faiss.search(q[None], max(k * 4, 32))
        return rescore(self.emb, idx[0][idx[0] >= 0], q, k)  # exact scores for faiss's hits

    # -- user-facing ---------------------------------------------------------------------------
    def search(
        self, q: np.ndarray, k: int = 10, threshold: float | None = None, check_exact: bool = False
    ) -> list[Hit]:
        rows, scores = self.topk(q, k)
        if check_exact:
            exact_rows, _ = exact_topk(self.emb, np.asarray(q, np.float32).reshape(-1), k)
            if exact_rows.tolist() != rows.tolist():
                raise AssertionError(f"{self.last_strategy} search differs from exact search")
        hits = []
        for i, (r, s) in enumerate(zip(rows.tolist(), scores.tolist())):
            if threshold is not None and s < threshold:
                break
            hits.append(
                Hit(i + 1, round(float(s), 6), self.index.paths[r], self.index.frames[r], int(r))
            )
        return hits


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def build_faiss(emb: np.ndarray):
    """HNSW over inner product (cosine on unit vectors): sub-linear queries on huge collections."""
    try:
        import faiss
    except ImportError:
        raise UserError(
            "faiss is not installed (pip install faiss-cpu); search without --faiss on"
        ) from None

    index = faiss.IndexHNSWFlat(emb.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efSearch = 256
    index.add(emb)
    return index


# ----------------------------------------------------------------------------- queries


def query_vector(
    embedder: Any, text: str | None = None, image: str | Path | None = None
) -> np.ndarray:
    """A unit query embedding from text or from an image file (decoded exactly like the index)."""
    from multimodal.imageio import load_image

    if (text is None) == (image is None):
        raise UserError("give either a text query or --image PATH")
    if text is not None:
        if not text.strip():
            raise UserError("empty text query")
        return embedder.embed_texts([text])[0].numpy()
    path = Path(image)
    if not path.is_file():
        raise UserError(f"{path}: query image not found")
    try:
        img = load_image(path, embedder.image_size)
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{path}: cannot decode query image ({e})") from None
    return embedder.embed_images(img[None])[0].numpy()


def check_model(index: Index, embedder: Any) -> None:
    if not same_model(index.model, embedder.spec):
        raise UserError(
            f"{index.folder}: index was made by {describe_model(index.model)}, not {describe_model(embedder.spec)}"
        )


def format_table(hits: list[Hit]) -> str:
    if not hits:
        return "no results"
    lines = [f"{'rank':>4}  {'score':>7}  path"]
    for h in hits:
        where = h.path if h.frame == IMAGE_FRAME else f"{h.path} @ {h.frame:.2f}s"
        lines.append(f"{h.rank:>4}  {h.score:7.4f}  {where}")
    return "\n".join(lines)


def format_json(hits: list[Hit], query: dict[str, Any]) -> str:
    return json.dumps({"query": query, "results": [h.as_dict() for h in hits]}, indent=1)


def contact_sheet(
    hits: list[Hit], out: str | Path, thumb: int = 160, cols: int = 5, title: str = ""
) -> Path:
    """A PNG grid of the hits with rank and score under each thumbnail (written atomically)."""
    from PIL import Image, ImageDraw

    from engine.checkpoint import atomic_write
    from multimodal.imageio import load_image, video_key_frames

    cols = max(1, min(cols, len(hits) or 1))
    rows = max(1, -(-len(hits) // cols))
    label_h, top = 16, 20 if title else 0
    sheet = Image.new("RGB", (cols * thumb, top + rows * (thumb + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 4), title[:120], fill="black")
    for i, h in enumerate(hits):
        x, y = (i % cols) * thumb, top + (i // cols) * (thumb + label_h)
        try:
            if h.frame == IMAGE_FRAME:
                tile = load_image(h.path, thumb)
            else:
                frames = dict(video_key_frames(h.path, thumb, 10_000))
                tile = frames[min(frames, key=lambda f: abs(f - h.frame))]
            im = Image.fromarray(tile.permute(1, 2, 0).numpy())
        except Exception:  # a file deleted since indexing: grey tile, the sheet still renders
            im = Image.new("RGB", (thumb, thumb), (200, 200, 200))
        sheet.paste(im, (x + (thumb - im.width) // 2, y + (thumb - im.height) // 2))
        draw.text(
            (x + 3, y + thumb + 2),
            f"#{h.rank} {h.score:.3f} {Path(h.path).name}"[: thumb // 6],
            fill="black",
        )
    out = Path(out)
    atomic_write(out, lambda tmp: sheet.save(tmp, format="PNG"))
    return out
