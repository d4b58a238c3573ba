"""The Features and Search pages' Qt-free sessions: validation, command lines, stale results."""

from __future__ import annotations

import numpy as np
import pytest

from app.gui.sessions.features import FeaturesSession
from app.gui.sessions.search import SearchSession, default_index_dir
from engine.errors import UserError


def test_features_session_validates_and_drops_stale_embeddings():
    s = FeaturesSession()
    with pytest.raises(UserError, match="choose a model first"):
        s.request("", "", "/tmp")
    with pytest.raises(UserError, match="choose a folder"):
        s.request("dino:vits16", "", "")
    s.request("dino:vits16", "runs/a", "/data")
    assert (s.source, s.other_source, s.folder) == ("dino:vits16", "runs/a", "/data")
    seen = []
    s.embedded.connect(lambda m, xy: seen.append(m))
    s.fs = object()  # a computed feature set stands in
    s.want_embedding("pca")
    s.want_embedding("tsne")  # the user switched before the PCA came back
    assert not s.set_embedding("pca", np.zeros((2, 2)))  # stale: dropped
    assert s.set_embedding("tsne", np.ones((2, 2))) and seen == ["tsne"]
    assert s.xy.sum() == 4


def test_search_session_builds_the_index_command(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    idx = default_index_dir(photos, tmp_path / "data")
    assert idx.parent == tmp_path / "data" / "indexes" and idx.name.startswith("photos-")
    with pytest.raises(UserError, match="choose a CLIP model"):
        SearchSession.index_command(str(photos), idx, "", "")
    with pytest.raises(UserError, match="no such folder"):
        SearchSession.index_command(str(tmp_path / "nope"), idx, "m", "")
    args = SearchSession.index_command(str(photos), idx, "open_clip:ViT-B-32/laion2b_s34b_b79k", "")
    assert args[:4] == ["index", str(photos.resolve()), "--index", str(idx)]
    assert args[args.index("--model") + 1].startswith("open_clip:")
    idx.mkdir(parents=True)
    (idx / "index.json").write_text("{}")  # an existing index keeps its recorded model
    assert "--model" not in SearchSession.index_command(str(photos), idx, "other", "")
    s = SearchSession()
    assert s.set_hits("“a dog”", []) == "no results for “a dog”"
    assert s.update_summary({"added": 3, "seconds": 1.0}).startswith(" · this update: 3 new")
