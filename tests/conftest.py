from __future__ import annotations

from pathlib import Path

import pytest

# tests/test_new_method.py writes a method file into the methods folder and removes it; a run
# killed in between leaves it there, where the next run would register it: gone first.
THROWAWAY_METHODS = "trainables/sparsity/methods/throwaway_*.py"


def pytest_sessionstart(session):
    for path in Path(__file__).resolve().parents[1].glob(THROWAWAY_METHODS):
        path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def local_ray():
    """One real local Ray for the whole test session (loopback only, no dashboard)."""
    import ray

    from tuner.ray_session import init_ray

    init_ray(dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: torch's thread hand-off costs more than the work on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
