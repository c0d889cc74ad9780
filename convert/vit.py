"""timm's Vision Transformers: the Flax names are timm's, so no renames are needed.

The verify hook randomises LayerNorm affines (initialised to the identity, they would hide
a swapped ``norm1``/``norm2``) and any layer scales, as for ConvNeXt.
"""

from .convnext import randomize_layer_norm_and_scale
from .verify import register_verify_hook

register_verify_hook("vit", randomize_layer_norm_and_scale)
