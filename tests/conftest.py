from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def local_ray():
    """One real local Ray for the whole test session (loopback only, no dashboard)."""
    import ray

    from tuner.ray_session import init_ray

    init_ray(dashboard=False)
    yield ray
    ray.shutdown()
