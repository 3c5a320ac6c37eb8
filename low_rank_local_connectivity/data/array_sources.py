"""Datasets held in memory as NumPy arrays, read without TensorFlow.

Three sources give every split as arrays (an `ArraySource`):

- the embedded 'mnist_small' (`names.MNIST_SMALL_PATH`, checked against
  `MNIST_SMALL_SHA256`);
- any `.npz` file of arrays in the format below;
- the real MNIST from its idx files (`mnist_idx_source(idx_dir)`), put in the
  order in which TFDS stores MNIST, so that 'train[8%:]', 'train[:8%]' and
  'test' are the same examples in the same order as through TFDS.

The `.npz` format (write it with `write_npz`; `allow_pickle` is never used):

- `train_images`, `valid_images`, `test_images`: uint8, (N, H, W, C) or
  (N, H, W) for one channel, the same H, W, C in every split, N >= 1;
- `train_labels`, `valid_labels`, `test_labels`: integers >= 0, shape (N,);
- optional `class_names`: a 1-D array of str, one per class id (default:
  '0', '1', ... up to the largest label). Other keys are ignored.

MNIST's order in TFDS is not the idx order: TFDS sorts the records by a hash
of their keys when it prepares a dataset. `tools/derive_mnist_order.py` read
both once (tensorflow-datasets 4.9.10, TFDS mnist 3.0.1) and wrote
`mnist_tfds_order.npz` (sha256 `MNIST_ORDER_SHA256`): for each split, the
idx index of every record in TFDS's order, and the sha256 of the decoded idx
images and labels that the order belongs to (idx files that decode to other
bytes are refused).
"""

import dataclasses
import functools
import gzip
import hashlib
import io
import os
import pathlib
import zipfile

import numpy as np

from low_rank_local_connectivity.data import errors
from low_rank_local_connectivity.data import names

MNIST_SMALL_SHA256 = "edb56ebb4364eb1b5794d06cc20167484e1d3cc631f96593aec99041e4a6628b"

MNIST_ORDER_PATH = pathlib.Path(__file__).resolve().parent / "mnist_tfds_order.npz"
MNIST_ORDER_SHA256 = "e6c882c0086beaecf33ed515b2258ab79f36f59bee9cfdd1a15c46c34871bfc3"

# MNIST split -> (images file, labels file), the standard idx names.
MNIST_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UINT8 = 0x08

# The package's own files: path -> (sha256, what rebuilds it).
_SHIPPED = {
    names.MNIST_SMALL_PATH: (MNIST_SMALL_SHA256, "tools/make_mnist_small.py"),
    MNIST_ORDER_PATH: (MNIST_ORDER_SHA256, "tools/derive_mnist_order.py"),
}


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """Every split of a dataset as read-only arrays.

    Attributes:
        images: dict split -> uint8 array (N, H, W, C).
        labels: dict split -> int32 array (N,).
        class_names: tuple of str, the name of every class id.
    """

    images: dict
    labels: dict
    class_names: tuple

    @property
    def image_shape(self):
        """(H, W, C) of the stored images."""
        return tuple(self.images["train"].shape[1:])

    def num_examples(self):
        """dict split -> number of examples."""
        return {split: len(self.labels[split]) for split in names.SPLITS}


def write_npz(path, arrays):
    """Writes `arrays` as a compressed .npz whose bytes depend only on the data.

    `np.savez_compressed` stamps the current time into the zip entries; this writes
    the same format with a fixed timestamp and a fixed entry order.

    Args:
        path: output path.
        arrays: dict of name -> np.ndarray (no object arrays).
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with archive.open(info, "w") as entry:
                np.lib.format.write_array(
                    entry, np.asarray(arrays[name]), allow_pickle=False
                )


def _read_only(array):
    array.flags.writeable = False  # Cached and shared by every caller.
    return array


def _file_key(path):
    """(path, mtime, size): a cache key that changes when the file does."""
    status = os.stat(path)
    return str(path), status.st_mtime_ns, status.st_size


# ----------------------------------------------------------------------------
# .npz files (the embedded 'mnist_small' included).
# ----------------------------------------------------------------------------


def _npz_error(path, problem):
    return ValueError(
        "Invalid value for argument `name`. Expected an .npz of arrays "
        "<split>_images (uint8, (N, H, W[, C])) and <split>_labels (integers, "
        f"(N,)) for the splits {names.SPLITS}, optional class_names (str). "
        f"Received: name={str(path)!r} ({problem})"
    )


def _split_arrays(path, arrays):
    """Validated (images, labels, class_names) of the `.npz` format."""
    missing = [f"{split}_{kind}" for split in names.SPLITS
               for kind in ("images", "labels") if f"{split}_{kind}" not in arrays]
    if missing:
        raise _npz_error(path, f"missing {missing}; it has {sorted(arrays)}")
    images, labels = {}, {}
    for split in names.SPLITS:
        image, label = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if image.ndim == 3:
            image = image[..., np.newaxis]
        if image.dtype != np.uint8 or image.ndim != 4 or len(image) == 0:
            raise _npz_error(path, f"{split}_images is {image.dtype} of shape "
                                   f"{arrays[f'{split}_images'].shape}")
        if (not np.issubdtype(label.dtype, np.integer) or label.shape != image.shape[:1]
                or (label.size and label.min() < 0)):
            raise _npz_error(path, f"{split}_labels is {label.dtype} of shape "
                                   f"{label.shape} for {len(image)} images")
        images[split], labels[split] = image, label.astype(np.int32)
    shapes = {split: image.shape[1:] for split, image in images.items()}
    if len(set(shapes.values())) != 1:
        raise _npz_error(path, f"the splits' images differ in shape: {shapes}")
    num_classes = 1 + max(int(label.max()) for label in labels.values())
    class_names = tuple(str(i) for i in range(num_classes))
    if "class_names" in arrays:
        given = arrays["class_names"]
        if given.ndim != 1 or given.dtype.kind != "U" or len(given) < num_classes:
            raise _npz_error(path, f"class_names is {given.dtype} of shape "
                                   f"{given.shape} for {num_classes} classes")
        class_names = tuple(str(name) for name in given)
    return images, labels, class_names


def _read_npz(path):
    """The arrays of an .npz; a file the package ships must match its sha256."""
    content = pathlib.Path(path).read_bytes()
    if pathlib.Path(path) in _SHIPPED:
        expected, rebuild_with = _SHIPPED[pathlib.Path(path)]
        digest = hashlib.sha256(content).hexdigest()
        if digest != expected:
            raise OSError(
                f"{path} is corrupted: sha256 {digest}, expected {expected}. "
                f"Reinstall the package or rebuild the file with {rebuild_with}."
            )
    with np.load(io.BytesIO(content), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


@functools.lru_cache(maxsize=4)
def _load_npz(key):
    path = key[0]
    try:
        arrays = _read_npz(path)
    except (ValueError, zipfile.BadZipFile, EOFError) as error:
        raise _npz_error(path, f"not a readable .npz: {error}") from None
    images, labels, class_names = _split_arrays(path, arrays)
    return ArraySource(
        images={split: _read_only(array) for split, array in images.items()},
        labels={split: _read_only(array) for split, array in labels.items()},
        class_names=class_names,
    )


def npz_source(path):
    """The `ArraySource` of an `.npz` file in this module's format.

    Args:
        path: str or path of the file.

    Raises:
        DataNotFoundError: if the file does not exist.
        ValueError: if it is not an .npz in the format (one line naming it).
        OSError: if the embedded 'mnist_small' does not match its sha256.
    """
    path = pathlib.Path(path).expanduser().resolve()
    if not path.is_file():
        raise errors.DataNotFoundError(
            f"Invalid value for argument `{errors.OPTION}name`. Expected a "
            f"dataset name or the path of an existing {names.NPZ_SUFFIX} file. "
            f"Received: {errors.OPTION}name={str(path)!r} (no such file)."
        )
    return _load_npz(_file_key(path))


# ----------------------------------------------------------------------------
# MNIST idx files.
# ----------------------------------------------------------------------------


def read_idx(path):
    """The uint8 array of an idx file (gzipped when its name ends in '.gz').

    Raises:
        ValueError: if the file is not an idx file of unsigned bytes.
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        magic = int.from_bytes(data[:4], "big")
        num_dims, value_type = magic & 0xFF, (magic >> 8) & 0xFF
        dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big")
                for i in range(num_dims)]
        if magic >> 16 or value_type != _IDX_UINT8 or not num_dims:
            raise ValueError(f"magic number {magic:#010x}")
        return np.frombuffer(data, np.uint8, offset=4 + 4 * num_dims).reshape(dims)
    except (OSError, EOFError, ValueError) as error:
        raise ValueError(
            "Invalid value for argument `idx_dir`. Expected idx files of uint8 "
            f"(MNIST's format). Received: {str(path)!r} is not one ({error})."
        ) from None


def find_idx_files(idx_dir):
    """split -> (images path, labels path); each '<name>.gz' or '<name>'."""
    folder = pathlib.Path(idx_dir).expanduser()
    paths, missing = {}, []
    for split, files in MNIST_IDX_FILES.items():
        found = []
        for name in files:
            candidates = [folder / f"{name}.gz", folder / name]
            present = [path for path in candidates if path.is_file()]
            if not present:
                missing.append(f"{name}.gz")
            found.append(str(present[0]) if present else None)
        paths[split] = tuple(found)
    if missing:
        allowed = ", ".join(f"{name}.gz" for files in MNIST_IDX_FILES.values()
                            for name in files)
        raise errors.DataNotFoundError(
            f"Invalid value for argument `{errors.OPTION}idx_dir`. Expected a "
            f"folder with the MNIST idx files {allowed} (each also accepted "
            f"uncompressed). Received: {errors.OPTION}idx_dir={str(idx_dir)!r} "
            f"(missing: {', '.join(missing)})."
        )
    return paths


def payload_sha256(images, labels):
    """sha256 of decoded idx images and labels: what the MNIST order fits."""
    return hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def _mnist_order():
    return _read_npz(MNIST_ORDER_PATH)


@functools.lru_cache(maxsize=2)
def _load_mnist_idx(keys):
    order = _mnist_order()
    arrays = {}
    for split, (images_key, labels_key) in zip(MNIST_IDX_FILES, keys):
        images, labels = read_idx(images_key[0]), read_idx(labels_key[0])
        digest = payload_sha256(images, labels)
        expected = str(order[f"{split}_sha256"])
        if digest != expected:
            raise ValueError(
                "Invalid value for argument `idx_dir`. Expected the idx files of "
                f"the standard MNIST (the TFDS order applies to them only: "
                f"{order['source']}). Received: {images_key[0]!r} and "
                f"{labels_key[0]!r} decode to sha256 {digest}, expected {expected}."
            )
        index = order[f"{split}_order"]
        arrays[split] = (images[index][..., np.newaxis], labels[index].astype(np.int32))
    holdout = len(arrays["train"][1]) * names.MNIST_HOLDOUT_PERCENT // 100
    train_images, train_labels = arrays["train"]
    test_images, test_labels = arrays["test"]
    images = {"train": train_images[holdout:], "valid": train_images[:holdout],
              "test": test_images}
    labels = {"train": train_labels[holdout:], "valid": train_labels[:holdout],
              "test": test_labels}
    return ArraySource(
        images={split: _read_only(array) for split, array in images.items()},
        labels={split: _read_only(array) for split, array in labels.items()},
        class_names=names.BUILTIN_SPECS["mnist"].class_names,
    )


def mnist_idx_source(idx_dir):
    """The 'mnist' splits from MNIST's idx files, in TFDS's order.

    train = train[8%:], valid = train[:8%], test = test of TFDS mnist 3.0.1:
    the same examples in the same order.

    Args:
        idx_dir: str or path, a folder with the four standard idx files.

    Raises:
        DataNotFoundError: if a file is missing (one line naming `idx_dir`).
        ValueError: if a file is not idx, or not the standard MNIST.
    """
    paths = find_idx_files(idx_dir)
    keys = tuple(tuple(_file_key(path) for path in paths[split])
                 for split in MNIST_IDX_FILES)
    return _load_mnist_idx(keys)

