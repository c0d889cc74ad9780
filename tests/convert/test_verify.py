"""verify's comparisons cannot read a mismatch as agreement: NaN, inf, wrong shapes and a
wrong number of outputs all fail, in the output, export, running-statistics and gradient
checks; and ``python -m flaxcnn.convert verify`` reports bad input in one line."""

import types

import numpy as np
import pytest
import torch

import flaxcnn
from flaxcnn.convert.__main__ import _pairs
from flaxcnn.convert.__main__ import main as convert_main
from flaxcnn.convert.verify import CheckResult, _compare_trees, _stats_diff, compare_outputs

RNG = np.random.default_rng(0)


def _pair(n=2):
    ref = [RNG.standard_normal((2, 5, 4, 3)).astype(np.float32) for _ in range(n)]
    return [r.copy() for r in ref], ref


def _check(diff, ref_max, rtol=1e-4):
    return CheckResult("eval", (5, 4), diff, ref_max, rtol * max(1.0, ref_max))


def test_equal_outputs_pass():
    got, ref = _pair()
    diff, ref_max = compare_outputs(got, ref)
    assert diff == 0.0 and _check(diff, ref_max).ok


@pytest.mark.parametrize("side", ["got", "ref"])
@pytest.mark.parametrize("which", [0, 1])  # the first output, and one after it (FCN's out)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_anywhere_fails(side, which, bad):
    got, ref = _pair()
    (got if side == "got" else ref)[which][1, 2, 3, 0] = bad
    diff, ref_max = compare_outputs(got, ref)
    assert not _check(diff, ref_max).ok
    assert not np.isfinite(diff)


def test_the_same_infinity_on_both_sides_is_no_difference():
    got, ref = _pair()
    got[0][0, 0, 0, 0] = ref[0][0, 0, 0, 0] = np.inf
    diff, _ = compare_outputs(got, ref)
    assert diff == 0.0


@pytest.mark.parametrize(
    "shape",
    [(1, 5, 4, 3), (2, 5, 4, 1), (2, 1, 4, 3), (5, 4, 3), (2, 4, 5, 3)],  # broadcastable or not
)
def test_a_wrong_shape_fails(shape):
    got, ref = _pair()
    got[1] = np.zeros(shape, np.float32) + ref[1].mean()
    diff, ref_max = compare_outputs(got, ref)
    assert diff == np.inf and not _check(diff, ref_max).ok


def test_a_missing_output_fails():
    got, ref = _pair()
    diff, ref_max = compare_outputs(got[:1], ref)
    assert diff == np.inf and not _check(diff, ref_max).ok


@pytest.mark.parametrize("bad", [np.nan, np.inf, "shape"])
@pytest.mark.parametrize("position", ["first", "last"])
def test_running_statistics_check_fails(bad, position):
    """``_stats_diff``: a NaN/inf running variance or a wrongly shaped statistic, in the first
    or the last BatchNorm compared, fails the train check."""
    names = [f"bn{i}.running_var" for i in range(3)]
    ref = {n: torch.rand(4) + 0.5 for n in names}
    new_state = {
        "batch_stats": {f"bn{i}": {"var": ref[n].numpy().copy()} for i, n in enumerate(names)}
    }
    key = names[0] if position == "first" else names[-1]
    i = names.index(key)
    if bad == "shape":
        new_state["batch_stats"][f"bn{i}"]["var"] = np.full((1,), 1.0, np.float32)
    else:
        new_state["batch_stats"][f"bn{i}"]["var"][2] = bad
    tmodel = types.SimpleNamespace(state_dict=lambda: ref)
    report = types.SimpleNamespace(
        mapping={n: ("batch_stats", f"bn{i}", "var") for i, n in enumerate(names)}
    )
    worst = _stats_diff(tmodel, new_state, report)
    check = _check(0.0, 1.0)
    check.stats_max_rel_diff, check.stats_bound = worst, 1e-5
    assert not check.ok
    # and without the injected fault the same check passes
    tmodel_ok = types.SimpleNamespace(state_dict=lambda: ref)
    clean = {"batch_stats": {f"bn{i}": {"var": ref[n].numpy().copy()} for i, n in enumerate(names)}}
    assert _stats_diff(tmodel_ok, clean, report) == 0.0


def _trees():
    ref = {
        ("conv", "kernel"): RNG.standard_normal((3, 3, 2, 4)),
        ("bn", "bias"): RNG.standard_normal(4),
    }
    return {k: v.copy() for k, v in ref.items()}, ref


@pytest.mark.parametrize("fault", ["nan", "inf", "shape", "missing", "extra", "off"])
def test_gradient_comparison_fails_on_any_fault(fault):
    """The gradient and SGD checks compare every tensor by name: a NaN, an infinity, a wrong
    shape, a tensor on one side only, or one element off by 1e-8 fails the 1e-9 bound."""
    got, ref = _trees()
    names = {("conv", "kernel"): "conv.weight", ("bn", "bias"): "bn.bias"}
    assert _compare_trees("grad", (5, 7), got, ref, names, 1e-9).ok
    if fault == "nan":
        got["bn", "bias"][2] = np.nan
    elif fault == "inf":
        got["conv", "kernel"][0, 0, 0, 0] = np.inf
    elif fault == "shape":
        got["bn", "bias"] = got["bn", "bias"][None]
    elif fault == "missing":
        del got["bn", "bias"]
    elif fault == "extra":
        got["fc", "bias"] = np.zeros(3)
    else:
        got["conv", "kernel"][1, 2, 0, 3] += 1e-8
    check = _compare_trees("grad", (5, 7), got, ref, names, 1e-9)
    assert not check.ok
    assert check.worst in ("bn.bias", "conv.weight", "fc/bias")


def _one_line_error(capsys, argv) -> str:
    assert convert_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_cli_unknown_name_is_one_line_with_suggestions(capsys):
    err = _one_line_error(capsys, ["verify", "resnet_18"])
    assert err.startswith("python -m flaxcnn.convert: error: unknown torchvision model 'resnet_18'")
    assert "'resnet18'" in err
    err = _one_line_error(capsys, ["verify", "--grad", "resnet18", "--modes", "evl"])
    assert "unknown mode(s) ['evl']" in err


def test_cli_all_is_every_pair():
    pairs = {
        (source, src_name)
        for name in flaxcnn.list_models()
        for source, src_name in flaxcnn.get_model_spec(name).sources.items()
    }
    assert set(_pairs(["all"], None)) == pairs
    assert set(_pairs(["all"], "timm")) == {p for p in pairs if p[0] == "timm"}
