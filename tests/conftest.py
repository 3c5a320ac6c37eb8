"""Shared pytest fixtures.

`../shared/data` (beside the repository) holds the real MNIST used by a few tests in
CI: a prepared TFDS data_dir (`tensorflow_datasets/mnist`) and the idx files
(`mnist_idx`). Users' clones do not have it: those tests skip with the reason below. The
location can be overridden with the `LRLC_SHARED_DATA` environment variable.
"""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

SHARED_DATA_DIR = pathlib.Path(
    os.environ.get("LRLC_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")
)
SHARED_TFDS_DIR = SHARED_DATA_DIR / "tensorflow_datasets"
SHARED_IDX_DIR = SHARED_DATA_DIR / "mnist_idx"

# What TensorFlow, TFDS and absl print without the scripts' quiet start-up, on a
# CPU-only machine (independent of `scripts/_cli.py`, which removes them).
KNOWN_NOISE = (
    "absl::InitializeLog()",
    "oneDNN custom operations",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "Sharding callback duration",
    "Could not refresh the package index",
    "with unsupported characters",
    "Writing fingerprint",
    "has no dataset_info.json",
)


def noise_lines(text):
    """The lines of `text` that are known TensorFlow / TFDS / absl noise."""
    return [line for line in text.splitlines()
            if any(noise in line for noise in KNOWN_NOISE)]


def _shared(folder, marker, what):
    """`folder` as a str when it holds `marker`; else skips the test."""
    path = folder / marker
    if not path.exists():
        pytest.skip(
            f"{what} not found at {path} (it exists only in the project's CI "
            "workspace; set LRLC_SHARED_DATA to a folder that has "
            f"{path.relative_to(SHARED_DATA_DIR)} to run this test)"
        )
    return str(folder)


@pytest.fixture
def shared_tfds_dir():
    """Path of the prepared TFDS data_dir with real MNIST; skips when absent."""
    return _shared(SHARED_TFDS_DIR, "mnist", "real MNIST")


@pytest.fixture
def shared_idx_dir():
    """Path of the folder with real MNIST's idx files; skips when absent."""
    return _shared(SHARED_IDX_DIR, "train-images-idx3-ubyte.gz", "real MNIST idx files")
