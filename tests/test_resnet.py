"""Tests of ResNet-50 v1.5 and its LRLC substitution.

Building a functional ResNet-50 is symbolic and cheap; only small inputs (64x64)
run forward or backward passes.
"""

import math

import keras
import numpy as np
import pytest

from low_rank_local_connectivity import layers as lrlc_layers
from low_rank_local_connectivity import models
from tests.backend_testing import layer_gradients
from tests.backend_testing import numpy

LRLC = lrlc_layers.LowRankLocallyConnected2D

PLAIN_RESNET50 = 25_557_032
KERAS_APPLICATIONS_RESNET50 = 25_583_592
WIDTHS = (64, 128, 256, 512)
BLOCKS = (3, 4, 6, 3)
NO_SHARING = {
    "share_row_combining_weights": False,
    "share_col_combining_weights": False,
}


def _trainable_count(model):
    return sum(math.prod(w.shape) for w in model.trainable_weights)


def _count_layers(model, layer_type):
    return sum(isinstance(layer, layer_type) for layer in model.layers)


def _resnet_config(**overrides):
    config = models.get_model_config("resnet50")
    config.update(overrides)
    return config


def _half(size):
    return -(-size // 2)  # 'same' padding, stride 2.


def _lrlc_params(rank, channels, in_size, out_size, shares, input_dependent):
    """Parameters of a 3x3, channels -> channels, bias-free LRLC layer."""
    (in_h, in_w), (out_h, out_w) = in_size, out_size
    total = 9 * channels * rank * channels
    if input_dependent:
        dilations = [r for r in (1, 2, 4, 8) if r <= (min(in_h, in_w) - 1) // 2]
        hidden = 6 * rank
        total += channels * rank + rank + len(dilations) * 10 * rank
        total += (2 + len(dilations)) * rank * hidden // 2 + hidden // 2
        total += hidden // 2 * hidden + hidden + hidden * rank + rank
        return total + out_h * out_w
    share_row, share_col = shares
    if not (share_row or share_col):
        return total + out_h * out_w * (rank + 1)
    return total + (share_row * out_h + share_col * out_w) * (rank + 1)


def _expected_substituted_count(config, blocks_per_stage):
    """Plain count - replaced 3x3 convolutions + LRLC layers, from the topology."""
    height, width = (_half(_half(size)) for size in config.input_shape[:2])
    total = PLAIN_RESNET50 - (2048 * 1000 + 1000)
    total += 2048 * config.num_classes + config.num_classes
    shares = (config.share_row_combining_weights, config.share_col_combining_weights)
    for stage, (channels, num_blocks) in enumerate(zip(WIDTHS, BLOCKS), start=1):
        for block in range(1, num_blocks + 1):
            in_size = (height, width)
            if stage > 1 and block == 1:
                height, width = _half(height), _half(width)
            if block in blocks_per_stage.get(stage, ()):
                total -= 9 * channels * channels
                total += _lrlc_params(
                    config.spatial_rank, channels, in_size, (height, width), shares,
                    config.input_dependent,
                )
    return total


def test_plain_resnet50_parameter_count():
    model = models.build_model(_resnet_config())
    assert _trainable_count(model) == PLAIN_RESNET50
    assert model.output.shape == (None, 1000)
    # v1.5: a down-sampling block strides on its 3x3 convolution, not its first 1x1.
    assert model.get_layer("stage2_block1_conv1").strides == (1, 1)
    assert model.get_layer("stage2_block1_conv2").strides == (2, 2)
    assert model.get_layer("stage2_block1_relu1").output.shape == (None, 56, 56, 128)
    for stage, size in zip(range(1, 5), (56, 28, 14, 7)):
        assert model.get_layer(f"stage{stage}_block1_out").output.shape == (
            None, size, size, 4 * WIDTHS[stage - 1])
    assert _count_layers(model, LRLC) == 0


def test_conv_biases_match_keras_applications_resnet50():
    oracle = keras.applications.ResNet50(weights=None)
    assert _trainable_count(oracle) == KERAS_APPLICATIONS_RESNET50
    model = models.build_model(_resnet_config(use_conv_bias=True))
    assert _trainable_count(model) == _trainable_count(oracle)
    # Same topology: equally many convolutions, batch norms and additions.
    for layer_type in (
        keras.layers.Conv2D,
        keras.layers.BatchNormalization,
        keras.layers.Add,
    ):
        assert _count_layers(model, layer_type) == _count_layers(oracle, layer_type)


@pytest.mark.parametrize(
    "overrides, blocks_per_stage",
    [
        ({"lrlc_stages": [4]}, {4: (1, 2, 3)}),
        ({"lrlc_stages": [3, 4], "lrlc_blocks": [[1, 6], [2]], "spatial_rank": 3},
         {3: (1, 6), 4: (2,)}),
        ({"lrlc_stages": [4], "input_dependent": True, **NO_SHARING}, {4: (1, 2, 3)}),
        (
            {"lrlc_stages": [2, 4], "lrlc_blocks": [[1], [1, 3]], "num_classes": 7,
             "input_shape": [96, 64, 3], "share_col_combining_weights": False},
            {2: (1,), 4: (1, 3)},
        ),
        (
            {"lrlc_stages": [1], "lrlc_blocks": [[2]], "input_shape": [64, 80, 3],
             **NO_SHARING},
            {1: (2,)},
        ),
    ],
)
def test_substituted_parameter_counts(overrides, blocks_per_stage):
    config = _resnet_config(**overrides)
    model = models.build_model(config)
    expected = _expected_substituted_count(config, blocks_per_stage)
    assert _trainable_count(model) == expected
    replaced = sorted(
        layer.name for layer in model.layers
        if isinstance(layer, LRLC)
    )
    assert replaced == sorted(
        f"stage{stage}_block{block}_lrlc2"
        for stage, blocks in blocks_per_stage.items() for block in blocks
    )


def test_lrlc_preset_replaces_stage_4():
    config = models.get_model_config("resnet50_lrlc")
    model = models.build_model(config)
    expected = _expected_substituted_count(config, {4: (1, 2, 3)})
    assert _trainable_count(model) == expected
    layer = model.get_layer("stage4_block1_lrlc2")
    assert (layer.spatial_rank, layer.strides, layer.padding) == (2, (2, 2), "same")


def test_any_input_size_and_class_count():
    model = models.build_model(_resnet_config(num_classes=10, input_shape=(32, 32, 1)))
    stem = 7 * 7 * 1 * 64 - 7 * 7 * 3 * 64
    head = (2048 * 10 + 10) - (2048 * 1000 + 1000)
    assert _trainable_count(model) == PLAIN_RESNET50 + stem + head
    assert model.get_layer("stage4_block3_out").output.shape == (None, 1, 1, 2048)


def test_channels_first_computes_the_same_function():
    config = _resnet_config(num_classes=5, input_shape=(64, 64, 3), lrlc_stages=[4])
    channels_last = models.build_model(config)
    config.data_format = "channels_first"
    channels_first = models.build_model(config)
    assert channels_first.get_layer("stage4_block1_out").output.shape == (
        None, 2048, 2, 2)
    channels_first.set_weights(channels_last.get_weights())
    images = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype("float32")
    expected = numpy(channels_last(images, training=False))
    np.testing.assert_allclose(
        numpy(channels_first(images, training=False)), expected,
        rtol=1e-4, atol=1e-4 * np.abs(expected).max(),
    )


def test_trains_one_step_with_lrlc():
    config = _resnet_config(num_classes=4, input_shape=(64, 64, 3), lrlc_stages=[3, 4])
    model = models.build_model(config)
    optimizer = keras.optimizers.SGD(learning_rate=0.01)
    images = np.random.default_rng(1).uniform(size=(4, 64, 64, 3)).astype("float32")
    labels = np.array([0, 1, 2, 3])
    lrlc = model.get_layer("stage4_block2_lrlc2")
    tracked = [
        lrlc.kernel_bases,
        lrlc.combining_weights_row,
        lrlc.combining_weights_col,
        model.get_layer("stage1_block1_conv2").kernel,
    ]
    before = [numpy(v).copy() for v in tracked]

    def loss_of(x):
        logits = model(x, training=True)
        loss = keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True)
        return keras.ops.mean(loss) + keras.ops.sum(keras.ops.stack(model.losses))

    loss, _, *gradients = layer_gradients(model, images, np.float32(1.0), call=loss_of)
    optimizer.apply_gradients(
        zip(map(keras.ops.convert_to_tensor, gradients), model.trainable_variables)
    )
    assert np.isfinite(float(loss))
    assert all(g is not None for g in gradients)
    for variable, old in zip(tracked, before):
        assert not np.allclose(numpy(variable), old), variable.path


@pytest.mark.parametrize("regularize_lrlc", [True, False])
def test_weight_decay(regularize_lrlc):
    weight_decay = 1e-4
    model = models.build_model(_resnet_config(
        lrlc_stages=[4], lrlc_blocks=[[3]], weight_decay=weight_decay,
        regularize_lrlc=regularize_lrlc, combining_weights_initializer="random_normal"))
    decayed = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            decayed.append(layer.kernel)
        elif isinstance(layer, LRLC) and regularize_lrlc:
            decayed += [
                layer.kernel_bases,
                layer.combining_weights_row,
                layer.combining_weights_col,
            ]
    assert len(decayed) == 53 + (3 if regularize_lrlc else 0)
    expected = weight_decay / 2 * sum(np.sum(np.square(v.numpy())) for v in decayed)
    np.testing.assert_allclose(float(sum(model.losses)), expected, rtol=1e-4)


def test_batch_norm_settings():
    config = _resnet_config(
        bn_momentum=0.99, bn_epsilon=1e-3, data_format="channels_first"
    )
    model = models.build_model(config)
    norms = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(norms) == 53
    assert {(n.momentum, n.epsilon, n.axis) for n in norms} == {(0.99, 1e-3, 1)}


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"lrlc_stages": [5]}, "lrlc_stages"),
        ({"lrlc_stages": [0]}, "lrlc_stages"),
        ({"lrlc_stages": [4, 4]}, "distinct"),
        ({"lrlc_stages": [3, 4], "lrlc_blocks": [[1]]}, "one list of block numbers"),
        ({"lrlc_stages": [4], "lrlc_blocks": [[4]]}, "stage 4, a list of block"),
        ({"lrlc_stages": [4], "spatial_rank": 0}, "spatial_rank"),
        ({"lrlc_stages": [4], "input_dependent": True}, "input_dependent=True"),
        ({"data_format": "NHWC"}, "data_format"),
        ({"num_classes": None}, "`num_classes` is not set"),
        ({"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_validation_errors(overrides, match):
    with pytest.raises(ValueError, match=match):
        models.build_model(_resnet_config(**overrides))
