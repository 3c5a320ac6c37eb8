"""Tests of the datasets held in memory (`data.array_sources`).

The embedded 'mnist_small', `.npz` files written here, and MNIST's idx files
(synthetic ones here; the real ones in `../shared/data`, skipped when absent,
checked against the same MNIST through TFDS).
"""

import gzip
import hashlib
import shutil
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tests.data import data_testing
from tests.conftest import REPO_ROOT
from low_rank_local_connectivity import data
from low_rank_local_connectivity.data import array_sources
from low_rank_local_connectivity.data import names
from tools import derive_mnist_order

_IDX_NAMES = [name for pair in array_sources.MNIST_IDX_FILES.values() for name in pair]


def _npz_arrays(rng, shapes=None, num_classes=3):
    """Arrays of the .npz format: splits of 12, 5 and 7 random images."""
    shapes = shapes or {split: (6, 5, 2) for split in names.SPLITS}
    arrays = {}
    for split, size in zip(names.SPLITS, (12, 5, 7)):
        arrays[f"{split}_images"] = rng.integers(
            0, 256, (size, *shapes[split]), dtype=np.uint8
        )
        arrays[f"{split}_labels"] = rng.integers(0, num_classes, size)
    return arrays


def _write_idx(path, array):
    """Writes a uint8 array as an idx file (gzipped for a '.gz' name)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


# ----------------------------------------------------------------------------
# The embedded dataset.
# ----------------------------------------------------------------------------


def test_mnist_small_file_checksum_and_size():
    content = names.MNIST_SMALL_PATH.read_bytes()
    assert hashlib.sha256(content).hexdigest() == array_sources.MNIST_SMALL_SHA256
    assert len(content) < 3 * 2**20


@pytest.mark.parametrize(
    "split, per_class", [("train", 500), ("valid", 100), ("test", 100)]
)
def test_mnist_small_sizes_and_class_balance(split, per_class):
    images, labels = data.resolve("mnist_small").arrays(split)
    assert images.shape == (10 * per_class, 28, 28, 1)
    assert images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [per_class] * 10)
    # Real digits: dark background, bright strokes.
    assert images.max() == 255 and np.median(images) == 0
    metadata = data.resolve("mnist_small").metadata
    assert metadata.num_examples[split] == 10 * per_class


def test_mnist_small_metadata():
    metadata = data.resolve("mnist_small").metadata
    assert metadata == data.DatasetMetadata(
        name="mnist_small",
        num_classes=10,
        class_names=tuple("0123456789"),
        num_examples={"train": 5000, "valid": 1000, "test": 1000},
        image_shape=(28, 28, 1),
        value_range=(-1.0, 1.0),
    )


def test_mnist_small_does_not_touch_tfds():
    with mock.patch.object(tfds, "builder", side_effect=AssertionError("TFDS used")):
        assert data.resolve("mnist_small").metadata.num_classes == 10
        data_testing.collect(
            data.resolve("mnist_small").make_dataset(
                "valid", batch_size=500, is_training=False
            )
        )




# ----------------------------------------------------------------------------
# .npz files.
# ----------------------------------------------------------------------------


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    arrays = _npz_arrays(rng)
    arrays["class_names"] = np.array(["cat", "dog", "emu"])
    path = tmp_path / "animals.npz"
    array_sources.write_npz(path, arrays)
    content = path.read_bytes()
    array_sources.write_npz(path, arrays)
    assert path.read_bytes() == content  # Deterministic bytes.

    dataset = data.resolve(str(path))
    assert dataset.metadata == data.DatasetMetadata(
        name=str(path), num_classes=3, class_names=("cat", "dog", "emu"),
        num_examples={"train": 12, "valid": 5, "test": 7}, image_shape=(6, 5, 2),
        value_range=(0.0, 1.0),
    )
    for split in names.SPLITS:
        images, labels = dataset.arrays(split)
        np.testing.assert_array_equal(images, arrays[f"{split}_images"])
        np.testing.assert_array_equal(labels, arrays[f"{split}_labels"])
        assert labels.dtype == np.int32
        batches = data_testing.collect(
            dataset.numpy_batches(split, batch_size=4, is_training=False)
        )
        np.testing.assert_array_equal(batches[0][: len(labels)],
                                      images.astype(np.float32) / np.float32(255))
        for a, b in zip(batches, data_testing.collect(
                dataset.make_dataset(split, batch_size=4, is_training=False))):
            np.testing.assert_array_equal(a, b)


def test_npz_of_single_channel_images_without_class_names(tmp_path):
    rng = np.random.default_rng(1)
    arrays = _npz_arrays(rng, {split: (4, 4) for split in names.SPLITS}, 5)
    arrays["test_labels"][0] = 6  # The largest label sets the number of classes.
    path = tmp_path / "digits.npz"
    array_sources.write_npz(path, arrays)
    metadata = data.resolve(str(path), value_range=(-1, 1), translate_to=9).metadata
    assert metadata.class_names == tuple("0123456") and metadata.num_classes == 7
    assert metadata.image_shape == (9, 9, 1) and metadata.value_range == (-1.0, 1.0)
    images, _ = data.resolve(str(path)).arrays("valid")
    assert images.shape == (5, 4, 4, 1)


def _bad(arrays, change):
    arrays = dict(arrays)
    change(arrays)
    return arrays


@pytest.mark.parametrize("change, problem", [
    (lambda a: a.pop("valid_labels"), r"missing \['valid_labels'\]; it has "),
    (lambda a: a.update(train_images=a["train_images"] / 255), r"train_images is "
     r"float64 of shape \(12, 6, 5, 2\)"),
    (lambda a: a.update(test_labels=a["test_labels"][:3]), r"test_labels is int64 "
     r"of shape \(3,\) for 7 images"),
    (lambda a: a.update(test_labels=-a["test_labels"] - 1), "test_labels is int64"),
    (lambda a: a.update(valid_images=a["valid_images"][:, :4]), r"the splits' images "
     r"differ in shape"),
    (lambda a: a.update(class_names=np.array(["one"])), r"class_names is <U3 of "
     r"shape \(1,\) for 3 classes"),
    (lambda a: a.update(train_images=a["train_images"][:0]), "train_images is uint8"),
], ids=["missing-key", "float-images", "label-count", "negative-label",
        "shapes-differ", "few-class-names", "empty-split"])
def test_bad_npz_is_refused_in_one_line(tmp_path, change, problem):
    path = tmp_path / "bad.npz"
    array_sources.write_npz(path, _bad(_npz_arrays(np.random.default_rng(2)), change))
    with pytest.raises(ValueError, match=r"^Invalid value for argument `name`. "
                       r"Expected an .npz of arrays <split>_images .* Received: "
                       rf"name='{path}' \({problem}") as error:
        data.resolve(str(path)).metadata
    assert "\n" not in str(error.value)


def test_unreadable_and_missing_npz_files(tmp_path):
    (tmp_path / "text.npz").write_text("not a zip file")
    with pytest.raises(ValueError, match=r"name='.*text.npz' \(not a readable .npz"):
        data.resolve(str(tmp_path / "text.npz")).metadata
    with pytest.raises(data.DataNotFoundError, match=(
            r"^Invalid value for argument `name`. Expected a dataset name or the path "
            r"of an existing .npz file. Received: name='.*nowhere.npz' \(no such "
            r"file\).$")) as error:
        data.resolve(str(tmp_path / "nowhere.npz")).metadata
    assert "`--config.dataset.name`" in str(error.value.named_for("--config.dataset."))


# ----------------------------------------------------------------------------
# MNIST idx files.
# ----------------------------------------------------------------------------


def test_read_idx_gzipped_or_not(tmp_path):
    array = np.random.default_rng(3).integers(0, 256, (4, 3, 2), dtype=np.uint8)
    for name in ("a-idx3-ubyte.gz", "a-idx3-ubyte"):
        _write_idx(tmp_path / name, array)
        np.testing.assert_array_equal(array_sources.read_idx(tmp_path / name), array)
    (tmp_path / "float").write_bytes(bytes([0, 0, 0x0D, 1, 0, 0, 0, 1]) + b"abcd")
    with pytest.raises(ValueError, match=r"`idx_dir`. Expected idx files of uint8 "
                       r"\(MNIST's format\). Received: '.*float' is not one "
                       r"\(magic number 0x00000d01\)"):
        array_sources.read_idx(tmp_path / "float")


def test_missing_idx_folder_names_the_argument(tmp_path):
    folder = tmp_path / "nowhere"
    with pytest.raises(data.DataNotFoundError, match=(
            r"^Invalid value for argument `idx_dir`. Expected a folder with the MNIST "
            r"idx files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            r"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz \(each also "
            rf"accepted uncompressed\). Received: idx_dir='{folder}' \(missing: "
            r"train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            r"t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz\).$")) as error:
        data.resolve("mnist", idx_dir=str(folder)).metadata
    assert "argument `--config.dataset.idx_dir`" in str(
        error.value.named_for("--config.dataset.")
    )
    folder.mkdir()
    for name in _IDX_NAMES[1:]:
        (folder / name).write_bytes(b"")
    with pytest.raises(data.DataNotFoundError,
                       match=r"\(missing: train-images-idx3-ubyte.gz\).$"):
        data.resolve("trans_mnist40", idx_dir=str(folder)).metadata


def test_idx_files_of_other_data_are_refused(tmp_path):
    rng = np.random.default_rng(4)
    for split, (images, labels) in array_sources.MNIST_IDX_FILES.items():
        _write_idx(tmp_path / f"{images}.gz",
                   rng.integers(0, 256, (10, 28, 28), dtype=np.uint8))
        _write_idx(tmp_path / f"{labels}.gz", rng.integers(0, 10, 10, dtype=np.uint8))
    with pytest.raises(ValueError, match=(
            r"^Invalid value for argument `idx_dir`. Expected the idx files of the "
            r"standard MNIST \(the TFDS order applies to them only: "
            r"tensorflow-datasets 4.9.10, TFDS mnist 3.0.1\). Received: "
            r"'.*train-images-idx3-ubyte.gz' and '.*train-labels-idx1-ubyte.gz' "
            r"decode to sha256 [0-9a-f]{64}, expected [0-9a-f]{64}.$")):
        data.resolve("mnist", idx_dir=str(tmp_path)).metadata


def test_mnist_order_file_checksum_and_contents():
    content = array_sources.MNIST_ORDER_PATH.read_bytes()
    assert hashlib.sha256(content).hexdigest() == array_sources.MNIST_ORDER_SHA256
    assert len(content) < 200 * 2**10
    with np.load(array_sources.MNIST_ORDER_PATH) as order:
        for split, size in (("train", 60000), ("test", 10000)):
            np.testing.assert_array_equal(np.sort(order[f"{split}_order"]),
                                          np.arange(size))
        assert str(order["source"]) == "tensorflow-datasets 4.9.10, TFDS mnist 3.0.1"


def _tfds_split(shared_tfds_dir, split):
    return tfds.as_numpy(tfds.load("mnist", split=split, data_dir=shared_tfds_dir,
                                   batch_size=-1, shuffle_files=False))


def test_idx_mnist_is_tfds_mnist_in_its_order(shared_idx_dir, shared_tfds_dir):
    from_idx = data.resolve("mnist", idx_dir=shared_idx_dir)
    from_tfds = data.resolve("mnist", data_dir=shared_tfds_dir)
    assert from_idx.metadata == from_tfds.metadata
    # train: the same ordered set as TFDS's train[8%:] before any shuffling.
    for split, tfds_split in (("train", "train[8%:]"), ("valid", "train[:8%]"),
                              ("test", "test")):
        images, labels = from_idx.arrays(split)
        stored = _tfds_split(shared_tfds_dir, tfds_split)
        np.testing.assert_array_equal(images, stored["image"])
        np.testing.assert_array_equal(labels, stored["label"])
    for split in ("valid", "test"):
        for a, b in zip(
            data_testing.collect(from_idx.numpy_batches(
                split, batch_size=1000, is_training=False)),
            data_testing.collect(from_tfds.make_dataset(
                split, batch_size=1000, is_training=False)),
        ):
            np.testing.assert_array_equal(a, b)


def test_idx_files_may_be_uncompressed(shared_idx_dir, tmp_path):
    for name in _IDX_NAMES:
        source = f"{shared_idx_dir}/{name}.gz"
        if name.startswith("t10k-images"):
            with gzip.open(source) as f, open(tmp_path / name, "wb") as out:
                shutil.copyfileobj(f, out)
        else:
            shutil.copy(source, tmp_path)
    images, _ = data.resolve("mnist", idx_dir=str(tmp_path)).arrays("test")
    np.testing.assert_array_equal(
        images, data.resolve("mnist", idx_dir=shared_idx_dir).arrays("test")[0]
    )


def test_derive_mnist_order_tool_reproduces_the_shipped_file(
    shared_idx_dir, shared_tfds_dir, tmp_path
):
    output = tmp_path / "mnist_tfds_order.npz"
    subprocess.run(
        [sys.executable, "-m", "tools.derive_mnist_order", f"--tfds_dir={shared_tfds_dir}",
         f"--idx_dir={shared_idx_dir}", f"--output_path={output}"],
        cwd=REPO_ROOT, check=True, capture_output=True,
    )
    assert hashlib.sha256(output.read_bytes()).hexdigest() == (
        array_sources.MNIST_ORDER_SHA256
    )


def test_tfds_order_refuses_records_missing_from_idx():
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    order = derive_mnist_order.tfds_order(images[::-1], [1, 0], images, [0, 1])
    np.testing.assert_array_equal(order, [1, 0])
    with pytest.raises(ValueError, match="TFDS record 0 .* is not in the idx files"):
        derive_mnist_order.tfds_order(images, [1, 1], images, [0, 1])


# ----------------------------------------------------------------------------
# Real MNIST (../shared/data; skipped when absent).
# ----------------------------------------------------------------------------


def test_mnist_small_is_real_mnist_with_identical_preprocessing(shared_tfds_dir):
    arrays = dict(np.load(names.MNIST_SMALL_PATH))
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
    mnist_images, _, _ = data_testing.collect(
        data.resolve("mnist", data_dir=shared_tfds_dir).make_dataset(
            "test", batch_size=10000, is_training=False
        )
    )
    small_images, _, _ = data_testing.collect(
        data.resolve("mnist_small").make_dataset(
            "test", batch_size=1000, is_training=False
        )
    )
    np.testing.assert_array_equal(
        small_images, mnist_images[arrays["test_source_index"]]
    )


def test_make_mnist_small_script_reproduces_the_embedded_file(
    shared_tfds_dir, tmp_path, monkeypatch
):
    from tools import make_mnist_small as script
    output = tmp_path / "mnist_small.npz"
    array_sources.write_npz(output, script.build_arrays(shared_tfds_dir, seed=0))
    assert hashlib.sha256(output.read_bytes()).hexdigest() == (
        array_sources.MNIST_SMALL_SHA256
    )
