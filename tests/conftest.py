"""Shared pytest fixtures.

`../shared/data` (beside the repository) holds the real MNIST used by a few tests in
CI. Users' clones do not have it: those tests skip with the reason below. The
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


@pytest.fixture
def shared_tfds_dir():
    """Path of the prepared TFDS data_dir with real MNIST; skips when absent."""
    if not (SHARED_TFDS_DIR / "mnist").is_dir():
        pytest.skip(
            f"real MNIST not found at {SHARED_TFDS_DIR}/mnist (it exists only in the "
            "project's CI workspace; set LRLC_SHARED_DATA to a folder that has "
            "tensorflow_datasets/mnist to run this test)"
        )
    return str(SHARED_TFDS_DIR)
