"""Builders shared by the layer tests: every combining-weights mode, random data."""

import numpy as np

from low_rank_local_connectivity.layers import LowRankLocallyConnected2D
from tests.backend_testing import numpy

# Absolute tolerance of float32 layer outputs against float64 references.
ATOL = 1e-5
# (share_row, share_col, input_dependent) of every combining-weights mode.
MODES = {
    "row_col": (True, True, False),
    "row_only": (True, False, False),
    "col_only": (False, True, False),
    "full": (False, False, False),
    "input_dependent": (False, False, True),
}


def make_lrlc(mode="row_col", **kwargs):
    share_row, share_col, input_dependent = MODES[mode]
    kwargs.setdefault("spatial_rank", 3)
    kwargs.setdefault("filters", 4)
    kwargs.setdefault("kernel_size", 3)
    return LowRankLocallyConnected2D(
        share_row_combining_weights=share_row,
        share_col_combining_weights=share_col,
        input_dependent=input_dependent,
        **kwargs,
    )


def randomize(layer, seed=0):
    """Gives every variable (biases and combining weights included) random values."""
    rng = np.random.default_rng(seed)
    for variable in layer.weights:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))


def images(shape, seed=1):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def run(layer, x_channels_last):
    """Calls `layer` on x given channels_last, returns a channels_last output."""
    if layer.data_format == "channels_first":
        return numpy(layer(x_channels_last.transpose(0, 3, 1, 2))).transpose(0, 2, 3, 1)
    return numpy(layer(x_channels_last))
