"""The Search page's state, Qt-free: which model an index is built with, the `selfsup index`
command line, the index's model and searcher cached between queries, and the last hits."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from engine.errors import UserError

# open_clip models worth offering first on a laptop (the name downloads its weights once)
OPEN_CLIP_MODELS = ["open_clip:ViT-B-32/laion2b_s34b_b79k", "open_clip:ViT-B-16/laion2b_s34b_b88k"]


def default_index_dir(folder: str | Path, root: Path) -> Path:
    """One index per photo folder under `root` (the user's data folder)."""
    folder = Path(folder).expanduser().resolve()
    key = hashlib.sha1(str(folder).encode()).hexdigest()[:8]
    return root / "indexes" / f"{folder.name or 'root'}-{key}"


class QueryEngine:
    """The index's model and a Searcher, cached between queries (used from worker threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.key: tuple | None = None
        self.embedder = None
        self.searcher = None
        self.index = None

    def search(self, index_dir: str, text: str | None, image: str | None, k: int):
        from multimodal.embedder import load_clip
        from multimodal.index import Index
        from multimodal.search import Searcher, check_model, query_vector

        with self.lock:
            idx = Index(index_dir)
            key = (str(Path(index_dir).resolve()), idx.meta.get("generation"))
            if key != self.key:
                model = idx.model
                if self.embedder is None or self.embedder.spec.get("fingerprint") != model.get(
                    "fingerprint"
                ):
                    self.embedder = load_clip(model["source"], model.get("pretrained", ""), "cpu")
                check_model(idx, self.embedder)
                self.searcher, self.index, self.key = (
                    Searcher(idx, device=self.embedder.device),
                    idx,
                    key,
                )
            q = query_vector(self.embedder, text=text, image=image)
            return self.searcher.search(q, k, None)


class SearchSession:
    def __init__(self) -> None:
        self.engine = QueryEngine()
        self.hits: list = []

    @staticmethod
    def index_command(folder: str, index_dir: Path, model: str, weights: str) -> list[str]:
        """`selfsup index` for the page: an existing index keeps its recorded model (mixing
        models is refused), a new one needs a model."""
        if not folder:
            raise UserError("choose the folder of photos to index")
        if not Path(folder).expanduser().is_dir():
            raise UserError(f"{folder}: no such folder")
        exists = (index_dir / "index.json").exists()
        if not model and not exists:
            raise UserError(
                "choose a CLIP model: a run folder trained with the “clip” method, or open_clip:MODEL/TAG"
            )
        args = ["index", str(Path(folder).expanduser().resolve()), "--index", str(index_dir)]
        if not exists:
            args += ["--model", model] + (["--pretrained", weights] if weights else [])
        return args + ["--num-workers", "0" if (os.cpu_count() or 1) < 2 else "2"]

    @staticmethod
    def can_search(index_dir: str) -> bool:
        return bool(index_dir) and (Path(index_dir) / "index.json").exists()

    def search(self, index_dir: str, text: str | None, image: str | None, k: int) -> list:
        return self.engine.search(index_dir, text, image, k)

    def set_hits(self, what: str, hits: list) -> str:
        self.hits = hits
        if not hits:
            return f"no results for {what}"
        return f"{len(hits)} results for {what}, best first (cosine similarity)"

    @staticmethod
    def update_summary(stats: dict[str, Any]) -> str:
        if not stats:
            return ""
        return (
            f" · this update: {stats.get('added', 0)} new, {stats.get('changed', 0)} changed, "
            f"{stats.get('removed', 0)} removed, {stats.get('unchanged', 0)} unchanged "
            f"({stats.get('seconds', 0):.1f}s)"
        )
