"""Tests of `low_rank_local_connectivity.layers`.

Oracles are independent of the code under test: `tf_keras.layers.LocallyConnected2D`
(Keras 2's locally connected layer), `keras.layers.Conv2D`, TF1's
`resize_bilinear(align_corners=True)` and NumPy re-implementations of
docs/design.md §1.
"""

import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from low_rank_local_connectivity import layers
from lrlc_reference import np_conv
from lrlc_reference import np_lrlc
from lrlc_reference import np_normalize
from lrlc_reference import np_resize_align_corners
from lrlc_testing import MODES
from lrlc_testing import images
from lrlc_testing import make_lrlc
from lrlc_testing import randomize

LRLC = layers.LowRankLocallyConnected2D
ATOL = 1e-5

def tf_keras_locally_connected(layer, x):
    """Runs tf_keras' LocallyConnected2D loaded with the LRLC's equivalent kernel.

    `x` is channels_last; 'same' padding is applied here in NumPy since tf_keras'
    implementation 1 only supports 'valid'.
    """
    probe = x.transpose(0, 3, 1, 2) if layer.data_format == "channels_first" else x
    kernel = np.asarray(
        layer.locally_connected_kernel(probe if layer.input_dependent else None)
    )
    if layer.input_dependent:
        assert kernel.shape[0] == 1, "the oracle takes one example at a time"
        kernel = kernel[0]
    out_h, out_w, kh, kw, channels, filters = kernel.shape
    if layer.padding == "same":
        sh, sw = layer.strides
        pad_h = max((out_h - 1) * sh + kh - x.shape[1], 0)
        pad_w = max((out_w - 1) * sw + kw - x.shape[2], 0)
        x = np.pad(
            x,
            ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
        )
    oracle = tf_keras.layers.LocallyConnected2D(
        filters, (kh, kw), strides=layer.strides, implementation=1
    )
    oracle.build(x.shape)
    bias = np.zeros((out_h, out_w, filters), np.float32)
    for name in ("spatial_bias_row", "spatial_bias_col", "spatial_bias", "bias"):
        variable = getattr(layer, name)
        if variable is not None:
            bias = bias + np.asarray(variable)
    oracle.set_weights(
        [kernel.reshape(out_h * out_w, kh * kw * channels, filters), bias]
    )
    return oracle(x).numpy()


def run(layer, x_channels_last):
    """Calls `layer` on x given channels_last, returns a channels_last output."""
    if layer.data_format == "channels_first":
        return np.asarray(layer(x_channels_last.transpose(0, 3, 1, 2))).transpose(0, 2, 3, 1)
    return np.asarray(layer(x_channels_last))


# -- Equivalence with an independent locally connected layer -------------------


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("normalize_weights", ["softmax", "norm", ""])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_equals_tf_keras_locally_connected(mode, normalize_weights, data_format):
    layer = make_lrlc(
        mode, normalize_weights=normalize_weights, data_format=data_format
    )
    batch = 1 if mode == "input_dependent" else 2
    x = images((batch, 9, 8, 2))
    layer.build(x.shape if data_format == "channels_last" else (batch, 2, 9, 8))
    randomize(layer)
    np.testing.assert_allclose(
        run(layer, x), tf_keras_locally_connected(layer, x), atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(
    "padding,strides", [("valid", 1), ("same", 1), ("valid", 2), ("same", 2)]
)
def test_equals_tf_keras_locally_connected_with_initializers(mode, padding, strides):
    """As built (no randomisation), for 'conv_init' and a random initializer."""
    x = images((1, 10, 9, 3))
    for initializer in ("conv_init", keras.initializers.RandomNormal(seed=3)):
        layer = make_lrlc(
            mode,
            padding=padding,
            strides=strides,
            combining_weights_initializer=initializer,
            bias_initializer=keras.initializers.RandomNormal(seed=4),
        )
        np.testing.assert_allclose(
            run(layer, x), tf_keras_locally_connected(layer, x), atol=ATOL, rtol=0
        )


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(padding="valid", strides=(2, 1)),
        dict(padding="same", dilations=2),
        dict(padding="valid", dilations=(2, 1), kernel_size=(3, 2)),
        dict(padding="same", kernel_size=[1, 3, 5]),
        dict(padding="same", kernel_size=[3, (3, 5), 1], dilations=[1, 2, (1, 3)]),
    ],
    ids=["strides", "dilation", "rect_dilation", "per_basis_sizes", "per_basis_both"],
)
def test_matches_numpy_reference(mode, kwargs):
    """Dilations and per-basis sizes, which tf_keras' layer cannot express."""
    layer = make_lrlc(mode, **kwargs)
    x = images((2, 17, 15, 3))
    layer.build(x.shape)
    randomize(layer, seed=5)
    np.testing.assert_allclose(run(layer, x), np_lrlc(layer, x), atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("filters,input_size", [(6, (8, 9)), (7, (8, 9)), (6, (8, 8))])
def test_spatial_biases_land_on_their_axes(mode, use_bias, filters, input_size):
    """Output height or width equal to `filters` (6x7 outputs, 6 or 7 filters).

    `keras.ops.add` treats a tensor with one non-singleton axis as a channel bias
    when that axis' size matches the first or last axis of the other operand.
    """
    layer = make_lrlc(mode, filters=filters, use_bias=use_bias)
    x = images((2, *input_size, 3))
    layer.build(x.shape)
    randomize(layer, seed=8)
    np.testing.assert_allclose(run(layer, x), np_lrlc(layer, x), atol=ATOL, rtol=0)


def test_input_dependent_weights_differ_per_example():
    layer = make_lrlc("input_dependent")
    x = images((3, 12, 12, 3))
    layer.build(x.shape)
    randomize(layer)
    weights = np.asarray(layer.get_combining_weights(x))
    assert weights.shape == (3, 10, 10, 3)
    assert np.abs(weights[0] - weights[1]).max() > 1e-3
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    # A batch gives each example the same output as on its own.
    single = np.concatenate([run(layer, x[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(run(layer, x), single, atol=ATOL, rtol=0)


# -- Convolution equivalences --------------------------------------------------


@pytest.mark.parametrize(
    "padding,strides,dilation",
    [("valid", 1, 1), ("same", 1, 1), ("valid", 2, 1), ("same", 2, 1), ("valid", 1, 2), ("same", 1, 2)],
)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_rank_one_softmax_equals_conv2d(padding, strides, dilation, data_format):
    kwargs = dict(padding=padding, strides=strides, dilation_rate=dilation)
    layer = LRLC(
        1, 7, 3, dilations=dilation, strides=strides, padding=padding,
        data_format=data_format, use_spatial_bias=False,
    )
    conv = keras.layers.Conv2D(7, 3, data_format=data_format, **kwargs)
    shape = (2, 3, 11, 10) if data_format == "channels_first" else (2, 11, 10, 3)
    x = images(shape)
    layer.build(shape)
    randomize(layer)  # random logits: softmax over one basis is still 1
    conv.build(shape)
    conv.set_weights([np.asarray(layer.kernel_bases), np.asarray(layer.bias)])
    np.testing.assert_allclose(layer(x), conv(x), atol=ATOL, rtol=0)


def test_conv_init_is_a_convolution_with_the_mean_basis():
    layer = LRLC(4, 6, 3, padding="same", use_bias=False, use_spatial_bias=False)
    x = images((2, 8, 8, 3))
    layer.build(x.shape)
    kernel = np.asarray(layer.kernel_bases).reshape(3, 3, 3, 4, 6).mean(axis=3)
    np.testing.assert_allclose(
        layer.combining_weights, np.full((8, 8, 4), 0.25), atol=1e-7
    )
    np.testing.assert_allclose(
        layer(x), np_conv(x, kernel, padding="same"), atol=ATOL, rtol=0
    )
    row = np.asarray(layer.combining_weights_row)
    np.testing.assert_allclose(row, 0.5 / math.sqrt(4))  # row + col = 1/sqrt(K)


def test_conv_init_without_factorisation_is_one_over_sqrt_rank():
    layer = make_lrlc("full", spatial_rank=4)
    layer.build((1, 6, 6, 2))
    np.testing.assert_allclose(layer.combining_weights_table, 0.5)


def test_row_col_sharing_equals_full_table_of_sums():
    x = images((2, 9, 7, 3))
    shared = make_lrlc("row_col")
    full = make_lrlc("full", use_spatial_bias=False)
    shared.build(x.shape)
    full.build(x.shape)
    randomize(shared)
    row = np.asarray(shared.combining_weights_row)
    col = np.asarray(shared.combining_weights_col)
    full.kernel_bases.assign(shared.kernel_bases)
    full.bias.assign(shared.bias)
    full.combining_weights_table.assign(row[:, None, :] + col[None, :, :])
    spatial_bias = np.asarray(shared.spatial_bias_row) + np.asarray(shared.spatial_bias_col)
    np.testing.assert_allclose(
        shared(x), np.asarray(full(x)) + spatial_bias, atol=ATOL, rtol=0
    )


# -- Normalisation ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ["row_col", "row_only", "col_only", "full"])
def test_normalizations(mode):
    x = images((1, 8, 8, 2))
    layers_by_norm = {}
    for normalization in ("softmax", "norm", ""):
        layer = make_lrlc(mode, spatial_rank=5, normalize_weights=normalization)
        layer.build(x.shape)
        randomize(layer, seed=7)
        layers_by_norm[normalization] = np.asarray(layer.combining_weights)
    np.testing.assert_allclose(layers_by_norm["softmax"].sum(-1), 1.0, atol=1e-6)
    assert (layers_by_norm["softmax"] > 0).all()
    np.testing.assert_allclose(
        np.linalg.norm(layers_by_norm["norm"], axis=-1), 1.0, atol=1e-6
    )
    raw = layers_by_norm[""]
    np.testing.assert_allclose(np_normalize(raw, "softmax"), layers_by_norm["softmax"], atol=1e-6)
    np.testing.assert_allclose(np_normalize(raw, "norm"), layers_by_norm["norm"], atol=1e-6)
    assert np.abs(raw.sum(-1) - 1).max() > 0.1  # untouched


def test_norm_normalization_of_zero_logits_is_finite():
    logits = keras.ops.zeros((2, 3))
    out = layers.normalize_combining_weights(logits, "norm")
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize(
    "mode,shape", [("row_col", (6, 5, 3)), ("row_only", (6, 3)), ("col_only", (5, 3)), ("full", (6, 5, 3))]
)
def test_combining_weights_shape_and_batched_view(mode, shape):
    layer = make_lrlc(mode)
    x = images((4, 8, 7, 2))
    layer.build(x.shape)
    randomize(layer)
    assert tuple(layer.combining_weights.shape) == shape
    batched = np.asarray(layer.get_combining_weights(x))
    assert batched.shape == (4, 6, 5, 3)
    expanded = np.asarray(layer.combining_weights)
    if mode == "row_only":
        expanded = expanded[:, None, :]
    elif mode == "col_only":
        expanded = expanded[None, :, :]
    np.testing.assert_allclose(batched, np.broadcast_to(expanded, batched.shape), atol=1e-7)


def test_combining_weights_property_raises_in_input_dependent_mode():
    layer = make_lrlc("input_dependent")
    layer.build((1, 8, 8, 2))
    with pytest.raises(ValueError, match="get_combining_weights"):
        layer.combining_weights
    with pytest.raises(ValueError, match="needs `inputs`"):
        layer.locally_connected_kernel()


# -- Input-dependent network -----------------------------------------------------


@pytest.mark.parametrize(
    "in_size,out_size", [((9, 9), (7, 7)), ((5, 8), (13, 3)), ((1, 4), (3, 1)), ((6, 6), (6, 6))]
)
def test_align_corners_resize_matches_tf1(in_size, out_size):
    x = images((1, *in_size, 2))
    rows = layers.align_corners_resize_matrix(in_size[0], out_size[0])
    cols = layers.align_corners_resize_matrix(in_size[1], out_size[1])
    ours = np.einsum("oh,bhwc->bowc", rows, x)
    ours = np.einsum("pw,bhwc->bhpc", cols, ours)
    np.testing.assert_allclose(ours, np_resize_align_corners(x, out_size), atol=1e-5)


@pytest.mark.parametrize(
    "size,dilations", [(3, (1,)), (4, (1,)), (5, (1, 2)), (9, (1, 2, 4)), (17, (1, 2, 4, 8)), (2, ())]
)
def test_input_dependent_network_dilations_and_parameter_count(size, dilations):
    rank, channels = 3, 5
    network = layers.InputDependentCombiningWeights(rank, (4, 4))
    network.build((None, size, size + 3, channels))
    assert network.dilations == dilations
    concat, hidden = (2 + len(dilations)) * rank, 6 * rank
    expected = (
        channels * rank + rank  # 1x1 projection
        + len(dilations) * (9 * rank + rank)  # depthwise 3x3
        + concat * (hidden // 2) + hidden // 2
        + (hidden // 2) * hidden + hidden
        + hidden * rank + rank
    )
    assert network.count_params() == expected


# -- LocallyConnected2D ------------------------------------------------------------


@pytest.mark.parametrize("strides", [1, 2, (1, 2)])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_locally_connected_equals_tf_keras(strides, data_format):
    x = images((2, 9, 8, 3))
    ours = layers.LocallyConnected2D(
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
    layer = layers.LocallyConnected2D(
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
    layer = layers.LocallyConnected2D(64, 3)
    layer.build((None, 32, 32, 64))
    assert layer.count_params() == 30 * 30 * (3 * 3 * 64 * 64 + 64)


# -- CoordinateChannels ------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_coordinate_channels(data_format):
    x = images((2, 4, 3, 2))
    y = run(layers.CoordinateChannels(data_format=data_format), x)
    assert y.shape == (2, 4, 3, 4)
    np.testing.assert_array_equal(y[..., :2], x)
    np.testing.assert_allclose(y[1, :, 0, 2], [-1, -1 / 3, 1 / 3, 1], atol=1e-6)
    np.testing.assert_allclose(y[0, 2, :, 3], [-1, 0, 1], atol=1e-6)


# -- Shapes, dynamic sizes, variables -------------------------------------------


MODE_VARIABLES = {
    # name -> shape, for rank 3, filters 4, 3x3 kernel, input (8, 7, 2) -> (6, 5).
    "row_col": {
        "kernel_bases": (3, 3, 2, 12), "combining_weights_row": (6, 3),
        "combining_weights_col": (5, 3), "spatial_bias_row": (6, 1, 1),
        "spatial_bias_col": (1, 5, 1), "bias": (4,),
    },
    "row_only": {
        "kernel_bases": (3, 3, 2, 12), "combining_weights_row": (6, 3),
        "spatial_bias_row": (6, 1, 1), "bias": (4,),
    },
    "col_only": {
        "kernel_bases": (3, 3, 2, 12), "combining_weights_col": (5, 3),
        "spatial_bias_col": (1, 5, 1), "bias": (4,),
    },
    "full": {
        "kernel_bases": (3, 3, 2, 12), "combining_weights": (6, 5, 3),
        "spatial_bias": (6, 5, 1), "bias": (4,),
    },
}


@pytest.mark.parametrize("mode", list(MODE_VARIABLES))
def test_variables_per_mode(mode):
    layer = make_lrlc(mode)
    layer.build((None, 8, 7, 2))
    found = {w.path.split("/")[-1]: tuple(w.shape) for w in layer.weights}
    assert found == MODE_VARIABLES[mode]
    assert all(w.trainable for w in layer.weights)


def test_variables_without_biases_and_per_basis():
    layer = LRLC(
        2, 4, [3, 5], padding="same", use_bias=False, use_spatial_bias=False
    )
    layer.build((None, 8, 7, 2))
    found = {w.path.split("/")[-1]: tuple(w.shape) for w in layer.weights}
    assert found == {
        "kernel_bases_0": (3, 3, 2, 4), "kernel_bases_1": (5, 5, 2, 4),
        "combining_weights_row": (8, 2), "combining_weights_col": (7, 2),
    }


def test_input_dependent_variables():
    layer = make_lrlc("input_dependent")
    layer.build((None, 8, 7, 2))
    own = {w.path.split("/")[-1]: tuple(w.shape) for w in layer.weights
           if "combining_weights_network" not in w.path}
    assert own == {"kernel_bases": (3, 3, 2, 12), "spatial_bias": (6, 5, 1), "bias": (4,)}
    assert layer.count_params() == (
        3 * 3 * 2 * 12 + 30 + 4 + layer.combining_weights_network.count_params()
    )


@pytest.mark.parametrize("mode", list(MODES))
def test_any_batch_size_after_build_in_a_functional_model(mode):
    inputs = keras.Input((10, 9, 3))
    outputs = make_lrlc(mode, filters=2)(inputs)
    model = keras.Model(inputs, outputs)
    assert tuple(outputs.shape) == (None, 8, 7, 2)
    for batch in (1, 5):
        assert model(images((batch, 10, 9, 3))).shape == (batch, 8, 7, 2)
    compiled = tf.function(model)
    assert compiled(images((3, 10, 9, 3))).shape == (3, 8, 7, 2)


@pytest.mark.parametrize(
    "mode,input_shape,probe",
    [("row_only", (10, None, 3), (2, 10, 6, 3)), ("col_only", (None, 9, 3), (2, 12, 9, 3))],
)
def test_one_axis_sharing_accepts_unknown_free_axis(mode, input_shape, probe):
    layer = make_lrlc(mode)
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, layer(inputs))
    randomize(layer)
    x = images(probe)
    y = np.asarray(model(x))
    np.testing.assert_allclose(y, np_lrlc(layer, x), atol=ATOL, rtol=0)
    np.testing.assert_allclose(
        y, tf_keras_locally_connected_dynamic(layer, x), atol=ATOL, rtol=0
    )
    assert y.shape == tuple(layer.compute_output_shape(probe))


def tf_keras_locally_connected_dynamic(layer, x):
    kernel = np.asarray(layer.locally_connected_kernel(x))
    out_h, out_w = kernel.shape[:2]
    oracle = tf_keras.layers.LocallyConnected2D(layer.filters, 3, implementation=1)
    oracle.build(x.shape)
    bias = sum(
        np.asarray(v) for v in (layer.spatial_bias_row, layer.spatial_bias_col, layer.bias)
        if v is not None
    )
    oracle.set_weights(
        [kernel.reshape(out_h * out_w, -1, layer.filters),
         np.broadcast_to(bias, (out_h, out_w, layer.filters))]
    )
    return oracle(x).numpy()


def test_compute_output_shape_matches_call():
    for kwargs in (
        dict(padding="same", strides=2), dict(padding="valid", strides=(2, 3)),
        dict(padding="valid", dilations=3), dict(data_format="channels_first"),
    ):
        layer = make_lrlc("row_col", **kwargs)
        shape = (2, 13, 11, 3) if "data_format" not in kwargs else (2, 3, 13, 11)
        assert tuple(layer(images(shape)).shape) == tuple(layer.compute_output_shape(shape))


def test_regularizers_and_constraints_apply_to_their_variables():
    layer = LRLC(
        2, 3, 3,
        kernel_regularizer=keras.regularizers.L2(0.1),
        combining_weights_regularizer=keras.regularizers.L1(0.2),
        bias_regularizer=keras.regularizers.L2(0.3),
        combining_weights_constraint=keras.constraints.NonNeg(),
        use_spatial_bias=False,
    )
    layer.build((None, 6, 6, 2))
    randomize(layer)
    kernel = np.asarray(layer.kernel_bases)
    row, col = np.asarray(layer.combining_weights_row), np.asarray(layer.combining_weights_col)
    bias = np.asarray(layer.bias)
    expected = sorted([
        0.1 * (kernel**2).sum(), 0.2 * np.abs(row).sum(), 0.2 * np.abs(col).sum(),
        0.3 * (bias**2).sum(),
    ])
    np.testing.assert_allclose(sorted(float(l) for l in layer.losses), expected, rtol=1e-5)
    assert layer.combining_weights_row.constraint is not None
    assert layer.kernel_bases.constraint is None


def test_activation_and_mixed_precision():
    layer = LRLC(2, 3, 3, activation="relu", dtype="mixed_float16")
    y = layer(images((2, 6, 6, 2)))
    assert y.dtype == "float16"
    assert layer.kernel_bases.dtype == "float32"
    assert float(keras.ops.min(y)) >= 0.0


# -- Serialisation -----------------------------------------------------------------


CONFIGS = [
    dict(mode="row_col", normalize_weights="norm", activation="relu", strides=2),
    dict(mode="row_only", padding="same", data_format="channels_first"),
    dict(mode="col_only", normalize_weights="", dilations=2),
    dict(mode="full", combining_weights_initializer="random_normal", use_bias=False),
    dict(mode="input_dependent", kernel_size=(3, 1)),
    dict(mode="row_col", padding="same", kernel_size=[1, 3, (5, 3)], dilations=[1, 2, 1],
         kernel_regularizer="l2"),
]


def _model_with(config, input_shape=(9, 8, 3)):
    config = dict(config)
    mode = config.pop("mode")
    if config.get("data_format") == "channels_first":
        input_shape = (input_shape[2], *input_shape[:2])
    inputs = keras.Input(input_shape)
    layer = make_lrlc(mode, **config)
    outputs = layer(inputs)
    outputs = keras.layers.Flatten()(outputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(outputs))
    randomize(layer)
    return model, layer, input_shape


@pytest.mark.parametrize("config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_get_config_round_trip(config):
    _, layer, _ = _model_with(config)
    clone = LRLC.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    signature_args = set(LRLC.__init__.__code__.co_varnames[1:25])
    assert signature_args <= set(layer.get_config())


@pytest.mark.parametrize("config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_keras_file_round_trip(config, tmp_path):
    model, _, input_shape = _model_with(config)
    x = images((2, *input_shape))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded(x), model(x))


def test_saved_model_serves_without_the_package(tmp_path):
    model, _, input_shape = _model_with(dict(mode="input_dependent"))
    export_dir = str(tmp_path / "saved_model")
    model.export(export_dir, verbose=False)
    x = images((5, *input_shape))
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf
        served = tf.saved_model.load({export_dir!r})
        x = np.load({str(tmp_path / 'x.npy')!r})
        np.save({str(tmp_path / 'y5.npy')!r}, served.serve(x).numpy())
        np.save({str(tmp_path / 'y1.npy')!r}, served.serve(x[:1]).numpy())
        assert not any(m.startswith("low_rank_local_connectivity") for m in sys.modules)
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [sys.executable, "-c", script], check=True, cwd=str(tmp_path), env=env,
        capture_output=True,
    )
    expected = np.asarray(model(x))
    # The serving graph may fuse or reorder float32 ops (oneDNN), hence not bitwise.
    np.testing.assert_allclose(np.load(tmp_path / "y5.npy"), expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "y1.npy"), expected[:1], atol=1e-5, rtol=1e-5)


# -- Validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(spatial_rank=0), r"`spatial_rank`.*positive integer.*spatial_rank=0"),
        (dict(spatial_rank=2.0), r"`spatial_rank`.*positive integer"),
        (dict(filters=0), r"`filters`.*positive integer.*filters=0"),
        (dict(kernel_size=0), r"`kernel_size`.*kernel_size=0"),
        (dict(kernel_size=(3, 3, 3)), r"`kernel_size`.*tuple of 2"),
        (dict(strides=-1), r"`strides`"),
        (dict(normalize_weights="l1"), r"`normalize_weights`.*'softmax'.*normalize_weights='l1'"),
        (dict(padding="causal"), r"`padding`.*\('valid', 'same'\).*padding='causal'"),
        (dict(data_format="NHWC"), r"`data_format`.*channels_last.*data_format='NHWC'"),
        (dict(input_dependent=True), r"share_row_combining_weights.*must both be False"),
        (dict(input_dependent=True, share_row_combining_weights=False),
         r"share_col_combining_weights=True"),
        (dict(kernel_size=[3, 3], padding="same"), r"length must equal spatial_rank=3"),
        (dict(dilations=[1, 2], padding="same"), r"`dilations`.*spatial_rank=3"),
        (dict(kernel_size=[3, 3, 5]), r"padding='same'.*Received: padding='valid'"),
        (dict(kernel_size=[3, 0, 5], padding="same"), r"`kernel_size\[1\]`"),
        (dict(strides=2, dilations=2), r"Strides > 1 cannot be combined with dilations > 1"),
    ],
)
def test_construction_errors(kwargs, match):
    kwargs = {"spatial_rank": 3, "filters": 4, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        LRLC(**kwargs)


@pytest.mark.parametrize(
    "mode,input_shape,match",
    [
        ("row_col", (None, 8, 8, None), r"channel dimension.*must be defined"),
        ("row_col", (None, None, 8, 3), r"needs the input height.*one entry per output row\."),
        ("row_col", (None, 8, None, 3), r"needs the input width.*one entry per output column\."),
        ("row_only", (None, None, 8, 3), r"needs the input height"),
        ("col_only", (None, 8, None, 3), r"needs the input width"),
        ("full", (None, 8, None, 3), r"needs the input width"),
        ("input_dependent", (None, None, 8, 3), r"needs the input height"),
        ("row_col", (None, 2, 8, 3), r"input height \(2\) is too small.*kernel_size=\(3, 3\)"),
        ("row_col", (None, 8, 8), r"expects 4-D inputs"),
    ],
)
def test_build_errors(mode, input_shape, match):
    with pytest.raises(ValueError, match=match):
        make_lrlc(mode).build(input_shape)


def test_wrong_channels_after_build_is_rejected():
    layer = make_lrlc()
    layer.build((None, 8, 8, 3))
    with pytest.raises(ValueError, match="axis -1"):
        layer(images((1, 8, 8, 4)))


def test_locally_connected_and_coordinate_channel_errors():
    with pytest.raises(ValueError, match=r"`filters`.*filters=-2"):
        layers.LocallyConnected2D(-2, 3)
    with pytest.raises(ValueError, match=r"`padding`"):
        layers.LocallyConnected2D(2, 3, padding="full")
    with pytest.raises(ValueError, match=r"known input height and width"):
        layers.LocallyConnected2D(2, 3).build((None, None, 8, 3))
    with pytest.raises(ValueError, match=r"known input height and width"):
        layers.LocallyConnected2D(2, 5).build((None, 4, 8, 3))
    with pytest.raises(ValueError, match=r"known input height and width"):
        layers.CoordinateChannels().build((None, None, 8, 3))


def test_input_dependent_network_is_a_serialisable_layer(tmp_path):
    network = layers.InputDependentCombiningWeights(
        3, (5, 4), kernel_regularizer="l2", name="network"
    )
    inputs = keras.Input((9, 8, 2))
    model = keras.Model(inputs, network(inputs))
    assert tuple(model.output.shape) == (None, 5, 4, 3)
    clone = layers.InputDependentCombiningWeights.from_config(network.get_config())
    assert clone.get_config() == network.get_config()
    randomize(network)
    path = str(tmp_path / "network.keras")
    model.save(path)
    x = images((2, 9, 8, 2))
    np.testing.assert_array_equal(keras.saving.load_model(path)(x), model(x))


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("normalize_weights", ["softmax", "norm", ""])
def test_every_trainable_variable_gets_a_gradient(rank, normalize_weights):
    layer = make_lrlc("row_col", spatial_rank=rank, normalize_weights=normalize_weights)
    x = tf.constant(images((2, 7, 7, 2)))
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    gradients = tape.gradient(loss, layer.trainable_variables)
    assert all(g is not None for g in gradients)
    if rank == 1 and normalize_weights == "softmax":  # the weight is always 1
        np.testing.assert_array_equal(gradients[1], 0.0)
