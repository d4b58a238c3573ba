"""Search strategies agree with exact search; thresholds, output formats, contact sheet."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

import multimodal.search as search_mod
from multimodal.int8_rows import Int8Rows, int_mm_works, packed_query_max
from multimodal.search import Hit, Searcher, contact_sheet, exact_topk, format_json, format_table


def _fake_index(emb: np.ndarray) -> SimpleNamespace:
    n = len(emb)
    return SimpleNamespace(
        embeddings=emb, paths=[f"/p/{i}.jpg" for i in range(n)], frames=[-1.0] * n
    )


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_topk_against_full_sort():
    rng = np.random.default_rng(0)
    emb, q = _unit(rng, 3000, 32), _unit(rng, 1, 32)[0]
    rows, scores = exact_topk(emb, q, 7)
    full = emb @ q
    assert rows.tolist() == np.argsort(-full)[:7].tolist()
    np.testing.assert_allclose(scores, full[rows], atol=1e-6)


@pytest.mark.parametrize("first_pass", ["fp16", "int8"])
def test_compact_scan_with_rescoring_is_identical_to_exact(monkeypatch, first_pass):
    monkeypatch.setattr(search_mod, "FP16_MIN_ROWS", 0)
    monkeypatch.setattr(search_mod, "CHUNK", 1000)  # several chunks in the exact path too
    if first_pass == "int8" and not int_mm_works():
        pytest.skip("torch's int8 product does not run on this platform")
    rng = np.random.default_rng(1)
    emb = _unit(rng, 20_000, 64)
    emb[5] = emb[17]  # an exact tie
    # near-ties and uneven rows, where a loose bound would drop a true top-10 row: 30 rows a
    # hair from emb[0], one row with a single large component, and a scaled (non-unit) row
    emb[100:130] = emb[0] + 1e-4 * _unit(rng, 30, 64)
    emb[200] = 0.01
    emb[200, 3] = 1.0
    emb[300] = 3.0 * emb[1]
    s = Searcher(_fake_index(emb))
    s.first_pass = first_pass
    queries = np.concatenate([_unit(rng, 20, 64), emb[[0, 200, 300]]])
    for q in queries:
        rows, scores = s.topk(q, 10)
        er, es = exact_topk(emb, q, 10)
        assert s.last_strategy == f"exact-{first_pass}-rescored"
        assert rows.tolist() == er.tolist() and np.array_equal(scores, es)
        assert 10 <= s.last_candidates < 2000  # the first pass really prunes
    q = emb[17]  # query equal to the tied pair: both first, lower row first
    assert s.topk(q, 2)[0].tolist() == [5, 17]


@pytest.mark.parametrize("block", [64, 4096])
def test_block_maxima_selection_is_exact(monkeypatch, block):
    """The int8 pass bounds its k-th score from per-block maxima: with a short last block, more
    blocks than k and fewer (k = 100 of 79 blocks), and a collapsed index (every score alike),
    the answer is still exact search's."""
    monkeypatch.setattr(search_mod, "FP16_MIN_ROWS", 0)
    monkeypatch.setattr(search_mod, "SCAN_BLOCK", block)
    if not int_mm_works():
        pytest.skip("torch's int8 product does not run on this platform")
    rng = np.random.default_rng(3)
    emb = _unit(rng, 5_000 + 37, 32)  # a short last block
    emb[4990:5037] = emb[7] + 1e-4 * _unit(rng, 47, 32)  # near-ties in the tail block
    s = Searcher(_fake_index(emb))
    s.first_pass = "int8"
    for q in np.concatenate([_unit(rng, 10, 32), emb[[7, 5036]]]):
        for k in (1, 10, 100):
            assert s.topk(q, k)[0].tolist() == exact_topk(emb, q, k)[0].tolist()
    flat = Searcher(_fake_index(np.tile(emb[:1], (3_000, 1))))
    flat.first_pass = "int8"
    assert flat.topk(emb[0], 10)[0].tolist() == list(range(10))  # ties by row
    assert flat.last_candidates == 3_000


def test_memory_mapped_rows_are_read_in_parallel_and_identically(tmp_path, monkeypatch):
    """A whole-file memmap (how an index keeps its vectors) is re-scored from parallel preads
    (10M vectors do not stay in the page cache); a view of one falls back to plain indexing."""
    emb = _unit(np.random.default_rng(3), 3000, 48)
    np.save(tmp_path / "emb.npy", emb)
    mapped = np.load(tmp_path / "emb.npy", mmap_mode="r")
    rows = np.sort(np.random.default_rng(4).choice(3000, 200, replace=False))
    preads = []
    real_pread = search_mod.os.pread
    monkeypatch.setattr(search_mod.os, "pread", lambda *a: preads.append(a) or real_pread(*a))
    assert np.array_equal(search_mod.read_rows(mapped, rows), emb[rows])
    assert len(preads) == 200  # one read per row
    view = mapped[1000:]  # its offset and rows are not the file's: plain indexing
    assert np.array_equal(search_mod.read_rows(view, rows[:60]), emb[1000:][rows[:60]])
    assert len(preads) == 200
    monkeypatch.setattr(search_mod, "FP16_MIN_ROWS", 0)
    s = Searcher(_fake_index(mapped))
    for q in emb[[0, 7, 2999]]:
        assert s.topk(q, 10)[0].tolist() == exact_topk(emb, q, 10)[0].tolist()


@pytest.mark.parametrize("kernel", ["int_mm", "auto"])
def test_int8_bound_holds_on_every_row(kernel):
    """The per-row bound of the module docstring against float64 truth, on rows and queries
    whose components span six orders of magnitude, with each int8 kernel."""
    if kernel == "int_mm" and not int_mm_works():
        pytest.skip("torch's int8 product does not run on this platform")
    if kernel == "auto" and not packed_query_max():
        pytest.skip("fbgemm's packed int8 product is missing or inexact here")
    import torch

    rng = np.random.default_rng(4)
    emb = (_unit(rng, 5000, 96) * np.exp(rng.uniform(-7, 7, (5000, 96)))).astype(np.float32)
    rows = Int8Rows.build(emb, kernel)
    inv_scale, l1 = rows.inv_scale.numpy(), rows.l1.numpy()
    for q in (emb[7], emb[8] * 1e-3, _unit(rng, 1, 96)[0]):
        truth = emb.astype(np.float64) @ q.astype(np.float64)
        inv_t = float(np.abs(q).max()) / rows.query_max
        qc = torch.round(torch.from_numpy(q) / inv_t).to(torch.int8)
        approx = (rows.dots(qc) * (rows.inv_scale * inv_t)).numpy()
        bound = 0.5 * inv_t * l1 + inv_scale * (0.5 * np.abs(q).sum() + 0.25 * 96 * inv_t)
        assert np.all(np.abs(approx - truth) <= bound)


def test_packed_int8_product_equals_int_mm(monkeypatch):
    """fbgemm's product on prepacked blocks (a short last block included) gives _int_mm's
    integers, at full-range (127) and 7-bit (63) query codes; search with 7-bit query codes
    is still exact."""
    if not packed_query_max() or not int_mm_works():
        pytest.skip("needs both int8 kernels")
    import torch

    import multimodal.int8_rows as rows_mod

    monkeypatch.setattr(rows_mod, "PACK_ROWS", 1000)
    rng = np.random.default_rng(5)
    emb = _unit(rng, 3_500, 80)
    packed, plain = Int8Rows.build(emb, "fbgemm"), Int8Rows.build(emb, "int_mm")
    assert packed.kernel == "fbgemm" and len(packed.packed) == 4 and plain.kernel == "int_mm"
    assert torch.equal(packed.inv_scale, plain.inv_scale) and torch.equal(packed.l1, plain.l1)
    for top in (packed_query_max(), 63):
        q = torch.randint(-top, top + 1, (80,), dtype=torch.int8)
        q[:2] = torch.tensor([top, -top], dtype=torch.int8)
        packed.query_max = top
        assert torch.equal(packed.dots(q), plain.dots(q))
    monkeypatch.setattr(search_mod, "FP16_MIN_ROWS", 0)
    monkeypatch.setattr(rows_mod, "_QUERY_MAX", 63)  # the AVX2 kernel's 7-bit query codes
    s = Searcher(_fake_index(emb))
    for q in emb[[0, 9, 3499]]:
        assert s.topk(q, 10)[0].tolist() == exact_topk(emb, q, 10)[0].tolist()
    assert s._int8.query_max == 63 and 10 <= s.last_candidates < 1000


def test_without_fbgemm_the_codes_stay_plain(monkeypatch):
    """Where fbgemm is missing (ARM) or never exact, "auto" keeps plain codes for _int_mm and
    never touches the quantized engine (setting it to fbgemm would raise there)."""
    if not int_mm_works():
        pytest.skip("torch's int8 product does not run on this platform")
    import multimodal.int8_rows as rows_mod

    def no_engine():
        raise AssertionError("the fbgemm engine was selected")

    monkeypatch.setattr(rows_mod, "_QUERY_MAX", 0)
    monkeypatch.setattr(rows_mod, "_fbgemm_engine", no_engine)
    emb = _unit(np.random.default_rng(6), 2_000, 48)
    rows = Int8Rows.build(emb, "auto")
    assert rows.kernel == "int_mm" and rows.codes.shape == (2_000, 48) and rows.query_max == 127


def test_packed_product_check_rejects_a_saturating_kernel(monkeypatch):
    """An AVX2-style kernel (u8 x s8 products added in pairs in 16 bits, saturating) fails the
    start-up check at 127 and passes it at 63, so the search keeps 7-bit query codes there."""
    import multimodal.int8_rows as rows_mod

    def saturating_dots(self, q_codes):
        rows, zero = self.packed[0].long(), self.query_max + 1
        pairs = ((q_codes.long() + zero) * rows).view(len(rows), -1, 2).sum(-1)
        return (pairs.clamp(-32768, 32767).sum(-1) - zero * rows.sum(1)).float()

    monkeypatch.setattr(rows_mod, "_has_fbgemm", lambda: True)
    monkeypatch.setattr(rows_mod, "_prepack", lambda codes: codes)  # the "packed" block: codes
    monkeypatch.setattr(rows_mod.Int8Rows, "dots", saturating_dots)
    monkeypatch.setattr(rows_mod, "_QUERY_MAX", None)
    assert rows_mod.packed_query_max() == 63
    monkeypatch.setattr(rows_mod, "_QUERY_MAX", None)
    monkeypatch.setattr(rows_mod.Int8Rows, "dots", lambda self, q: saturating_dots(self, q) + 1)
    assert rows_mod.packed_query_max() == 0  # never exact: _int_mm


def test_threshold_and_formats(tmp_path, make_photo_fn):
    rng = np.random.default_rng(2)
    emb = _unit(rng, 50, 16)
    s = Searcher(_fake_index(emb))
    hits = s.search(emb[3], k=10, threshold=0.5, check_exact=True)
    assert hits[0].row == 3 and hits[0].score == pytest.approx(1.0, abs=1e-6)
    assert all(h.score >= 0.5 for h in hits) and len(hits) < 10
    table = format_table(hits)
    assert "/p/3.jpg" in table.splitlines()[1]
    data = json.loads(format_json(hits, {"text": "x"}))
    assert data["results"][0] == {"rank": 1, "score": hits[0].score, "path": "/p/3.jpg", "row": 3}

    paths = [make_photo_fn(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    sheet_hits = [Hit(i + 1, 0.9 - i / 10, str(p), -1.0, i) for i, p in enumerate(paths)]
    sheet_hits.append(Hit(4, 0.1, str(tmp_path / "deleted.png"), -1.0, 3))  # gone since indexing
    out = contact_sheet(sheet_hits, tmp_path / "sheet.png", thumb=64, cols=2, title="query")
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (128, 20 + 2 * (64 + 16))


def test_faiss_results_are_rescored_exactly(monkeypatch):
    pytest.importorskip("faiss")
    rng = np.random.default_rng(3)
    emb = _unit(rng, 5000, 32)
    s = Searcher(_fake_index(emb), use_faiss=True)
    hits = s.search(emb[42], k=5)
    assert s.last_strategy == "faiss" and hits[0].row == 42
    _, exact = exact_topk(emb, emb[42], 5)
    assert hits[0].score == pytest.approx(float(exact[0]))


def test_empty_index_and_k_zero():
    rng = np.random.default_rng(0)
    emb, q = _unit(rng, 50, 16), _unit(rng, 1, 16)[0]
    rows, scores = exact_topk(emb, q, 0)  # _near_top used to index past the end
    assert len(rows) == 0 and len(scores) == 0
    assert Searcher(_fake_index(emb)).search(q, k=0) == []
    empty = _fake_index(np.zeros((0, 16), np.float32))
    for device in ("cpu", "cuda"):  # the GPU path took a k-th score of nothing
        s = Searcher(empty, device=device, use_faiss=False)
        rows, scores = s.topk(q, 10)
        assert (len(rows), len(scores), s.last_strategy) == (0, 0, "empty")
        assert s.search(q, k=5) == []
