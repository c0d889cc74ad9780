"""Test settings: CPU only, float32 matmuls at full precision, no network."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Multi-device code is tested on simulated CPU devices; must be set before jax is imported.
# The suite is dominated by XLA:CPU compile time (hundreds of models, each compiled a few times,
# run once on tiny batches): skip LLVM's expensive optimisation passes. Measured: ResNet-50 init
# compile 17 s -> 11 s, DenseNet-121 forward+backward compile 86 s -> 53 s. Results stay IEEE
# float32; every numerical bound is unchanged.
os.environ.setdefault(
    "XLA_FLAGS",
    "--xla_force_host_platform_device_count=8 "
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true",
)
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


@pytest.fixture(autouse=True)
def _release_memory(request):
    """Large-model tests (equivalence, contract) leave torch models and XLA executables
    behind; an xdist worker that runs dozens of them must not grow without bound."""
    yield
    if request.node.get_closest_marker(
        "parametrize"
    ) is not None and request.module.__name__.endswith(("test_equivalence", "test_all_models")):
        import gc

        jax.clear_caches()
        gc.collect()


@pytest.fixture(params=["auto", "portable"])
def kernel_mode(request):
    """Run a test under both kernel paths (``flaxcnn.kernels``): ``auto`` takes the XLA:CPU
    lowerings here, ``portable`` exactly what GPUs and TPUs run."""
    import flaxcnn

    with flaxcnn.kernels(request.param):
        yield request.param
