"""Test settings: CPU only, float32 matmuls at full precision, no network."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Multi-device code is tested on simulated CPU devices; must be set before jax is imported.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # timm must never download in tests

import jax
import pytest

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """Two xdist workers share two cores: one intra-op thread each keeps torch from thrashing."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a test dependency
        return
    torch.set_num_threads(1)
