"""Shared test settings."""

from __future__ import annotations

import os

import pytest

# where the engine tests build their models: cpu here and in CI; SEARCHRL_TEST_DEVICE=cuda checks the
# engine on a GPU (benchmarks/gpu_check.sh), against transformers on the same device
TEST_DEVICE = os.environ.get("SEARCHRL_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread, and two OpenMP threads crawl when another
    process holds one of this machine's two cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
