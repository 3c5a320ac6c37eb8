"""Shared pytest fixtures, and the core suites that run on every Keras backend.

The core (layers, models, conversion, validation) runs on TensorFlow, JAX and
PyTorch; its suites, `CORE_SUITES`, are marked `core`. Keras picks its backend once
per process, so they run once per backend: `KERAS_BACKEND=jax python -m pytest`.
Off TensorFlow only the core suites and that backend's own suites
(`BACKEND_SUITES`: the trainer and the commands on JAX) are collected; the others
need TensorFlow. `tests/test_backends.py` runs them under the other backends from
the default (TensorFlow) run.

`../shared/data` (beside the repository) holds the real MNIST used by a few tests in
CI: a prepared TFDS data_dir (`tensorflow_datasets/mnist`) and the idx files
(`mnist_idx`). Users' clones do not have it: those tests skip with the reason below. The
location can be overridden with the `LRLC_SHARED_DATA` environment variable.
"""

import os
import pathlib

import pytest

# The XLA flags of every JAX process of the tests (this one under
# KERAS_BACKEND=jax, and the JAX children of tests/test_backends.py). JAX
# compiles every operation for every new shape (variable initializers above
# all); LLVM's optimisations made those compilations >10x slower on CPU and the
# tests' small tensors gain nothing from them. XLA's newer CPU fusion emitters
# cost another ~30% of the JAX suites' CPU time in compilation
# (tests/layers/test_low_rank_locally_connected2d.py: 65 s with them, 45 s
# without, jaxlib 0.10.2). Test speed only; not for TensorFlow's processes,
# whose XLA may not know these flags.
JAX_TEST_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"

# TensorFlow's CPU kernels of every test process (this one and the children,
# which inherit the environment) are oneDNN's, on every CPU. TensorFlow turns
# oneDNN on by default only on CPUs with AVX-512 VNNI / bfloat16 or AMX; without
# it (an AVX2-only CPU) its CPU Conv2D rejects channels_first (NCHW) and its CPU
# allocator keeps no statistics, so the channels_first tests would fail there
# and numbers would come from other kernels than on the machines the committed
# fixtures were made on.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("KERAS_BACKEND") == "jax":
    os.environ.setdefault("XLA_FLAGS", JAX_TEST_XLA_FLAGS)

import keras  # noqa: E402  (after the TensorFlow log level)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The test modules and folders of the core, relative to the repository root.
CORE_SUITES = (
    "tests/layers",
    "tests/test_simple_model.py",
    "tests/test_resnet.py",
    "tests/test_convert.py",
)
# What runs on a backend besides the core.
BACKEND_SUITES = {
    "jax": ("tests/training/test_jax_training.py", "tests/test_jax_commands.py"),
}


def _in(path, suites):
    relative = pathlib.Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    return any(relative == suite or relative.startswith(suite + "/") for suite in suites)


def _in_core(path):
    return _in(path, CORE_SUITES)


def pytest_report_header(config):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return f"Keras backend: {backend}"
    suites = CORE_SUITES + BACKEND_SUITES.get(backend, ())
    return f"Keras backend: {backend}; collecting {suites} only"


def pytest_ignore_collect(collection_path, config):
    """Off TensorFlow, only the core suites and the backend's own are collected."""
    backend = keras.backend.backend()
    if backend == "tensorflow" or collection_path.is_dir():
        return None
    if collection_path.name.startswith("test_") and not _in(
            collection_path, CORE_SUITES + BACKEND_SUITES.get(backend, ())):
        return True
    return None


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker more than CPUs (`--maxprocesses` caps it).

    Many tests wait on child processes (start-ups, signals, a child's output):
    on 2 cores two workers left a third of the CPU time idle (165% of 200%).
    """
    return (os.cpu_count() or 1) + 1


def _scope(item):
    """pytest-xdist's scope of a test (`--dist loadscope`): its module, or class."""
    return item.nodeid.rsplit("::", 1)[0]


# pytest-xdist (pytest.ini: `--dist loadscope --no-loadscope-reorder`) sends
# each worker whole scopes, so a module's fixtures are built once, in the order
# of the collection; these start first, in this order: the JAX suites (two
# classes of tests/test_backends.py), the README's blocks, the PyTorch suites,
# then long trainings. At the start every worker with one test gets a second
# scope (the JAX shares, 3 workers on 2 cores): the PyTorch suites and a short one.
FIRST_SCOPES = (
    "tests/test_backends.py::TestSuitesUnderJaxFirstShare",
    "tests/test_backends.py::TestSuitesUnderJaxSecondShare",
    "tests/test_readme.py",
    "tests/test_backends.py::TestSuitesUnderTorch",
    "tests/test_build.py",
    "tests/training/test_determinism.py",
    "tests/training/test_train_script.py",
    "tests/training/test_reliability.py",
    "tests/test_backends.py",
)


def _first_scopes_first(item):
    scope = _scope(item)
    return FIRST_SCOPES.index(scope) if scope in FIRST_SCOPES else len(FIRST_SCOPES)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _in_core(item.path):
            item.add_marker(pytest.mark.core)
    items.sort(key=_first_scopes_first)  # Stable: the order within a scope stays.

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
