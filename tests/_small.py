"""Each family's overrides that shrink a model to about one block per stage, for the tests
that compile a model concretely to check its *code*: layer types, modes, state, gradients.
What depth adds (more of the same blocks) the registry-wide traced checks and the
equivalence suite cover at full size; compiling full depths costs several times more
(DenseNet-121 alone minutes over the suite).

``SMALLEST``: the smallest registered model of each family (by parameter count) and its
overrides; ``shrink(name)``: the overrides for any registered name (its family's, where the
family has a depth field; otherwise none).
"""

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

import flaxcnn

SMALLEST = {
    "alexnet": ("alexnet", {"hidden": 256}),
    "convnext": ("convnext_tiny", {"depths": (1, 1, 1, 1), "drop_path_rate": 0.2}),
    "densenet": ("densenet121", {"block_config": (1, 1, 1, 1)}),
    "efficientnet": ("efficientnet_lite0", {"depth_multiplier": 0.1}),
    "efficientnet_v2": ("tf_efficientnetv2_b0", {"depth_multiplier": 0.1}),
    "fcn": ("fcn_resnet50", {"stage_sizes": (1, 1, 1, 1)}),
    "googlenet": ("googlenet", {}),
    # Without the aux head (its 299 px minimum; GoogLeNet covers aux heads), 75 px suffice.
    "inception": ("inception_v3", {"aux_logits": False}),
    "lenet": ("lenet5", {}),
    "mobilenet_v1": ("mobilenetv1_100", {"depth_multiplier": 0.1}),
    "mobilenet_v2": ("mobilenetv2_100", {"depth_multiplier": 0.1}),
    "mobilenet_v3": ("mobilenet_v3_small", {"depth_multiplier": 0.1}),
    "nin": ("nin", {}),
    "resnet": ("resnet18", {"stage_sizes": (1, 1, 1, 1)}),
    "resnet_cifar": ("resnet20", {"stage_sizes": (1, 1, 1)}),
    "resnetv2": ("resnetv2_50", {"layers": (1, 1, 1, 1)}),
    "senet": ("legacy_seresnext26_32x4d", {"layers": (1, 1, 1, 1)}),
    "unet": ("unet_padded", {"depth": 2, "base_width": 8}),
    "vgg": ("vgg11", {}),
    "xception": ("legacy_xception", {}),
    "vit": ("vit_tiny_patch16_224", {"depth": 2, "drop_path_rate": 0.2}),
    # CLIP: the ResNet tower (BatchNorm), one block per stage, one text block.
    "clip": ("clip_rn50", {"vision_layers": (1, 1, 1, 1), "transformer_layers": 1}),
}

# The fields that only set depth (repeats of the same blocks), per family.
_DEPTH_FIELDS = {"depths", "block_config", "depth_multiplier", "stage_sizes", "layers", "depth"}


def shrink(name: str) -> dict:
    """The depth overrides of ``name``'s family (``{}`` where depth is not a field)."""
    spec = flaxcnn.get_model_spec(name)
    _, overrides = SMALLEST.get(spec.family, (None, {}))
    return {k: v for k, v in overrides.items() if k in _DEPTH_FIELDS and k in spec.fields}


def random_variables(module, *x, seed=0):
    """Variables of ``module``'s structure filled from numpy, BN statistics randomised (no
    flax initialiser to compile: that costs more than the forward passes under test)."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(module.init, jax.random.key(0), *x)

    def fill(path, a):
        name = path[-1]
        if name in ("var", "scale") or (name == "weight" and a.ndim == 1):
            v = rng.uniform(0.5, 1.5, a.shape)
        elif a.ndim >= 2:
            v = rng.standard_normal(a.shape) / np.sqrt(np.prod(a.shape[:-1]))
        else:
            v = 0.1 * rng.standard_normal(a.shape)
        return jnp.asarray(v, a.dtype)

    flat = traverse_util.flatten_dict(dict(abstract))
    return traverse_util.unflatten_dict({k: fill(k, a) for k, a in flat.items()})
