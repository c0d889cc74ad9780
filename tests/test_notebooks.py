"""The notebooks run: each ``notebooks/*.py`` executes as a script in a fresh interpreter,
in small mode (``FLAXCNN_NOTEBOOK_SMALL=1``), and ends with assertions on what it showed.
Figures go to a temporary folder as PNG files; the notebooks are also valid jupytext
percent-format sources (``jupytext --to ipynb`` pairs them)."""

import os
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9]*.py"))


def test_there_are_notebooks():
    assert [p.name for p in NOTEBOOKS][:2] == [
        "01_architectures_tour.py",
        "02_pytorch_to_flax.py",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_paired_percent_source(path):
    nb = jupytext.read(path)
    assert nb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    kinds = {c.cell_type for c in nb.cells}
    assert kinds == {"markdown", "code"} and nb.cells[0].cell_type == "markdown"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert jupytext.writes(nb, fmt="py:percent") == path.read_text()  # round trip, no drift


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    env = {
        **os.environ,
        "MPLBACKEND": "Agg",
        "FLAXCNN_NOTEBOOK_SMALL": "1",
        "FLAXCNN_NOTEBOOK_FIGURES": str(tmp_path / "figures"),
        "FLAXCNN_CACHE": str(tmp_path / "cache"),
        "TMPDIR": str(tmp_path / "tmp"),
    }
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (
        f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )
    figures = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert figures, f"{path.name} saved no figure"
    # The notebooks' own scratch folders (notebooks/_common.scratch_dir) are gone; tfds
    # leaves a folder of its own there (not ours to delete).
    left = [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("flaxcnn")]
    assert not left, f"{path.name} left temporary files behind: {left}"
