import pytest
import torch

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA is not available on this machine"
)

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
