"""Tests of `convert.to_lrlc`: a converted model computes the original function.

The oracle is always the original model (its outputs and weights), never the
conversion code: outputs are compared on random inputs, parameters are counted
from the layer shapes, and every weight that is not converted is compared array
by array.
"""

import math

import keras
import numpy as np
import pytest

from low_rank_local_connectivity import convert
from low_rank_local_connectivity import data
from low_rank_local_connectivity import models
from low_rank_local_connectivity.layers import LowRankLocallyConnected2D as LRLC
from tests.backend_testing import numpy
from tests.backend_testing import requires_tensorflow
from tests.layers.lrlc_testing import MODES
from tests.layers.lrlc_testing import images

CONVS = {
    "valid": dict(kernel_size=3),
    "same_stride2_relu": dict(kernel_size=3, padding="same", strides=2,
                              activation="relu"),
    "dilation2_no_bias": dict(kernel_size=3, dilation_rate=2, use_bias=False),
    "rectangular": dict(kernel_size=(3, 2), strides=(2, 1)),
    "channels_first": dict(kernel_size=3, padding="same",
                           data_format="channels_first"),
}


def _randomize(model, seed=0):
    """Random values for every weight; batch-norm variances stay positive."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if "variance" in variable.path:
            value = rng.uniform(0.5, 1.5, variable.shape)
        else:
            value = rng.normal(scale=0.3, size=variable.shape)
        variable.assign(value.astype("float32"))


def _assert_same_function(original, converted, x, atol=1e-5):
    expected = numpy(original(x, training=False))
    got = numpy(converted(x, training=False))
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol * scale)


def _lrlc_layers(model):
    return [layer for layer in convert._leaf_layers(model) if isinstance(layer, LRLC)]


def _conv_model(conv_kwargs, shape=(13, 11, 3), filters=5):
    channels_first = conv_kwargs.get("data_format") == "channels_first"
    input_shape = (shape[2], *shape[:2]) if channels_first else shape
    model = keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(filters, name="conv", **conv_kwargs),
    ])
    _randomize(model)
    return model, input_shape


# -- The same function ---------------------------------------------------------


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("mode", MODES)
def test_converted_convolution_computes_the_original(conv, mode):
    model, input_shape = _conv_model(CONVS[conv])
    share_row, share_col, input_dependent = MODES[mode]
    kwargs = dict(input_dependent=True) if input_dependent else dict(
        share_row_combining_weights=share_row, share_col_combining_weights=share_col
    )
    converted = convert.to_lrlc(model, 3, **kwargs)
    layer = converted.get_layer("conv")
    assert isinstance(layer, LRLC) and layer.input_dependent == input_dependent
    original = model.get_layer("conv")
    assert (layer.filters, layer.kernel_size, layer.strides, layer.padding,
            layer.dilations, layer.data_format, layer.use_bias, layer.activation) == (
        original.filters, original.kernel_size, original.strides, original.padding,
        original.dilation_rate, original.data_format, original.use_bias,
        original.activation)
    _assert_same_function(model, converted, images((4, *input_shape)))


@pytest.mark.parametrize("normalize_weights", ["softmax", "norm", ""])
@pytest.mark.parametrize("input_dependent", [False, True])
def test_bases_are_perturbed_and_their_weighted_sum_is_the_kernel(
    normalize_weights, input_dependent
):
    model, input_shape = _conv_model(dict(kernel_size=3), shape=(16, 16, 8), filters=16)
    converted = convert.to_lrlc(
        model, 4, normalize_weights=normalize_weights, input_dependent=input_dependent,
        basis_perturbation=0.2,
    )
    layer = converted.get_layer("conv")
    rank = 4
    expected_weight = 1 / math.sqrt(rank) if normalize_weights == "norm" else 1 / rank
    if input_dependent:  # Uniform for any input.
        weights = numpy(layer.get_combining_weights(images((3, *input_shape))))
    else:
        weights = numpy(layer.combining_weights)
    np.testing.assert_allclose(weights, expected_weight, rtol=1e-6)
    bases = np.moveaxis(
        numpy(layer.kernel_bases).reshape(3, 3, 8, rank, 16), 3, 0
    )
    kernel = numpy(model.get_layer("conv").kernel)
    np.testing.assert_allclose(expected_weight * bases.sum(0), kernel, atol=1e-6)
    # The perturbations: zero-sum, unit-variance noise times 0.2 RMS of a basis.
    basis = kernel / (rank * expected_weight)
    deviations = bases - basis
    rms = math.sqrt(np.mean(basis ** 2))
    assert 0.18 * rms < deviations.std() < 0.22 * rms
    assert np.abs(bases[0] - bases[1]).max() > 0.1 * rms
    _assert_same_function(model, converted, images((2, *input_shape)))


def test_perturbations_are_seeded():
    model, _ = _conv_model(dict(kernel_size=3))

    def bases(seed):
        return numpy(convert.to_lrlc(model, 2, seed=seed).get_layer("conv").kernel_bases)

    np.testing.assert_array_equal(bases(1), bases(1))
    assert np.abs(bases(1) - bases(2)).max() > 0
    without = numpy(
        convert.to_lrlc(model, 2, basis_perturbation=0).get_layer("conv").kernel_bases
    ).reshape(3, 3, 3, 2, 5)
    np.testing.assert_array_equal(without[..., 0, :], without[..., 1, :])


def test_parameter_count_of_a_converted_layer():
    model, _ = _conv_model(dict(kernel_size=3), shape=(10, 12, 3), filters=5)
    converted = convert.to_lrlc(model, 4)
    # 4 bases 3x3x3x5, channel bias, row (8, 4) + col (10, 4) logits, row + col
    # spatial biases (8 and 10).
    assert converted.get_layer("conv").count_params() == 4 * 135 + 5 + 18 * 4 + 18
    assert model.count_params() == 3 * 3 * 3 * 5 + 5
    assert converted.count_params() == 635


def test_trained_network_keeps_its_predictions():
    # The embedded MNIST through the NumPy pipeline: the same on every backend.
    dataset = data.resolve("mnist_small")
    train = dataset.numpy_batches("train", batch_size=64, is_training=True, seed=0)
    train_x, train_y, _ = (np.concatenate(parts) for parts in zip(
        *(next(train) for _ in range(40))))
    keras.utils.set_random_seed(0)
    model = models.build_model(dict(
        models.get_model_config("conv"), num_classes=10, input_shape=(28, 28, 1),
        num_filters=(8, 8, 8),
    ))
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train_x, train_y, batch_size=64, verbose=0, shuffle=False)
    test_images = next(dataset.numpy_batches(
        "test", batch_size=200, is_training=False))[0]
    converted = convert.to_lrlc(model, 2)
    assert len(_lrlc_layers(converted)) == 3
    _assert_same_function(model, converted, test_images)
    np.testing.assert_array_equal(
        np.argmax(numpy(converted(test_images)), -1), np.argmax(numpy(model(test_images)), -1)
    )


# -- Graph surgery ---------------------------------------------------------------


def _skip_model():
    inputs = keras.Input((12, 12, 3))
    a = keras.layers.Conv2D(6, 3, padding="same", name="a")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(a)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    b = keras.layers.Conv2D(6, 1, name="b")(x)
    x = keras.layers.Add(name="add")([a, b])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="dense")(x), name="skip")
    _randomize(model)
    return model


def test_skip_connections_and_every_other_weight_carried_over():
    model = _skip_model()
    before = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    converted = convert.to_lrlc(model, 2)
    assert convert.conversion_plan(model, 2).converted == ("a", "b")
    _assert_same_function(model, converted, images((3, 12, 12, 3)))
    for layer in model.layers[1:]:  # After the input layer.
        # The original model is left as it was.
        assert not isinstance(layer, LRLC)
        for old, new in zip(before[layer.name], layer.get_weights()):
            np.testing.assert_array_equal(old, new)
        if layer.name in ("a", "b"):
            continue
        copy = converted.get_layer(layer.name)
        assert type(copy) is type(layer) and copy is not layer
        assert len(copy.weights) == len(layer.weights)
        for old, new in zip(layer.weights, copy.weights):
            np.testing.assert_array_equal(numpy(old), numpy(new))
            assert old is not new


class _ScaledConv2D(keras.layers.Conv2D):
    def call(self, inputs):
        return 2.0 * super().call(inputs)


def test_convolutions_it_cannot_represent_are_skipped_with_a_reason():
    inputs = keras.Input((10, 10, 4))
    branches = [
        keras.layers.Conv2D(4, 3, name="plain")(inputs),
        keras.layers.Conv2D(4, 3, groups=2, name="grouped")(inputs),
        keras.layers.DepthwiseConv2D(3, name="depthwise")(inputs),
        keras.layers.SeparableConv2D(4, 3, name="separable")(inputs),
        keras.layers.Cropping2D(2)(keras.layers.Conv2DTranspose(4, 3, name="transpose")(inputs)),
        _ScaledConv2D(4, 3, name="subclass")(inputs),
    ]
    model = keras.Model(inputs, keras.layers.Add()(branches))
    plan = convert.conversion_plan(model, 2)
    assert plan.converted == ("plain",)
    assert set(plan.skipped) == {"grouped", "depthwise", "separable", "transpose", "subclass"}
    assert "groups=2" in plan.skipped["grouped"]
    assert "a DepthwiseConv2D, not a Conv2D" in plan.skipped["depthwise"]
    assert "a _ScaledConv2D, not a Conv2D" in plan.skipped["subclass"]
    converted = convert.to_lrlc(model, 2)
    assert [layer.name for layer in _lrlc_layers(converted)] == ["plain"]
    _assert_same_function(model, converted, images((2, 10, 10, 4)))
    with pytest.raises(ValueError, match=r"'depthwise' cannot become .*DepthwiseConv2D"):
        convert.to_lrlc(model, 2, layers=["plain", "depthwise"])
    with pytest.raises(ValueError, match=r"`layers`.*names of layers of model.*layers=\['nope'\]"):
        convert.to_lrlc(model, 2, layers=["nope"])


def test_layers_by_name_or_predicate():
    model = _skip_model()
    by_name = convert.to_lrlc(model, 2, layers=["b"])
    by_predicate = convert.to_lrlc(model, 2, layers=lambda layer: layer.name == "b")
    for converted in (by_name, by_predicate):
        assert [layer.name for layer in _lrlc_layers(converted)] == ["b"]
        assert type(converted.get_layer("a")) is keras.layers.Conv2D
        _assert_same_function(model, converted, images((2, 12, 12, 3)))
    with pytest.raises(ValueError, match=r"'dense' cannot become .*a Dense, not a Conv2D"):
        convert.to_lrlc(model, 2, layers=["dense"])


def test_unknown_spatial_size_needs_a_sharing_that_does_not_use_it():
    model = keras.Sequential([keras.Input((None, 9, 3)), keras.layers.Conv2D(4, 3, name="conv")])
    with pytest.raises(ValueError, match=r"Nothing to convert.*needs the input height"):
        convert.to_lrlc(model, 2)
    converted = convert.to_lrlc(model, 2, share_row_combining_weights=False)
    for height in (7, 20):
        _assert_same_function(model, converted, images((2, height, 9, 3)))


def test_nested_sequential_and_functional_models():
    inner_sequential = keras.Sequential(
        [keras.Input((12, 12, 3)), keras.layers.Conv2D(4, 3, padding="same", name="s_conv"),
         keras.layers.ReLU()], name="inner_sequential")
    inner_inputs = keras.Input((12, 12, 4))
    inner_functional = keras.Model(
        inner_inputs, keras.layers.Conv2D(4, 3, padding="same", name="f_conv")(inner_inputs),
        name="inner_functional")
    inputs = keras.Input((12, 12, 3))
    x = inner_sequential(inputs)
    x = keras.layers.Add()([x, inner_functional(x)])
    outer = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="o_conv")(x))
    _randomize(outer)
    converted = convert.to_lrlc(outer, 3)
    assert [layer.name for layer in _lrlc_layers(converted)] == ["s_conv", "f_conv", "o_conv"]
    assert isinstance(converted.get_layer("inner_sequential"), keras.Sequential)
    assert isinstance(converted.get_layer("inner_functional").get_layer("f_conv"), LRLC)
    _assert_same_function(outer, converted, images((2, 12, 12, 3)))


class _Backbone(keras.Model):
    """A functional model built by its own constructor, like KerasHub backbones."""

    def __init__(self, filters, **kwargs):
        inputs = keras.Input((10, 10, 3))
        outputs = keras.layers.Conv2D(filters, 3, name="conv")(inputs)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.filters = filters


def test_functional_subclass_with_its_own_constructor_becomes_functional():
    model = _Backbone(4)
    _randomize(model)
    converted = convert.to_lrlc(model, 2)
    assert not isinstance(converted, _Backbone) and isinstance(converted, keras.Model)
    assert isinstance(converted.get_layer("conv"), LRLC)
    _assert_same_function(model, converted, images((2, 10, 10, 3)))


def test_keras_applications_resnet50_stage5():
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3),
                                        include_top=False, pooling="avg")
    assert len(convert.conversion_plan(model, 2).converted) == 53  # Every Conv2D.
    converted = convert.to_lrlc(model, 2, layers=lambda layer: layer.name.startswith("conv5"))
    assert len(_lrlc_layers(converted)) == 10  # 3 blocks x 3 convolutions + a shortcut.
    _assert_same_function(model, converted, images((2, 64, 64, 3)))


def test_package_resnet50_selected_layers():
    model = models.resnet50(num_classes=10, input_shape=(32, 32, 3))
    names = [f"stage4_block{block}_conv2" for block in (1, 2, 3)]
    converted = convert.to_lrlc(model, 2, layers=names, input_dependent=True)
    assert [layer.name for layer in _lrlc_layers(converted)] == names
    x = images((2, 32, 32, 3))
    _assert_same_function(model, converted, x)


# -- Fine-tuning leaves the convolution ----------------------------------------


def _combining_weights(layer, x):
    return numpy(layer.get_combining_weights(x))


@pytest.mark.parametrize("input_dependent", [False, True])
def test_fine_tuning_moves_the_combining_weights_only_with_perturbed_bases(input_dependent):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((12, 12, 1)), keras.layers.Conv2D(8, 3, name="conv"),
        keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3),
    ])
    x = images((64, 12, 12, 1))
    y = np.arange(64) % 3
    deviation = {}
    for perturbation in (0.0, 0.1):
        converted = convert.to_lrlc(model, 4, basis_perturbation=perturbation,
                                    input_dependent=input_dependent)
        converted.compile(keras.optimizers.SGD(0.5),
                          keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        converted.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False)
        weights = _combining_weights(converted.get_layer("conv"), x[:8])
        deviation[perturbation] = np.abs(weights - 0.25).max()
    assert deviation[0.0] < 1e-6  # Identical bases: a convolution forever.
    assert deviation[0.1] > 1e-4


# -- Saving ------------------------------------------------------------------------


def _twice_converted():
    model = _skip_model()
    converted = convert.to_lrlc(model, 2, layers=["a"])
    return convert.to_lrlc(converted, 3, layers=["b"], input_dependent=True)


def test_keras_file_round_trip(tmp_path):
    converted = _twice_converted()
    x = images((3, 12, 12, 3))
    path = str(tmp_path / "converted.keras")
    converted.save(path)
    np.testing.assert_array_equal(
        numpy(keras.saving.load_model(path)(x)), numpy(converted(x))
    )


@requires_tensorflow("a TensorFlow SavedModel served by TensorFlow")
def test_saved_model_round_trip(tmp_path):
    import tensorflow as tf

    converted = _twice_converted()
    x = images((3, 12, 12, 3))
    converted.export(str(tmp_path / "saved_model"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "saved_model"))
    np.testing.assert_allclose(served.serve(x).numpy(), numpy(converted(x)),
                               atol=1e-5, rtol=1e-5)


# -- Validation ----------------------------------------------------------------------


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(2, 3)

    def call(self, inputs):
        return self.conv(inputs)


@pytest.mark.parametrize(
    "arguments,match",
    [
        (dict(spatial_rank=0), r"`spatial_rank`.*positive integer.*spatial_rank=0"),
        (dict(spatial_rank=2.0), r"`spatial_rank`.*spatial_rank=2.0"),
        (dict(layers="conv"), r"`layers`.*list of layer names or a predicate"),
        (dict(basis_perturbation=-0.1), r"`basis_perturbation`.*non-negative"),
        (dict(basis_perturbation=float("nan")), r"`basis_perturbation`"),
        (dict(seed=1.5), r"`seed`.*an integer.*seed=1.5"),
        (dict(filters=3), r"\['filters'\].*Allowed: share_row_combining_weights"),
        (dict(combining_weights_initializer="zeros"), r"\['combining_weights_initializer'\]"),
        (dict(normalize_weights="l1"), r"`normalize_weights`.*normalize_weights='l1'"),
        (dict(input_dependent=True, share_row_combining_weights=True),
         r"must both be False when input_dependent=True"),
    ],
)
def test_argument_errors(arguments, match):
    model, _ = _conv_model(dict(kernel_size=3))
    arguments = {"spatial_rank": 2, **arguments}
    with pytest.raises(ValueError, match=match):
        convert.to_lrlc(model, **arguments)


def test_model_errors():
    with pytest.raises(ValueError, match=r"`model`.*Sequential or functional.*_Subclassed"):
        convert.to_lrlc(_Subclassed(), 2)
    with pytest.raises(ValueError, match=r"`model`.*a built model"):
        convert.to_lrlc(keras.Sequential([keras.layers.Conv2D(2, 3)]), 2)
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"Nothing to convert in model"):
        convert.to_lrlc(dense, 2)


def test_options_regularizers_dtype_and_trainability_are_carried_over():
    conv = keras.layers.Conv2D(
        4, 3, name="conv", kernel_regularizer=keras.regularizers.L2(0.1),
        bias_regularizer=keras.regularizers.L1(0.2), kernel_constraint="non_neg",
        dtype="mixed_bfloat16", trainable=False,
    )
    model = keras.Sequential([keras.Input((8, 8, 2)), conv])
    layer = convert.to_lrlc(model, 2, combining_weights_regularizer="l2").get_layer("conv")
    assert layer.kernel_regularizer.get_config() == {"l2": 0.1}
    assert layer.bias_regularizer.get_config() == pytest.approx({"l1": 0.2})
    assert isinstance(layer.kernel_constraint, keras.constraints.NonNeg)
    assert isinstance(layer.combining_weights_regularizer, keras.regularizers.L2)
    assert layer.dtype_policy.name == "mixed_bfloat16" and not layer.trainable
    layer = convert.to_lrlc(model, 2, kernel_regularizer=None).get_layer("conv")
    assert layer.kernel_regularizer is None
