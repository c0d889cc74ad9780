"""What every notebook here shares: the small-mode switch and saving figures.

``FLAXCNN_NOTEBOOK_SMALL=1`` selects the quick settings CI runs; with
``FLAXCNN_NOTEBOOK_FIGURES=DIR`` every figure is also saved as ``DIR/<name>.png``.
"""

import os
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
