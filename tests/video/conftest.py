"""Paths to the shipped sample video (assets/sample/video) for the video tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "assets" / "sample" / "video"
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def sample() -> Path:
    if not (SAMPLE / "shapes.mp4").exists():
        pytest.skip("assets/sample/video missing; regenerate with `python -m video.sample`")
    return SAMPLE


@pytest.fixture(scope="session")
def sample_frames_dir(sample) -> Path:
    return sample / "JPEGImages" / "480p" / "shapes"


@pytest.fixture(scope="session")
def sample_masks_dir(sample) -> Path:
    return sample / "Annotations" / "480p" / "shapes"


@pytest.fixture(autouse=True)
def one_thread():
    """Small tensors: on a shared, oversubscribed CPU, intra-op threads spin against each other
    (measured 16 s vs 1.1 s for the sample propagation with 2 threads vs 1). Restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def feature_cache(tmp_path_factory, monkeypatch):
    """Propagation's feature cache in a temporary folder, never the user's."""
    d = tmp_path_factory.mktemp("feature-cache")
    monkeypatch.setenv("SELFSUP_FEATURE_CACHE", str(d))
    return d
