"""Shared fixtures."""
import pytest
import torch


@pytest.fixture
def one_thread():
    """The test machine is shared: two OpenMP threads on a busy core slow tiny ops 10x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
