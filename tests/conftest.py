"""Shared pytest set-up."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tests run tiny models: one thread is fastest for them, and OpenMP threads that
    spin on a busy 2-core machine slow everything else down. Subprocesses (torchrun, the
    recipe) are not affected."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
