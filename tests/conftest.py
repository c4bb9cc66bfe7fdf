import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

# Every op test runs on the CPU; the CUDA variants run where a GPU is visible and skip cleanly elsewhere.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")])]


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture
def seeded():
    torch.manual_seed(1234)
    return torch.Generator().manual_seed(1234)


@pytest.fixture(autouse=True)
def image_cache(tmp_path_factory, monkeypatch):
    """Each test decodes image folders into a cache of its own, never the user's ~/.cache (subprocesses inherit it)."""
    path = tmp_path_factory.mktemp("image-cache")
    monkeypatch.setenv("INTERPGAN_CACHE", str(path))
    return path
