"""Locally connected layers as test oracles: NumPy on every backend, tf_keras on TF.

Each oracle takes channels_last NumPy arrays: an input `x` already padded (the
layers are 'valid'), a per-position kernel (H', W', kh, kw, C, F), a bias
(H', W', F) and strides. `ORACLES` and `GRADIENT_ORACLES` parameterise a test over
both, the tf_keras one marked TensorFlow-only: tf_keras' LocallyConnected2D
(Keras 2's layer, implementation 1) is independent of NumPy and of this package.
"""

import pytest

from tests.backend_testing import requires_tensorflow
from tests.layers.lrlc_reference import np_locally_connected
from tests.layers.lrlc_reference import np_locally_connected_gradients


def numpy_locally_connected_gradients(x, kernel, bias, strides, upstream):
    """(outputs, d_x, d_kernel, d_bias) for the upstream gradient `upstream`."""
    d_x, d_kernel, d_bias = np_locally_connected_gradients(x, kernel, upstream, strides)
    return np_locally_connected(x, kernel, bias, strides), d_x, d_kernel, d_bias


def _tf_keras_layer(x, kernel, bias, strides):
    import tf_keras

    out_h, out_w, kh, kw, _, filters = kernel.shape
    layer = tf_keras.layers.LocallyConnected2D(
        filters, (kh, kw), strides=strides, implementation=1
    )
    layer.build(x.shape)
    layer.set_weights([kernel.reshape(out_h * out_w, -1, filters), bias])
    return layer


def tf_keras_locally_connected(x, kernel, bias, strides):
    return _tf_keras_layer(x, kernel, bias, strides)(x).numpy()


def tf_keras_locally_connected_gradients(x, kernel, bias, strides, upstream):
    import tensorflow as tf

    layer = _tf_keras_layer(x, kernel, bias, strides)
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x)
    d_x, d_kernel, d_bias = tape.gradient(
        outputs, [x, layer.kernel, layer.bias], output_gradients=tf.constant(upstream)
    )
    return (outputs.numpy(), d_x.numpy(), d_kernel.numpy().reshape(kernel.shape),
            d_bias.numpy())


_TF_KERAS = requires_tensorflow("tf_keras' LocallyConnected2D")
ORACLES = [
    pytest.param(np_locally_connected, id="numpy"),
    pytest.param(tf_keras_locally_connected, id="tf_keras", marks=_TF_KERAS),
]
GRADIENT_ORACLES = [
    pytest.param(numpy_locally_connected_gradients, id="numpy"),
    pytest.param(tf_keras_locally_connected_gradients, id="tf_keras", marks=_TF_KERAS),
]
