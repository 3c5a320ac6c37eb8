"""Tests of dataset names and options (`data.names`, `data.resolve`).

Names and options are checked when a dataset is resolved, before any data
is read.
"""

import inspect
import sys

import pytest

from low_rank_local_connectivity import data


@pytest.mark.parametrize("name", ["nope", "trans_nope42", "trans_mnist", "mnist42"])
def test_unknown_dataset_lists_valid_names(name):
    with pytest.raises(ValueError, match="`name`") as error:
        data.resolve(name)
    for valid in data.DATASET_NAMES:
        assert repr(valid) in str(error.value)


def test_dataset_names_are_the_builtins():
    assert data.DATASET_NAMES == tuple(
        "mnist mnist_small cifar10 celeba32 trans_celeba48 imagenet2012".split())


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
    # Each option goes where it is given: `resolve` or `make_dataset`.
    arguments = dict(
        name="mnist_small", split="test", batch_size=8, is_training=False
    )
    arguments.update(kwargs)
    options = {key: arguments.pop(key) for key in list(arguments)
               if key in inspect.signature(data.resolve).parameters}
    with pytest.raises(exception, match=match):
        data.resolve(**options).make_dataset(arguments.pop("split"), **arguments)


def test_imagenet_rejects_small_image_options():
    with pytest.raises(ValueError, match="translate_to"):
        data.resolve("imagenet2012", translate_to=300)


def test_builtin_and_npz_names_need_no_tfds(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # Import fails.
    for name, base, side in (("trans_mnist42", "mnist", 42),
                             ("trans_mnist_small30", "mnist_small", 30)):
        spec = data.resolve(name).spec
        assert spec == data.resolve(base, translate_to=side).spec
    assert data.resolve("/any/where/digits.npz").spec.npz_path == "/any/where/digits.npz"
    with pytest.raises(ImportError):
        data.resolve("fashion_mnist")  # Looked up among TFDS's builders.


def test_idx_dir_serves_mnist_only():
    with pytest.raises(ValueError, match=r"^Invalid value for argument `idx_dir`. "
                       r"Expected None for dataset 'cifar10' \(idx files serve "
                       r"'mnist' and 'trans_mnist<N>'\). Received: idx_dir='/x'$"):
        data.resolve("cifar10", idx_dir="/x")
    with pytest.raises(TypeError, match="`idx_dir`"):
        data.resolve("mnist", idx_dir=3)
