"""Smoke test: the benchmark script runs end to end (one tiny iteration) so it never rots.
No timing is asserted here; timing belongs in benchmarks/, not in tests."""

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import flaxcnn

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


def test_memory_mode_runs(tmp_path):
    """``--memory``: training-step memory of both frameworks against batch size, and the
    largest batch for a budget from a line through the points (one tiny model, two batches)."""
    out = tmp_path / "mem"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--models", "resnet18"]
    cmd += ["--size", "64", "--threads", "1", "--memory", "--memory-batches", "2", "4"]
    cmd += ["--memory-budget-gib", "1", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(out / "memory.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["batch"]) for r in rows] == [2, 4]
    params_mib = 11_689_512 * 4 / 2**20
    for r in rows:
        # torch holds weights, gradients and momentum. XLA's step holds weights and momentum
        # throughout; with the memory-optimised schedule each layer's update can run as soon
        # as its gradient exists, so not every gradient is alive at once.
        assert float(r["torch_mib"]) > 3 * params_mib and float(r["flax_mib"]) > 2 * params_mib
    assert float(rows[1]["torch_mib"]) > float(rows[0]["torch_mib"])  # activations grow
    assert float(rows[1]["flax_mib"]) > float(rows[0]["flax_mib"])
    md = (out / "memory.md").read_text()
    assert "| resnet18 | 64 | fp32 | 4 |" in md and "Largest batch for a 1 GiB budget" in md
    assert (out / "memory.png").stat().st_size > 1000


def test_fold_script_runs():
    """benchmarks/fold_bn.py: the folded and unfolded model agree and both are timed."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fold_bn.py"), "resnet18"]
    cmd += ["--batch", "2", "--size", "32", "--repeats", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("resnet18: batch 2, 20 BatchNorms folded, unfolded "), line
    assert float(line.rsplit(" ", 1)[1]) < 1e-5, line  # relative difference


def _load_script(module_name: str, filename: str):
    """A script of benchmarks/ as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "benchmarks" / filename)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_largest_batch_from_a_line():
    run = _load_script("bench_run", "run.py")
    rows = [run.MemRow("m", b, 224, "fp32", 100 + 10 * b, 50 + 20 * b) for b in (1, 8, 16)]
    batch, residual = run.largest_batch(rows, "torch_mib", 1000)
    assert batch == 90 and residual < 1e-9
    assert run.largest_batch(rows, "flax_mib", 1000)[0] == 47


def test_profile_classifies_samples():
    """benchmarks/profile_cpu.py sorts samples by the code they landed in: generated code
    by how concentrated it is on a few pages, the rest by symbol and shared object."""
    prof = _load_script("bench_profile", "profile_cpu.py")
    jit = "/tmp/perf-1.map"
    gemm = [(0x7F0000001000 + i % 64, "[unknown]", jit) for i in range(90)]  # one hot page
    fusions = [(0x7F0000100000 + 0x1000 * i, "[unknown]", jit) for i in range(5)]  # 5 pages
    named = [
        (1, "Eigen::internal::gemm_pack_colmajor_block<TensorImagePatchOp>", "libjax_common.so"),
        (2, "Eigen::internal::gemm_pack_colmajor_block<TensorMap>", "libjax_common.so"),
        (3, "_int_malloc", "/usr/lib/x86_64-linux-gnu/libc.so.6"),
        (4, "ynn::sum_kn_fp32_avx512", "libjax_common.so"),
        (5, "clear_page_erms", "[kernel.kallsyms]"),
    ]
    counts = prof.classify(gemm + fusions + named, hot_page=0.05)
    assert counts[prof.SHARED] == 90 and counts[prof.OTHER_GEN] == 5
    assert counts["Eigen packing: convolution patches"] == 1
    assert counts["Eigen packing: matrices"] == 1
    assert counts["malloc / free"] == counts["YNNPACK"] == 1
    assert counts["kernel (page faults, scheduling)"] == 1
    assert sum(counts.values()) == 100
    # perf script's lines; a demangled symbol may hold " (" itself: the object is the last
    text = "    7f6273b108ec [unknown] (/tmp/perf-17231.map)\n"
    text += "  d677904 std::_Function_handler<void (), xla::Task>::_M_invoke (/x/libjax_common.so)"
    assert prof._parse_script(text) == [
        (0x7F6273B108EC, "[unknown]", "/tmp/perf-17231.map"),
        (0xD677904, "std::_Function_handler<void (), xla::Task>::_M_invoke", "/x/libjax_common.so"),
    ]


def test_profile_script_runs(tmp_path):
    """benchmarks/profile_cpu.py end to end on a tiny model, where ``perf`` can sample."""
    prof = _load_script("bench_profile", "profile_cpu.py")
    why = prof.perf_usable()
    if why:
        pytest.skip(why)
    out = tmp_path / "prof"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "profile_cpu.py"), "--model", "resnet18"]
    cmd += ["--batch", "2", "--size", "32", "--steps", "1", "--warmup", "1", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(out / "profile.csv") as f:
        rows = list(csv.DictReader(f))
    cats = {r["category"] for r in rows}
    assert cats <= set(prof.CATEGORIES) and rows
    md = (out / "profile.md").read_text()
    assert "| CPU s per step |" in md and "GLIBC_TUNABLES" in md


def test_device_check_smoke(tmp_path):
    """benchmarks/device_check.py --smoke: each part once on a tiny model, on the suite's 8
    CPU devices (XLA_FLAGS from conftest), into CSV, markdown and figure, and exit 0."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--smoke"]
    cmd += ["--out", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one torch thread, as the suite's
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "correctness PASS: 3 passed, 0 failed, 0 crashed" in res.stdout
    out = tmp_path / "cpu"
    with open(out / "device_check.csv") as f:
        rows = list(csv.DictReader(f))
    part = {p: [r for r in rows if r["part"] == p] for p in "abcd"}
    # Which tied maximum gets a max pool's gradient: on CPU (auto kernels) torch's, always.
    assert [(r["item"], r["status"]) for r in part["a"]] == [
        ("max-pool ties, finite", "pass"),
        ("max-pool ties, non-finite", "measured"),
        ("resnet: resnet18 (torchvision)", "pass"),
    ]
    assert part["a"][1]["note"] == "gradient equal to torch's"
    assert [(r["item"], r["status"]) for r in part["b"]] == [
        ("resnet: resnet18 (torchvision)", "pass")
    ]
    assert float(part["b"][0]["flax"]) > 0 and float(part["b"][0]["torch"]) > 0
    # ResNet-50's targets, evaluated on ResNet-18's (meaningless) figures
    assert [(r["item"], r["target"]) for r in part["c"]] == [
        ("resnet18 inference vs torch eager", ">= 1.2"),
        ("resnet18 train vs torch eager", ">= 1.2"),
        ("resnet18 train", ">= 3500 (H100 SXM)"),
    ]
    assert {r["status"] for r in part["c"][:2]} <= {"met", "not met"}
    assert part["c"][2]["status"] == "measured"  # not an H100
    assert [r["item"] for r in part["d"]] == [
        "lenet5 train step on 1 device",
        *(f"lenet5 train step on {n} devices" for n in (2, 4, 8)),
    ]
    assert float(part["d"][0]["value"]) == 1.0 and all(float(r["flax"]) > 0 for r in part["d"])
    md = (out / "device_check.md").read_text()
    assert "Hardware:" in md and "Versions:" in md
    for r in rows:
        assert f"| {r['item']} | **{r['status']}** |" in md
    assert (out / "device_check.png").stat().st_size > 10_000
    assert (out / "results.md").exists()  # run.py's own tables for part (c)


@pytest.fixture(scope="module")
def device_check():
    return _load_script("bench_device_check", "device_check.py")


def test_device_check_one_model_per_family(device_check):
    """Every family with a torch source gets a representative, PREFERRED's names exist."""
    reps = device_check.representatives()
    families = {
        flaxcnn.get_model_spec(n).family
        for n in flaxcnn.list_models()
        if flaxcnn.get_model_spec(n).sources
    }
    assert sorted(r.family for r in reps) == sorted(families)
    for family, name in device_check.PREFERRED.items():
        assert flaxcnn.get_model_spec(name).family == family
    for r in reps:
        assert flaxcnn.get_model_spec(r.model).sources[r.source] == r.source_name


def test_device_check_budget(device_check):
    """Parts share the time left by weight; an item starts only if it is likely to fit."""
    now = [0.0]
    budget = device_check.Budget(100, start=0.0, clock=lambda: now[0])
    budget.start_part(0.5, first_guess=10)  # until 50
    assert budget.fits()
    now[0] = 45
    assert not budget.fits()  # the first item is guessed at 10 s
    budget.took(2)
    assert budget.fits()  # the part's items take 2 s
    now[0] = 60  # an item ran over: the next part shares what is left
    budget.start_part(1.0)
    assert budget.fits() and budget.part_end == 100
    now[0] = 100
    assert not budget.fits()
