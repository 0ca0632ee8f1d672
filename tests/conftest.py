import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    # tiny models: extra threads only spin against the other processes on a 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
