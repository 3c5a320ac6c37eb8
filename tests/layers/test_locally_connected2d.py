"""Tests of `LocallyConnected2D`, against tf_keras' layer and a NumPy reference."""

import numpy as np
import pytest
import tf_keras

from low_rank_local_connectivity.layers import LocallyConnected2D
from tests.layers.lrlc_reference import np_conv
from tests.layers.lrlc_testing import ATOL
from tests.layers.lrlc_testing import images
from tests.layers.lrlc_testing import run


@pytest.mark.parametrize("strides", [1, 2, (1, 2)])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_locally_connected_equals_tf_keras(strides, data_format):
    x = images((2, 9, 8, 3))
    ours = LocallyConnected2D(
        4, (3, 2), strides=strides, data_format=data_format,
        bias_initializer="random_normal",
    )
    oracle = tf_keras.layers.LocallyConnected2D(4, (3, 2), strides=strides, implementation=1)
    y = run(ours, x)
    oracle.build(x.shape)
    kernel = np.asarray(ours.kernel)
    out_h, out_w = kernel.shape[:2]
    oracle.set_weights([kernel.reshape(out_h * out_w, -1, 4), np.asarray(ours.bias)])
    np.testing.assert_allclose(y, oracle(x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("strides", [1, 2])
def test_locally_connected_same_padding_matches_numpy(strides):
    x = images((2, 7, 6, 3))
    layer = LocallyConnected2D(
        4, 3, strides=strides, padding="same", bias_initializer="random_normal"
    )
    y = np.asarray(layer(x))
    kernel, bias = np.asarray(layer.kernel), np.asarray(layer.bias)
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
