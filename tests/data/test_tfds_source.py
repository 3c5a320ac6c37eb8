"""Tests of the TFDS-served datasets (`data.tfds_source`).

CIFAR-10, CelebA, ImageNet and generic TFDS datasets run under
`tfds.testing.mock_data` with metadata files written here (so the split sizes are
known); a few tests use the real MNIST in `../shared/data` (skipped when it is
absent). Nothing here touches the network.
"""

import os
import pickle
import socket
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.data import data_testing
from low_rank_local_connectivity import data
from low_rank_local_connectivity.data import downloads

CELEBA_CROP = (40, 20, 138, 138)  # top, left, height, width (docs/design.md §4)


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


# ----------------------------------------------------------------------------
# Mocked TFDS datasets.
# ----------------------------------------------------------------------------


def test_cifar10_pipeline_and_metadata(mock_tfds_dir):
    with tfds.testing.mock_data(num_examples=7, data_dir=mock_tfds_dir):
        metadata = data.resolve("cifar10").metadata
        raw = tfds.as_numpy(
            tfds.builder("cifar10").as_dataset(split="test", batch_size=-1)
        )
        dataset = data.resolve("cifar10").make_dataset(
            "test", batch_size=4, is_training=False
        )
        images, labels, masks = data_testing.collect(dataset)
        train = data.resolve("cifar10").make_dataset(
            "train", batch_size=4, is_training=True, seed=0
        )
        train_images, _, train_masks = data_testing.collect(train, max_batches=3)
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
        dataset = data.resolve(name)
        metadata = dataset.metadata
        images, labels, masks = data_testing.collect(
            dataset.make_dataset("valid", batch_size=4, is_training=False, seed=0)
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
        metadata = data.resolve("imagenet2012").metadata
        train = lambda seed: data_testing.collect(  # noqa: E731
            data.resolve("imagenet2012").make_dataset(
                "train", batch_size=2, is_training=True, seed=seed
            ),
            max_batches=2,
        )
        first, again, other = train(1), train(1), train(2)
        images, labels, masks = data_testing.collect(
            data.resolve("imagenet2012").make_dataset(
                "test", batch_size=4, is_training=False
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
        images, labels, _ = data_testing.collect(
            data.resolve("imagenet2012").make_dataset(
                "valid", batch_size=3, is_training=False
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
        metadata = data.resolve("fashion_mnist").metadata
        resized = data.resolve("fashion_mnist", image_size=16, value_range=(-1, 1))
        translated = data.resolve("trans_fashion_mnist40").metadata
        images, _, _ = data_testing.collect(
            resized.make_dataset("valid", batch_size=3, is_training=False)
        )
        canvases, _, _ = data_testing.collect(
            data.resolve("trans_fashion_mnist40").make_dataset(
                "test", batch_size=3, is_training=False
            )
        )
        with pytest.raises(ValueError, match="image_size"):
            data.resolve("oxford_flowers102").metadata
        flowers = data.resolve("oxford_flowers102", image_size=24).metadata
    # No validation split: valid = train[:8%] = 8 of 100.
    assert metadata.num_examples == {"train": 92, "valid": 8, "test": 20}
    assert metadata.image_shape == (28, 28, 1) and metadata.value_range == (0.0, 1.0)
    assert metadata.class_names[0] == "T-shirt/top"
    assert resized.metadata.image_shape == (16, 16, 1)
    assert resized.metadata.value_range == (-1.0, 1.0)
    assert translated.image_shape == (40, 40, 1)
    assert images.shape == (3, 16, 16, 1)
    assert images.min() >= -1.0 and images.max() <= 1.0 and images.min() < 0.0
    assert canvases.shape == (3, 40, 40, 1)
    assert flowers.image_shape == (24, 24, 3)
    assert flowers.num_examples == {"train": 10, "valid": 10, "test": 10}


# ----------------------------------------------------------------------------
# Missing data.
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
            lambda: data.resolve(name, data_dir=data_dir).metadata,
            lambda: data.resolve(name, data_dir=data_dir).make_dataset(
                "train", batch_size=8, is_training=True
            ),
            lambda: data.resolve(name, data_dir=data_dir).check_files(),
        ):
            with pytest.raises(data.DataNotFoundError) as error:
                call()
            message = str(error.value)
            assert repr(name) in message and repr(tfds_name) in message
            assert data_dir in message
            for way in ("download=True", "data_dir=", "manual_dir=", "mnist_small"):
                assert way in message


def test_data_not_found_error_pickles_with_its_template(tmp_path):
    with pytest.raises(data.DataNotFoundError) as error:
        data.resolve("mnist", data_dir=str(tmp_path)).metadata
    copy = pickle.loads(pickle.dumps(error.value))
    assert type(copy) is data.DataNotFoundError and str(copy) == str(error.value)
    assert "1. download=True (needs internet)" in str(copy)
    assert "1. --config.dataset.download=True" in str(copy.named_for("--config.dataset."))
    assert "For MNIST, idx_dir=<folder> with its four idx files" in str(copy)


def test_download_flag_lets_tfds_prepare_missing_data():
    # Without metadata files nothing is prepared; mock_data makes the download a
    # no-op and the hosts "answer", standing in for a machine with internet.
    with tfds.testing.mock_data(num_examples=3), mock.patch.object(
        downloads, "unreachable_host", return_value=None
    ):
        with pytest.raises(data.DataNotFoundError):
            data.resolve("cifar10").make_dataset(
                "test", batch_size=2, is_training=False
            )
        _, _, masks = data_testing.collect(
            data.resolve("cifar10", download=True).make_dataset(
                "test", batch_size=2, is_training=False
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
        with pytest.raises(data.DataNotFoundError) as error:
            data.resolve("mnist", data_dir=str(data_dir), download=True).metadata
    message = str(error.value)
    assert "Dataset 'mnist' (TFDS 'mnist', version 3.0.1) cannot be downloaded: " \
        "storage.googleapis.com:443 does not answer (gaierror: " in message
    assert f"Nothing was written to data_dir {str(data_dir)!r}." in message
    assert not data_dir.exists()
    # Named for the command line, the options are flags.
    assert "1. --config.dataset.download=True (needs internet)" in str(
        error.value.named_for("--config.dataset.")
    )


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
        with pytest.raises(data.DataNotFoundError) as error:
            data.resolve("mnist", data_dir=str(data_dir), download=True).metadata
    assert "could not be downloaded and prepared into data_dir" in str(error.value)
    assert "(ConnectionResetError: Connection reset by peer); its partial files " \
        "were removed." in str(error.value)
    assert _tree(data_dir) == before


def test_manual_dir_without_the_original_files_fails_fast(tmp_path):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    (manual_dir / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with mock.patch.object(
        tfds.core.DatasetBuilder,
        "download_and_prepare",
        side_effect=AssertionError("download attempted"),
    ):
        with pytest.raises(data.DataNotFoundError) as error:
            data.resolve(
                "mnist", data_dir=str(tmp_path / "empty"), manual_dir=str(manual_dir)
            ).metadata
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
            data.resolve(
                "mnist", data_dir=str(tmp_path / "empty"), manual_dir=str(manual_dir)
            ).metadata
    (call,) = prepare.call_args_list
    assert str(call.kwargs["download_config"].manual_dir) == str(manual_dir)


# ----------------------------------------------------------------------------
# Real MNIST (../shared/data; skipped when absent).
# ----------------------------------------------------------------------------


def test_real_mnist_metadata(shared_tfds_dir):
    metadata = data.resolve("mnist", data_dir=shared_tfds_dir).metadata
    assert metadata.num_examples == {"train": 55200, "valid": 4800, "test": 10000}
    assert metadata.image_shape == (28, 28, 1)
    assert metadata.value_range == (-1.0, 1.0)
    assert metadata.class_names == tuple("0123456789")


@pytest.mark.parametrize("batch_size", [1000, 384])
def test_real_mnist_test_pass_counts_every_example_once(shared_tfds_dir, batch_size):
    dataset = data.resolve("mnist", data_dir=shared_tfds_dir).make_dataset(
        "test", batch_size=batch_size, is_training=False
    )
    images, labels, masks = data_testing.collect(dataset)
    assert images.shape[0] == -(-10000 // batch_size) * batch_size
    assert masks.sum() == 10000
    np.testing.assert_array_equal(
        np.bincount(labels[masks == 1], minlength=10), data_testing.MNIST_TEST_CLASS_COUNTS
    )
    real = images[masks == 1]
    assert real.min() == -1.0 and real.max() == 1.0


def test_real_mnist_valid_split_size(shared_tfds_dir):
    _, _, masks = data_testing.collect(
        data.resolve("mnist", data_dir=shared_tfds_dir).make_dataset(
            "valid", batch_size=1000, is_training=False
        )
    )
    assert masks.sum() == 4800


def test_dataset_is_resolved_once(shared_tfds_dir):
    with mock.patch.object(tfds, "builder", wraps=tfds.builder) as builder:
        dataset = data.resolve("mnist", data_dir=shared_tfds_dir)
        assert dataset.metadata.num_examples["valid"] == 4800
        dataset.check_files()
        assert dataset.find_unreadable_files("test", read_records=False) == []
        data_testing.collect(
            dataset.make_dataset("valid", batch_size=2400, is_training=False)
        )
    assert builder.call_count == 1
