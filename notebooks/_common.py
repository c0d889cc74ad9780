"""What every notebook here shares: the small-mode switch, saving figures, a scratch folder.

``FLAXCNN_NOTEBOOK_SMALL=1`` selects the quick settings CI runs; with
``FLAXCNN_NOTEBOOK_FIGURES=DIR`` every figure is also saved as ``DIR/<name>.png``.
"""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

SMALL = os.environ.get("FLAXCNN_NOTEBOOK_SMALL") == "1"
FIGURES = os.environ.get("FLAXCNN_NOTEBOOK_FIGURES")


def show(fig, name: str) -> None:
    """Display a figure (inline in Jupyter) and save it as PNG when FIGURES is set."""
    fig.tight_layout()
    if FIGURES:
        Path(FIGURES).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(FIGURES) / f"{name}.png", dpi=110)
    plt.show()
    plt.close(fig)


def device_flags() -> str:
    """``XLA_FLAGS`` with simulated CPU devices, 2 in small mode and 8 in full, unless the
    environment already chose a count (the tests set 8). Assign before JAX starts."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return flags
    return f"{flags} --xla_force_host_platform_device_count={2 if SMALL else 8}".strip()


def classic_threefry() -> None:
    """JAX 0.10's default "partitionable" threefry compiles slowly on CPU (seconds per random
    op at XLA's default optimisation); the classic one is quick. Only which random numbers
    are drawn changes."""
    import jax

    jax.config.update("jax_threefry_partitionable", False)


def scratch_dir(prefix: str) -> str:
    """A fresh temporary folder for a notebook's datasets, runs and checkpoints, deleted
    when the kernel (or script) exits."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path
