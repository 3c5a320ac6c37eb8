"""Tests of the simple experiment network, its presets and `build_model`."""

import json
import math

import keras
import ml_collections
import numpy as np
import pytest

from low_rank_local_connectivity import models
from low_rank_local_connectivity.models import simple_model
from tests.backend_testing import numpy
from tests.backend_testing import requires_tensorflow

CIFAR10 = {"num_classes": 10, "input_shape": (32, 32, 3)}
NO_SHARING = {
    "share_row_combining_weights": False,
    "share_col_combining_weights": False,
}
LRLC_FIRST = ["low_rank_locally_connected2d", "conv2d", "conv2d"]
WIDE_LAST = ["conv2d", "conv2d", "wide_conv2d"]
SMALL_MODELS = [p for p in models.MODEL_CONFIGS if not p.startswith("resnet")]


def _config(preset, **overrides):
    config = models.get_model_config(preset)
    config.update(overrides)
    return config


def _trainable_count(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def _conv_out(size, kernel, stride, padding):
    if padding == "same":
        return -(-size // stride)
    return (size - kernel) // stride + 1


def _expected_count(config):
    """Trainable parameters of a simple network (docs/design.md §2 layer types)."""
    height, width, channels = config.input_shape
    if config.coord_conv:
        channels += 2
    rank = config.spatial_rank
    num_blocks = len(config.layer_types)
    total = 0
    for index, layer_type in enumerate(config.layer_types):
        k = config.kernel_sizes[index]
        stride = config.strides[index]
        filters = config.num_filters[index]
        in_height, in_width = height, width
        height = _conv_out(height, k, stride, config.padding)
        width = _conv_out(width, k, stride, config.padding)
        conv_bias = 0 if config.batch_norm else 1
        if layer_type == "conv2d":
            total += k * k * channels * filters + conv_bias * filters
        elif layer_type == "wide_conv2d":
            if index == num_blocks - 1:
                filters = filters * rank
            else:
                ratio = (rank * channels + filters) / (channels + filters)
                filters = int(ratio * filters)
            total += k * k * channels * filters + conv_bias * filters
        elif layer_type == "locally_connected2d":
            total += height * width * (k * k * channels * filters + filters)
        else:
            total += k * k * channels * rank * filters + conv_bias * filters
            if config.input_dependent:
                largest = (min(in_height, in_width) - 1) // 2
                dilations = [r for r in (1, 2, 4, 8) if r <= largest]
                concat = (2 + len(dilations)) * rank
                hidden = 6 * rank
                total += channels * rank + rank  # 1x1 projection.
                total += len(dilations) * (9 * rank + rank)  # Depthwise branches.
                total += concat * hidden // 2 + hidden // 2
                total += hidden // 2 * hidden + hidden
                total += hidden * rank + rank
                total += height * width  # Full spatial bias.
            else:
                share_row = config.share_row_combining_weights
                share_col = config.share_col_combining_weights
                if share_row or share_col:
                    total += (share_row * height + share_col * width) * rank
                    total += share_row * height + share_col * width
                else:
                    total += height * width * rank + height * width
        if config.batch_norm:
            total += 2 * filters
        channels = filters
    if not config.global_avg_pooling:
        channels *= height * width
    return total + channels * config.num_classes + config.num_classes


@pytest.mark.parametrize(
    "preset, expected",
    [("conv", 76_490), ("lrlc", 113_522), ("locally_connected", 28_991_178)],
)
def test_spec_parameter_counts(preset, expected):
    model = models.build_model(_config(preset, **CIFAR10))
    assert _trainable_count(model) == expected
    assert _expected_count(_config(preset, **CIFAR10)) == expected


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("wide_conv", {}),
        ("wide_conv", {"spatial_rank": 3, "num_classes": 2}),
        ("conv", {"layer_types": WIDE_LAST, "spatial_rank": 2}),
        ("coord_conv", {}),
        ("coord_conv", {"layer_types": LRLC_FIRST, "spatial_rank": 3}),
        ("lrlc_input_dependent", {}),
        ("lrlc_input_dependent", {"spatial_rank": 4, "input_shape": (14, 14, 1)}),
        ("lrlc", {"share_col_combining_weights": False, "input_shape": (28, 20, 1)}),
        ("lrlc", NO_SHARING),
        ("lrlc", {"batch_norm": False, "strides": [1, 2, 1], "padding": "same"}),
        ("locally_connected", {"input_shape": (28, 28, 1), "global_avg_pooling": False,
                "num_filters": [16, 8, 4], "kernel_sizes": [5, 3, 3]}),
        ("conv", {"batch_norm": False, "num_filters": [8, 16], "kernel_sizes": [3, 5],
                  "strides": [2, 1], "layer_types": ["conv2d", "conv2d"]}),
    ],
)
def test_variant_parameter_counts(preset, overrides):
    config = _config(preset, **{**CIFAR10, **overrides})
    model = models.build_model(config)
    assert _trainable_count(model) == _expected_count(config)


def test_wide_conv_filters():
    # Block 2 of 3: int((2 * 64 + 64) / (64 + 64) * 64) = 96; a last block: 64 * 2.
    model = models.build_model(_config("wide_conv", **CIFAR10))
    assert model.get_layer("block2_wide_conv").filters == 96
    config = _config("wide_conv", layer_types=WIDE_LAST, **CIFAR10)
    assert models.build_model(config).get_layer("block3_wide_conv").filters == 128


def test_endpoints_expose_blocks_and_combining_weights():
    config = _config("lrlc", num_classes=3, input_shape=(12, 12, 1))
    model = models.build_model(config)
    images = np.random.default_rng(0).normal(size=(2, 12, 12, 1)).astype("float32")
    outputs = models.endpoints_model(model)(images, training=False)
    assert outputs["block2_lrlc"].shape == (2, 8, 8, 64)
    np.testing.assert_allclose(
        numpy(outputs["logits"]), numpy(model(images, training=False)), rtol=1e-5, atol=1e-5
    )
    # block2_relu = relu(batch norm of block2_lrlc), recomputed in NumPy.
    gamma, beta, mean, variance = model.get_layer("block2_bn").get_weights()
    normalized = (numpy(outputs["block2_lrlc"]) - mean) / np.sqrt(variance + 1e-5)
    np.testing.assert_allclose(
        numpy(outputs["block2_relu"]), np.maximum(gamma * normalized + beta, 0), atol=1e-5
    )
    # Fixed combining weights are readable from the layer: softmax of equal logits.
    weights = numpy(model.get_layer("block2_lrlc").combining_weights)
    np.testing.assert_allclose(weights, np.full((8, 8, 2), 0.5), atol=1e-6)
    some = models.endpoints_model(model, ["block1_conv", "block3_relu"])
    assert sorted(some(images).keys()) == ["block1_conv", "block3_relu"]
    with pytest.raises(ValueError, match="not layers of model"):
        models.endpoints_model(model, ["block9_conv"])


def _assert_same_outputs(model_a, model_b, input_shape):
    model_b.set_weights(model_a.get_weights())
    images = np.random.default_rng(1).uniform(size=(2, *input_shape)).astype("float32")
    np.testing.assert_allclose(
        numpy(model_b(images, training=False)), numpy(model_a(images, training=False)),
        rtol=1e-6, atol=1e-6,
    )


@pytest.mark.parametrize("preset", ["lrlc_input_dependent", "coord_conv", "wide_conv"])
def test_config_json_round_trip(preset):
    config = _config(preset, num_classes=4, input_shape=(16, 16, 1), weight_decay=1e-4)
    restored = ml_collections.ConfigDict(json.loads(config.to_json()))
    assert json.loads(restored.to_json()) == json.loads(config.to_json())
    _assert_same_outputs(
        models.build_model(config), models.build_model(restored), (16, 16, 1)
    )


@pytest.mark.parametrize("preset", SMALL_MODELS)
def test_keras_save_and_load(preset, tmp_path):
    config = _config(preset, num_classes=3, input_shape=(12, 12, 1), weight_decay=1e-3)
    model = models.build_model(config)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    images = np.random.default_rng(2).uniform(size=(2, 12, 12, 1)).astype("float32")
    np.testing.assert_allclose(
        numpy(restored(images, training=False)), numpy(model(images, training=False)),
        atol=1e-6,
    )
    assert [w.path for w in restored.weights] == [w.path for w in model.weights]


@pytest.mark.parametrize("regularize_lrlc", [True, False])
def test_weight_decay(regularize_lrlc):
    weight_decay = 0.02
    config = _config("lrlc", num_classes=3, input_shape=(10, 10, 2),
                     weight_decay=weight_decay, regularize_lrlc=regularize_lrlc,
                     combining_weights_initializer="random_normal")
    model = models.build_model(config)
    decayed = [
        model.get_layer("block1_conv").kernel,
        model.get_layer("block3_conv").kernel,
        model.get_layer("logits").kernel,
    ]
    if regularize_lrlc:
        lrlc = model.get_layer("block2_lrlc")
        decayed += [lrlc.kernel_bases, lrlc.combining_weights_row,
                    lrlc.combining_weights_col]
    expected = weight_decay / 2 * sum(np.sum(np.square(w.numpy())) for w in decayed)
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-5)


def test_logits_are_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        config = _config("lrlc", num_classes=3, input_shape=(8, 8, 1))
        model = models.build_model(config)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("block1_conv").compute_dtype == "float16"
    logits = model(np.zeros((2, 8, 8, 1), "float32"))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"

def _loss_and_gradients(model, images, labels):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    return logits, tape.gradient(loss, model.trainable_variables)


@requires_tensorflow("the batch statistics a training call updates, under tf.GradientTape")
@pytest.mark.parametrize("model_config", SMALL_MODELS)
def test_mixed_bfloat16_training_pass_agrees_with_float32(model_config):
    """Same weights: logits, gradients and batch statistics within bfloat16 round-off."""
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    config = _config(model_config, num_classes=5, input_shape=(14, 14, 1),
                     num_filters=(16, 16, 16))
    model = models.build_model(config)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        bf16_model = models.build_model(config)
    finally:
        keras.config.set_dtype_policy("float32")
    bf16_model.set_weights(model.get_weights())
    assert bf16_model.get_layer("block2_bn").compute_dtype == "bfloat16"
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(16, 14, 14, 1)).astype("float32")
    labels = rng.integers(0, 5, 16)
    logits, grads = _loss_and_gradients(model, images, labels)
    bf16_logits, bf16_grads = _loss_and_gradients(bf16_model, images, labels)
    assert bf16_logits.dtype == "float32"
    assert all(g.dtype == "float32" for g in bf16_grads)
    # Measured: logits within 0.6% of their scale, gradients within 11% (the LC
    # kernel's, summed over 16 examples only) and 4% for the other presets.
    scale = float(tf.reduce_max(tf.abs(logits)))
    np.testing.assert_allclose(bf16_logits, logits, atol=0.02 * scale)
    flat, bf16_flat = (
        tf.concat([tf.reshape(g, [-1]) for g in gs], 0) for gs in (grads, bf16_grads)
    )
    assert float(tf.norm(bf16_flat - flat) / tf.norm(flat)) < 0.2
    for name in ("block1_bn", "block2_bn", "block3_bn"):
        for a, b in zip(model.get_layer(name).non_trainable_weights,
                        bf16_model.get_layer(name).non_trainable_weights):
            np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0.03, atol=0.01)


def test_every_preset_is_a_full_config():
    for preset in models.MODEL_CONFIGS:
        config = models.get_model_config(preset)
        assert set(config.keys()) == set(models.default_config(config.name).keys())
    defaults = models.get_model_config("conv")
    assert defaults.kernel_sizes == [3, 3, 3]
    assert defaults.num_filters == [64, 64, 64]
    assert defaults.layer_types == ["conv2d"] * 3
    assert (defaults.bn_momentum, defaults.bn_epsilon) == (0.9, 1e-5)
    assert defaults.num_classes is None and defaults.input_shape is None


def test_rank_is_ignored_without_rank_layer_types():
    config = _config("conv", spatial_rank=0, **CIFAR10)
    assert _trainable_count(models.build_model(config)) == 76_490


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"layer_types": ["conv2d", "dense", "conv2d"]}, r"layer_types\[1\]='dense'"),
        ({"layer_types": ["low_rank_locally_connected2d"] * 3, "spatial_rank": 0},
         "spatial_rank"),
        ({"layer_types": ["wide_conv2d"] * 3, "spatial_rank": 0}, "spatial_rank"),
        ({"num_filters": [64, 64]}, "equal lengths"),
        ({"strides": [1, 1, 1, 1]}, "equal lengths"),
        ({"num_classes": None}, "`num_classes` is not set"),
        ({"input_shape": None}, "`input_shape` is not set"),
        ({"input_shape": (32, 32)}, "input_shape"),
        ({"input_dependent": True}, "input_dependent=True"),
        ({"input_dependent": True, "share_row_combining_weights": False},
         "input_dependent=True"),
        ({"padding": "causal"}, "padding"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"num_filters": [64, 0, 64]}, r"num_filters\[1\]"),
        ({"kernel_sizes": [3, (3, 3, 3), 3]}, r"kernel_sizes\[1\]"),
    ],
)
def test_validation_errors(overrides, match):
    config = _config("lrlc", **CIFAR10)
    config.update(overrides)
    with pytest.raises(ValueError, match=match):
        models.build_model(config)


def test_build_model_errors():
    with pytest.raises(ValueError, match="one of.*'lrlc'.*Received: name='cnn'"):
        models.get_model_config("cnn")
    config = _config("conv", **CIFAR10)
    config.depth = 3
    with pytest.raises(ValueError, match=r"Unknown fields \['depth'\]"):
        models.build_model(config)
    with pytest.raises(ValueError, match="Received: name='vgg'"):
        models.build_model({**_config("conv", **CIFAR10).to_dict(), "name": "vgg"})
    with pytest.raises(TypeError, match="model_config"):
        models.build_model(["conv"])


def test_builder_function_matches_build_model():
    config = _config("lrlc", num_classes=5, input_shape=(9, 9, 1))
    fields = config.to_dict()
    del fields["name"]
    direct = simple_model.simple_network(**fields)
    assert _trainable_count(direct) == _expected_count(config)
    _assert_same_outputs(direct, models.build_model(config), (9, 9, 1))
