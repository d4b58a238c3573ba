"""An index's rows as int8 codes, and their exact integer products with a query's int8 codes.

Row x is stored as round(s x) with s = 127 / max|x| (search.py's first pass bounds the error).
One product over every row is the whole cost of a 1M-vector query on a CPU, so the kernel
matters more than anything around it. Two kernels give the same integers:

- fbgemm's int8 linear layer (x86), the rows prepacked once in blocks of `PACK_ROWS`: it reads
  the codes at memory speed. 1M x 512 on a 2-core Xeon: 27-30 ms, against 48-57 ms for
- torch._int_mm, which re-lays out the tall int8 operand on every call (its time grows with the
  number of query columns: 57 / 80 / 127 ms for 8 / 16 / 32), and which runs everywhere.

fbgemm takes the query as uint8 with a zero point: codes k with |k| <= `query_max` go in as
k + query_max + 1 at scale 1, so its int32 sums are exactly those of _int_mm. AVX2 kernels add
pairs of u8 x s8 products in 16 bits with saturation: a start-up check on the worst case picks
127 (VNNI kernels), else 63 (pairs of 127 x 127 fit), else _int_mm.
"""

from __future__ import annotations

import contextlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

PACK_ROWS = 65_536  # rows per prepacked block: 32 MB at 512-d, packed 2x faster than 256k


class Int8Rows:
    """Codes of every row with 1/s and |x|_1 per row; `dots(k)` = codes @ k exactly (float32)."""

    def __init__(
        self,
        inv_scale: torch.Tensor,
        l1: torch.Tensor,
        dim: int,
        codes: torch.Tensor | None = None,
        packed: list[Any] | None = None,
        query_max: int = 127,
    ):
        self.inv_scale, self.l1, self.dim = inv_scale, l1, dim
        # the widest per-row bound comes first in search.py: only rows near the top get their own
        self.l1_max = float(l1.max()) if len(l1) else 0.0
        self.inv_scale_max = float(inv_scale.max()) if len(l1) else 0.0
        self.codes, self.packed, self.query_max = codes, packed, query_max
        self.kernel = "fbgemm" if packed is not None else "int_mm"

    def __len__(self) -> int:
        return len(self.inv_scale)

    @classmethod
    def build(cls, emb: np.ndarray, kernel: str = "auto") -> Int8Rows:
        """Codes of `emb` (float32 rows, a memmap is read block by block); kernel "auto" packs
        for fbgemm where its check passes, "int_mm" keeps plain codes."""
        n, d = emb.shape
        query_max = packed_query_max() if kernel in ("auto", "fbgemm") else 0
        if kernel == "fbgemm" and not query_max:
            raise RuntimeError("fbgemm's int8 product is not exact on this machine")
        inv_scale, l1 = torch.empty(n), torch.empty(n)
        codes = None if query_max else torch.empty((n, d), dtype=torch.int8)

        def block(start: int) -> Any:
            x = torch.from_numpy(np.array(emb[start : start + PACK_ROWS], dtype=np.float32))
            a = x.abs()
            top = a.amax(1).clamp_min(1e-30)
            inv_scale[start : start + len(x)] = top / 127.0
            l1[start : start + len(x)] = a.sum(1)
            c = x.mul_((127.0 / top)[:, None]).round_().to(torch.int8)  # x is our own copy
            if codes is None:
                return _prepack(c)
            codes[start : start + len(x)] = c
            return None

        # one block per thread: fbgemm's prepacking is single-threaded, and the blocks' reads
        # and roundings overlap
        engine = _fbgemm_engine() if query_max else contextlib.nullcontext()
        with engine, ThreadPoolExecutor(torch.get_num_threads()) as pool:
            packed = list(pool.map(block, range(0, n, PACK_ROWS)))
        if query_max:
            return cls(inv_scale, l1, d, packed=packed, query_max=query_max)
        return cls(inv_scale, l1, d, codes=codes)

    def dots(self, q_codes: torch.Tensor) -> torch.Tensor:
        """Exact int32 dot products of every row's codes with `q_codes` (int8, |k| <= query_max),
        as float32 (float32 holds them exactly up to 2^24, and relatively to 2^-24 beyond)."""
        if self.packed is None:
            return torch._int_mm(self.codes, q_codes.view(-1, 1)).view(-1).float()
        x = q_codes.float().view(1, -1)
        out = torch.empty(len(self))
        zero = self.query_max + 1
        for i, packed in enumerate(self.packed):
            part = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(
                x, 1.0, zero, packed
            )
            out[i * PACK_ROWS : i * PACK_ROWS + part.shape[1]] = part[0]
        return out

    def nbytes(self) -> int:
        """Resident bytes: codes, 1/s and |x|_1 per row (+ fbgemm's int32 sum per packed row)."""
        return len(self) * (self.dim + 8 + (4 if self.packed is not None else 0))


def _prepack(codes: torch.Tensor) -> Any:
    with warnings.catch_warnings():  # quantized tensors are deprecated; fbgemm's ops are not yet
        warnings.simplefilter("ignore", UserWarning)
        weight = torch._make_per_tensor_quantized_tensor(codes, 1.0, 0)
    return torch.ops.quantized.linear_prepack(weight, None)


class _fbgemm_engine:
    """torch.backends.quantized.engine = "fbgemm" while prepacking (the engine picks the packed
    format; a packed block keeps its kernel afterwards)."""

    def __enter__(self) -> None:
        self.before = torch.backends.quantized.engine
        torch.backends.quantized.engine = "fbgemm"

    def __exit__(self, *exc: object) -> None:
        torch.backends.quantized.engine = self.before


def _exact_at(query_max: int) -> bool:
    """fbgemm's product against int64 truth where 16-bit pair sums would saturate: rows of
    +-127 times a query of +-query_max (and a random case)."""
    d = 64
    g = torch.Generator().manual_seed(0)
    rows = torch.cat(
        [
            torch.full((2, d), 127, dtype=torch.int8),
            torch.full((2, d), -127, dtype=torch.int8),
            torch.randint(-127, 128, (60, d), dtype=torch.int8, generator=g),
        ]
    )
    rows[1, 1::2] = -127
    with _fbgemm_engine():
        probe = Int8Rows(torch.ones(len(rows)), torch.ones(len(rows)), d, packed=[_prepack(rows)])
    probe.query_max = query_max
    truth_ok = True
    for sign in (1, -1):
        q = torch.full((d,), sign * query_max, dtype=torch.int8)
        q[1::3] = -sign * query_max
        truth = rows.long() @ q.long()
        truth_ok &= torch.equal(probe.dots(q).long(), truth)
    q = torch.randint(-query_max, query_max + 1, (d,), dtype=torch.int8, generator=g)
    return truth_ok and torch.equal(probe.dots(q).long(), rows.long() @ q.long())


_QUERY_MAX: int | None = None


def _has_fbgemm() -> bool:
    return "fbgemm" in torch.backends.quantized.supported_engines


def packed_query_max() -> int:
    """127 or 63: the widest query codes fbgemm's packed product keeps exact here; 0 where it
    is missing or never exact (use _int_mm). Checked once per process."""
    global _QUERY_MAX
    if _QUERY_MAX is None:
        _QUERY_MAX = 0
        if _has_fbgemm():
            for query_max in (127, 63):
                try:
                    if _exact_at(query_max):
                        _QUERY_MAX = query_max
                        break
                except (RuntimeError, AttributeError, NotImplementedError):
                    break
    return _QUERY_MAX


_INT_MM_OK: bool | None = None


def int_mm_works() -> bool:
    """torch._int_mm (int8 x int8 -> int32) on this CPU, checked once on a small exact case."""
    global _INT_MM_OK
    if _INT_MM_OK is None:
        try:
            a = torch.randint(-127, 128, (64, 512), dtype=torch.int8)
            b = torch.randint(-127, 128, (512, 1), dtype=torch.int8)
            _INT_MM_OK = bool(torch.equal(torch._int_mm(a, b), a.int() @ b.int()))
        except (RuntimeError, AttributeError):
            _INT_MM_OK = False
    return _INT_MM_OK


def int8_available() -> bool:
    """An exact int8 product runs here (_int_mm is checked first: it costs no packing test)."""
    return int_mm_works() or bool(packed_query_max())
