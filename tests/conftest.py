"""Shared test settings."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Torch on one thread: the tests use small tensors, and on a shared 2-core machine more
    threads spin-wait (measured 4-50x slower small ops)."""
    try:
        import torch
    except ImportError:  # the numpy-only tests run without torch
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
