"""Low-rank locally connected layers for Keras 3.

A low-rank locally connected (LRLC) layer (Elsayed et al., "Revisiting Spatial
Invariance with Low-Rank Local Connectivity", ICML 2020) learns `spatial_rank` = K
ordinary convolution filter banks W_1..W_K and, at every output position (i, j),
a convex (or otherwise normalised) combination of them:

    y[b, i, j, :] = sum_k a[i, j, k] * (W_k * x)[b, i, j, :] + s[i, j] + c[:]

With K = 1 it is a convolution; with K = H_out * W_out and an unshared table of
combining weights it can express any locally connected layer. The K bases are
evaluated as ONE convolution with K * F output channels and then combined, so the
cost is that of `Conv2D(K * F)` plus a cheap weighted sum; per-position kernels are
never materialised in `call` (see `locally_connected_kernel` for inspection).

The package also provides the pieces the paper's experiments need:
`InputDependentCombiningWeights` (the small network that predicts the combining
weights per example), `LocallyConnected2D` (Keras 3 dropped it) and
`CoordinateChannels` (CoordConv), and `FusedBatchNormalization` (Keras'
batch normalization with TensorFlow's fused kernel for bfloat16 inputs).

Modules:
- `low_rank_locally_connected2d`: `LowRankLocallyConnected2D`;
- `lrlc_combining_weights`: its combining weights (variables, values, views);
- `input_dependent_combining_weights`: `InputDependentCombiningWeights`;
- `locally_connected2d`: `LocallyConnected2D`;
- `coordinate_channels`: `CoordinateChannels`;
- `fused_batch_normalization`: `FusedBatchNormalization`;
- `base`: the base classes that handle the shared arguments (data format,
  strides, padding, initializers, ..., output shape, config);
- `ops`: the tensor operations, with their hand-written gradients.
"""

from low_rank_local_connectivity.layers.base import PADDINGS
from low_rank_local_connectivity.layers.coordinate_channels import CoordinateChannels
from low_rank_local_connectivity.layers.fused_batch_normalization import (
    FusedBatchNormalization,
)
from low_rank_local_connectivity.layers.input_dependent_combining_weights import (
    INPUT_DEPENDENT_DILATIONS,
)
from low_rank_local_connectivity.layers.input_dependent_combining_weights import (
    InputDependentCombiningWeights,
)
from low_rank_local_connectivity.layers.locally_connected2d import LocallyConnected2D
from low_rank_local_connectivity.layers.low_rank_locally_connected2d import (
    LowRankLocallyConnected2D,
)
from low_rank_local_connectivity.layers.lrlc_combining_weights import CONV_INIT
from low_rank_local_connectivity.layers.ops import NORMALIZATIONS
from low_rank_local_connectivity.layers.ops import align_corners_resize_matrix
from low_rank_local_connectivity.layers.ops import combine_bases
from low_rank_local_connectivity.layers.ops import compiling_with_xla
from low_rank_local_connectivity.layers.ops import conv_output_length
from low_rank_local_connectivity.layers.ops import normalize_combining_weights
from low_rank_local_connectivity.layers.ops import position_major_patches
from low_rank_local_connectivity.validation import DATA_FORMATS

__all__ = [
    "FusedBatchNormalization",
    "CONV_INIT",
    "DATA_FORMATS",
    "INPUT_DEPENDENT_DILATIONS",
    "NORMALIZATIONS",
    "PADDINGS",
    "CoordinateChannels",
    "InputDependentCombiningWeights",
    "LocallyConnected2D",
    "LowRankLocallyConnected2D",
    "align_corners_resize_matrix",
    "combine_bases",
    "compiling_with_xla",
    "conv_output_length",
    "normalize_combining_weights",
    "position_major_patches",
]
