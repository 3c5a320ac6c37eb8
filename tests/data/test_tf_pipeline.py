"""Tests of the tf.data pipeline (`ResolvedDataset.make_dataset`, `tf_pipeline`).

On the embedded 'mnist_small': evaluation padding and masks, training
shuffling and repetition, seeds, sharding over input pipelines.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.data import data_testing
from low_rank_local_connectivity import data


@pytest.mark.parametrize("batch_size", [250, 1000, 128, 1024])
def test_eval_pass_pads_last_batch_with_mask(batch_size):
    raw_images, raw_labels = data.resolve("mnist_small").arrays("test")
    dataset = data.resolve("mnist_small").make_dataset(
        "test", batch_size=batch_size, is_training=False
    )
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == -(-1000 // batch_size)
    for image, label, mask in batches:
        assert image.shape == (batch_size, 28, 28, 1) and image.dtype == np.float32
        assert label.shape == (batch_size,) and label.dtype == np.int32
        assert mask.shape == (batch_size,) and mask.dtype == np.float32
    images, labels, masks = data_testing.collect(dataset)
    num_padding = len(batches) * batch_size - 1000
    np.testing.assert_array_equal(masks, [1.0] * 1000 + [0.0] * num_padding)
    # Real examples in order, each once, with the 'mnist' scaling x / 255 * 2 - 1.
    np.testing.assert_array_equal(labels[:1000], raw_labels)
    np.testing.assert_allclose(
        images[:1000], raw_images / 255.0 * 2.0 - 1.0, rtol=0, atol=1e-6
    )
    assert images[:1000].min() == -1.0 and images[:1000].max() == 1.0
    assert not images[1000:].any() and not labels[1000:].any()


def test_training_pipeline_epoch_is_a_permutation_and_repeats():
    raw_images, raw_labels = data.resolve("mnist_small").arrays("train")
    dataset = data.resolve("mnist_small").make_dataset(
        "train", batch_size=50, is_training=True, seed=1
    )
    assert dataset.element_spec[0].shape == (50, 28, 28, 1)
    # 5,000 / 50 = 100 batches per epoch; the stream goes on past the epoch.
    images, labels, masks = data_testing.collect(dataset, max_batches=103)
    assert images.shape == (5150, 28, 28, 1)
    np.testing.assert_array_equal(masks, 1.0)
    epoch_images, epoch_labels = images[:5000], labels[:5000]
    assert not np.array_equal(epoch_labels, raw_labels)  # Shuffled...
    np.testing.assert_array_equal(  # ...but every example exactly once.
        np.bincount(epoch_labels, minlength=10), np.bincount(raw_labels, minlength=10)
    )
    expected = np.sort((raw_images / 255.0 * 2.0 - 1.0).reshape(5000, -1), axis=0)
    actual = np.sort(epoch_images.reshape(5000, -1), axis=0)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)


def test_training_is_deterministic_with_a_seed():
    def first_batches(seed):
        dataset = data.resolve("trans_mnist_small42").make_dataset(
            "train", batch_size=16, is_training=True, seed=seed
        )
        return data_testing.collect(dataset, max_batches=3)

    first, again, other = first_batches(7), first_batches(7), first_batches(8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_input_context_shards_and_batches_per_replica():
    all_labels, total_real = [], 0
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(
            num_input_pipelines=2,
            input_pipeline_id=pipeline_id,
            num_replicas_in_sync=4,
        )
        dataset = data.resolve("mnist_small").make_dataset(
            "test",
            batch_size=64,
            is_training=False,
            input_context=context,
        )
        _, labels, masks = data_testing.collect(dataset)
        assert labels.shape[0] % 16 == 0  # 64 global / 4 replicas.
        total_real += int(masks.sum())
        all_labels.append(labels[masks == 1])
    assert total_real == 1000
    np.testing.assert_array_equal(
        np.bincount(np.concatenate(all_labels), minlength=10), [100] * 10
    )


def test_input_pipelines_draw_independent_random_preprocessing():
    corners = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        canvases, _, _ = data_testing.collect(
            data.resolve("trans_mnist_small42").make_dataset(
                "test",
                batch_size=64,
                is_training=False,
                seed=0,
                input_context=context,
            ),
            max_batches=1,
        )
        corners.append(canvases[:, 0, 0, 0])  # Pixel (0, 0) is always noise.
    assert not np.any(corners[0] == corners[1])
