"""XLA:CPU compiler options and one graph hint that make convolutional networks fast on CPU.

Pass :func:`compiler_options` to ``jax.jit`` for anything that runs a flaxcnn model on
CPU (flaxcnn's own train/eval steps and benchmarks do)::

    step = jax.jit(train_step, compiler_options=flaxcnn.compiler_options())

It returns ``None`` off CPU, so the same line is right on every backend. Results are the
same up to float32 rounding: only which kernels XLA calls, and what it keeps in memory
between forward and backward, change.

What the options do, and why (ResNet-50, batch 32, 224x224, float32, training step on a
2-core Xeon; docs/performance-log.md has the figures):

* XLA:CPU hands convolutions to YNNPACK by default. YNNPACK runs the weight gradient of a
  convolution as a convolution whose window is the whole feature map, 5-13x slower than
  PyTorch's oneDNN (a 1x1 conv at 56x56: 285 ms against 30 ms). XLA's own Eigen
  convolutions compute weight gradients 3-6x faster than that, and forwards about 2x.
  The options keep YNNPACK for the matmuls and the reductions (where it is fast:
  BatchNorm's statistics) and give convolutions to Eigen.
* XLA fuses cheap elementwise producers into every consumer. In a ResNet's backward pass
  it re-computed the whole residual chain (several BatchNorms, adds and ReLUs, reading
  four full-size maps) inside each transposing copy that feeds a weight gradient: 5-7 s of
  thread time per step (two threads, 11-20 s wall). :func:`materialize` puts an
  optimisation barrier on every convolution's input, so the backward pass reads the map
  the forward pass already wrote. XLA:CPU strips barriers before fusion unless its
  ``cse_barrier_expander`` pass is disabled, which these options do; without them the
  barrier costs nothing and does nothing.
* XLA:CPU's default scheduler orders a step for concurrency. Its memory-optimised
  scheduler (``xla_cpu_scheduler_type``) keeps fewer activations alive at once: the
  training step of EfficientNet-B0 then needs half the memory (batch 8: 872 MiB against
  1882) and runs 1.3x faster, MobileNetV3-Large 1.28x; ResNet-50 needs 8% less and runs
  at the same speed, training and inference.
"""

from __future__ import annotations

import functools
import warnings

import jax
from jax import lax

from ._switch import cpu_kernels

__all__ = ["CPU_COMPILER_OPTIONS", "compiler_options", "materialize"]

# Default YNNPACK fusion types minus individual convolutions (XLA's flag syntax for this
# is ``-individual_convolution``; ``compiler_options`` takes the full list).
CPU_COMPILER_OPTIONS: dict[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type": (
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
    ),
    "xla_disable_hlo_passes": "cse_barrier_expander",
    "xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED",
}


@functools.cache
def _cpu_options_compile() -> bool:
    """Whether this jaxlib accepts the options (their names are experimental in XLA)."""

    def probe(x, w):
        y = lax.conv_general_dilated(
            materialize(x, force=True),
            w,
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return y.sum()

    x = jax.ShapeDtypeStruct((1, 4, 4, 2), "float32")
    w = jax.ShapeDtypeStruct((3, 3, 2, 2), "float32")
    try:
        jax.jit(jax.grad(probe), compiler_options=CPU_COMPILER_OPTIONS).lower(x, w).compile()
    except Exception as e:  # an XLA that renamed or dropped an option: run without them
        warnings.warn(
            f"flaxcnn: this jaxlib rejects the CPU compiler options ({e}); "
            "continuing without them (slower convolution training on CPU)",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
    return True


def compiler_options(platform: str | None = None) -> dict[str, str] | None:
    """``jax.jit(..., compiler_options=...)`` for flaxcnn models on ``platform`` (default:
    JAX's default backend): :data:`CPU_COMPILER_OPTIONS` on CPU, ``None`` elsewhere or
    if this jaxlib does not know the options (with a warning, once)."""
    platform = platform or jax.default_backend()  # a compiler's options: the platform decides
    if platform != "cpu" or not _cpu_options_compile():
        return None
    return dict(CPU_COMPILER_OPTIONS)


def materialize(x: jax.Array, *, force: bool = False) -> jax.Array:
    """``x`` unchanged, behind an optimisation barrier on CPU (or when ``force``), so XLA
    keeps it in memory for the backward pass instead of re-computing its producers in
    every consumer. See the module docstring: it takes effect under
    :func:`compiler_options`, and is free otherwise. Not on the portable paths
    (:func:`flaxcnn.xla.kernels`), which put no barrier anywhere."""
    if force or cpu_kernels():
        return lax.optimization_barrier(x)
    return x
