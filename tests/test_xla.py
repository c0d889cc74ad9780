"""flaxcnn.xla: the CPU compiler options take effect and change no result."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import flaxcnn
from flaxcnn.xla import CPU_COMPILER_OPTIONS, compiler_options, materialize


def test_options_are_for_cpu_only_and_this_jaxlib_accepts_them():
    assert compiler_options("gpu") is None
    assert compiler_options("tpu") is None
    # The pinned jaxlib knows them (a renamed option would silently cost the speed-up).
    assert compiler_options("cpu") == CPU_COMPILER_OPTIONS
    assert flaxcnn.compiler_options() == CPU_COMPILER_OPTIONS  # the tests run on CPU


def test_materialize_is_the_identity_with_the_identity_gradient():
    x = jnp.arange(12.0).reshape(3, 4)
    assert np.array_equal(materialize(x), x)
    g = jax.grad(lambda v: jnp.sum(jnp.sin(materialize(v)) * v))(x)
    want = jax.grad(lambda v: jnp.sum(jnp.sin(v) * v))(x)
    np.testing.assert_array_equal(g, want)


@pytest.fixture(scope="module")
def resnet_grad():
    """A small ResNet's loss, gradients and new BN statistics in one function."""
    model = flaxcnn.create_model("resnet18", num_classes=10)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, 40, 36, 3), np.float32))
    y = jnp.arange(4)
    variables = model.init(jax.random.key(0), x)

    def fn(params, batch_stats):
        def loss(p):
            logits, new = model.apply(
                {"params": p, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

        (value, new), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return value, grads, new

    return fn, (variables["params"], variables["batch_stats"])


def test_options_take_effect(resnet_grad):
    fn, args = resnet_grad
    plain = jax.jit(fn).lower(*args).compile().as_text()
    tuned = jax.jit(fn, compiler_options=compiler_options("cpu")).lower(*args).compile().as_text()
    # Without the options XLA strips the barriers; with them they survive fusion...
    assert "opt-barrier" not in plain
    assert tuned.count(" opt-barrier(") >= 20  # one per conv input
    # ...and convolutions are XLA's own (Eigen), none inside a YNNPACK fusion.
    assert " convolution(" in tuned
    assert _ynn_fused_ops(plain) & {"convolution"}  # the default this undoes
    assert not _ynn_fused_ops(tuned) & {"convolution"}


def test_memory_optimised_schedule_keeps_less_alive(resnet_grad):
    """The scheduler option halves what the step holds at its peak (measured: 31 -> 12 MiB
    here; EfficientNet-B0 at 224, batch 8: 1882 -> 872 MiB)."""
    fn, args = resnet_grad
    default = {k: v for k, v in CPU_COMPILER_OPTIONS.items() if k != "xla_cpu_scheduler_type"}

    def temp_mib(options):
        compiled = jax.jit(fn, compiler_options=options).lower(*args).compile()
        return compiled.memory_analysis().temp_size_in_bytes / 2**20

    assert temp_mib(CPU_COMPILER_OPTIONS) < 0.6 * temp_mib(default)


def _ynn_fusions(hlo: str) -> list[set[str]]:
    """The HLO opcodes inside each YNNPACK fusion of a compiled module's text."""
    bodies = dict(re.findall(r"(?ms)^(%\S+) \(.*?\n(.*?)^}", hlo))
    called = re.findall(r"calls=(%[\w.-]+).*__ynn_fusion", hlo)
    return [set(re.findall(r"= \S+ ([a-z-]+)\(", bodies[c])) for c in called]


def _ynn_fused_ops(hlo: str) -> set[str]:
    """The HLO opcodes inside the YNNPACK fusions of a compiled module's text."""
    return set().union(*_ynn_fusions(hlo))


def test_max_pool_is_not_fused_with_its_neighbours():
    """VGG's conv -> ReLU -> max pool -> classifier: without the barriers around the pool,
    XLA:CPU handed the conv and the pool (then a ``reduce-window``), and the pool and the
    classifier's matmuls, to YNNPACK as single fusions (VGG-16 inference at batch 8 then
    took 5.1 s instead of 2.5). The pool is now a max of strided slices, outside YNNPACK."""
    from flaxcnn.layers import Conv2d, max_pool2d

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = max_pool2d(nn.relu(Conv2d(8, 3, padding=1)(x)), 2)
            return nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))

    net, x = Net(), jnp.ones((2, 16, 16, 3))
    variables = net.init(jax.random.key(0), x)
    hlo = jax.jit(net.apply, compiler_options=compiler_options("cpu"))
    fusions = _ynn_fusions(hlo.lower(variables, x).compile().as_text())
    assert any("dot" in ops for ops in fusions)  # the classifier's matmul is YNNPACK's
    for ops in fusions:
        assert not ops & {"reduce-window", "slice", "convolution"}, ops


def test_options_change_no_result(resnet_grad):
    """Kernels and fusion differ; values agree to float32 rounding (measured 4e-6)."""
    fn, args = resnet_grad
    want = jax.jit(fn)(*args)
    got = jax.jit(fn, compiler_options=compiler_options("cpu"))(*args)
    for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
        w, g = np.asarray(w), np.asarray(g)
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-4 * max(1.0, float(np.abs(w).max())))


def _primitives(jaxpr) -> list:
    """Every equation of a closed jaxpr, sub-jaxprs (jit, custom_jvp) included."""
    out = []
    for eqn in jaxpr.eqns:
        out.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            out.extend(_primitives(sub))
    return out


def _conv_kinds(fn, *args) -> tuple[set[int], set[str]]:
    """The ``feature_group_count`` of every convolution, and the names of the jitted
    functions, in ``fn``'s forward-and-backward jaxpr."""
    eqns = _primitives(jax.make_jaxpr(fn)(*args).jaxpr)
    groups = {
        e.params["feature_group_count"] for e in eqns if e.primitive.name == "conv_general_dilated"
    }
    names = {str(e.params.get("name")) for e in eqns if "jaxpr" in e.params}
    return groups, names


def test_kernel_switch_changes_the_implementation():
    """``portable`` gives a MobileNet the grouped ``lax`` convolutions GPUs and TPUs run, with
    no shifted-slice depthwise; ``auto`` on CPU the opposite. The setting is part of jit's
    cache key: a function jitted under one mode is traced again under the other."""
    model = flaxcnn.create_model("mobilenetv2_100", num_classes=10, drop_rate=0.0)
    x = jnp.zeros((1, 32, 32, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)

    def loss(v, x):
        out, _ = model.apply(v, x, train=True, mutable=["batch_stats"])
        return out.sum()

    fn = jax.grad(loss)
    groups, names = _conv_kinds(fn, variables, x)
    assert "depthwise_conv2d_shift" in names and groups == {1}
    with flaxcnn.kernels("portable"):
        assert flaxcnn.xla.kernel_mode() == "portable" and not flaxcnn.xla.cpu_kernels()
        groups, names = _conv_kinds(fn, variables, x)
    assert "depthwise_conv2d_shift" not in names
    assert max(groups) == 960  # the last block's depthwise 3x3, one grouped convolution

    conv = flaxcnn.layers.Conv2d(4, 3, groups=4)
    jitted = jax.jit(conv.apply)
    v = {"params": {"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.zeros(4)}}
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 5, 5, 4)), jnp.float32)
    hlo, out = {}, {}
    for mode in ("auto", "portable", "auto"):
        with flaxcnn.kernels(mode):
            hlo[mode] = jitted.lower(v, x).as_text()
            out[mode] = jitted(v, x)
    assert "feature_group_count = 4" in hlo["portable"]
    assert "convolution" not in hlo["auto"]  # shifted slices
    np.testing.assert_allclose(out["portable"], out["auto"], rtol=1e-6, atol=1e-6)


def test_kernel_switch_from_the_environment_and_errors(monkeypatch):
    from flaxcnn.xla import kernel_mode

    assert kernel_mode() == "auto"
    monkeypatch.setenv("FLAXCNN_KERNELS", "portable")
    assert kernel_mode() == "portable" and not flaxcnn.xla.cpu_kernels()
    with flaxcnn.kernels("auto"):  # Python's setting wins over the environment
        assert flaxcnn.xla.cpu_kernels()
    monkeypatch.setenv("FLAXCNN_KERNELS", "gpu")
    with pytest.raises(ValueError, match=r"FLAXCNN_KERNELS='gpu'.*\('auto', 'portable'\)"):
        kernel_mode()
    monkeypatch.delenv("FLAXCNN_KERNELS")
    with pytest.raises(ValueError, match="kernels='fast'"), flaxcnn.kernels("fast"):
        pass
    flaxcnn.set_kernels("portable")
    try:
        assert kernel_mode() == "portable"
    finally:
        flaxcnn.set_kernels(None)
    assert kernel_mode() == "auto"


def test_portable_paths_put_no_barrier(resnet_grad):
    fn, args = resnet_grad
    with flaxcnn.kernels("portable"):
        tuned = jax.jit(fn, compiler_options=compiler_options("cpu")).lower(*args)
        assert "optimization_barrier" not in tuned.as_text()
