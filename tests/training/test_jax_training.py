"""The trainer on Keras' JAX backend: the same model_dir contract without TensorFlow.

These tests run only when the process's backend is JAX
(`KERAS_BACKEND=jax python -m pytest tests/training/test_jax_training.py`);
`tests/test_backends.py` runs them that way from the default suite. Runs that
need a fresh JAX runtime (two host devices, SIGKILL) happen in child processes
(`tools/child_run.py`).
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from low_rank_local_connectivity import training
from low_rank_local_connectivity.configs import experiment
from low_rank_local_connectivity.training import orbax_checkpointing
from tests.trainer_runs import tiny_overrides
from tests.trainer_runs import train_quietly
from tools import child_run
from tools import fault_injection as fi

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="JAX-backend tests; run with KERAS_BACKEND=jax (tests/test_backends.py does)",
)


def _config(**overrides):
    config = experiment.get_config("mnist_small_lrlc")
    config.update_from_flattened_dict(tiny_overrides(**overrides))
    return config


_train = train_quietly


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("jax") / "run"
    capture, results = _train(_config(), model_dir)
    return model_dir, capture.controller, results


def test_a_run_writes_the_model_dir_contract_without_tensorflow(finished):
    model_dir, controller, results = finished
    assert sys.modules.get("tensorflow") is None  # Absent (or blocked).
    lines = [json.loads(l) for l in open(model_dir / "metrics.jsonl")]
    assert [(l["step"], l["split"]) for l in lines] == [(3, "valid"), (6, "valid"), (6, "test")]
    best = max((l for l in lines if l["split"] == "valid"), key=lambda l: l["accuracy"])
    assert results["best_valid"]["step"] == best["step"]
    assert json.loads((model_dir / "results.json").read_text())["train_steps"] == 6
    assert json.loads((model_dir / "best" / "best.json").read_text())["step"] == best["step"]
    # Orbax step directories: every 3 steps (the last `keep_checkpoints`), and the best one.
    assert orbax_checkpointing.step_directories(model_dir / "checkpoints") == [6, 3]
    assert orbax_checkpointing.step_directories(model_dir / "best") == [best["step"]]
    assert results["test"]["num_examples"] == 1000
    assert not (model_dir / "lock.json").exists()


def test_rerun_resumes_and_the_saved_model_is_the_trained_one(finished):
    model_dir, controller, results = finished
    again, rerun = _train(_config(), model_dir)
    assert again.step == 6 and rerun["session_steps"] == 0
    assert rerun["test"] == results["test"]
    model, path, step = training.open_run(str(model_dir)).load_model("latest")
    assert path.endswith(os.path.join("checkpoints", "6")) and step == 6
    for a, b in zip(model.weights, controller.task.model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    valid = training.evaluate_checkpoint(str(model_dir), "valid", "best")
    assert valid == pytest.approx(results["best_valid"]["metrics"], rel=1e-6)


def test_corrupted_newest_checkpoint_falls_back_and_is_quarantined(finished, tmp_path):
    import shutil

    model_dir = tmp_path / "run"
    shutil.copytree(finished[0], model_dir)
    newest = model_dir / "checkpoints" / "6"
    for path in newest.rglob("*"):
        if path.is_file() and path.stat().st_size > 100:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    capture, results = _train(_config(), model_dir)
    assert capture.step == 3 and results["session_steps"] == 3
    assert (model_dir / "checkpoints" / "corrupted" / "6").is_dir()
    assert orbax_checkpointing.step_directories(model_dir / "checkpoints")[0] == 6


def test_removing_older_checkpoints_keeps_the_newest_and_the_best(finished, tmp_path):
    import shutil

    model_dir = tmp_path / "run"
    shutil.copytree(finished[0], model_dir)
    best = orbax_checkpointing.step_directories(model_dir / "best")
    removed = training.remove_older_checkpoints(str(model_dir))
    assert removed == [str(model_dir / "checkpoints" / "3")]
    assert orbax_checkpointing.step_directories(model_dir / "checkpoints") == [6]
    assert orbax_checkpointing.step_directories(model_dir / "best") == best
    assert training.open_run(str(model_dir)).load_model("latest")[2] == 6
    again, rerun = _train(_config(), model_dir)
    assert again.step == 6 and rerun["session_steps"] == 0


def test_nan_weights_stop_before_the_checkpoint(tmp_path):
    def poison(controller):
        kernel = controller.task.model.trainable_variables[0]
        kernel.assign(np.full(kernel.shape, np.inf, "float32"))

    with pytest.raises(training.NonFiniteLossError,
                       match=r"step 4: the weights .* NaN or infinite.*checkpoints/3, is kept"):
        _train(_config(**{"train.checkpoint_every_steps": 1}), tmp_path,
               callbacks=[fi.AfterStep(4, poison)])
    assert orbax_checkpointing.step_directories(tmp_path / "checkpoints")[0] == 3


def test_the_lock_refuses_a_second_trainer(tmp_path):
    with training.ModelDirLock(str(tmp_path)):
        with pytest.raises(training.ModelDirLockedError, match="in use by another"):
            _train(_config(), tmp_path)


def test_jax_refuses_what_it_cannot_run_in_one_line(tmp_path):
    for field, value, message in [
        ("train.mixed_precision", "mixed_float16", r"mixed_precision.*JAX.*'mixed_bfloat16'"),
        ("train.distribution_strategy", "tpu", r"distribution_strategy.*JAX.*'tpu'"),
    ]:
        with pytest.raises(ValueError, match=message) as error:
            _train(_config(**{field: value}), tmp_path / field)
        assert "\n" not in str(error.value)


def _child(spec, env=None):
    return subprocess.run(child_run.command(spec), capture_output=True, text=True,
                          timeout=600, env=child_run.environment(env),
                          cwd=str(child_run.REPO_ROOT))


@pytest.mark.slow
def test_sigkill_mid_run_resumes_bit_identical_to_an_uninterrupted_run(tmp_path):
    overrides = tiny_overrides(**{
        "train.train_steps": 12, "train.eval_every_steps": 6,
        "train.checkpoint_every_steps": 4, "train.deterministic": True,
    })
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}

    def spec(name, **extra):
        return dict(overrides=overrides, model_dir=str(tmp_path / name),
                    out=str(tmp_path / name) + "_out", **extra)

    assert _child(spec("straight")).returncode == 0
    killed = spec("killed", hang_after_step=7, hang_marker=str(tmp_path / "hanging"))
    process = subprocess.Popen(child_run.command(killed), env=child_run.environment(),
                               cwd=str(child_run.REPO_ROOT), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not os.path.exists(killed["hang_marker"]):
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert orbax_checkpointing.step_directories(tmp_path / "killed" / "checkpoints")[0] == 6
    del killed["hang_after_step"]
    result = _child(killed)
    assert result.returncode == 0, result.stderr[-2000:]
    a, b = (np.load(spec(name)["out"] + ".npz") for name in ("straight", "killed"))
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])
    metrics = [(tmp_path / name / "metrics.jsonl").read_text() for name in ("straight", "killed")]
    assert metrics[0] == metrics[1] and metrics[0].count("\n") == 3


@pytest.mark.slow
def test_data_parallel_over_two_host_devices_matches_one_device(tmp_path):
    # Without batch norm, a global batch split over two devices is the same
    # computation as on one device.
    overrides = tiny_overrides(**{"model.batch_norm": False, "train.train_steps": 4,
                                  "train.eval_every_steps": 4})
    overrides = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
    outs = {}
    for strategy in ("default", "mirrored"):
        spec = dict(overrides=dict(overrides, **{"train.distribution_strategy": strategy}),
                    model_dir=str(tmp_path / strategy), out=str(tmp_path / strategy) + "_out")
        result = _child(spec, {"XLA_FLAGS": " ".join(filter(None, (
            os.environ.get("XLA_FLAGS"), "--xla_force_host_platform_device_count=2")))})
        assert result.returncode == 0, result.stderr[-2000:]
        outs[strategy] = (np.load(spec["out"] + ".npz"),
                          json.load(open(spec["out"] + ".json"))["results"])
    (w1, r1), (w2, r2) = outs["default"], outs["mirrored"]
    assert r1["num_replicas"] == 1 and r2["num_replicas"] == 2
    for key in w1.files:
        np.testing.assert_allclose(w1[key], w2[key], rtol=1e-4, atol=1e-6)
    assert r2["test"]["num_examples"] == 1000


def test_export_of_a_jax_run_writes_keras_and_a_saved_model_where_tensorflow_is(
        finished, tmp_path):
    import importlib.util

    from low_rank_local_connectivity import export

    model_dir, controller, _ = finished
    paths = export.export_model(str(model_dir), str(tmp_path / "keras"),
                                checkpoint="latest", saved_model=False)
    assert paths["saved_model"] is None and sorted(os.listdir(tmp_path / "keras")) == [
        export.KERAS_FILE, export.SERVING_METADATA_FILE]
    images = np.random.default_rng(0).random((4, 28, 28, 1), np.float32)
    reloaded = keras.saving.load_model(paths["keras"])
    np.testing.assert_allclose(reloaded(images), controller.task.model(images), atol=1e-6)
    if importlib.util.find_spec("tensorflow") is None:
        with pytest.raises(ValueError, match="needs TensorFlow, which is not installed: "
                                             "pip install tensorflow") as error:
            export.export_model(str(model_dir), str(tmp_path / "full"))
        assert "\n" not in str(error.value)
        assert not (tmp_path / "full" / export.SERVING_METADATA_FILE).exists()
        return
    # A TensorFlow process writes the SavedModel from the .keras file.
    paths = export.export_model(str(model_dir), str(tmp_path / "full"), checkpoint="latest")
    pixels = np.random.default_rng(1).integers(0, 256, (4, 28, 28, 1), np.uint8)
    np.save(tmp_path / "x.npy", pixels)
    served = subprocess.run(
        [sys.executable, "-c", (
            "import sys, numpy as np, tensorflow as tf; "
            f"f = tf.saved_model.load({paths['saved_model']!r}).signatures['serving_default']; "
            f"x = np.load({str(tmp_path / 'x.npy')!r}); "
            "print(repr(f(images=tf.constant(x))['probabilities'].numpy().tolist()))")],
        capture_output=True, text=True, env=dict(os.environ, KERAS_BACKEND="tensorflow"),
        timeout=300,
    )
    assert served.returncode == 0, served.stderr[-2000:]
    low, high = training.open_run(str(model_dir)).metadata["value_range"]
    expected = keras.ops.softmax(controller.task.model(
        low + pixels.astype("float32") / 255.0 * (high - low)))
    np.testing.assert_allclose(eval(served.stdout.strip().splitlines()[-1]), expected,
                               atol=1e-5)
