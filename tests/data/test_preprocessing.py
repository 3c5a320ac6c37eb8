"""Tests of the TF preprocessing (`data.preprocessing`): canvas and serving.

The translation canvas is the one mechanism of 'trans_mnist<N>',
'trans_celeba48' and `translate_to`; serving applies the pipelines' scaling
inside a SavedModel and needs no data (cifar10, celeba and ImageNet are not
present here).
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.data import data_testing
from low_rank_local_connectivity import data
from low_rank_local_connectivity.data import preprocessing


# ----------------------------------------------------------------------------
# Translation canvas (one mechanism for MNIST and CelebA).
# ----------------------------------------------------------------------------


def test_translated_mnist_places_digit_inside_noise_canvas():
    plain, labels, _ = data_testing.collect(
        data.resolve("mnist_small").make_dataset(
            "test", batch_size=500, is_training=False
        )
    )
    dataset = data.resolve("trans_mnist_small42").make_dataset(
        "test", batch_size=500, is_training=False, seed=3
    )
    assert dataset.element_spec[0].shape == (500, 42, 42, 1)
    canvases, translated_labels, _ = data_testing.collect(dataset)
    np.testing.assert_array_equal(translated_labels, labels)

    # Reference placement: 42 - 28 - U{0..13}, i.e. 1..14 on both axes, all used.
    data_testing.check_translated_digits(canvases, plain, 42)


def test_translate_to_option_equals_trans_name():
    by_name = data.resolve("trans_mnist_small42").make_dataset(
        "valid", batch_size=100, is_training=False, seed=5
    )
    translated = data.resolve("mnist_small", translate_to=42)
    by_option = translated.make_dataset(
        "valid", batch_size=100, is_training=False, seed=5
    )
    for a, b in zip(data_testing.collect(by_name, 2),
                    data_testing.collect(by_option, 2)):
        np.testing.assert_array_equal(a, b)
    assert translated.metadata.image_shape == (42, 42, 1)


def test_translate_to_canvas_in_unit_range():
    image = tf.fill((32, 32, 3), 0.25)
    canvas = preprocessing.translate_to_canvas(
        image, 48, seed=tf.constant([1, 2], tf.int64), value_range=(0.0, 1.0)
    ).numpy()
    assert canvas.shape == (48, 48, 3)
    (corners,) = data_testing.find_windows(
        canvas[np.newaxis], image.numpy()[np.newaxis]
    )
    ((row, col),) = corners
    assert 1 <= row <= 16 and 1 <= col <= 16
    outside = np.ones(canvas.shape, bool)
    outside[row : row + 32, col : col + 32] = False
    assert canvas[outside].min() >= 0.0 and canvas[outside].max() < 1.0


@pytest.mark.parametrize("canvas_size", [32, 20])
def test_translate_to_canvas_rejects_small_canvas(canvas_size):
    with pytest.raises(ValueError, match="`canvas_size`"):
        preprocessing.translate_to_canvas(
            tf.zeros((32, 32, 3)), canvas_size, seed=tf.constant([0, 0])
        )


# ----------------------------------------------------------------------------
# Serving preprocessing.
# ----------------------------------------------------------------------------


def test_serving_matches_eval_pipeline_for_mnist_small():
    raw_images, _ = data.resolve("mnist_small").arrays("valid")
    served = data.resolve("mnist_small").serving_preprocess(raw_images).numpy()
    images, _, _ = data_testing.collect(
        data.resolve("mnist_small").make_dataset(
            "valid", batch_size=1000, is_training=False
        )
    )
    np.testing.assert_array_equal(served, images)


@pytest.mark.parametrize(
    "name, low, high",
    [("cifar10", 0.0, 1.0), ("trans_celeba48", 0.0, 1.0), ("trans_mnist42", -1.0, 1.0)],
)
def test_serving_scales_to_value_range(name, low, high):
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    served = data.resolve(name).serving_preprocess(images).numpy()
    np.testing.assert_allclose(served, low + (high - low) * images / 255.0, atol=1e-6)


def test_serving_imagenet_normalisation():
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    served = data.resolve("imagenet2012").serving_preprocess(images).numpy()
    expected = (images / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_serving_works_in_a_graph_with_dynamic_batch():
    function = tf.function(
        lambda x: data.resolve("mnist").serving_preprocess(x),
        input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.uint8)],
    )
    out = function(tf.fill((3, 28, 28, 1), tf.constant(255, tf.uint8)))
    np.testing.assert_array_equal(out.numpy(), 1.0)


def test_serving_rejects_float_images():
    with pytest.raises(TypeError, match="`images_uint8`.*float32"):
        data.resolve("mnist").serving_preprocess(
            np.zeros((1, 28, 28, 1), np.float32)
        )
