"""Fixtures of the engine tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: the test machine is shared, and OpenMP threads spinning against
    other jobs on 2 busy cores make small models 10x slower and step times swing."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
