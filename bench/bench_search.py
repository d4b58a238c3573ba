"""Query latency of `multimodal.search.Searcher` on synthetic unit 512-d vectors (10k, 100k,
1M), top-10, against a plain float32 brute-force scan (numpy BLAS) in the same run; every query's
result is checked against exact search. Where the compact first pass is used (1M), both kinds
(int8 and float16) are timed, with the resident size of their copies. faiss (HNSW) is timed too
when it is installed and --faiss is given. Past --ram-max rows (10M) the float32 vectors stay on
disk, memory-mapped as an index keeps them: query time and resident memory are reported.

    python bench/bench_search.py [--sizes 10000,100000,1000000] [--queries 30] [--threads 2]
    python bench/bench_search.py --sizes 10000000 --tmp /var/tmp   # 20 GB of vectors on disk
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import finish, guard  # noqa: E402

import multimodal.search as search_mod  # noqa: E402
from multimodal.int8_rows import int_mm_works  # noqa: E402
from multimodal.search import FP16_MIN_ROWS, Searcher, exact_topk  # noqa: E402


def unit_vectors(n: int, d: int, seed: int, out: Path) -> np.ndarray:
    """Memory-mapped float32 [n, d] unit vectors, as an index stores them."""
    arr = np.lib.format.open_memmap(out, mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(seed)
    for s in range(0, n, 100_000):
        x = rng.standard_normal((min(100_000, n - s), d), dtype=np.float32)
        arr[s : s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    arr.flush()
    return np.load(out, mmap_mode="r")


def plain_bruteforce(emb: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = emb @ q
    idx = np.argpartition(-s, k)[:k]
    return idx[np.argsort(-s[idx])]


def median_ms(fn, queries: np.ndarray) -> tuple[float, float]:
    times = []
    for q in queries:
        t = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times)), float(np.percentile(times, 90))


def resident_mb() -> dict[str, float]:
    """This process's resident memory: anonymous (our copies) and file-backed (the memory-mapped
    float32 vectors' pages that the kernel keeps mapped; it can drop them under pressure)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def bench_large(n: int, emb: np.ndarray, queries: np.ndarray, args: argparse.Namespace) -> dict:
    """Past --ram-max rows the float32 vectors stay on disk (memory-mapped, 20 GB at 10M): only
    the compact first pass is resident; exactness is checked on a few queries (each exact scan
    reads the whole file)."""
    index = SimpleNamespace(embeddings=emb, paths=[""] * n, frames=[-1.0] * n)
    searcher = Searcher(index, use_faiss=False)
    before = resident_mb()
    t = time.perf_counter()
    searcher.topk(queries[0], args.k)
    setup_s = time.perf_counter() - t
    # the re-score's rows are cold random reads: half the queries with parallel reads (ours),
    # the other half (other rows, so as cold) one read after another, as plain memmap indexing
    half = len(queries) // 2
    ours_ms, ours_p90 = median_ms(lambda q: searcher.topk(q, args.k), queries[:half])
    parallel = search_mod.PARALLEL_READS
    search_mod.PARALLEL_READS = 1 << 30
    serial_ms, _ = median_ms(lambda q: searcher.topk(q, args.k), queries[half:])
    search_mod.PARALLEL_READS = parallel
    after = resident_mb()
    checked = queries[: args.check_queries]
    same = all(
        searcher.topk(q, args.k)[0].tolist()
        == exact_topk(emb, q, args.k, searcher.max_norm)[0].tolist()
        for q in checked
    )
    return dict(
        n=n,
        strategy=searcher.last_strategy,
        ours_ms=ours_ms,
        ours_p90_ms=ours_p90,
        plain_fp32_ms="skipped (vectors not in RAM)",
        serial_reads_ms=serial_ms,
        setup_s=setup_s,
        candidates=searcher.last_candidates,
        identical_to_exact=f"{same} ({len(checked)} queries)",
        copy_mb=searcher_copy_mb(searcher),
        rss_anon_mb=after.get("RssAnon", 0.0) - before.get("RssAnon", 0.0),
        rss_mb=after.get("VmRSS", 0.0),
        rss_file_mb=after.get("RssFile", 0.0),
    )


def searcher_copy_mb(searcher: Searcher) -> float:
    int8 = searcher._int8.nbytes() if searcher._int8 is not None else 0
    return (int8 + (searcher._half.numel() * 2 if searcher._half is not None else 0)) / 2**20


def kernel_ab(searcher: Searcher, queries: np.ndarray, k: int) -> dict:
    """Ours (the int8 kernel `auto` picks: fbgemm on prepacked rows where exact) against
    torch._int_mm on the same codes, alternating query by query in this process, so that a
    change in the machine's memory bandwidth during the run hits both alike."""
    plain = Searcher(searcher.index, use_faiss=False)
    plain.int8_kernel = "int_mm"
    plain.topk(queries[0], k)
    times: dict[str, list[float]] = {searcher._int8.kernel: [], "int_mm": []}
    for i, q in enumerate(queries):
        pair = [(searcher._int8.kernel, searcher), ("int_mm", plain)]
        for name, s in pair if i % 2 else pair[::-1]:
            t = time.perf_counter()
            s.topk(q, k)
            times[name].append((time.perf_counter() - t) * 1000)
    return {
        f"ab_{name}_ms": f"{np.median(v):.1f} (p90 {np.percentile(v, 90):.1f})"
        for name, v in times.items()
    }


def bench_size(n: int, args: argparse.Namespace, tmp: Path) -> dict:
    kept = Path(args.keep) / f"emb{n}x{args.dim}.npy" if args.keep else None
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
    if kept is not None and kept.exists():  # the same seeded vectors, written by an earlier run
        emb = np.load(kept, mmap_mode="r")
    else:
        emb = unit_vectors(n, args.dim, 0, kept or tmp / f"emb{n}.npy")
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    if n > args.ram_max:
        return bench_large(n, emb, queries, args)
    emb_ram = np.ascontiguousarray(emb)  # the plain scan gets the vectors already in RAM
    index = SimpleNamespace(embeddings=emb, paths=[""] * n, frames=[-1.0] * n)
    plain_ms, _ = median_ms(lambda q: plain_bruteforce(emb_ram, q, args.k), queries)
    searcher = Searcher(index, use_faiss=False)
    others = {}
    if n >= FP16_MIN_ROWS:  # the other first pass, timed in the same run
        other = Searcher(index, use_faiss=False)
        other.first_pass = "fp16" if searcher.first_pass == "int8" else "int8"
        other.topk(queries[0], args.k)
        others[f"{other.first_pass}_ms"], _ = median_ms(lambda q: other.topk(q, args.k), queries)
        del other
    t = time.perf_counter()
    searcher.topk(queries[0], args.k)  # builds the int8 / float16 copy where used
    setup_s = time.perf_counter() - t
    ours_ms, ours_p90 = median_ms(lambda q: searcher.topk(q, args.k), queries)
    same = all(
        searcher.topk(q, args.k)[0].tolist() == exact_topk(emb, q, args.k)[0].tolist()
        for q in queries
    )
    same_plain = all(
        set(searcher.topk(q, args.k)[0].tolist())
        == set(plain_bruteforce(emb_ram, q, args.k).tolist())
        for q in queries
    )
    if searcher.first_pass == "int8" and searcher.last_strategy.startswith("exact-int8"):
        others["int8_kernel"] = searcher._int8.kernel
        if searcher._int8.kernel != "int_mm" and int_mm_works():
            others.update(kernel_ab(searcher, queries, args.k))
    row = dict(
        n=n,
        strategy=searcher.last_strategy,
        ours_ms=ours_ms,
        ours_p90_ms=ours_p90,
        plain_fp32_ms=plain_ms,
        setup_s=setup_s,
        candidates=searcher.last_candidates,
        identical_to_exact=same and same_plain,
        copy_mb=searcher_copy_mb(searcher),
        **others,
    )
    if args.faiss and n <= args.faiss_max:
        try:
            import faiss  # noqa: F401
        except ImportError:
            row["faiss_ms"] = "not installed"
            return row
        fs = Searcher(index, use_faiss=True)
        t = time.perf_counter()
        fs.topk(queries[0], args.k)
        row["faiss_build_s"] = time.perf_counter() - t
        row["faiss_ms"], _ = median_ms(lambda q: fs.topk(q, args.k), queries)
        hit = [
            len(set(fs.topk(q, args.k)[0].tolist()) & set(exact_topk(emb, q, args.k)[0].tolist()))
            / args.k
            for q in queries
        ]
        row["faiss_recall@10"] = float(np.mean(hit))
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=30)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--faiss", action="store_true", help="also build and time a faiss HNSW index")
    ap.add_argument("--allow-load", action="store_true", help="run on a busy machine (stamped)")
    ap.add_argument(
        "--faiss-max",
        type=int,
        default=100_000,
        help="skip faiss above this size (HNSW build is slow on 2 cores)",
    )
    ap.add_argument(
        "--ram-max",
        type=int,
        default=2_000_000,
        help="above this many rows the float32 vectors stay memory-mapped on disk (10M = 20 GB): "
        "no plain in-RAM scan, no second first-pass kind, exactness on --check-queries queries",
    )
    ap.add_argument("--check-queries", type=int, default=3)
    ap.add_argument("--tmp", default=None, help="folder for the generated vectors (20 GB at 10M)")
    ap.add_argument("--keep", default=None, help="keep the generated vectors here and reuse them")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = guard(args.allow_load)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            rows.append(bench_size(n, args, Path(tmp)))
            print(rows[-1], flush=True)
    print()
    cols = [
        "n",
        "strategy",
        "ours_ms",
        "ours_p90_ms",
        "plain_fp32_ms",
        "setup_s",
        "candidates",
        "identical_to_exact",
        "copy_mb",
    ]
    extra = ("int8_ms", "fp16_ms", "int8_kernel", "ab_fbgemm_ms", "ab_int_mm_ms", "faiss_ms")
    extra += ("faiss_recall@10", "faiss_build_s")
    extra += ("serial_reads_ms", "rss_anon_mb", "rss_mb", "rss_file_mb")
    cols += [c for c in extra if any(c in r for r in rows)]
    print(" | ".join(cols))
    for r in rows:
        print(
            " | ".join(
                f"{r.get(c):.1f}" if isinstance(r.get(c), float) else str(r.get(c, ""))
                for c in cols
            )
        )
    finish(info)


if __name__ == "__main__":
    main()
