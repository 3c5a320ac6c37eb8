"""Tests of `LowRankLocallyConnected2D`.

Oracles are independent of the code under test: locally connected layers loaded with
the layer's equivalent per-position kernel (`locally_connected_oracles`: NumPy, and
Keras 2's `tf_keras.layers.LocallyConnected2D` on TensorFlow),
`keras.layers.Conv2D` and the NumPy re-implementation of docs/design.md §1
(`lrlc_reference`). Its combining weights are tested in
`test_lrlc_combining_weights.py`.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from low_rank_local_connectivity.layers import LowRankLocallyConnected2D as LRLC
from tests.backend_testing import numpy
from tests.backend_testing import requires_tensorflow
from tests.layers.locally_connected_oracles import ORACLES
from tests.layers.lrlc_reference import np_lrlc
from tests.layers.lrlc_reference import same_padding
from tests.layers.lrlc_testing import ATOL
from tests.layers.lrlc_testing import MODES
from tests.layers.lrlc_testing import images
from tests.layers.lrlc_testing import make_lrlc
from tests.layers.lrlc_testing import randomize
from tests.layers.lrlc_testing import run


# -- Equivalence with an independent locally connected layer -------------------


def locally_connected_equivalent(layer, x, oracle):
    """Runs a locally connected `oracle` loaded with the LRLC's equivalent kernel.

    `x` is channels_last; 'same' padding is applied here in NumPy since the oracles
    are 'valid'. The kernel is read for `x` when it depends on the input (its
    combining weights, or an output size unknown at build time).
    """
    probe = x.transpose(0, 3, 1, 2) if layer.data_format == "channels_first" else x
    needs_inputs = layer.input_dependent or None in layer.output_size
    kernel = numpy(layer.locally_connected_kernel(probe if needs_inputs else None))
    if layer.input_dependent:
        assert kernel.shape[0] == 1, "the oracle takes one example at a time"
        kernel = kernel[0]
    out_h, out_w, kh, kw, _, filters = kernel.shape
    if layer.padding == "same":
        x = same_padding(x, (kh, kw), layer.strides)
    bias = np.zeros((out_h, out_w, filters), np.float32)
    for name in ("spatial_bias_row", "spatial_bias_col", "spatial_bias", "bias"):
        variable = getattr(layer, name)
        if variable is not None:
            bias = bias + numpy(variable)
    return oracle(x, kernel, bias, layer.strides)


@pytest.mark.parametrize("oracle", ORACLES)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("normalize_weights", ["softmax", "norm", ""])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_equals_locally_connected(mode, normalize_weights, data_format, oracle):
    layer = make_lrlc(
        mode, normalize_weights=normalize_weights, data_format=data_format
    )
    batch = 1 if mode == "input_dependent" else 2
    x = images((batch, 9, 8, 2))
    layer.build(x.shape if data_format == "channels_last" else (batch, 2, 9, 8))
    randomize(layer)
    np.testing.assert_allclose(
        run(layer, x), locally_connected_equivalent(layer, x, oracle), atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("oracle", ORACLES)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(
    "padding,strides", [("valid", 1), ("same", 1), ("valid", 2), ("same", 2)]
)
def test_equals_locally_connected_with_initializers(mode, padding, strides, oracle):
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
            run(layer, x), locally_connected_equivalent(layer, x, oracle),
            atol=ATOL, rtol=0,
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
    conv.set_weights([numpy(layer.kernel_bases), numpy(layer.bias)])
    np.testing.assert_allclose(numpy(layer(x)), numpy(conv(x)), atol=ATOL, rtol=0)


# -- Shapes, dynamic sizes, variables ------------------------------------------


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
    # The backend's compiled prediction step (tf.function, jax.jit; eager on torch).
    x = images((3, 10, 9, 3))
    np.testing.assert_allclose(
        model.predict(x, verbose=0), numpy(model(x)), atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("oracle", ORACLES)
@pytest.mark.parametrize(
    "mode,input_shape,probe",
    [("row_only", (10, None, 3), (2, 10, 6, 3)), ("col_only", (None, 9, 3), (2, 12, 9, 3))],
)
def test_one_axis_sharing_accepts_unknown_free_axis(mode, input_shape, probe, oracle):
    layer = make_lrlc(mode)
    inputs = keras.Input(input_shape)
    model = keras.Model(inputs, layer(inputs))
    randomize(layer)
    x = images(probe)
    y = numpy(model(x))
    np.testing.assert_allclose(y, np_lrlc(layer, x), atol=ATOL, rtol=0)
    np.testing.assert_allclose(
        y, locally_connected_equivalent(layer, x, oracle), atol=ATOL, rtol=0
    )
    assert y.shape == tuple(layer.compute_output_shape(probe))


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
    kernel = numpy(layer.kernel_bases)
    row, col = numpy(layer.combining_weights_row), numpy(layer.combining_weights_col)
    bias = numpy(layer.bias)
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
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    assert layer.kernel_bases.dtype == "float32"
    assert float(keras.ops.min(y)) >= 0.0


# -- Serialisation -------------------------------------------------------------


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
    np.testing.assert_array_equal(numpy(loaded(x)), numpy(model(x)))


@requires_tensorflow("a TensorFlow SavedModel served by TensorFlow")
@pytest.mark.slow  # It serves the model in a subprocess.
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
    expected = numpy(model(x))
    # The serving graph may fuse or reorder float32 ops (oneDNN), hence not bitwise.
    np.testing.assert_allclose(np.load(tmp_path / "y5.npy"), expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "y1.npy"), expected[:1], atol=1e-5, rtol=1e-5)


# -- Validation ----------------------------------------------------------------


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
