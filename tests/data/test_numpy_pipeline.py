"""Tests of the NumPy path (`ResolvedDataset.numpy_batches`, `numpy_pipeline`).

The oracles: the tf.data pipeline (bit-identical scaling, the same padded
evaluation batches), NumPy's generators keyed as documented (the epoch
orders), and a dataset whose pixels spell out each example's index, so every
batch can be traced back to its examples.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.data import data_testing
from tests.conftest import REPO_ROOT
from tests.conftest import SHARED_IDX_DIR
from low_rank_local_connectivity import data
from low_rank_local_connectivity.data import array_sources
from low_rank_local_connectivity.data import names
from low_rank_local_connectivity.data import numpy_pipeline

_SIZES = {"train": 1000, "valid": 300, "test": 250}


@pytest.fixture
def indexed(tmp_path):
    """A dataset whose 2×2 images hold their index: pixels (i // 256, i % 256)."""
    arrays = {}
    for split, size in _SIZES.items():
        index = np.arange(size)
        images = np.zeros((size, 2, 2), np.uint8)
        images[:, 0, 0], images[:, 0, 1] = index // 256, index % 256
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, index % 10
    path = tmp_path / "indexed.npz"
    array_sources.write_npz(path, arrays)
    return data.resolve(str(path))


def _indices(images):
    """The example indices of a batch of the `indexed` dataset."""
    pixels = np.rint(images[:, 0, :2, 0] * 255).astype(int)
    return pixels[:, 0] * 256 + pixels[:, 1]


def _steps(batches, count):
    return [next(batches) for _ in range(count)]


def _assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("split", names.SPLITS)
def test_evaluation_batches_equal_the_tf_data_pipeline(split):
    dataset = data.resolve("mnist_small")
    _assert_same(
        list(dataset.numpy_batches(split, batch_size=384, is_training=False)),
        [tuple(batch) for batch in dataset.make_dataset(
            split, batch_size=384, is_training=False).as_numpy_iterator()],
    )


def test_evaluation_pads_the_last_batch_with_mask(indexed):
    batches = list(indexed.numpy_batches("test", batch_size=64, is_training=False))
    assert len(batches) == 4  # ceil(250 / 64)
    for images, labels, mask in batches:
        assert images.shape == (64, 2, 2, 1) and images.dtype == np.float32
        assert labels.shape == (64,) and labels.dtype == np.int32
        assert mask.shape == (64,) and mask.dtype == np.float32
    images, labels, masks = data_testing.collect(iter(batches))
    np.testing.assert_array_equal(masks, [1.0] * 250 + [0.0] * 6)
    np.testing.assert_array_equal(_indices(images[:250]), np.arange(250))
    np.testing.assert_array_equal(labels[:250], np.arange(250) % 10)
    assert not images[250:].any() and not labels[250:].any()


def test_training_epochs_are_the_documented_permutations(indexed):
    batches = indexed.numpy_batches("train", batch_size=64, is_training=True, seed=5)
    # 1000 // 64 = 15 steps an epoch; the last 40 examples of each are dropped.
    steps = _steps(batches, 45)
    assert all(mask.all() for _, _, mask in steps)
    orders = [np.concatenate([_indices(images) for images, _, _ in steps[e * 15:][:15]])
              for e in range(3)]
    for epoch, order in enumerate(orders):
        expected = np.random.default_rng([5, 0, 0, epoch]).permutation(1000)[:960]
        np.testing.assert_array_equal(order, expected)
        np.testing.assert_array_equal(
            np.concatenate([labels for _, labels, _ in steps[epoch * 15:][:15]]),
            expected % 10,
        )
    assert len(set(orders[0])) == 960
    assert not np.array_equal(orders[0], orders[1])
    other_seed = indexed.numpy_batches("train", batch_size=64, is_training=True, seed=6)
    assert not np.array_equal(_indices(next(other_seed)[0]), orders[0][:64])
    # Not the next epoch of the previous seed (as `seed + epoch` would give).
    assert not np.array_equal(_indices(next(other_seed)[0]), orders[1][64:128])


@pytest.mark.parametrize("name, is_training, start", [
    ("trans_mnist_small40", True, 37),  # 5000 // 128 = 39 steps: crosses an epoch.
    ("mnist_small", True, 80),
    ("trans_mnist_small40", False, 5),
])
def test_resuming_at_a_step_is_exact(name, is_training, start):
    dataset = data.resolve(name)
    split = "train" if is_training else "test"

    def batches(start_step=0):
        return dataset.numpy_batches(split, batch_size=128, is_training=is_training,
                                     seed=3, start_step=start_step)

    uninterrupted = _steps(batches(), start + 3)[start:]
    _assert_same(_steps(batches(start), 3), uninterrupted)


@pytest.mark.parametrize("is_training", [True, False])
def test_shards_split_every_global_batch(indexed, is_training):
    def batches(**shard):
        return indexed.numpy_batches("valid", batch_size=96, is_training=is_training,
                                     seed=1, **shard)

    whole = _steps(batches(), 3) if is_training else list(batches())
    shards = [_steps(batches(shard_index=k, num_shards=3), len(whole))
              if is_training else list(batches(shard_index=k, num_shards=3))
              for k in range(3)]
    assert all(len(shard) == len(whole) for shard in shards)  # Lockstep.
    for step, (images, labels, mask) in enumerate(whole):
        parts = [shard[step] for shard in shards]
        assert all(part[0].shape == (32, 2, 2, 1) for part in parts)
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), images)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), labels)
        np.testing.assert_array_equal(np.concatenate([p[2] for p in parts]), mask)


def test_translated_canvases_have_the_tf_distribution():
    plain, labels, _ = data_testing.collect(data.resolve("mnist_small").numpy_batches(
        "test", batch_size=500, is_training=False))
    dataset = data.resolve("trans_mnist_small42")
    canvases, translated_labels, _ = data_testing.collect(
        dataset.numpy_batches("test", batch_size=500, is_training=False, seed=3))
    assert canvases.shape == (1000, 42, 42, 1) and canvases.dtype == np.float32
    np.testing.assert_array_equal(translated_labels, labels)
    # Reference placement: 42 - 28 - U{0..13}, i.e. 1..14 on both axes, all used.
    data_testing.check_translated_digits(canvases, plain, 42)
    # Each canvas depends on the seed and the example's position only.
    again, _, _ = data_testing.collect(
        dataset.numpy_batches("test", batch_size=125, is_training=False, seed=3))
    np.testing.assert_array_equal(again, canvases)
    other, _, _ = data_testing.collect(
        dataset.numpy_batches("test", batch_size=500, is_training=False, seed=4))
    assert not np.any(other[:, 0, 0, 0] == canvases[:, 0, 0, 0])  # Always noise.


@pytest.mark.parametrize("canvas_size", [28, 20])
def test_numpy_canvas_rejects_a_small_canvas(canvas_size):
    with pytest.raises(ValueError, match=r"`canvas_size`. Expected an int larger "
                       rf"than the image's height and width \(28, 28\). "
                       rf"Received: {canvas_size}"):
        numpy_pipeline.translate_to_canvas(
            np.zeros((28, 28, 1), np.float32), canvas_size, np.random.default_rng(0)
        )


def test_tfds_datasets_have_no_numpy_path():
    with pytest.raises(ValueError, match=r"^Dataset 'cifar10' is read through TFDS; "
                       r"`arrays` serves datasets in memory: 'mnist_small', an .npz "
                       r"of arrays, or 'mnist' \(and 'trans_mnist<N>'\) with `idx_dir`.$"):
        data.resolve("cifar10").numpy_batches("train", batch_size=8, is_training=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(batch_size=0), "`batch_size`. Expected a positive integer"),
    (dict(batch_size=1001, is_training=True), r"`batch_size`. Expected at most the "
     r"1000 examples"),
    (dict(num_shards=3), r"`shard_index`.*num_shards=3, batch_size=8"),
    (dict(shard_index=2, num_shards=2), r"shard_index=2, num_shards=2"),
    (dict(start_step=-1), r"`start_step`. Expected a non-negative integer. "
     r"Received: start_step=-1"),
    (dict(seed=-3), r"`seed`. Expected a non-negative integer or None"),
    (dict(split="eval"), "`split`"),
])
def test_invalid_arguments(indexed, kwargs, match):
    arguments = dict(split="train", batch_size=8, is_training=False)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        indexed.numpy_batches(arguments.pop("split"), **arguments)
    with pytest.raises(TypeError, match="`is_training`"):
        indexed.numpy_batches("train", batch_size=8, is_training=1)


def test_numpy_path_does_not_resize(indexed):
    resized = data.resolve(indexed.name, image_size=4)
    assert resized.metadata.image_shape == (4, 4, 1)  # The TF path resizes.
    with pytest.raises(ValueError, match="`image_size`. Expected None: the NumPy path"):
        resized.numpy_batches("test", batch_size=8, is_training=False)


_WITHOUT_TENSORFLOW = textwrap.dedent("""
    import importlib.abc, pathlib, sys, types

    class NoTensorFlow(importlib.abc.MetaPathFinder):  # A machine without TF.
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in ("tensorflow", "tensorflow_datasets"):
                raise ImportError(f"no {name} here")

    sys.meta_path.insert(0, NoTensorFlow())
    # The parent package imports the Keras layers, which import TensorFlow
    # under Keras' default backend (not under JAX); only `data` is tested.
    parent = types.ModuleType("low_rank_local_connectivity")
    parent.__path__ = [str(pathlib.Path(sys.argv[1]) / "low_rank_local_connectivity")]
    sys.modules["low_rank_local_connectivity"] = parent

    from low_rank_local_connectivity import data
    from low_rank_local_connectivity.data import array_sources
    import numpy as np

    names = ["mnist_small", "trans_mnist_small40"]
    arrays = {f"{split}_images": np.zeros((3, 4, 4), np.uint8) for split in data.SPLITS}
    arrays.update({f"{split}_labels": np.arange(3) for split in data.SPLITS})
    array_sources.write_npz(sys.argv[2], arrays)
    for name, options in [(n, {}) for n in names] + [(sys.argv[2], {})] + (
            [("trans_mnist36", {"idx_dir": sys.argv[3]})] if sys.argv[3] else []):
        dataset = data.resolve(name, **options)
        assert dataset.metadata.num_classes
        batches = dataset.numpy_batches("train", batch_size=2, is_training=True,
                                        seed=0, start_step=7)
        assert next(batches)[0].dtype == np.float32
        next(dataset.numpy_batches("test", batch_size=2, is_training=False))
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in (
        "tensorflow", "tensorflow_datasets", "keras"))
    print(f"loaded: {loaded}")
""")


def test_numpy_path_imports_no_tensorflow(tmp_path):
    idx_dir = str(SHARED_IDX_DIR) if SHARED_IDX_DIR.is_dir() else ""
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW, str(REPO_ROOT),
         str(tmp_path / "arrays.npz"), idx_dir],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded: []"
