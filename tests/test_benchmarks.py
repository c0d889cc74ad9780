"""Smoke test: the benchmark script runs end to end (one tiny iteration) so it never rots.
No timing is asserted here; timing belongs in benchmarks/, not in tests."""

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_script_runs(tmp_path):
    out = tmp_path / "bench"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "run.py"),
        "--models",
        "resnet18",
        "--batch",
        "2",
        "--size",
        "32",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["task"] for r in rows} == {"inference", "train"}
    for r in rows:
        assert float(r["torch_ips"]) > 0 and float(r["flax_ips"]) > 0
        assert abs(float(r["ratio"]) - float(r["flax_ips"]) / float(r["torch_ips"])) < 1e-9
    md = (out / "results.md").read_text()
    assert "Hardware:" in md and "| resnet18 | train |" in md
    assert (out / "results.png").stat().st_size > 1000
