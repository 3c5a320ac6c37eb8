"""The core on every Keras backend: TensorFlow, JAX and PyTorch.

Keras fixes its backend once per process, so each check runs children, one per
backend, each in a Python that has that backend: `LRLC_PYTHON_<BACKEND>` (e.g.
`LRLC_PYTHON_JAX=/path/to/venv/bin/python`) or else this interpreter. A backend
that no interpreter provides is skipped, with the reason.

- The core suites (`conftest.CORE_SUITES`) pass under JAX and PyTorch, and so do
  JAX's own suites (`conftest.BACKEND_SUITES`: the trainer and the commands; in two
  children, `JAX_SHARES`), in processes where TensorFlow cannot be imported
  (`tests/without_tensorflow`):
  this is how the default (TensorFlow) test run covers all three backends.
- The core imports without TensorFlow under JAX and PyTorch.
- `.keras` files of every layer mode and of the 'lrlc' and 'lrlc_input_dependent'
  models, saved under each backend, load under every backend with the same
  outputs (within 1e-5), and so do the committed fixtures (saved under TensorFlow).
"""

import functools
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import BACKEND_SUITES
from tests.conftest import CORE_SUITES
from tests.conftest import JAX_TEST_XLA_FLAGS
from tests.conftest import REPO_ROOT

BACKENDS = ("tensorflow", "jax", "torch")
OTHER_BACKENDS = ("jax", "torch")
# Outputs of a `.keras` file under two backends.
CROSS_BACKEND_ATOL = 1e-5
CORE_MODULES = (
    "low_rank_local_connectivity",
    "low_rank_local_connectivity.layers",
    "low_rank_local_connectivity.models",
    "low_rank_local_connectivity.convert",
    "low_rank_local_connectivity.validation",
)
# The core suites can take many minutes on a loaded machine (JAX compiles every op).
SUITE_TIMEOUT_S = 3600


def _environment(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    if backend == "jax":
        env.setdefault("XLA_FLAGS", JAX_TEST_XLA_FLAGS)
    if backend == "torch":
        # One OpenMP thread: the tests' small tensors gain nothing from a second,
        # whose spin-waiting cost the PyTorch suite 40% more CPU time (35 s
        # against 49 s here) on cores the other test workers need.
        env.setdefault("OMP_NUM_THREADS", "1")
    # Off TensorFlow, TensorFlow is made absent: nothing may need it.
    blocker = [] if backend == "tensorflow" else [str(REPO_ROOT / "tests" / "without_tensorflow")]
    env["PYTHONPATH"] = os.pathsep.join(
        blocker + [str(REPO_ROOT)]
        + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    return env


@functools.lru_cache(maxsize=None)
def _python(backend):
    """(interpreter, None) for `backend`, or (None, why there is none)."""
    variable = f"LRLC_PYTHON_{backend.upper()}"
    python = os.environ.get(variable, sys.executable)
    probe = subprocess.run(
        [python, "-c", f"import {backend}, keras"], env=_environment(backend),
        capture_output=True, text=True, timeout=600,
    )
    if probe.returncode:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return None, (
            f"no {backend} backend: {python} cannot import {backend} ({last}); "
            f"install it (pip install -e '.[{backend}]') or set {variable}"
        )
    return python, None


def _python_or_skip(backend):
    python, reason = _python(backend)
    if python is None:
        pytest.skip(reason)
    return python


def _run(backend, arguments, timeout=900):
    """Runs `python arguments` under `backend`; returns its output, fails on error."""
    result = subprocess.run(
        [_python_or_skip(backend), *arguments], cwd=REPO_ROOT, env=_environment(backend),
        capture_output=True, text=True, timeout=timeout,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{backend} child failed:\n{output[-6000:]}"
    return output


# JAX's suites, in two children that run side by side (each about half of the
# JAX time; JAX compiles every operation for every new shape).
JAX_SHARES = (
    ("tests/layers", "tests/test_simple_model.py", "tests/training/test_jax_training.py"),
    ("tests/test_resnet.py", "tests/test_convert.py", "tests/test_jax_commands.py"),
)


def test_the_jax_shares_are_every_jax_suite_once():
    suites = [suite for share in JAX_SHARES for suite in share]
    assert sorted(suites) == sorted(CORE_SUITES + BACKEND_SUITES["jax"])


def _suites_pass_under(backend, suites=()):
    output = _run(
        backend, ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *suites],
        timeout=SUITE_TIMEOUT_S,
    )
    summary = output.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary, summary
    print(f"suites under {backend}: {summary}")


# A whole test suite in a child process per backend (JAX's in two). Each is a
# class, so that pytest-xdist (`--dist loadscope`: a module or class per
# worker) runs it in a worker of its own, beside the rest of this module.
@pytest.mark.slow
class TestSuitesUnderJaxFirstShare:
    def test_suites_pass(self):
        _suites_pass_under("jax", JAX_SHARES[0])


@pytest.mark.slow
class TestSuitesUnderJaxSecondShare:
    def test_suites_pass(self):
        _suites_pass_under("jax", JAX_SHARES[1])


@pytest.mark.slow
class TestSuitesUnderTorch:
    def test_suites_pass(self):
        _suites_pass_under("torch")


@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_core_imports_without_tensorflow(backend):
    script = (
        "import sys, keras\n"
        f"import {', '.join(CORE_MODULES)}\n"
        f"assert keras.backend.backend() == {backend!r}, keras.backend.backend()\n"
        "loaded = sorted(m for m, module in sys.modules.items()\n"
        "                if m.split('.')[0] == 'tensorflow' and module is not None)\n"
        "assert not loaded, loaded[:5]\n"
    )
    _run(backend, ["-c", script])


@pytest.fixture(scope="module")
def saved_dirs(tmp_path_factory):
    """{source: folder of .keras files and their outputs.npz}.

    Sources: the committed fixtures (saved under TensorFlow), and a folder saved
    now under each backend that has an interpreter.
    """
    folders = {"committed_fixtures": REPO_ROOT / "tests" / "fixtures" / "layers"}
    for backend in BACKENDS:
        if _python(backend)[0] is not None:
            folder = tmp_path_factory.mktemp(f"saved_under_{backend}")
            output = _run(backend, ["-m", "tests.backend_files", "save", str(folder)])
            assert f"backend={backend}" in output
            folders[backend] = folder
    return folders


@pytest.fixture(scope="module")
def loaded_outputs(saved_dirs, tmp_path_factory):
    """loaded_outputs(backend) -> {source: {name: outputs}}, one child per backend."""
    cache = {}

    def load(backend):
        if backend not in cache:
            out = tmp_path_factory.mktemp(f"loaded_under_{backend}") / "outputs.npz"
            sources = list(saved_dirs)
            output = _run(
                backend,
                ["-m", "tests.backend_files", "load", str(out),
                 *(str(saved_dirs[s]) for s in sources)],
            )
            assert f"backend={backend}" in output
            arrays = np.load(out)
            cache[backend] = {
                source: {
                    key.split("/", 1)[1]: arrays[key]
                    for key in arrays.files if key.split("/", 1)[0] == str(index)
                }
                for index, source in enumerate(sources)
            }
        return cache[backend]

    return load


@pytest.mark.slow  # Children save and load under every backend.
@pytest.mark.parametrize("loader", BACKENDS)
@pytest.mark.parametrize("saver", ("committed_fixtures",) + BACKENDS)
def test_keras_files_load_across_backends(saver, loader, saved_dirs, loaded_outputs):
    if saver not in saved_dirs:
        pytest.skip(_python(saver)[1])
    _python_or_skip(loader)
    expected = np.load(saved_dirs[saver] / "outputs.npz")
    got = loaded_outputs(loader)[saver]
    names = sorted(key.split("/")[0] for key in expected.files if key.endswith("/y"))
    assert sorted(got) == names and len(names) == 14
    for name in names:
        np.testing.assert_allclose(
            got[name], expected[f"{name}/y"], atol=CROSS_BACKEND_ATOL, rtol=0,
            err_msg=f"{name}: saved under {saver}, loaded under {loader}",
        )
