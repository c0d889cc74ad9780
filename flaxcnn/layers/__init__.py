"""Building blocks shared by every flaxcnn family, each matching its torch counterpart."""

from .activations import ACTIVATIONS, get_act, hard_sigmoid, hard_swish, relu, relu6
from .basic_conv import BasicConv2d
from .checks import check_image_input, smallest_side
from .conv import Conv2d, DepthwiseConv2d, depthwise_conv2d_shift, kaiming_normal_fan_out
from .conv_transpose import ConvTranspose2d, conv_transpose_output_size
from .drop import Dropout, Dropout2d, DropPath
from .features import (
    POOL_TYPES,
    FeatureMixin,
    apply_global_pool,
    check_global_pool,
    feature_indices,
    stage_info,
)
from .helpers import make_divisible
from .interpolate import interpolate
from .layernorm import LayerNorm
from .lrn import local_response_norm
from .norm import BatchNorm2d
from .padding import Padding, conv_padding, pair, pool_output_size
from .pooling import (
    adaptive_avg_pool2d,
    adaptive_max_pool2d,
    avg_pool2d,
    global_avg_pool,
    global_max_pool,
    max_pool2d,
)
from .se import SqueezeExcite

__all__ = [
    "ACTIVATIONS",
    "POOL_TYPES",
    "BasicConv2d",
    "BatchNorm2d",
    "Conv2d",
    "ConvTranspose2d",
    "DepthwiseConv2d",
    "DropPath",
    "FeatureMixin",
    "Dropout",
    "Dropout2d",
    "LayerNorm",
    "Padding",
    "SqueezeExcite",
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "apply_global_pool",
    "avg_pool2d",
    "check_global_pool",
    "check_image_input",
    "conv_padding",
    "conv_transpose_output_size",
    "depthwise_conv2d_shift",
    "feature_indices",
    "get_act",
    "global_avg_pool",
    "global_max_pool",
    "hard_sigmoid",
    "hard_swish",
    "interpolate",
    "kaiming_normal_fan_out",
    "local_response_norm",
    "make_divisible",
    "max_pool2d",
    "pair",
    "pool_output_size",
    "relu",
    "relu6",
    "smallest_side",
    "stage_info",
]
