"""Tests of `low_rank_local_connectivity.data_provider`.

CIFAR-10, CelebA, ImageNet and generic TFDS datasets run under
`tfds.testing.mock_data` with metadata files written here (so the split sizes are
known), MNIST-derived checks run on the embedded 'mnist_small', and a few tests use
the real MNIST in `../shared/data` (skipped when it is absent). Nothing here touches
the network.
"""

import hashlib
import importlib.util
import os
import pickle
import socket
import time
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from low_rank_local_connectivity import data_provider
from low_rank_local_connectivity import downloads

# Class counts of the real MNIST test split (LeCun & Cortes), an independent oracle.
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

CELEBA_CROP = (40, 20, 138, 138)  # top, left, height, width (docs/design.md §4)


# ----------------------------------------------------------------------------
# Helpers.
# ----------------------------------------------------------------------------


def _collect(dataset, max_batches=None):
    """Concatenates the batches of a finite (image, label, mask) dataset."""
    if max_batches is not None:
        dataset = dataset.take(max_batches)
    images, labels, masks = [], [], []
    for image, label, mask in dataset.as_numpy_iterator():
        images.append(image)
        labels.append(label)
        masks.append(mask)
    return np.concatenate(images), np.concatenate(labels), np.concatenate(masks)


def _write_tfds_metadata(root, tfds_name, split_sizes):
    """Writes dataset_info.json / features.json of a prepared dataset, no records.

    Under `tfds.testing.mock_data(data_dir=root)` the builder then reports these
    split sizes (as a really prepared dataset would) while the records are mocked.
    """
    builder = tfds.builder(tfds_name, data_dir=str(root))
    builder.info.set_splits(
        tfds.core.SplitDict(
            [
                tfds.core.SplitInfo(name=split, shard_lengths=[size], num_bytes=0)
                for split, size in split_sizes.items()
            ]
        )
    )
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)


@pytest.fixture
def mock_tfds_dir(tmp_path):
    """A data_dir holding metadata of the mocked datasets used below."""
    _write_tfds_metadata(tmp_path, "cifar10", {"train": 100, "test": 30})
    _write_tfds_metadata(
        tmp_path, "celeb_a", {"train": 50, "validation": 20, "test": 30}
    )
    _write_tfds_metadata(tmp_path, "imagenet2012", {"train": 40, "validation": 25})
    _write_tfds_metadata(tmp_path, "fashion_mnist", {"train": 100, "test": 20})
    _write_tfds_metadata(
        tmp_path, "oxford_flowers102", {"train": 10, "validation": 10, "test": 10}
    )
    return str(tmp_path)


def _celeba_examples(num_examples, inside_value, outside_value):
    """CelebA-like examples: one value inside the crop box, another outside.

    'Male' follows the pattern 0,1,1,0,1,1,... and 'Young' is its negation, so a
    label read from the wrong attribute is detected.
    """
    image = np.full((218, 178, 3), outside_value, np.uint8)
    top, left, height, width = CELEBA_CROP
    image[top : top + height, left : left + width] = inside_value
    male = np.array([i % 3 != 0 for i in range(num_examples)])
    return {
        "image": np.repeat(image[np.newaxis], num_examples, axis=0),
        "attributes": {"Male": male, "Young": ~male},
    }


def _as_dataset_from(examples):
    """An `as_dataset_fn` for `tfds.testing.mock_data` serving fixed examples."""

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        del self, split, decoders, read_config, kwargs  # Unused.
        return tf.data.Dataset.from_tensor_slices(examples)

    return as_dataset


def _find_windows(canvases, patches):
    """Top-left corners where each patch appears exactly in its canvas.

    Args:
        canvases: (N, S, S, C) array.
        patches: (N, h, w, C) array.

    Returns:
        list of N lists of (row, col).
    """
    height, width = patches.shape[1:3]
    found = []
    for canvas, patch in zip(canvases, patches):
        windows = np.lib.stride_tricks.sliding_window_view(
            canvas, (height, width), axis=(0, 1)
        )  # (S-h+1, S-w+1, C, h, w)
        equal = np.all(windows == np.moveaxis(patch, -1, 0), axis=(2, 3, 4))
        found.append([tuple(int(v) for v in rc) for rc in np.argwhere(equal)])
    return found


# ----------------------------------------------------------------------------
# The embedded dataset.
# ----------------------------------------------------------------------------


def test_mnist_small_file_checksum_and_size():
    data = data_provider.MNIST_SMALL_PATH.read_bytes()
    assert hashlib.sha256(data).hexdigest() == data_provider.MNIST_SMALL_SHA256
    assert len(data) < 3 * 2**20


@pytest.mark.parametrize(
    "split, per_class", [("train", 500), ("valid", 100), ("test", 100)]
)
def test_mnist_small_sizes_and_class_balance(split, per_class):
    images, labels = data_provider.load_mnist_small(split)
    assert images.shape == (10 * per_class, 28, 28, 1)
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [per_class] * 10)
    # Real digits: dark background, bright strokes.
    assert images.max() == 255 and np.median(images) == 0
    metadata = data_provider.get_metadata("mnist_small")
    assert metadata.num_examples[split] == 10 * per_class


def test_mnist_small_metadata():
    metadata = data_provider.get_metadata("mnist_small")
    assert metadata == data_provider.DatasetMetadata(
        name="mnist_small",
        num_classes=10,
        class_names=tuple("0123456789"),
        num_examples={"train": 5000, "valid": 1000, "test": 1000},
        image_shape=(28, 28, 1),
        value_range=(-1.0, 1.0),
    )


def test_mnist_small_does_not_touch_tfds():
    with mock.patch.object(tfds, "builder", side_effect=AssertionError("TFDS used")):
        data_provider.get_metadata("mnist_small")
        _collect(
            data_provider.make_dataset(
                "mnist_small", "valid", batch_size=500, is_training=False
            )
        )


@pytest.mark.parametrize("batch_size", [250, 1000, 128, 1024])
def test_eval_pass_pads_last_batch_with_mask(batch_size):
    raw_images, raw_labels = data_provider.load_mnist_small("test")
    dataset = data_provider.make_dataset(
        "mnist_small", "test", batch_size=batch_size, is_training=False
    )
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == -(-1000 // batch_size)
    for image, label, mask in batches:
        assert image.shape == (batch_size, 28, 28, 1) and image.dtype == np.float32
        assert label.shape == (batch_size,) and label.dtype == np.int32
        assert mask.shape == (batch_size,) and mask.dtype == np.float32
    images, labels, masks = _collect(dataset)
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
    raw_images, raw_labels = data_provider.load_mnist_small("train")
    dataset = data_provider.make_dataset(
        "mnist_small", "train", batch_size=50, is_training=True, seed=1
    )
    assert dataset.element_spec[0].shape == (50, 28, 28, 1)
    # 5,000 / 50 = 100 batches per epoch; the stream goes on past the epoch.
    images, labels, masks = _collect(dataset, max_batches=103)
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
        dataset = data_provider.make_dataset(
            "trans_mnist_small42", "train", batch_size=16, is_training=True, seed=seed
        )
        return _collect(dataset, max_batches=3)

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
        dataset = data_provider.make_dataset(
            "mnist_small",
            "test",
            batch_size=64,
            is_training=False,
            input_context=context,
        )
        _, labels, masks = _collect(dataset)
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
        canvases, _, _ = _collect(
            data_provider.make_dataset(
                "trans_mnist_small42",
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


# ----------------------------------------------------------------------------
# Translation canvas (one mechanism for MNIST and CelebA).
# ----------------------------------------------------------------------------


def test_translated_mnist_places_digit_inside_noise_canvas():
    plain, labels, _ = _collect(
        data_provider.make_dataset(
            "mnist_small", "test", batch_size=500, is_training=False
        )
    )
    dataset = data_provider.make_dataset(
        "trans_mnist_small42", "test", batch_size=500, is_training=False, seed=3
    )
    assert dataset.element_spec[0].shape == (500, 42, 42, 1)
    canvases, translated_labels, _ = _collect(dataset)
    np.testing.assert_array_equal(translated_labels, labels)

    corners = _find_windows(canvases, plain)
    assert all(len(c) == 1 for c in corners)  # Exactly one placement each.
    rows = np.array([c[0][0] for c in corners])
    cols = np.array([c[0][1] for c in corners])
    # Reference placement: 42 - 28 - U{0..13}, i.e. 1..14 on both axes, all used.
    np.testing.assert_array_equal(np.unique(rows), np.arange(1, 15))
    np.testing.assert_array_equal(np.unique(cols), np.arange(1, 15))

    outside = np.ones(canvases.shape, bool)
    for i, (row, col) in enumerate(zip(rows, cols)):
        outside[i, row : row + 28, col : col + 28] = False
    noise = canvases[outside]
    # Uniform[0, 1) mapped to the [-1, 1] convention: Uniform[-1, 1).
    assert noise.min() >= -1.0 and noise.max() < 1.0
    assert not np.any(noise == -1.0)  # Not the digits' background.
    assert abs(noise.mean()) < 0.01 and abs(noise.var() - 1 / 3) < 0.01
    counts, _ = np.histogram(noise, bins=10, range=(-1, 1))
    assert counts.min() > 0.95 * noise.size / 10


def test_translate_to_option_equals_trans_name():
    by_name = data_provider.make_dataset(
        "trans_mnist_small42", "valid", batch_size=100, is_training=False, seed=5
    )
    by_option = data_provider.make_dataset(
        "mnist_small",
        "valid",
        batch_size=100,
        is_training=False,
        seed=5,
        translate_to=42,
    )
    for a, b in zip(_collect(by_name, 2), _collect(by_option, 2)):
        np.testing.assert_array_equal(a, b)
    assert data_provider.get_metadata("mnist_small", translate_to=42).image_shape == (
        42,
        42,
        1,
    )


def test_translate_to_canvas_in_unit_range():
    image = tf.fill((32, 32, 3), 0.25)
    canvas = data_provider.translate_to_canvas(
        image, 48, seed=tf.constant([1, 2], tf.int64), value_range=(0.0, 1.0)
    ).numpy()
    assert canvas.shape == (48, 48, 3)
    (corners,) = _find_windows(canvas[np.newaxis], image.numpy()[np.newaxis])
    ((row, col),) = corners
    assert 1 <= row <= 16 and 1 <= col <= 16
    outside = np.ones(canvas.shape, bool)
    outside[row : row + 32, col : col + 32] = False
    assert canvas[outside].min() >= 0.0 and canvas[outside].max() < 1.0


@pytest.mark.parametrize("canvas_size", [32, 20])
def test_translate_to_canvas_rejects_small_canvas(canvas_size):
    with pytest.raises(ValueError, match="`canvas_size`"):
        data_provider.translate_to_canvas(
            tf.zeros((32, 32, 3)), canvas_size, seed=tf.constant([0, 0])
        )


# ----------------------------------------------------------------------------
# Mocked TFDS datasets.
# ----------------------------------------------------------------------------


def test_cifar10_pipeline_and_metadata(mock_tfds_dir):
    with tfds.testing.mock_data(num_examples=7, data_dir=mock_tfds_dir):
        metadata = data_provider.get_metadata("cifar10")
        raw = tfds.as_numpy(
            tfds.builder("cifar10").as_dataset(split="test", batch_size=-1)
        )
        dataset = data_provider.make_dataset(
            "cifar10", "test", batch_size=4, is_training=False
        )
        images, labels, masks = _collect(dataset)
        train = data_provider.make_dataset(
            "cifar10", "train", batch_size=4, is_training=True, seed=0
        )
        train_images, _, train_masks = _collect(train, max_batches=3)
    assert metadata.num_examples == {"train": 90, "valid": 10, "test": 30}
    assert metadata.image_shape == (32, 32, 3) and metadata.value_range == (0.0, 1.0)
    assert metadata.num_classes == 10 and len(metadata.class_names) == 10
    np.testing.assert_array_equal(masks, [1] * 7 + [0])
    np.testing.assert_array_equal(labels[:7], raw["label"])
    np.testing.assert_allclose(images[:7], raw["image"] / 255.0, rtol=0, atol=1e-6)
    assert train_images.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(train_masks, 1.0)


@pytest.mark.parametrize(
    "name, side, corners",
    [("celeba32", 32, range(0, 1)), ("trans_celeba48", 48, range(1, 17))],
)
def test_celeba_crop_label_and_translation(mock_tfds_dir, name, side, corners):
    examples = _celeba_examples(6, inside_value=200, outside_value=10)
    with tfds.testing.mock_data(
        data_dir=mock_tfds_dir, as_dataset_fn=_as_dataset_from(examples)
    ):
        metadata = data_provider.get_metadata(name)
        images, labels, masks = _collect(
            data_provider.make_dataset(
                name, "valid", batch_size=4, is_training=False, seed=0
            )
        )
    assert metadata.class_names == ("Female", "Male")
    assert metadata.num_examples == {"train": 50, "valid": 20, "test": 30}
    assert metadata.image_shape == (side, side, 3)
    assert images.shape == (8, side, side, 3)
    np.testing.assert_array_equal(masks, [1] * 6 + [0] * 2)
    np.testing.assert_array_equal(labels[:6], examples["attributes"]["Male"])
    # The crop box holds 200 and its surroundings 10: an exact crop resizes to a
    # uniform 200 / 255 face; a box off by one pixel would blend 10 into its edges.
    for canvas in images[:6]:
        windows = np.lib.stride_tricks.sliding_window_view(
            canvas, (32, 32), axis=(0, 1)
        )
        is_face = np.all(np.abs(windows - 200 / 255) < 1e-5, axis=(2, 3, 4))
        ((row, col),) = np.argwhere(is_face)
        assert row in corners and col in corners
        outside = np.ones(canvas.shape, bool)
        outside[row : row + 32, col : col + 32] = False
        assert np.all((0.0 <= canvas[outside]) & (canvas[outside] < 1.0))


def test_imagenet_pipelines(mock_tfds_dir):
    with tfds.testing.mock_data(num_examples=5, data_dir=mock_tfds_dir):
        metadata = data_provider.get_metadata("imagenet2012")
        train = lambda seed: _collect(  # noqa: E731
            data_provider.make_dataset(
                "imagenet2012", "train", batch_size=2, is_training=True, seed=seed
            ),
            max_batches=2,
        )
        first, again, other = train(1), train(1), train(2)
        images, labels, masks = _collect(
            data_provider.make_dataset(
                "imagenet2012", "test", batch_size=4, is_training=False
            )
        )
    assert metadata.num_examples == {"train": 40, "valid": 25, "test": 25}
    assert metadata.num_classes == 1000 and metadata.image_shape == (224, 224, 3)
    low, high = metadata.value_range
    np.testing.assert_allclose(low, -0.485 / 0.229)
    np.testing.assert_allclose(high, (1 - 0.406) / 0.225)
    for batch_images in (first[0], images):
        assert batch_images.shape[1:] == (224, 224, 3)
        assert low - 1e-5 <= batch_images.min() and batch_images.max() <= high + 1e-5
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])
    np.testing.assert_array_equal(masks, [1] * 5 + [0] * 3)
    assert ((0 <= labels) & (labels < 1000)).all()


def test_imagenet_eval_centre_crop_and_normalisation(mock_tfds_dir):
    # 256×256 JPEG: the centre 224×224 crop (rows/cols 16..240) is a 16-pixel ring
    # of dark grey around light grey; a frame of mid grey lies outside the crop.
    # Edges sit on 16-pixel JPEG block boundaries, so compression barely blurs them.
    image = np.full((256, 256, 3), 120, np.uint8)
    image[16:240, 16:240] = 40
    image[32:224, 32:224] = 200
    jpeg = tf.io.encode_jpeg(image, quality=100).numpy()
    examples = {"image": [jpeg] * 3, "label": np.array([5, 6, 7])}
    with tfds.testing.mock_data(
        data_dir=mock_tfds_dir, as_dataset_fn=_as_dataset_from(examples)
    ):
        images, labels, _ = _collect(
            data_provider.make_dataset(
                "imagenet2012", "valid", batch_size=3, is_training=False
            )
        )
    np.testing.assert_array_equal(labels, [5, 6, 7])
    mean = np.array([0.485, 0.456, 0.406])
    stddev = np.array([0.229, 0.224, 0.225])
    normalised = lambda value: (value / 255.0 - mean) / stddev  # noqa: E731
    assert images.shape == (3, 224, 224, 3)
    for region, value in (
        (images[:, :14, :], 40),  # The ring reaches the crop's border...
        (images[:, -14:, :], 40),
        (images[:, :, :14], 40),
        (images[:, 18:206, 18:206], 200),  # ...and surrounds the centre.
    ):
        np.testing.assert_allclose(
            region, np.broadcast_to(normalised(value), region.shape), atol=0.05
        )


def test_generic_tfds_dataset_by_name(mock_tfds_dir):
    with tfds.testing.mock_data(num_examples=3, data_dir=mock_tfds_dir):
        metadata = data_provider.get_metadata("fashion_mnist")
        resized = data_provider.get_metadata(
            "fashion_mnist", image_size=16, value_range=(-1, 1)
        )
        translated = data_provider.get_metadata("trans_fashion_mnist40")
        images, _, _ = _collect(
            data_provider.make_dataset(
                "fashion_mnist",
                "valid",
                batch_size=3,
                is_training=False,
                image_size=16,
                value_range=(-1, 1),
            )
        )
        canvases, _, _ = _collect(
            data_provider.make_dataset(
                "trans_fashion_mnist40", "test", batch_size=3, is_training=False
            )
        )
        with pytest.raises(ValueError, match="image_size"):
            data_provider.get_metadata("oxford_flowers102")
        flowers = data_provider.get_metadata("oxford_flowers102", image_size=24)
    # No validation split: valid = train[:8%] = 8 of 100.
    assert metadata.num_examples == {"train": 92, "valid": 8, "test": 20}
    assert metadata.image_shape == (28, 28, 1) and metadata.value_range == (0.0, 1.0)
    assert metadata.class_names[0] == "T-shirt/top"
    assert resized.image_shape == (16, 16, 1) and resized.value_range == (-1.0, 1.0)
    assert translated.image_shape == (40, 40, 1)
    assert images.shape == (3, 16, 16, 1)
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.min() < 0.0
    assert canvases.shape == (3, 40, 40, 1)
    assert flowers.image_shape == (24, 24, 3)
    assert flowers.num_examples == {"train": 10, "valid": 10, "test": 10}


# ----------------------------------------------------------------------------
# Serving preprocessing.
# ----------------------------------------------------------------------------


def test_serving_matches_eval_pipeline_for_mnist_small():
    raw_images, _ = data_provider.load_mnist_small("valid")
    served = data_provider.preprocess_serving_images("mnist_small", raw_images).numpy()
    images, _, _ = _collect(
        data_provider.make_dataset(
            "mnist_small", "valid", batch_size=1000, is_training=False
        )
    )
    np.testing.assert_array_equal(served, images)


@pytest.mark.parametrize(
    "name, low, high",
    [("cifar10", 0.0, 1.0), ("trans_celeba48", 0.0, 1.0), ("trans_mnist42", -1.0, 1.0)],
)
def test_serving_scales_to_value_range(name, low, high):
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    served = data_provider.preprocess_serving_images(name, images).numpy()
    np.testing.assert_allclose(served, low + (high - low) * images / 255.0, atol=1e-6)


def test_serving_imagenet_normalisation():
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    served = data_provider.preprocess_serving_images("imagenet2012", images).numpy()
    expected = (images / 255.0 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(served, expected, atol=1e-5)


def test_serving_works_in_a_graph_with_dynamic_batch():
    function = tf.function(
        lambda x: data_provider.preprocess_serving_images("mnist", x),
        input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.uint8)],
    )
    out = function(tf.fill((3, 28, 28, 1), tf.constant(255, tf.uint8)))
    np.testing.assert_array_equal(out.numpy(), 1.0)


def test_serving_rejects_float_images():
    with pytest.raises(TypeError, match="`images_uint8`.*float32"):
        data_provider.preprocess_serving_images(
            "mnist", np.zeros((1, 28, 28, 1), np.float32)
        )


# ----------------------------------------------------------------------------
# Missing data and invalid arguments.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, tfds_name",
    [
        ("mnist", "mnist"),
        ("cifar10", "cifar10"),
        ("celeba32", "celeb_a"),
        ("trans_celeba48", "celeb_a"),
        ("imagenet2012", "imagenet2012"),
        ("trans_mnist42", "mnist"),
    ],
)
def test_missing_data_fails_fast_with_instructions(tmp_path, name, tfds_name):
    data_dir = str(tmp_path / "empty")
    # The slow paths (download with retries, reading absent records) are never
    # entered: both are replaced by failures.
    with mock.patch.object(
        tfds.core.DatasetBuilder,
        "download_and_prepare",
        side_effect=AssertionError("download attempted"),
    ), mock.patch.object(
        tfds.core.DatasetBuilder,
        "as_dataset",
        side_effect=AssertionError("read attempted"),
    ):
        for call in (
            lambda: data_provider.get_metadata(name, data_dir=data_dir),
            lambda: data_provider.make_dataset(
                name, "train", batch_size=8, is_training=True, data_dir=data_dir
            ),
        ):
            with pytest.raises(data_provider.DataNotFoundError) as error:
                call()
            message = str(error.value)
            assert repr(name) in message and repr(tfds_name) in message
            assert data_dir in message
            for way in ("download=True", "data_dir=", "manual_dir=", "mnist_small"):
                assert way in message


def test_download_flag_lets_tfds_prepare_missing_data():
    # Without metadata files nothing is prepared; mock_data makes the download a
    # no-op and the hosts "answer", standing in for a machine with internet.
    with tfds.testing.mock_data(num_examples=3), mock.patch.object(
        downloads, "unreachable_host", return_value=None
    ):
        with pytest.raises(data_provider.DataNotFoundError):
            data_provider.make_dataset(
                "cifar10", "test", batch_size=2, is_training=False
            )
        _, _, masks = _collect(
            data_provider.make_dataset(
                "cifar10", "test", batch_size=2, is_training=False, download=True
            )
        )
    np.testing.assert_array_equal(masks, [1, 1, 1, 0])


def test_offline_download_fails_at_once_and_writes_nothing(tmp_path, monkeypatch):
    def no_name_resolution(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_name_resolution)
    data_dir = tmp_path / "data"
    with mock.patch.object(
        tfds.core.DatasetBuilder,
        "download_and_prepare",
        side_effect=AssertionError("download attempted"),
    ):
        with pytest.raises(data_provider.DataNotFoundError) as error:
            data_provider.get_metadata("mnist", data_dir=str(data_dir), download=True)
    message = str(error.value)
    assert "Dataset 'mnist' (TFDS 'mnist', version 3.0.1) cannot be downloaded: " \
        "storage.googleapis.com:443 does not answer (gaierror: " in message
    assert f"Nothing was written to data_dir {str(data_dir)!r}." in message
    assert not data_dir.exists()
    # Named for the command line, the options are flags.
    assert "1. --config.dataset.download=True (needs internet)" in str(
        error.value.named_for("--config.dataset.")
    )


def test_data_not_found_error_pickles_with_its_option_names(tmp_path):
    """It crosses process boundaries (e.g. from a grid worker) intact."""
    with pytest.raises(data_provider.DataNotFoundError) as error:
        data_provider.get_metadata("cifar10", data_dir=str(tmp_path / "empty"))
    again = pickle.loads(pickle.dumps(error.value))
    assert type(again) is data_provider.DataNotFoundError
    assert str(again) == str(error.value)
    assert "1. download=True (needs internet)" in str(again)
    named = pickle.loads(pickle.dumps(again.named_for("--")))
    assert str(named) == str(error.value.named_for("--"))
    assert "1. --download=True (needs internet)" in str(named)
    assert "3. --manual_dir=<folder>" in str(named.named_for("--"))


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_failed_download_removes_its_partial_files(tmp_path):
    data_dir = tmp_path / "data"
    for path in ("other/1.0.0/kept.json", "downloads/earlier.zip"):
        (data_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / path).write_text("x")
    before = _tree(data_dir)

    def interrupted_download(builder, **kwargs):
        # What TFDS leaves when the connection drops.
        for path in ("mnist/incomplete.AB12_3.0.1/mnist-train.tfrecord",
                     "downloads/mnist/train-images.gz.tmp.5f3a",
                     "downloads/extracted/x"):
            (data_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (data_dir / path).write_text("x")
        raise ConnectionResetError("Connection reset by peer")

    with mock.patch.object(downloads, "unreachable_host", return_value=None), \
            mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                              interrupted_download):
        with pytest.raises(data_provider.DataNotFoundError) as error:
            data_provider.get_metadata("mnist", data_dir=str(data_dir), download=True)
    assert "could not be downloaded and prepared into data_dir" in str(error.value)
    assert "(ConnectionResetError: Connection reset by peer); its partial files " \
        "were removed." in str(error.value)
    assert _tree(data_dir) == before


def test_unreachable_host_checks_the_proxy_and_gives_up_in_time(monkeypatch):
    attempts = []

    def slow_name_resolution(host, port, *args, **kwargs):
        attempts.append((host, port))
        time.sleep(5)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure")

    monkeypatch.setattr(socket, "getaddrinfo", slow_name_resolution)
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert downloads.unreachable_host(
        ["https://storage.googleapis.com/a.gz", "https://storage.googleapis.com/b.gz"],
        timeout=0.2,
    ) == ("proxy.example:3128", "no answer within 0.2 s")
    assert attempts == [("proxy.example", 3128)]


def test_manual_dir_without_the_original_files_fails_fast(tmp_path):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    (manual_dir / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with mock.patch.object(
        tfds.core.DatasetBuilder,
        "download_and_prepare",
        side_effect=AssertionError("download attempted"),
    ):
        with pytest.raises(data_provider.DataNotFoundError) as error:
            data_provider.get_metadata(
                "mnist", data_dir=str(tmp_path / "empty"), manual_dir=str(manual_dir)
            )
    message = str(error.value)
    assert "t10k-images-idx3-ubyte.gz" in message
    assert "lacks the original files" in message
    assert "lacks the original files: train-images" not in message


def test_manual_dir_with_the_original_files_prepares_without_download(tmp_path):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    for filename in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        (manual_dir / filename).write_bytes(b"")

    class Prepared(Exception):
        pass

    with mock.patch.object(
        tfds.core.DatasetBuilder, "download_and_prepare", side_effect=Prepared
    ) as prepare:
        with pytest.raises(Prepared):
            data_provider.get_metadata(
                "mnist", data_dir=str(tmp_path / "empty"), manual_dir=str(manual_dir)
            )
    (call,) = prepare.call_args_list
    assert str(call.kwargs["download_config"].manual_dir) == str(manual_dir)


@pytest.mark.parametrize("name", ["nope", "trans_nope42", "trans_mnist", "mnist42"])
def test_unknown_dataset_lists_valid_names(name):
    with pytest.raises(ValueError, match="`name`") as error:
        data_provider.get_metadata(name)
    for valid in data_provider.DATASET_NAMES:
        assert repr(valid) in str(error.value)


def test_dataset_names_are_the_builtins():
    assert data_provider.DATASET_NAMES == (
        "mnist",
        "mnist_small",
        "cifar10",
        "celeba32",
        "trans_celeba48",
        "imagenet2012",
    )


@pytest.mark.parametrize(
    "kwargs, exception, match",
    [
        (dict(split="training"), ValueError, r"`split`.*'train', 'valid', 'test'"),
        (dict(batch_size=0), ValueError, "`batch_size`.*Received: 0"),
        (dict(shuffle_buffer_size=-1), ValueError, "`shuffle_buffer_size`"),
        (dict(is_training=1), TypeError, "`is_training`"),
        (dict(seed=1.5), TypeError, "`seed`"),
        (dict(download="yes"), TypeError, "`download`"),
        (dict(translate_to=0), ValueError, "`translate_to`"),
        (dict(translate_to=28), ValueError, "`translate_to`.*larger"),
        (dict(image_size=-3), ValueError, "`image_size`"),
        (dict(value_range=(1, 0)), ValueError, "`value_range`"),
        (dict(name=3), TypeError, "`name`"),
    ],
)
def test_invalid_arguments(kwargs, exception, match):
    arguments = dict(
        name="mnist_small", split="test", batch_size=8, is_training=False
    )
    arguments.update(kwargs)
    with pytest.raises(exception, match=match):
        data_provider.make_dataset(
            arguments.pop("name"), arguments.pop("split"), **arguments
        )


def test_imagenet_rejects_small_image_options():
    with pytest.raises(ValueError, match="translate_to"):
        data_provider.get_metadata("imagenet2012", translate_to=300)


# ----------------------------------------------------------------------------
# Real MNIST (../shared/data; skipped when absent).
# ----------------------------------------------------------------------------


def test_real_mnist_metadata(shared_tfds_dir):
    metadata = data_provider.get_metadata("mnist", data_dir=shared_tfds_dir)
    assert metadata.num_examples == {"train": 55200, "valid": 4800, "test": 10000}
    assert metadata.image_shape == (28, 28, 1)
    assert metadata.value_range == (-1.0, 1.0)
    assert metadata.class_names == tuple("0123456789")


@pytest.mark.parametrize("batch_size", [1000, 384])
def test_real_mnist_test_pass_counts_every_example_once(shared_tfds_dir, batch_size):
    dataset = data_provider.make_dataset(
        "mnist",
        "test",
        batch_size=batch_size,
        is_training=False,
        data_dir=shared_tfds_dir,
    )
    images, labels, masks = _collect(dataset)
    assert images.shape[0] == -(-10000 // batch_size) * batch_size
    assert masks.sum() == 10000
    np.testing.assert_array_equal(
        np.bincount(labels[masks == 1], minlength=10), MNIST_TEST_CLASS_COUNTS
    )
    real = images[masks == 1]
    assert real.min() == -1.0 and real.max() == 1.0


def test_real_mnist_valid_split_size(shared_tfds_dir):
    _, _, masks = _collect(
        data_provider.make_dataset(
            "mnist",
            "valid",
            batch_size=1000,
            is_training=False,
            data_dir=shared_tfds_dir,
        )
    )
    assert masks.sum() == 4800


def test_mnist_small_is_real_mnist_with_identical_preprocessing(shared_tfds_dir):
    arrays = dict(np.load(data_provider.MNIST_SMALL_PATH))
    for split, source_split in (("valid", "train[:8%]"), ("test", "test")):
        source = tfds.as_numpy(
            tfds.load(
                "mnist", split=source_split, data_dir=shared_tfds_dir, batch_size=-1
            )
        )
        index = arrays[f"{split}_source_index"]
        assert len(np.unique(index)) == len(index)
        np.testing.assert_array_equal(
            arrays[f"{split}_images"], source["image"][index, :, :, 0]
        )
        np.testing.assert_array_equal(arrays[f"{split}_labels"], source["label"][index])
    # Same preprocessing: the 'mnist' pipeline's images at those indices.
    mnist_images, _, _ = _collect(
        data_provider.make_dataset(
            "mnist",
            "test",
            batch_size=10000,
            is_training=False,
            data_dir=shared_tfds_dir,
        )
    )
    small_images, _, _ = _collect(
        data_provider.make_dataset(
            "mnist_small", "test", batch_size=1000, is_training=False
        )
    )
    np.testing.assert_array_equal(
        small_images, mnist_images[arrays["test_source_index"]]
    )


def test_make_mnist_small_script_reproduces_the_embedded_file(
    shared_tfds_dir, tmp_path, monkeypatch
):
    scripts = data_provider.MNIST_SMALL_PATH.parents[2] / "scripts"
    monkeypatch.syspath_prepend(str(scripts))  # The script imports scripts/_cli.py.
    path = scripts / "make_mnist_small.py"
    spec = importlib.util.spec_from_file_location("make_mnist_small", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    output = tmp_path / "mnist_small.npz"
    script.write_npz_deterministic(output, script.build_arrays(shared_tfds_dir, seed=0))
    assert hashlib.sha256(output.read_bytes()).hexdigest() == (
        data_provider.MNIST_SMALL_SHA256
    )
