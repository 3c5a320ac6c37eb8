r"""Derives the order in which TFDS stores MNIST, relative to the idx files.

TFDS shuffles the records of a dataset by a hash of their keys when it
prepares it, so TFDS's 'train[:8%]' (our 'valid') is not the first 8% of the
idx files. This reads a prepared TFDS mnist and the idx files, matches every
TFDS record to its idx record by pixels and label, and writes
`low_rank_local_connectivity/data/mnist_tfds_order.npz` (deterministic
bytes; see `data.array_sources` for its keys), with which the package serves
'mnist' from idx files in TFDS's order without TensorFlow:

    python -m tools.derive_mnist_order \
        --tfds_dir=../shared/data/tensorflow_datasets \
        --idx_dir=../shared/data/mnist_idx

It prints the file's sha256, to be recorded as
`array_sources.MNIST_ORDER_SHA256`. Exit status 1 with one `error:` line
when the inputs are missing or do not match.
"""

import hashlib
import pathlib
import sys

from absl import app
from absl import flags
import numpy as np

from low_rank_local_connectivity.data import array_sources

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

_TFDS_DIR = flags.DEFINE_string(
    "tfds_dir", str(_REPO_ROOT.parent / "shared" / "data" / "tensorflow_datasets"),
    "Prepared TFDS data_dir that contains mnist/3.0.1.",
)
_IDX_DIR = flags.DEFINE_string(
    "idx_dir", str(_REPO_ROOT.parent / "shared" / "data" / "mnist_idx"),
    "Folder with the four MNIST idx files.",
)
_OUTPUT_PATH = flags.DEFINE_string(
    "output_path", str(array_sources.MNIST_ORDER_PATH), "Path of the .npz to write."
)

MNIST_VERSION = "3.0.1"


def tfds_order(tfds_images, tfds_labels, idx_images, idx_labels):
    """The idx index of every TFDS record (matched by pixels and label).

    Args:
        tfds_images, tfds_labels: uint8 (N, 28, 28) and ints (N,), TFDS order.
        idx_images, idx_labels: the same records in idx order.

    Returns:
        uint16 array (N,): `idx_images[order]` equals `tfds_images`.

    Raises:
        ValueError: if the two do not hold the same records.
    """
    where = {}
    for index, (image, label) in enumerate(zip(idx_images, idx_labels)):
        where.setdefault(image.tobytes() + bytes([label]), []).append(index)
    order = []
    for image, label in zip(tfds_images, tfds_labels):
        candidates = where.get(image.tobytes() + bytes([int(label)]))
        if not candidates:
            raise ValueError(
                f"TFDS record {len(order)} (label {label}) is not in the idx files."
            )
        order.append(candidates.pop(0))  # Duplicates are interchangeable.
    if len(order) != len(idx_labels):
        raise ValueError(f"TFDS has {len(order)} records, idx {len(idx_labels)}.")
    return np.asarray(order, np.uint16)


def build_arrays(tfds_dir, idx_dir):
    """The arrays of `mnist_tfds_order.npz` (see `data.array_sources`)."""
    import tensorflow_datasets as tfds

    paths = array_sources.find_idx_files(idx_dir)
    arrays = {"source": np.array(
        f"tensorflow-datasets {tfds.__version__}, TFDS mnist {MNIST_VERSION}"
    )}
    for split, (images_path, labels_path) in paths.items():
        idx_images = array_sources.read_idx(images_path)
        idx_labels = array_sources.read_idx(labels_path)
        stored = tfds.as_numpy(tfds.load(
            f"mnist:{MNIST_VERSION}", split=split, data_dir=tfds_dir,
            download=False, batch_size=-1, shuffle_files=False,
        ))
        arrays[f"{split}_order"] = tfds_order(
            stored["image"][..., 0], stored["label"], idx_images, idx_labels
        )
        arrays[f"{split}_sha256"] = np.array(
            array_sources.payload_sha256(idx_images, idx_labels)
        )
    return arrays


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        arrays = build_arrays(_TFDS_DIR.value, _IDX_DIR.value)
    except (OSError, ValueError, AssertionError) as error:
        sys.exit(f"error: {' '.join(str(error).split())}")
    output = pathlib.Path(_OUTPUT_PATH.value)
    output.parent.mkdir(parents=True, exist_ok=True)
    array_sources.write_npz(output, arrays)
    print(f"wrote {output} ({output.stat().st_size} bytes, {arrays['source']})")
    print(f"sha256 {hashlib.sha256(output.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    app.run(main)
