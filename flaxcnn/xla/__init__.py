"""Everything backend-specific in flaxcnn, behind one kernel decision.

* :func:`kernels` / :func:`set_kernels` / ``$FLAXCNN_KERNELS``: ``'auto'`` (XLA:CPU's fast
  lowerings on CPU, the portable ones elsewhere) or ``'portable'`` (what GPUs and TPUs run,
  on any backend). :func:`cpu_kernels` is the one test every implementation choice makes.
* :func:`conv2d`, :func:`max_pool`: the lowerings the layers call.
* :func:`compiler_options`, :func:`materialize`: XLA:CPU compiler options and the
  optimisation barrier they make effective.
"""

from ._options import CPU_COMPILER_OPTIONS, compiler_options, materialize
from ._switch import KERNEL_MODES, cpu_kernels, kernel_mode, kernels, set_kernels
from .conv import DEPTHWISE_IMPLS, MAX_SPLIT_GROUPS, conv2d, depthwise_conv2d_shift
from .pooling import max_pool

__all__ = [
    "CPU_COMPILER_OPTIONS",
    "DEPTHWISE_IMPLS",
    "KERNEL_MODES",
    "MAX_SPLIT_GROUPS",
    "compiler_options",
    "conv2d",
    "cpu_kernels",
    "depthwise_conv2d_shift",
    "kernel_mode",
    "kernels",
    "materialize",
    "max_pool",
    "set_kernels",
]
