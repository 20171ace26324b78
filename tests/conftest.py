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


@pytest.fixture(autouse=True)
def fresh_accelerate_precision():
    """Accelerate keeps one mixed-precision setting per process: a run in one test (e.g. the
    default train.precision=auto, bf16 on a CPU with native bf16) must not refuse the next."""
    yield
    import sys

    if "accelerate.state" in sys.modules:
        sys.modules["accelerate.state"].AcceleratorState._reset_state(reset_partial_state=True)
