"""Tests of `layers/fused_batch_normalization.py`: Keras' batch norm, fused for bfloat16."""

import keras
import numpy as np
import pytest

from tests.backend_testing import BACKEND

if BACKEND != "tensorflow":
    pytest.skip(
        "TensorFlow only: the fused kernel is TensorFlow's; on the other backends "
        "the layer is Keras' BatchNormalization itself", allow_module_level=True)

import tensorflow as tf  # noqa: E402

from low_rank_local_connectivity.layers import fused_batch_normalization as batch_norm

MOMENTUM, EPSILON = 0.9, 1e-5
SHAPE = (6, 5, 4, 3)


def _layers(dtype, **kwargs):
    """A fused layer and Keras' layer, built with the same non-trivial weights."""
    pair = (
        batch_norm.FusedBatchNormalization(
            momentum=MOMENTUM, epsilon=EPSILON, dtype=dtype, **kwargs
        ),
        keras.layers.BatchNormalization(
            momentum=MOMENTUM, epsilon=EPSILON, dtype=dtype, **kwargs
        ),
    )
    rng = np.random.default_rng(0)
    channels = SHAPE[kwargs.get("axis", -1)]
    for layer in pair:
        layer.build(SHAPE)
    values = [rng.uniform(0.5, 1.5, channels).astype(np.float32) for _ in pair[0].weights]
    for layer in pair:
        layer.set_weights(values)
    return pair


def _inputs(dtype):
    x = np.random.default_rng(1).normal(2.0, 3.0, SHAPE).astype(np.float32)
    return tf.cast(x, dtype)


def _outputs_and_gradients(layer, x, training):
    upstream = tf.cast(tf.random.stateless_normal(SHAPE, seed=(2, 3)), x.dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
    grads = tape.gradient(y, [x] + layer.trainable_weights, output_gradients=upstream)
    return [y] + grads + [layer.moving_mean, layer.moving_variance]


def _numpy_reference(x, gamma, beta, moving_mean, moving_variance, training):
    """float64 batch norm of the (rounded) inputs, and the new moving statistics."""
    x = np.asarray(x, np.float64)
    if training:
        mean, variance = x.mean((0, 1, 2)), x.var((0, 1, 2))
        moving_mean = moving_mean * MOMENTUM + mean * (1 - MOMENTUM)
        moving_variance = moving_variance * MOMENTUM + variance * (1 - MOMENTUM)
    else:
        mean, variance = moving_mean, moving_variance
    y = gamma * (x - mean) / np.sqrt(variance + EPSILON) + beta
    return y, moving_mean, moving_variance


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kwargs", [{}, {"center": False, "scale": False}])
def test_bfloat16_matches_a_float64_reference_and_keras(training, kwargs):
    fused, reference = _layers("mixed_bfloat16", **kwargs)
    weights = {w.name: w.numpy().astype(np.float64) for w in fused.weights}
    gamma, beta = weights.get("gamma", 1.0), weights.get("beta", 0.0)
    moving_mean, moving_variance = weights["moving_mean"], weights["moving_variance"]
    x = _inputs(tf.bfloat16)
    expected_y, expected_mean, expected_variance = _numpy_reference(
        tf.cast(x, tf.float32).numpy(), gamma, beta, moving_mean, moving_variance,
        training,
    )
    got = _outputs_and_gradients(fused, x, training)
    keras_got = _outputs_and_gradients(reference, x, training)
    assert got[0].dtype == tf.bfloat16 and got[1].dtype == tf.bfloat16
    assert len(got) == len(keras_got) == 4 + len(fused.trainable_weights)
    assert all(v.dtype == "float32" for v in fused.weights)
    # bfloat16 keeps 8 significant bits: outputs within 1% of their scale.
    np.testing.assert_allclose(tf.cast(got[0], tf.float32), expected_y, atol=0.03)
    np.testing.assert_allclose(got[-2], expected_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[-1], expected_variance, rtol=1e-5)
    for value, keras_value in zip(got, keras_got):
        np.testing.assert_allclose(
            tf.cast(value, tf.float32), tf.cast(keras_value, tf.float32),
            rtol=0.02, atol=0.03,
        )


def test_bfloat16_runs_the_fused_kernel_in_bfloat16():
    fused, _ = _layers("mixed_bfloat16")
    x = _inputs(tf.bfloat16)
    graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(x).graph
    kernels = [op for op in graph.get_operations() if op.type == "FusedBatchNormV3"]
    assert len(kernels) == 1 and kernels[0].get_attr("T") == tf.bfloat16
    assert kernels[0].get_attr("U") == tf.float32
    # No cast of the activations to float32 and back.
    casts = [op for op in graph.get_operations() if op.type == "Cast"]
    assert not [op for op in casts if op.inputs[0].shape.rank == 4]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "dtype, kwargs",
    [("float32", {}), ("mixed_float16", {}), ("float32", {"center": False}),
     ("mixed_bfloat16", {"axis": 1})],
)
def test_other_cases_are_bit_identical_to_keras(dtype, kwargs, training):
    fused, reference = _layers(dtype, **kwargs)
    x = _inputs(fused.compute_dtype)
    for value, keras_value in zip(
        _outputs_and_gradients(fused, x, training),
        _outputs_and_gradients(reference, x, training),
    ):
        np.testing.assert_array_equal(value, keras_value)


def test_frozen_layer_normalises_with_the_moving_statistics():
    fused, reference = _layers("mixed_bfloat16")
    fused.trainable = reference.trainable = False
    x = _inputs(tf.bfloat16)
    before = [w.numpy() for w in fused.weights]
    got = fused(x, training=True)
    np.testing.assert_allclose(
        tf.cast(got, tf.float32), tf.cast(reference(x, training=True), tf.float32),
        rtol=0.02, atol=0.03,
    )
    for weight, value in zip(fused.weights, before):
        np.testing.assert_array_equal(weight.numpy(), value)


def test_serialization_round_trip():
    layer = batch_norm.FusedBatchNormalization(momentum=0.8, epsilon=1e-4, name="bn")
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(restored) is batch_norm.FusedBatchNormalization
    assert restored.get_config() == layer.get_config()
