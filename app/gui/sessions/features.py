"""The Features page's state, Qt-free: the model (and an optional second one to compare), the
images, the computed feature sets and the 2-D embedding of the first, dropping stale results."""

from __future__ import annotations

import numpy as np

from app.gui.features_model import FeatureSet, compute_pair
from app.gui.sessions.events import Event
from engine.errors import UserError


class FeaturesSession:
    def __init__(self) -> None:
        self.source, self.other_source, self.folder = "", "", ""
        self.fs: FeatureSet | None = None
        self.other: FeatureSet | None = None  # the Compare tab's second model
        self.xy: np.ndarray | None = None
        self.embedding_method = ""
        self.computed = Event()  # (fs, other)
        self.embedded = Event()  # (method, xy)

    def request(self, source: str, other: str, folder: str) -> None:
        """What the next compute() computes; a one-line error for what is missing."""
        if not source:
            raise UserError(
                "choose a model first: a run folder, checkpoint (.pt), export (.safetensors) or a published model"
            )
        if not folder:
            raise UserError("choose a folder of images to look at")
        self.source, self.other_source, self.folder = source, other, folder

    def compute(self, map_size: int, n_show: int) -> tuple[FeatureSet, FeatureSet | None]:
        """The work (a worker thread runs it)."""
        return compute_pair(self.source, self.other_source, self.folder, map_size, n_show)

    def set_features(self, pair: tuple[FeatureSet, FeatureSet | None]) -> None:
        self.fs, self.other = pair
        self.xy = None
        self.computed.emit(self.fs, self.other)

    def summary(self) -> str:
        fs = self.fs
        if fs is None:
            return ""
        labelled = f"{len(fs.classes)} classes" if fs.classes else "no labels"
        return (
            f"{fs.arch} trained at {fs.image_size}px (maps at {fs.map_size}px) · {len(fs.files)} "
            f"images ({labelled}) · {fs.emb.shape[1]}-d features · {fs.source}"
        )

    def want_embedding(self, method: str) -> FeatureSet | None:
        self.embedding_method = method
        return self.fs

    def set_embedding(self, method: str, xy: np.ndarray) -> bool:
        """False for a stale result (another method was asked for since)."""
        if method != self.embedding_method or self.fs is None:
            return False
        self.xy = xy
        self.embedded.emit(method, xy)
        return True
