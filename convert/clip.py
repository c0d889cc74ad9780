"""CLIP from OpenAI's ``clip`` package and from ``open_clip``: the same names, no renames.

OpenAI's ``clip.model.CLIP`` and open_clip's ``-quickgelu`` models have identical state
dicts, and the Flax module's names are theirs; only the scalars OpenAI's TorchScript
checkpoints carry (``input_resolution``, ``context_length``, ``vocab_size``) are dropped.

The torch references are built with random weights from each package's own config
(OpenAI's ``CLIP(...)`` constructor with ``build_model``'s arguments, open_clip's
``create_model(name, pretrained=None)``), never downloaded. CLIP takes two inputs, so
:func:`verify_clip` compares ``logits_per_image``, ``logits_per_text``, ``encode_image``
and ``encode_text`` on random images and token rows of several lengths (ending in the
end-of-text id, the largest), in eval mode, in train mode (the ResNet towers' BatchNorms
on batch statistics, and their updated running statistics) and after export.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .core import Rules, register_rules
from .verify import register_verify_hook, scale_last_bns

__all__ = [
    "build_clip",
    "clip_example_batch",
    "prepare_clip",
    "randomize_layer_norms",
    "verify_clip",
]

CLIP_SOURCES = ("openai", "open_clip")
SOT, EOT = 49406, 49407

register_rules("clip", Rules(ignore=[r"^input_resolution$", r"^context_length$", r"^vocab_size$"]))


def build_clip(name: str, source: str, spec: Any, **kwargs: Any):
    """The source package's CLIP ``name`` (``'RN50'``, ``'ViT-B-32-quickgelu'``), random
    weights; ``spec`` is flaxcnn's registry entry (OpenAI's constructor takes the config)."""
    if source == "openai":
        from clip.model import CLIP

        c = {**spec.config, **kwargs}
        return CLIP(
            c["embed_dim"],
            c["image_resolution"],
            c["vision_layers"],
            c["vision_width"],
            c["vision_patch_size"],
            c.get("context_length", 77),
            c.get("vocab_size", 49408),
            c["transformer_width"],
            c["transformer_heads"],
            c.get("transformer_layers", 12),
        )
    if source == "open_clip":
        import open_clip

        return open_clip.create_model(name, pretrained=None, **kwargs)
    raise ValueError(f"unknown CLIP source {source!r}; expected one of {CLIP_SOURCES}")


def randomize_layer_norms(model: Any, generator: Any) -> None:
    """LayerNorm affines drawn away from the identity (weights U(0.75, 1.25), biases
    N(0, 0.1)): at their initial identity a swapped ``ln_1``/``ln_2`` would not show."""
    import torch

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
                m.weight.copy_(torch.rand(m.weight.shape, generator=generator) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)


def prepare_clip(model: Any, generator: Any) -> None:
    """The verify hook: random LayerNorm affines (:func:`randomize_layer_norms`), and in the
    ResNet towers each bottleneck's last BN scale drawn from U(0.1, 0.3).

    OpenAI initialises that ``bn3`` scale to zero, so every residual branch would be silent;
    :func:`~flaxcnn.convert.verify.randomize_bn` draws it from U(0.75, 1.25), which makes
    the deeper towers chaotic in train mode (batch statistics of two images): RN101's and
    RN50x16's float32 torch outputs then move by more than the bound under rounding alone
    (RN50x16: 4e-2 against 7e-4). Small non-zero scales keep every branch in play and the
    network contractive, as trained ResNets are (the ResNet family's hook does the same)."""
    randomize_layer_norms(model, generator)
    scale_last_bns(model, generator, lambda m: m.bn3 if type(m).__name__ == "Bottleneck" else None)


register_verify_hook("clip", prepare_clip)


def clip_example_batch(
    rng: np.random.Generator,
    batch: int,
    resolution: int,
    context_length: int = 77,
    texts: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(images NCHW float32, tokens int64)``: ``batch`` random images and ``texts``
    (default ``batch + 1``) token rows of different lengths (one filling the whole context),
    each starting with the start-of-text id and ending with the end-of-text id, as
    ``tokenize`` writes them."""
    texts = batch + 1 if texts is None else texts
    images = rng.standard_normal((batch, 3, resolution, resolution), dtype=np.float32)
    lengths = np.linspace(3, context_length, texts).astype(int)
    tokens = np.zeros((texts, context_length), np.int64)
    for row, n in zip(tokens, lengths, strict=True):
        row[:n] = rng.integers(1, SOT, n)
        row[0], row[n - 1] = SOT, EOT
    return images, tokens


def _torch_eval(tmodel: Any, source: str, images: Any, tokens: Any) -> list[Any]:
    """``[logits_per_image, logits_per_text, image embeddings, text embeddings]`` of the
    torch model: its own forward, the image tower's output caught on the way (OpenAI's and
    open_clip's ``encode_image`` is ``visual(image)``), so the image tower runs once."""
    import torch

    caught = []
    hook = tmodel.visual.register_forward_hook(lambda m, i, o: caught.append(o))
    try:
        with torch.no_grad():
            out = tmodel(images, tokens)
            text = tmodel.encode_text(tokens)
    finally:
        hook.remove()
    if source == "openai":
        logits = list(out)
    else:  # open_clip: normalised features and exp(logit_scale)
        image_n, text_n, scale = out[:3]
        logits = [scale * image_n @ text_n.T, (scale * image_n @ text_n.T).T]
    return [*logits, caught[0], text]


@functools.lru_cache(maxsize=2)
def _apply_fns(module: Any):
    """Jitted eval (the four outputs) and train (the image tower on batch statistics)
    applies, cached per module: both sources convert into the same module and share them."""
    import jax

    def all_outputs(m, x, t):
        return (*m(x, t), m.encode_image(x), m.encode_text(t))

    def eval_fn(v, x, t):
        return module.apply(v, x, t, method=all_outputs)

    def train_fn(v, x):
        return module.apply(v, x, method="encode_image", train=True, mutable=["batch_stats"])

    return jax.jit(eval_fn), jax.jit(train_fn)


def verify_clip(
    name: str,
    *,
    source: str,
    modes: Any = ("eval", "train"),
    batch: int = 2,
    seed: int = 0,
    rtol: float = 1e-4,
    stats_rtol: float = 1e-5,
    torch_kwargs: dict[str, Any] | None = None,
    export: bool = True,
) -> Any:
    """:func:`~flaxcnn.convert.verify` for a CLIP pair (see the module doc), at the
    model's resolution (its position embeddings fix it)."""
    import jax
    import torch

    from .._registry import find_by_source
    from .api import from_torch
    from .errors import ConversionError
    from .export import to_torch
    from .verify import (
        CheckResult,
        VerifyResult,
        _perturbed,
        _stats_diff,
        compare_outputs,
        randomize_bn,
    )

    spec = find_by_source(source, name)
    torch.manual_seed(seed)
    tmodel = build_clip(name, source, spec, **(torch_kwargs or {})).float()
    prepare_clip(tmodel, randomize_bn(tmodel, seed))
    module, variables, report = from_torch(name, tmodel, source=source, strict=False)
    if not report.ok:
        raise ConversionError(str(report), report)
    r = module.image_resolution
    has_bn = not isinstance(module.vision_layers, int)  # a ResNet image tower
    # One image per check at full size: the image towers are the suite's largest cost
    # (RN50x64 at 448 px), and mixing between images (BatchNorm's batch statistics, the
    # attention pool's batch axis) is proven with two images on small CLIPs
    # (tests/models/test_clip.py) and, for BatchNorm, by every classifier. The text rows are
    # cheap: ``batch + 1`` of them, of different lengths.
    rng = np.random.default_rng(seed)
    images, tokens = clip_example_batch(rng, 1, r, module.context_length, texts=batch + 1)
    ti, tt = torch.from_numpy(images), torch.from_numpy(tokens)
    xi = jax.device_put(np.ascontiguousarray(images.transpose(0, 2, 3, 1)))
    xt = jax.device_put(tokens.astype(np.int32))
    eval_fn, train_fn = _apply_fns(module)

    def check(mode, got, ref, **extra):
        diff, ref_max = compare_outputs(
            [np.asarray(g) for g in got], [q.detach().numpy() for q in ref]
        )
        return CheckResult(mode, (r, r), diff, ref_max, rtol * max(1.0, ref_max), **extra)

    # Only the buffers change under a forward pass (BN running statistics): keeping a copy
    # of them, not of the whole state dict, matters at RN50x64's 420M parameters.
    initial = {k: b.clone() for k, b in tmodel.named_buffers()}
    torch_params = sum(p.numel() for p in tmodel.parameters())
    flax_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(variables["params"]))
    checks = []
    for mode in modes:
        tmodel.load_state_dict(initial, strict=False)
        if mode == "eval":
            tmodel.eval()
            checks.append(
                check("eval", eval_fn(variables, xi, xt), _torch_eval(tmodel, source, ti, tt))
            )
        elif has_bn:  # the ViT towers have no BatchNorm or dropout: train mode is eval mode
            tmodel.train()
            with torch.no_grad():
                ref = tmodel.encode_image(ti)
            out, new_state = train_fn(variables, xi)
            checks.append(
                check(
                    "train",
                    [out],
                    [ref],
                    stats_max_rel_diff=_stats_diff(tmodel, new_state, report),
                    stats_bound=stats_rtol,
                )
            )
    if export:
        tmodel.load_state_dict(initial, strict=False)
        trained = _perturbed(variables)
        del variables  # one copy of the Flax weights at a time
        tmodel.load_state_dict(
            to_torch(name, trained, source=source, reference=tmodel.state_dict()), strict=True
        )
        tmodel.eval()
        checks.append(
            check("export", eval_fn(trained, xi, xt), _torch_eval(tmodel, source, ti, tt))
        )
    return VerifyResult(source, name, spec.name, torch_params, flax_params, checks)
