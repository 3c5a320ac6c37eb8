r"""Builds the embedded 'mnist_small' dataset from the real MNIST.

'mnist_small' is a fixed, class-balanced subset of real MNIST that ships inside the
package (`low_rank_local_connectivity/data/mnist_small.npz`), so that the quick start
and the test suite run on any machine without network access:

- train: 500 images per class (5,000) drawn from MNIST train[8%:] (the 'mnist' train
  split of this package),
- valid: 100 images per class (1,000) drawn from MNIST train[:8%] (the 'mnist' valid
  split),
- test: 100 images per class (1,000) drawn from MNIST test.

Splits are taken from a prepared TFDS data_dir (`mnist/3.0.1`), so they follow the
same train / valid / test partition as the 'mnist' dataset. Images are stored as uint8
(N, 28, 28); each split also stores the index of every image inside its source split,
so the subset can be traced back to (and checked against) the original.

The file is written deterministically (fixed seed, fixed zip timestamps), so running
this script again on the same MNIST reproduces the same bytes and sha256.

MNIST: Yann LeCun and Corinna Cortes, licensed CC BY-SA 3.0.

Usage (from the repository root), with MNIST prepared in a TFDS data_dir (for
example by a first training run with `--config.dataset.download=True`, which
puts it in TFDS's default data_dir, `~/tensorflow_datasets`):

    python -m tools.make_mnist_small                     # writes runs/mnist_small.npz
    python -m tools.make_mnist_small --tfds_data_dir=<data_dir> --output=...

It writes `runs/mnist_small.npz` unless told otherwise: replacing the
package's own file is a maintainer's deliberate step (`--output=` that path,
then update `MNIST_SMALL_SHA256`).

Exit status: 0 on success, 1 with a one-line `error:` message when the data_dir
does not hold MNIST.
"""

import hashlib
import pathlib
import sys

from absl import flags
import numpy as np
import tensorflow_datasets as tfds

from low_rank_local_connectivity import data
from low_rank_local_connectivity.cli import startup
from low_rank_local_connectivity.data import array_sources

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

_TFDS_DATA_DIR = flags.DEFINE_string(
    "tfds_data_dir", None,
    "Prepared TFDS data_dir that contains mnist/3.0.1 (default: TFDS's own, "
    "~/tensorflow_datasets or $TFDS_DATA_DIR).",
)
_OUTPUT = flags.DEFINE_string(
    "output", str(_REPO_ROOT / "runs" / "mnist_small.npz"),
    "Path of the .npz file to write (the package's own file is "
    "low_rank_local_connectivity/data/mnist_small.npz).",
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the subset selection.")

# Our split -> (MNIST TFDS split, images per class).
SUBSETS = {
    "train": ("train[8%:]", 500),
    "valid": ("train[:8%]", 100),
    "test": ("test", 100),
}
NUM_CLASSES = 10


def select_balanced(labels, per_class, rng):
    """Chooses `per_class` indices of every class, in a random order.

    Args:
        labels: int array of shape (N,), class ids in [0, NUM_CLASSES).
        per_class: int, number of indices to choose for each class.
        rng: `np.random.Generator`.

    Returns:
        int64 array of shape (NUM_CLASSES * per_class,): indices into `labels`.

    Raises:
        ValueError: if a class has fewer than `per_class` examples.
    """
    chosen = []
    for class_id in range(NUM_CLASSES):
        candidates = np.flatnonzero(labels == class_id)
        if candidates.size < per_class:
            raise ValueError(
                f"Class {class_id} has {candidates.size} examples; "
                f"{per_class} are needed."
            )
        chosen.append(rng.choice(candidates, size=per_class, replace=False))
    return rng.permutation(np.concatenate(chosen)).astype(np.int64)


def build_arrays(tfds_data_dir, seed):
    """Returns the arrays of 'mnist_small' (see the module docstring).

    Args:
        tfds_data_dir: prepared TFDS data_dir that contains mnist/3.0.1.
        seed: int, seed of the selection.

    Returns:
        dict with '<split>_images' uint8 (N, 28, 28), '<split>_labels' uint8 (N,)
        and '<split>_source_index' int64 (N,) for split in train, valid, test.
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, (source_split, per_class) in SUBSETS.items():
        source = tfds.as_numpy(
            tfds.load(
                "mnist",
                split=source_split,
                data_dir=tfds_data_dir,
                download=False,
                batch_size=-1,
                shuffle_files=False,
            )
        )
        labels = source["label"]
        index = select_balanced(labels, per_class, rng)
        arrays[f"{split}_images"] = source["image"][index, :, :, 0].astype(np.uint8)
        arrays[f"{split}_labels"] = labels[index].astype(np.uint8)
        arrays[f"{split}_source_index"] = index
    return arrays


def main(argv):
    del argv  # Flags only (`startup.run` refuses positional arguments).
    try:
        data.resolve("mnist", data_dir=_TFDS_DATA_DIR.value).check_files()
    except data.DataNotFoundError as error:
        sys.exit(f"error: {' '.join(str(error).split())}")
    arrays = build_arrays(_TFDS_DATA_DIR.value, _SEED.value)
    output = pathlib.Path(_OUTPUT.value)
    output.parent.mkdir(parents=True, exist_ok=True)
    array_sources.write_npz(output, arrays)
    digest = hashlib.sha256(output.read_bytes()).hexdigest()
    print(f"wrote {output} ({output.stat().st_size} bytes)")
    print(f"sha256 {digest}")


if __name__ == "__main__":
    startup.run(main)
