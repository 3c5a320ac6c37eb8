"""The optimised paths equal their reference paths, values and gradients.

`layers.combine_bases` has a hand-written gradient (batched products over the
flattened positions instead of autodiff of a broadcasting product). Its reference is
autodiff of the plain weighted sum `einsum('...k,...kf->...f')`. The LRLC layer is
checked against that reference in every combining-weights mode, and its input and
basis gradients against an independent oracle: a locally connected layer loaded with
the layer's equivalent per-position kernel (NumPy's gradients on every backend,
tf_keras' LocallyConnected2D on TensorFlow).

`layers.position_major_patches` (our LocallyConnected2D's patches) has a
hand-written gradient too; its reference is autodiff of strided slices, and the
layer's gradients are checked against the same locally connected oracles.

Gradients come from the backend's own autodiff (`tests.backend_testing`), so the
hand-written gradients (`keras.ops.custom_gradient`) are checked on every backend.
"""

import hashlib

import keras
import numpy as np
import pytest

from low_rank_local_connectivity import layers
from low_rank_local_connectivity.layers import low_rank_locally_connected2d
from tests.backend_testing import gradients
from tests.backend_testing import layer_gradients
from tests.backend_testing import numpy
from tests.backend_testing import requires_tensorflow
from tests.layers.locally_connected_oracles import GRADIENT_ORACLES
from tests.layers.lrlc_testing import ATOL
from tests.layers.lrlc_testing import MODES
from tests.layers.lrlc_testing import images
from tests.layers.lrlc_testing import make_lrlc
from tests.layers.lrlc_testing import randomize


def reference_combine(weights, bases):
    """The weighted sum as autodiff sees it: broadcast, multiply, reduce."""
    weights = keras.ops.broadcast_to(weights, keras.ops.shape(bases)[:-1])
    return keras.ops.einsum("...k,...kf->...f", weights, bases)


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
    upstream = rng.normal(size=(3, 5, 6, 7)).astype("float32")
    got = gradients(layers.combine_bases, [weights, bases], upstream)
    want = gradients(reference_combine, [weights, bases], upstream)
    assert got[1].shape == weights_shape
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=1e-5)


@requires_tensorflow("tf.function with an unknown batch, and jit_compile")
def test_combine_bases_under_xla_and_with_an_unknown_batch():
    import tensorflow as tf

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


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("normalize_weights", ["softmax", "norm", ""])
@pytest.mark.parametrize("kwargs", [{}, dict(kernel_size=[3, 1, (3, 5)])], ids=["", "per_basis"])
def test_layer_gradients_equal_the_reference_path(mode, normalize_weights, kwargs, monkeypatch):
    layer = make_lrlc(mode, normalize_weights=normalize_weights, padding="same", **kwargs)
    x = images((2, 9, 8, 3))
    layer.build(x.shape)
    randomize(layer, seed=3)
    upstream = images((2, 9, 8, 4), seed=4)
    got = layer_gradients(layer, x, upstream)
    monkeypatch.setattr(low_rank_locally_connected2d, "combine_bases", reference_combine)
    want = layer_gradients(layer, x, upstream)
    assert len(got) == len(layer.trainable_variables) + 2
    for variable, g, w in zip(["outputs", "inputs"] + layer.trainable_variables, got, want):
        # Relative to the largest entry: unnormalised weights give gradients of ~40,
        # whose sums differ in the last float32 bits between summation orders.
        np.testing.assert_allclose(
            g, w, atol=ATOL * max(1.0, np.abs(w).max()), rtol=1e-5,
            err_msg=getattr(variable, "path", variable),
        )


@pytest.mark.parametrize("oracle", GRADIENT_ORACLES)
@pytest.mark.parametrize("mode", ["row_col", "row_only", "col_only", "full"])
@pytest.mark.parametrize("strides", [1, 2])
def test_input_and_basis_gradients_equal_locally_connected(mode, strides, oracle):
    """d inputs equal the LC layer's; d W_k = sum_ij a[i, j, k] * d LC kernel[i, j]."""
    layer = make_lrlc(mode, strides=strides)
    x = images((2, 10, 9, 3))
    layer.build(x.shape)
    randomize(layer, seed=6)
    kernel = numpy(layer.locally_connected_kernel())  # (H', W', kh, kw, C, F)
    out_h, out_w, kh, kw, channels, filters = kernel.shape
    upstream = images((2, out_h, out_w, filters), seed=7)
    _, d_x, d_lc_kernel, _ = oracle(
        x, kernel, np.zeros((out_h, out_w, filters), "float32"), layer.strides, upstream
    )
    weights = numpy(layer.get_combining_weights(x))[0]  # (H', W', K)
    d_bases = np.einsum("ijk,ijabcf->abckf", weights, d_lc_kernel).reshape(
        kh, kw, channels, -1
    )
    got = layer_gradients(layer, x, upstream)
    np.testing.assert_allclose(got[1], d_x, atol=ATOL, rtol=1e-5)
    assert layer.trainable_variables[0] is layer.kernel_bases
    np.testing.assert_allclose(got[2], d_bases, atol=1e-4, rtol=1e-5)


def slice_and_concatenate(x, kernel_size, strides, output_size):
    """`position_major_patches` as autodiff sees it: strided slices, concatenated."""
    (kh, kw), (sh, sw), (oh, ow) = kernel_size, strides, output_size
    return keras.ops.concatenate(
        [x[i : i + (oh - 1) * sh + 1 : sh, j : j + (ow - 1) * sw + 1 : sw]
         for i in range(kh) for j in range(kw)],
        axis=-1,
    )


@pytest.mark.parametrize(
    "size,kernel_size,strides",
    [((9, 8), (3, 3), (1, 1)), ((10, 9), (3, 2), (2, 3)), ((7, 7), (1, 1), (2, 2)),
     ((8, 11), (2, 4), (3, 1)), ((3, 3), (3, 3), (2, 2))],
)
def test_position_major_patches_equal_autodiff_of_strided_slices(size, kernel_size, strides):
    rng = np.random.default_rng(2)
    output_size = tuple((n - k) // s + 1 for n, k, s in zip(size, kernel_size, strides))
    x = rng.normal(size=(*size, 2, 3)).astype("float32")
    upstream = rng.normal(
        size=(*output_size, 2, kernel_size[0] * kernel_size[1] * 3)
    ).astype("float32")
    arguments = (kernel_size, strides, output_size)
    got = gradients(lambda v: layers.position_major_patches(v, *arguments), [x], upstream)
    want = gradients(lambda v: slice_and_concatenate(v, *arguments), [x], upstream)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=1e-5)


@requires_tensorflow("the bits of TensorFlow's kernels")
@pytest.mark.parametrize(
    "size,kernel_size,strides,digest",
    [((9, 8), (3, 3), (1, 1), "75f9b673020fe353"),
     ((10, 9), (3, 2), (2, 3), "4fd962587ae955a7"),
     ((8, 11), (2, 4), (3, 1), "ac13aa91679337f9"),
     ((26, 26), (3, 3), (1, 1), "0efe99748cd61530")],
)
def test_position_major_patches_float32_gradient_bits_are_unchanged(
        size, kernel_size, strides, digest):
    """SHA-256 of the float32 input gradient, recorded before the gradient split
    the upstream windows instead of transposing them: the same sums, same bits."""
    rng = np.random.default_rng(2)
    output_size = tuple((n - k) // s + 1 for n, k, s in zip(size, kernel_size, strides))
    x = rng.normal(size=(*size, 2, 3)).astype("float32")
    upstream = rng.normal(
        size=(*output_size, 2, kernel_size[0] * kernel_size[1] * 3)).astype("float32")
    _, d_x = gradients(
        lambda v: layers.position_major_patches(v, kernel_size, strides, output_size),
        [x], upstream,
    )
    assert hashlib.sha256(d_x.tobytes()).hexdigest()[:16] == digest


@pytest.mark.parametrize("oracle", GRADIENT_ORACLES)
@pytest.mark.parametrize("strides", [1, 2, (1, 2)])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_locally_connected_gradients_equal_the_oracle(strides, data_format, oracle):
    x = images((2, 9, 8, 3))
    ours = layers.LocallyConnected2D(4, (3, 2), strides=strides, data_format=data_format)
    channels_first = data_format == "channels_first"
    ours.build(x.transpose(0, 3, 1, 2).shape if channels_first else x.shape)
    randomize(ours, seed=9)
    kernel, bias = numpy(ours.kernel), numpy(ours.bias)
    out_h, out_w = kernel.shape[:2]
    upstream = images((2, out_h, out_w, 4), seed=10)

    def ours_channels_last(v):
        if channels_first:
            return keras.ops.transpose(ours(keras.ops.transpose(v, (0, 3, 1, 2))), (0, 2, 3, 1))
        return ours(v)

    got = layer_gradients(ours, x, upstream, call=ours_channels_last)
    want = oracle(x, kernel, bias, ours.strides, upstream)
    # outputs, inputs, kernel (H', W', kh, kw, C, F), bias.
    for name, g, w in zip(["outputs", "inputs", "kernel", "bias"], got, want):
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=1e-5, err_msg=name)


@requires_tensorflow("tf.function, with and without jit_compile")
def test_compiling_with_xla_is_true_only_while_tracing_for_xla():
    import tensorflow as tf

    seen = {}

    def record(name):
        def run():
            seen[name] = layers.compiling_with_xla()
            return tf.constant(0.0)

        return run

    tf.function(record("xla"), jit_compile=True)()
    tf.function(record("graph"))()
    record("eager")()
    assert seen == {"xla": True, "graph": False, "eager": False}


@requires_tensorflow("tf.function, with and without jit_compile")
@pytest.mark.parametrize("mode", list(MODES))
def test_layer_under_xla_equals_graph_mode(mode):
    """XLA runs other formulations (block-diagonal dense depthwise convolutions).

    On JAX, which always compiles with XLA, they are what the other tests check.
    """
    import tensorflow as tf

    layer = make_lrlc(mode, padding="same")
    x = images((2, 12, 11, 3))
    layer.build(x.shape)
    randomize(layer, seed=11)
    upstream = tf.constant(images((2, 12, 11, 4), seed=12))

    def step(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            outputs = layer(v)
        gradients = tape.gradient(
            outputs, [v] + layer.trainable_variables, output_gradients=upstream
        )
        return [outputs] + gradients

    graph = tf.function(step)(tf.constant(x))
    xla = tf.function(step, jit_compile=True)(tf.constant(x))
    assert len(graph) == len(layer.trainable_variables) + 2
    for g, w in zip(xla, graph):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-4)


def test_bad_shapes_are_rejected_with_the_shapes_named():
    with pytest.raises(ValueError, match=r"weights.shape=\(5, 6, 2\)"):
        layers.combine_bases(np.zeros((5, 6, 2), "float32"), np.zeros((1, 5, 6, 3, 4), "float32"))
    with pytest.raises(ValueError, match=r"bases.shape=\(5, 6, 3, 4\)"):
        layers.combine_bases(np.zeros((5, 6, 3), "float32"), np.zeros((5, 6, 3, 4), "float32"))
    with pytest.raises(ValueError, match=r"x.shape=\(4, 4, 1, 2\)"):
        layers.position_major_patches(np.zeros((4, 4, 1, 2), "float32"), (3, 3), (1, 1), (3, 2))
