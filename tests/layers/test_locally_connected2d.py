"""Tests of `LocallyConnected2D`, against locally connected oracles (NumPy, tf_keras)."""

import numpy as np
import pytest

from low_rank_local_connectivity.layers import LocallyConnected2D
from tests.backend_testing import numpy
from tests.layers.locally_connected_oracles import ORACLES
from tests.layers.lrlc_reference import np_conv
from tests.layers.lrlc_testing import ATOL
from tests.layers.lrlc_testing import images
from tests.layers.lrlc_testing import run


@pytest.mark.parametrize("oracle", ORACLES)
@pytest.mark.parametrize("strides", [1, 2, (1, 2)])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_locally_connected_equals_the_oracle(strides, data_format, oracle):
    x = images((2, 9, 8, 3))
    ours = LocallyConnected2D(
        4, (3, 2), strides=strides, data_format=data_format,
        bias_initializer="random_normal",
    )
    y = run(ours, x)
    expected = oracle(x, numpy(ours.kernel), numpy(ours.bias), ours.strides)
    np.testing.assert_allclose(y, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("strides", [1, 2])
def test_locally_connected_same_padding_matches_numpy(strides):
    x = images((2, 7, 6, 3))
    layer = LocallyConnected2D(
        4, 3, strides=strides, padding="same", bias_initializer="random_normal"
    )
    y = numpy(layer(x))
    kernel, bias = numpy(layer.kernel), numpy(layer.bias)
    # Reference: for each output position, a convolution with that position's kernel.
    expected = np.zeros_like(y)
    for i in range(y.shape[1]):
        for j in range(y.shape[2]):
            conv = np_conv(x, kernel[i, j], (strides, strides), padding="same")
            expected[:, i, j] = conv[:, i, j] + bias[i, j]
    np.testing.assert_allclose(y, expected, atol=ATOL, rtol=0)


def test_locally_connected_parameter_count():
    layer = LocallyConnected2D(64, 3)
    layer.build((None, 32, 32, 64))
    assert layer.count_params() == 30 * 30 * (3 * 3 * 64 * 64 + 64)


def test_locally_connected_errors():
    with pytest.raises(ValueError, match=r"`filters`.*filters=-2"):
        LocallyConnected2D(-2, 3)
    with pytest.raises(ValueError, match=r"`padding`"):
        LocallyConnected2D(2, 3, padding="full")
    with pytest.raises(ValueError, match=r"known input height and width"):
        LocallyConnected2D(2, 3).build((None, None, 8, 3))
    with pytest.raises(ValueError, match=r"known input height and width"):
        LocallyConnected2D(2, 5).build((None, 4, 8, 3))
