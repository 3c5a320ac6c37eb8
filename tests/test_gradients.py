"""The optimised LRLC paths equal their reference paths, values and gradients.

`layers.combine_bases` has a hand-written gradient (batched products over the
flattened positions instead of autodiff of a broadcasting product). Its reference is
autodiff of the plain weighted sum `einsum('...k,...kf->...f')`. The layer is checked
against that reference in every combining-weights mode, and its input and basis
gradients against an independent oracle: tf_keras' LocallyConnected2D loaded with
the layer's equivalent per-position kernel.
"""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from low_rank_local_connectivity import layers
from lrlc_testing import MODES
from lrlc_testing import images
from lrlc_testing import make_lrlc
from lrlc_testing import randomize

ATOL = 1e-5


def reference_combine(weights, bases):
    """The weighted sum as autodiff sees it: broadcast, multiply, reduce."""
    weights = tf.broadcast_to(weights, tf.shape(bases)[:-1])
    return tf.einsum("...k,...kf->...f", weights, bases)


def values_and_gradients(function, arguments, upstream):
    arguments = [tf.constant(a) for a in arguments]
    with tf.GradientTape() as tape:
        tape.watch(arguments)
        outputs = function(*arguments)
    return [outputs] + tape.gradient(outputs, arguments, output_gradients=upstream)


@pytest.mark.parametrize(
    "weights_shape",
    [(3, 5, 6, 4), (5, 6, 4), (5, 1, 4), (1, 6, 4), (6, 4), (5, 6, 1)],
    ids=["input_dependent", "full_table", "row_only", "col_only", "broadcast_rows", "rank1"],
)
def test_combine_bases_equals_autodiff_of_the_weighted_sum(weights_shape):
    rng = np.random.default_rng(0)
    rank = weights_shape[-1]
    weights = rng.normal(size=weights_shape).astype("float32")
    bases = rng.normal(size=(3, 5, 6, rank, 7)).astype("float32")
    upstream = tf.constant(rng.normal(size=(3, 5, 6, 7)).astype("float32"))
    got = values_and_gradients(layers.combine_bases, [weights, bases], upstream)
    want = values_and_gradients(reference_combine, [weights, bases], upstream)
    assert got[1].shape == weights_shape
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=1e-5)


def test_combine_bases_under_xla_and_with_an_unknown_batch():
    rng = np.random.default_rng(1)
    weights = tf.constant(rng.normal(size=(5, 6, 3)).astype("float32"))
    bases = tf.constant(rng.normal(size=(2, 5, 6, 3, 4)).astype("float32"))
    signature = [tf.TensorSpec((5, 6, 3)), tf.TensorSpec((None, 5, 6, 3, 4))]

    def weight_gradient(combine):
        def run(w, b):
            with tf.GradientTape() as tape:
                tape.watch(w)
                loss = tf.reduce_sum(combine(w, b) ** 2)
            return tape.gradient(loss, w)

        return run

    want = weight_gradient(reference_combine)(weights, bases)
    for jit in (False, True):
        run = tf.function(weight_gradient(layers.combine_bases), input_signature=signature,
                          jit_compile=jit)
        np.testing.assert_allclose(run(weights, bases), want, atol=1e-4, rtol=1e-5)


def layer_values_and_gradients(layer, x, upstream):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        outputs = layer(x)
    gradients = tape.gradient(
        outputs, [x] + layer.trainable_variables, output_gradients=upstream
    )
    return [outputs] + gradients


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("normalize_weights", ["softmax", "norm", ""])
@pytest.mark.parametrize("kwargs", [{}, dict(kernel_size=[3, 1, (3, 5)])], ids=["", "per_basis"])
def test_layer_gradients_equal_the_reference_path(mode, normalize_weights, kwargs, monkeypatch):
    layer = make_lrlc(mode, normalize_weights=normalize_weights, padding="same", **kwargs)
    x = images((2, 9, 8, 3))
    layer.build(x.shape)
    randomize(layer, seed=3)
    upstream = tf.constant(images((2, 9, 8, 4), seed=4))
    got = layer_values_and_gradients(layer, x, upstream)
    monkeypatch.setattr(layers, "combine_bases", reference_combine)
    want = layer_values_and_gradients(layer, x, upstream)
    assert len(got) == len(layer.trainable_variables) + 2
    for variable, g, w in zip(["outputs", "inputs"] + layer.trainable_variables, got, want):
        np.testing.assert_allclose(
            g, w, atol=ATOL, rtol=1e-5, err_msg=getattr(variable, "path", variable)
        )


@pytest.mark.parametrize("mode", ["row_col", "row_only", "col_only", "full"])
@pytest.mark.parametrize("strides", [1, 2])
def test_input_and_basis_gradients_equal_tf_keras_locally_connected(mode, strides):
    """d inputs equal the LC layer's; d W_k = sum_ij a[i, j, k] * d LC kernel[i, j]."""
    layer = make_lrlc(mode, strides=strides)
    x = images((2, 10, 9, 3))
    layer.build(x.shape)
    randomize(layer, seed=6)
    kernel = np.asarray(layer.locally_connected_kernel())  # (H', W', kh, kw, C, F)
    out_h, out_w, kh, kw, channels, filters = kernel.shape
    oracle = tf_keras.layers.LocallyConnected2D(filters, 3, strides=strides, implementation=1)
    oracle.build(x.shape)
    oracle.set_weights(
        [kernel.reshape(out_h * out_w, -1, filters), np.zeros((out_h, out_w, filters), "float32")]
    )
    upstream = tf.constant(images((2, out_h, out_w, filters), seed=7))
    x_oracle = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_oracle)
        outputs = oracle(x_oracle)
    d_x, d_lc_kernel = tape.gradient(
        outputs, [x_oracle, oracle.kernel], output_gradients=upstream
    )
    d_lc_kernel = np.asarray(d_lc_kernel).reshape(kernel.shape)
    weights = np.asarray(layer.get_combining_weights(x))[0]  # (H', W', K)
    d_bases = np.einsum("ijk,ijabcf->abckf", weights, d_lc_kernel).reshape(
        kh, kw, channels, -1
    )
    got = layer_values_and_gradients(layer, x, upstream)
    np.testing.assert_allclose(got[1], d_x, atol=ATOL, rtol=1e-5)
    assert layer.trainable_variables[0] is layer.kernel_bases
    np.testing.assert_allclose(got[2], d_bases, atol=1e-4, rtol=1e-5)
