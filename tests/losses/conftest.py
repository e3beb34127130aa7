"""These tests run on tiny tensors: one intra-op thread. On a busy 2-core machine every
parallel region can wait milliseconds for the second core, which made them ~10x slower."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
