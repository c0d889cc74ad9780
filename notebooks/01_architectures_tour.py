# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. A tour of the architectures, with the lectures' arithmetic done by the models
#
# The seed lectures (LeNet, AlexNet, VGG, GoogLeNet, ResNet, MobileNet, ...) compute by hand
# how big a layer's output is, how many weights it has, how much memory and how many
# multiply-adds it costs, and how far a pixel "sees". Here every one of those numbers is
# read off a flaxcnn model, without running it: shapes come from `jax.eval_shape`, FLOPs
# from XLA's cost analysis of the lowered computation, receptive fields from the jaxpr.
# Each hand formula is then checked against what the model says.
#
# Set `FLAXCNN_NOTEBOOK_SMALL=1` for the quick version CI runs (fewer models).

# %%
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import flaxcnn
from flaxcnn.layers import Conv2d, DepthwiseConv2d, max_pool2d
from flaxcnn.summary import layer_receptive_fields, receptive_fields, summary

from _common import SMALL, show  # small-mode switch, figures saved as PNG

KEY = jax.random.key(0)


def xla_flops(fn, *args):
    """FLOPs of ``fn(*args)`` by XLA's cost analysis of the lowered computation (no compile),
    on the portable kernels: every convolution one op (on CPU a grouped convolution is a
    loop over its groups, and XLA counts a loop's body once)."""
    with flaxcnn.kernels("portable"):
        return jax.jit(fn).lower(*args).cost_analysis()["flops"]


def abstract(shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


# %% [markdown]
# ## The zoo
#
# Every family, one model each, with its summary: parameters, FLOPs (XLA counts a
# multiply-add as 2), activation memory per image, and the receptive field of the last
# feature map (per stage too, where the model can return its stages).

# %%
families = {}
for name in flaxcnn.list_models():
    families.setdefault(flaxcnn.get_model_spec(name).family, []).append(name)
print(f"{len(flaxcnn.list_models())} models in {len(families)} families:")
for family, names in families.items():
    print(f"  {family:16s} {', '.join(names)}")

SMALL_TOUR = ["lenet5", "alexnet", "vgg16", "nin", "googlenet", "resnet18"]
SMALL_TOUR += ["mobilenetv1_100", "mobilenetv3_small_100"]
TOUR = (
    SMALL_TOUR
    if SMALL
    else [
        "lenet5",
        "alexnet",
        "vgg16",
        "nin",
        "googlenet",
        "inception_v3",
        "resnet18",
        "resnet50",
        "resnext50_32x4d",
        "resnetv2_50",
        "legacy_seresnext26_32x4d",
        "densenet121",
        "xception41",
        "mobilenetv1_100",
        "mobilenetv2_100",
        "mobilenetv3_large_100",
        "efficientnet_b0",
        "tf_efficientnetv2_b0",
        "convnext_tiny",
        "fcn_resnet50",
        "unet_padded",
    ]
)
assert SMALL or {flaxcnn.get_model_spec(n).family for n in TOUR} == set(families)
summaries = {}
for name in TOUR:
    summaries[name] = summary(name, compile=False)
    print(summaries[name], end="\n\n")

# %% [markdown]
# ## AlexNet, layer by layer
#
# The lecture prints torchvision's AlexNet with `torchsummary`: output shapes
# 224 → 55 → 27 → 13 → 13 → 13 → 6 and 61,100,840 parameters. Here the same table comes from
# the Flax model: every `Conv2d` and `Dense` call is intercepted while the model is traced
# abstractly, which gives each layer's input and output shapes; the weights and biases come
# from its variables. Pooling layers are plain functions, so they show up as the change in
# shape between one layer's output and the next one's input.


# %%
@functools.cache
def layer_calls(name):
    """``(variables, calls)`` of a registered model at its default input size: every
    Conv2d/Dense call as (path, module, input shape, output shape)."""
    model = flaxcnn.create_model(name)
    x = abstract((1, *flaxcnn.get_model_spec(name).input_size))
    variables = jax.eval_shape(model.init, KEY, x)
    calls = []

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and isinstance(context.module, (Conv2d, nn.Dense)):
            path = "/".join(context.module.path)
            calls.append((path, context.module, args[0].shape, out.shape))
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(model.apply, variables, x)
    return variables, calls


def params_at(variables, path):
    node = variables["params"]
    for k in path.split("/"):
        node = node[k]
    return node


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_out(n, k, s=1, p=0, d=1):
    """The lecture's output-size formula: floor((n + 2p - d(k - 1) - 1) / s) + 1
    (``p`` may be a (before, after) pair)."""
    p_total = sum(p) if isinstance(p, tuple) else 2 * p
    return (n + p_total - d * (k - 1) - 1) // s + 1


def taps(n_in, n_out, k, s, p, d=1):
    """(output, tap) pairs along one axis whose input index lies inside the map."""
    return sum(0 <= o * s - p + t * d < n_in for o in range(n_out) for t in range(k))


alex_vars, alex_calls = layer_calls("alexnet")
rf = layer_receptive_fields("alexnet")
rows, prev_out = [], (224, 224)
print(
    f"{'layer':14s} {'kernel':>10s} {'input':>14s} {'output':>14s} {'weights':>12s} "
    f"{'biases':>7s} {'params':>12s} {'act KiB':>9s} {'RF':>5s}"
)
for path, mod, shape_in, shape_out in alex_calls:
    if len(shape_in) == 4 and shape_in[1:3] != prev_out:  # a max pool 3/2 sat in between
        print(f"{'  max pool 3/2':14s} {'3x3/2':>10s} {prev_out!s:>14s} {shape_in[1:3]!s:>14s}")
        assert shape_in[1] == conv_out(prev_out[0], 3, 2)  # floor((55 - 3) / 2) + 1 = 27
    p = params_at(alex_vars, path)
    weights, biases = math.prod(p["kernel"].shape), math.prod(p["bias"].shape)
    kernel = "x".join(map(str, p["kernel"].shape[:2])) if isinstance(mod, Conv2d) else "dense"
    if isinstance(mod, Conv2d):
        kernel += f"/{pair(mod.stride)[0]}"
    field = rf[path].size[0] if path in rf else ""
    act_kib = math.prod(shape_out) * 4 / 1024
    rows.append((path, shape_in, shape_out, weights, biases))
    print(
        f"{path:14s} {kernel:>10s} {shape_in[1:]!s:>14s} {shape_out[1:]!s:>14s} "
        f"{weights:>12,} {biases:>7,} {weights + biases:>12,} {act_kib:>9.1f} {field!s:>5s}"
    )
    if len(shape_out) == 4:
        prev_out = shape_out[1:3]
alex_total = sum(w + b for *_, w, b in rows)
alex_params = sum(x.size for x in jax.tree.leaves(alex_vars["params"]))
print(f"total parameters: {alex_total:,} (the model: {alex_params:,})")

# %% [markdown]
# The lecture's per-layer counts (torchsummary on torchvision's model) are exactly these:
# a conv has `k·k·C_in·C_out` weights and `C_out` biases, a dense layer `in·out + out`.

# %%
LECTURE_ALEXNET = [23_296, 307_392, 663_936, 884_992, 590_080, 37_752_832, 16_781_312, 4_097_000]
assert [w + b for *_, w, b in rows] == LECTURE_ALEXNET
assert alex_total == alex_params == 61_100_840
for (_, shape_in, shape_out, w, b), (_, mod, *_) in zip(rows[:5], alex_calls, strict=False):
    k = pair(mod.kernel_size)
    assert w == k[0] * k[1] * shape_in[-1] * shape_out[-1] and b == shape_out[-1]
spatial = [224] + [s_out[1] for _, _, s_out, *_ in rows[:5]]
print("spatial sizes through the convs:", " → ".join(map(str, spatial)))
assert spatial == [224, 55, 27, 13, 13, 13]

# %% [markdown]
# ## Conv output-size arithmetic, checked on every convolution
#
# `n_out = floor((n + 2p - d(k - 1) - 1) / s) + 1` for torch-style explicit padding, and
# `ceil(n / s)` for TensorFlow's 'SAME'. Every `Conv2d` call of these models is checked
# against the shape the model actually produces.

# %%
CHECK = ["alexnet", "resnet18", "googlenet"] if SMALL else TOUR
checked = 0
for name in CHECK:
    _, calls = layer_calls(name)
    for path, mod, shape_in, shape_out in calls:
        if not isinstance(mod, Conv2d):
            continue
        (kh, kw), (sh, sw), (dh, dw) = map(pair, (mod.kernel_size, mod.stride, mod.dilation))
        if isinstance(mod.padding, str):
            want = (
                (-(-shape_in[1] // sh), -(-shape_in[2] // sw))
                if mod.padding.lower() == "same"
                else (conv_out(shape_in[1], kh, sh, 0, dh), conv_out(shape_in[2], kw, sw, 0, dw))
            )
        else:
            ph, pw = pair(mod.padding)
            ph, pw = (tuple(q) if not isinstance(q, int) else q for q in (ph, pw))
            want = (conv_out(shape_in[1], kh, sh, ph, dh), conv_out(shape_in[2], kw, sw, pw, dw))
        assert want == shape_out[1:3], (name, path, want, shape_out)
        checked += 1
print(f"output-size formula matches all {checked} convolutions of {', '.join(CHECK)}")

# %% [markdown]
# ## VGG-16: where the memory goes
#
# The lecture's VGG-16 table: most of the *activation* memory is in the first layers, where
# the maps are large; most of the *weights* are in the fully connected layers; almost all the
# *compute* is in the convolutions. Per layer, from the model (float32, one image; the ReLUs
# work in place and the pools are counted with the conv before them, as in the lecture).

# %%
vgg = flaxcnn.create_model("vgg16")
vgg_vars, vgg_calls = layer_calls("vgg16")
names, acts, weights, macs, inside = [], [], [], [], []
block, conv = 1, 0
prev = (224, 224)
for path, mod, shape_in, shape_out in vgg_calls:
    if isinstance(mod, Conv2d):
        if shape_in[1:3] != prev:  # a 2x2 pool between blocks
            acts[-1] += math.prod(shape_in)  # the pool's output
            block, conv = block + 1, 0
        conv += 1
        names.append(f"conv{block}_{conv}")
        prev = shape_out[1:3]
        k, pad = pair(mod.kernel_size), pair(mod.padding)
        macs.append(math.prod(shape_out) * k[0] * k[1] * shape_in[-1])
        # Multiply-adds whose input lies inside the map (XLA does not count padding taps).
        t = [taps(shape_in[i + 1], shape_out[i + 1], k[i], 1, pad[i]) for i in (0, 1)]
        inside.append(t[0] * t[1] * shape_in[-1] * shape_out[-1])
    else:
        if not names[-1].startswith("fc"):
            acts[-1] += math.prod(shape_in)  # pool5's 7x7x512 output
        names.append(f"fc{6 + sum(n.startswith('fc') for n in names)}")
        macs.append(shape_in[-1] * shape_out[-1])
        inside.append(macs[-1])
    p = params_at(vgg_vars, path)
    weights.append(sum(a.size for a in jax.tree.leaves(p)))
    acts.append(math.prod(shape_out))

vgg_params = sum(a.size for a in jax.tree.leaves(vgg_vars["params"]))
print(f"{'layer':8s} {'activations':>12s} {'MiB':>7s} {'params':>12s} {'MiB':>8s} {'GMACs':>7s}")
for n, a, w, m in zip(names, acts, weights, macs, strict=True):
    print(f"{n:8s} {a:>12,} {a * 4 / 2**20:>7.2f} {w:>12,} {w * 4 / 2**20:>8.2f} {m / 1e9:>7.3f}")
print(
    f"input {224 * 224 * 3:,} values; activations {sum(acts):,} values = {sum(acts) * 4 / 2**20:.1f} MiB"
)
print(
    f"parameters {vgg_params:,} = {vgg_params * 4 / 2**20:.1f} MiB of float32 (the lecture: ~500 MB)"
)

fc_share = sum(w for n, w in zip(names, weights, strict=True) if n.startswith("fc")) / vgg_params
conv_mac_share = sum(m for n, m in zip(names, macs, strict=True) if n.startswith("conv")) / sum(
    macs
)
print(f"fully connected layers hold {fc_share:.1%} of the weights")
print(f"convolutions do {conv_mac_share:.1%} of the multiply-adds")
print(f"conv1 block holds {(acts[0] + acts[1]) / sum(acts):.1%} of the activations")

vgg_xla = xla_flops(vgg.apply, vgg_vars, abstract((1, 224, 224, 3)))
print(
    f"2 x MACs: {2 * sum(macs) / 1e9:.2f} GFLOPs, {2 * sum(inside) / 1e9:.2f} without the taps on "
    f"the zero padding; XLA: {vgg_xla / 1e9:.2f} GFLOPs (with bias, ReLU and pooling)"
)

# %%
fig, ax = plt.subplots(figsize=(10, 4.2))
xs = np.arange(len(names))
ax.bar(xs - 0.2, np.array(acts) * 4 / 2**20, 0.4, label="activation memory (output, + pool)")
ax.bar(xs + 0.2, np.array(weights) * 4 / 2**20, 0.4, label="parameter memory")
ax.set_yscale("log")
ax.set_xticks(xs, names, rotation=45, ha="right")
ax.set_ylabel("MiB per image (float32)")
ax.set_title(
    f"VGG-16: activations fill the early layers, weights the FC layers "
    f"({vgg_params / 1e6:.1f} M parameters)"
)
ax.legend()
ax.grid(axis="y", alpha=0.3)
show(fig, "vgg16_memory")

# %% [markdown]
# The lecture also compares kernel sizes for one layer `Conv2d(3, 64, k)` on a 224x224 image:
# weight memory 90.75 / 36.75 / 18.75 / 6.75 KiB and `(224·224·64)·(3·k·k)` multiply-adds.
# XLA's count is a little lower: it does not count taps that land on the zero padding.
# Counting only the taps inside the image gives XLA's number exactly.


# %%
x224 = abstract((1, 224, 224, 3))
for k in (11, 7, 5, 3):
    v = jax.eval_shape(Conv2d(64, k, padding=k // 2).init, KEY, x224)
    kib = {n: a.size * 4 / 1024 for n, a in v["params"].items()}
    lecture = (224 * 224 * 64) * (3 * k * k)
    exact = taps(224, 224, k, 1, k // 2) ** 2 * 3 * 64
    no_bias = Conv2d(64, k, padding=k // 2, use_bias=False)
    flops = xla_flops(no_bias.apply, jax.eval_shape(no_bias.init, KEY, x224), x224)
    print(
        f"{k:2d}x{k:<2d} weight {kib['kernel']:6.2f} KiB, bias {kib['bias']:.2f} KiB; "
        f"MACs: lecture {lecture:>13,}, inside the image {exact:>13,}, XLA {flops / 2:>13,.0f}"
    )
    assert flops / 2 == exact

# %% [markdown]
# ## Receptive field: one 5x5 or two 3x3?
#
# The lecture's exercise: two stacked 3x3 convolutions see a 5x5 patch, like one 5x5
# convolution, with `2·9 = 18` instead of `25` weights per input-output channel pair, and an
# extra non-linearity. The receptive field here is computed from the jaxpr of each stack.


# %%
class Stack(nn.Module):
    convs: tuple[tuple[int, int], ...]  # (kernel, padding) per conv
    features: int = 16

    @nn.compact
    def __call__(self, x):
        for i, (k, p) in enumerate(self.convs):
            x = nn.relu(Conv2d(self.features, k, padding=p, use_bias=False, name=f"c{i}")(x))
        return x


x56 = abstract((1, 56, 56, 16))
stacks = {"one 5x5": Stack(((5, 2),)), "two 3x3": Stack(((3, 1), (3, 1)))}
for label, model in stacks.items():
    v = jax.eval_shape(model.init, KEY, x56)
    (field,), _ = receptive_fields(lambda x, v, m=model: m.apply(v, x), x56, v)
    n_params = sum(a.size for a in jax.tree.leaves(v))
    flops = xla_flops(model.apply, v, x56)
    stacks[label] = (field, n_params, flops)
    print(f"{label}: receptive field {field}, {n_params:,} weights, {flops / 1e6:.1f} MFLOPs")
assert stacks["one 5x5"][0].size == stacks["two 3x3"][0].size == (5, 5)
assert stacks["two 3x3"][1] / stacks["one 5x5"][1] == 18 / 25

# %% [markdown]
# Same field, different weighting. With all weights equal, the gradient of one output pixel
# with respect to the input shows what each input pixel contributes: uniform for the 5x5
# convolution, a pyramid for two 3x3 (centre pixels are reached by more paths), the
# "effective receptive field" being smaller than the theoretical one.

# %%
fig, axes = plt.subplots(1, 2, figsize=(7.5, 3.6))
x11 = jnp.ones((1, 11, 11, 1))
for ax, (label, convs) in zip(
    axes, [("one 5x5", ((5, 2),)), ("two 3x3", ((3, 1), (3, 1)))], strict=True
):
    model = Stack(convs, features=1)
    v = jax.tree.map(jnp.ones_like, model.init(KEY, x11))
    g = jax.grad(lambda x, m=model, v=v: m.apply(v, x)[0, 5, 5, 0])(x11)[0, :, :, 0]
    im = ax.imshow(np.asarray(g), cmap="viridis")
    for (i, j), val in np.ndenumerate(np.asarray(g)):
        if val:
            dark = val < 0.6 * float(g.max())
            ax.text(
                j, i, f"{val:.0f}", ha="center", va="center", fontsize=8, c="w" if dark else "k"
            )
    ax.set_title(f"{label}: d out[5, 5] / d input")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046)
    support = np.argwhere(np.asarray(g) > 0)
    assert (support.max(0) - support.min(0) + 1).tolist() == [5, 5]
show(fig, "receptive_field_5x5_vs_3x3")

# %% [markdown]
# Through whole networks: the field grows by `(k - 1)·jump` per layer, and the jump (the
# product of the strides so far) makes late layers grow fast. VGG-16's last conv sees
# 196x196 pixels, pool5 212x212; ResNet-18's last stage 435x435, more than the image
# (padding counts; only the centre pixels see real content all the way out).

# %%
fig, ax = plt.subplots(figsize=(8, 4.2))
curves = {}
for name in ["alexnet", "vgg16", "resnet18"]:
    fields = rf if name == "alexnet" else layer_receptive_fields(name)
    _, calls = layer_calls(name)
    order = [p for p, m, *_ in calls if isinstance(m, Conv2d) and p in fields]
    order = [p for p in order if "downsample" not in p]  # the main path
    curves[name] = [fields[p].size[0] for p in order]
    ax.plot(range(1, len(order) + 1), curves[name], marker="o", ms=3, label=name)
ax.axhline(224, color="grey", ls="--", lw=1)
ax.text(1, 232, "input 224 px", color="grey")
ax.set_xlabel("convolution number (along the main path)")
ax.set_ylabel("receptive field (px)")
ax.set_title("Receptive field of each conv output, from the models' jaxprs")
ax.legend()
ax.grid(alpha=0.3)
show(fig, "receptive_field_growth")
assert curves["vgg16"][-1] == 196 and summaries["vgg16"].receptive_field.size == (212, 212)
assert curves["alexnet"] == [11, 51, 99, 131, 163]
assert summaries["alexnet"].receptive_field.size == (195, 195)
assert curves["resnet18"][-1] == 435

# %% [markdown]
# ## Depthwise-separable convolution (MobileNet, Xception)
#
# A 3x3 depthwise conv (one filter per channel, `groups = C_in`) followed by a 1x1 pointwise
# conv, instead of a full 3x3 conv. The lecture's ratio of multiply-adds:
# `(9·C_in·hw + C_in·C_out·hw) / (9·C_in·C_out·hw) = 1/C_out + 1/9`. XLA agrees, up to the
# taps on the zero padding it does not count.


# %%
class Separable(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        x = DepthwiseConv2d(3, padding=1, use_bias=False, depthwise_impl="conv", name="dw")(x)
        return Conv2d(self.features, 1, use_bias=False, name="pw")(x)


ratios = []
for c in (16, 32, 64, 128, 256, 512):
    x = abstract((1, 28, 28, c))
    full, sep = Conv2d(c, 3, padding=1, use_bias=False), Separable(c)
    fv, sv = jax.eval_shape(full.init, KEY, x), jax.eval_shape(sep.init, KEY, x)
    ratio = xla_flops(sep.apply, sv, x) / xla_flops(full.apply, fv, x)
    edge = taps(28, 28, 3, 1, 1) ** 2 / (28 * 28 * 9)  # the share of taps inside the image
    exact = (edge * 9 * c + c * c) / (edge * 9 * c * c)
    ratios.append((c, ratio, 1 / c + 1 / 9, exact))
    params = (sum(a.size for a in jax.tree.leaves(sv)), sum(a.size for a in jax.tree.leaves(fv)))
    print(
        f"C_in = C_out = {c:3d}: XLA ratio {ratio:.4f}, lecture 1/C + 1/9 = {1 / c + 1 / 9:.4f}, "
        f"weights {params[0]:,} vs {params[1]:,}"
    )
    assert abs(ratio - exact) < 1e-9 and params == (9 * c + c * c, 9 * c * c)

fig, ax = plt.subplots(figsize=(6.5, 4))
cs = np.geomspace(8, 1024, 100)
ax.plot(cs, 1 / cs + 1 / 9, label="lecture: 1/C_out + 1/9")
ax.plot(
    cs, (edge * 9 * cs + cs * cs) / (edge * 9 * cs * cs), "--", label="same, without padding taps"
)
ax.plot([r[0] for r in ratios], [r[1] for r in ratios], "o", label="XLA cost analysis")
ax.axhline(1 / 9, color="grey", ls=":", lw=1)
ax.text(1000, 1 / 9 - 0.003, "1/9: the limit for wide layers", color="grey", va="top", ha="right")
ax.set_xscale("log", base=2)
ax.set_ylim(0.09, 0.25)
ax.set_xlabel("channels C_in = C_out")
ax.set_ylabel("FLOPs(separable) / FLOPs(3x3 conv)")
ax.set_title("Depthwise-separable vs standard 3x3 convolution (28x28 map)")
ax.legend()
ax.grid(alpha=0.3, which="both")
show(fig, "depthwise_separable_ratio")

# %% [markdown]
# ## Inception: the 1x1 bottleneck
#
# The lecture's module on a 28x28x256 input: branches 1x1 (128), 3x3 (192), 5x5 (96) and a
# 3x3 max pool concatenated to 672 channels. The naive module convolves all 256 input
# channels with the 3x3 and 5x5 filters; GoogLeNet's version first reduces them with 1x1
# convolutions (64 here) and follows the pool with a 1x1 conv.


# %%
class InceptionModule(nn.Module):
    reduce: int | None  # width of the 1x1 reductions, None for the naive module

    @nn.compact
    def __call__(self, x):
        def conv(f, k, name, y):
            return nn.relu(Conv2d(f, k, padding=k // 2, name=name)(y))

        r = (lambda name, y: conv(self.reduce, 1, name, y)) if self.reduce else (lambda _, y: y)
        pool = max_pool2d(x, 3, 1, padding=1)
        return jnp.concatenate(
            [
                conv(128, 1, "b1", x),
                conv(192, 3, "b2", r("b2_reduce", x)),
                conv(96, 5, "b3", r("b3_reduce", x)),
                conv(self.reduce, 1, "b4", pool) if self.reduce else pool,
            ],
            axis=-1,
        )


x = abstract((1, 28, 28, 256))
incep = {}
for label, reduce in [("naive", None), ("with 1x1 reduction", 64)]:
    m = InceptionModule(reduce)
    v = jax.eval_shape(m.init, KEY, x)
    out = jax.eval_shape(m.apply, v, x)
    incep[label] = (sum(a.size for a in jax.tree.leaves(v)), xla_flops(m.apply, v, x), out.shape)
    print(
        f"{label:20s} params {incep[label][0]:>9,}  {incep[label][1] / 1e9:.2f} GFLOPs  out {out.shape}"
    )
hand_naive = 28 * 28 * 256 * (128 * 1 + 192 * 9 + 96 * 25)  # multiply-adds
hand_reduced = 28 * 28 * (256 * 64 * 3 + 64 * 192 * 9 + 64 * 96 * 25 + 256 * 128)
print(
    f"hand count, multiply-adds: naive {hand_naive / 1e6:.0f} M, reduced {hand_reduced / 1e6:.0f} M"
)
ratio = incep["naive"][1] / incep["with 1x1 reduction"][1]
print(f"the reduction cuts FLOPs {ratio:.1f}x (hand: {hand_naive / hand_reduced:.1f}x)")
assert incep["naive"][2][-1] == 672 and abs(ratio / (hand_naive / hand_reduced) - 1) < 0.05
googlenet_params = summaries["googlenet"].params_by_module
print(
    "GoogLeNet's own inception blocks (parameters):",
    {k: f"{v:,}" for k, v in googlenet_params.items() if k.startswith("inception")},
)

# %% [markdown]
# ## Grouped convolution (AlexNet's two GPUs, ResNeXt)
#
# Splitting the channels into `G` groups that are convolved independently divides the weights
# and the multiply-adds by `G`: `weights = (C_in/G)·C_out·k²`. The lecture's example is a
# `Conv2d(512, 1024, 3, groups=G)`.

# %%
x = abstract((1, 28, 28, 512))
base = None
print(f"{'groups':>6s} {'weights':>11s} {'GFLOPs':>8s} {'vs G=1':>7s}")
for g in (1, 2, 4, 8, 32, 64):
    m = Conv2d(1024, 3, padding=1, groups=g, use_bias=False)
    v = jax.eval_shape(m.init, KEY, x)
    w, f = v["params"]["kernel"].size, xla_flops(m.apply, v, x)
    base = base or f
    print(f"{g:>6d} {w:>11,} {f / 1e9:>8.3f} {base / f:>7.1f}x")
    assert w == 512 // g * 1024 * 9 and abs(base / f - g) < 1e-9
if not SMALL:  # ResNeXt spends what grouping saves on wider blocks (32 groups of 4 vs 64)
    for n in ["resnet50", "resnext50_32x4d"]:
        print(f"{n}: {summaries[n].params:,} parameters, {summaries[n].flops / 1e9:.2f} GFLOPs")

# %% [markdown]
# ## Parameters vs FLOPs across the zoo
#
# The lectures close with the accuracy-vs-operations chart of Bianco et al. (2018). Without
# ImageNet at hand, here is the cost side of it for every classifier summarised above
# (default input size of each model).

# %%
ZOO = (
    TOUR
    if SMALL
    else [n for n in flaxcnn.list_models() if flaxcnn.get_model_spec(n).task == "classification"]
)
points = {}
for name in ZOO:
    if flaxcnn.get_model_spec(name).task != "classification":
        continue
    s = summaries.get(name) or summary(name, compile=False)
    points[name] = (s.flops, s.params, flaxcnn.get_model_spec(name).family)

# Labels for a few milestones (all points in small mode), placed so they do not collide.
LABELS = SMALL_TOUR if SMALL else ["lenet5", "alexnet", "vgg16", "googlenet", "resnet50"]
LABELS += [] if SMALL else ["densenet121", "mobilenetv2_100", "mobilenetv3_small_100"]
LABELS += [] if SMALL else ["efficientnet_b0", max(points, key=lambda n: points[n][1])]
OFFSETS = {"resnet18": (4, -9), "resnet50": (4, -9)}

fig, ax = plt.subplots(figsize=(9, 6))
fams = sorted({f for *_, f in points.values()})
colors = dict(zip(fams, plt.cm.tab20(np.linspace(0, 1, max(len(fams), 2))), strict=False))
for name, (flops, params, fam) in points.items():
    ax.scatter(flops / 1e9, params / 1e6, color=colors[fam], s=30, edgecolor="k", lw=0.3)
    if name in LABELS:
        xy = (flops / 1e9, params / 1e6)
        ax.annotate(
            name, xy, fontsize=7, xytext=OFFSETS.get(name, (4, 2)), textcoords="offset points"
        )
for fam in fams:
    ax.scatter([], [], color=colors[fam], label=fam)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("GFLOPs per image (XLA cost analysis)")
ax.set_ylabel("parameters (millions)")
ax.set_title(f"Cost of {len(points)} flaxcnn classifiers at their default input size")
ax.legend(fontsize=7, ncol=2, loc="lower right")
ax.grid(alpha=0.3, which="both")
show(fig, "params_vs_flops")

# %% [markdown]
# ## What this notebook showed (checked)

# %%
assert alex_total == summaries["alexnet"].params == 61_100_840
assert vgg_params == summaries["vgg16"].params == 138_357_544
assert fc_share > 0.85 and conv_mac_share > 0.99 and max(acts) in acts[:2]
assert 0 < vgg_xla / (2 * sum(inside)) - 1 < 0.01  # bias, ReLU and pool FLOPs on top
assert summaries["vgg16"].receptive_field.size == (212, 212)
assert summaries["resnet18"].receptive_field.size == (435, 435)
assert [f.size[0] for f in summaries["resnet18"].stage_receptive_fields] == [7, 43, 99, 211, 435]
assert len(points) >= 5 and all(f > 0 and p > 0 for f, p, _ in points.values())
print("all checks passed")
