"""The commands on Keras' JAX backend, in processes where TensorFlow is absent.

`lrlc-benchmark`, `lrlc-reproduce`, `lrlc-visualize`, `lrlc-finetune` and the
conversion experiment run with `tests/without_tensorflow` first
on PYTHONPATH (TensorFlow, tf_keras and TFDS cannot be imported), as on a GPU
machine that has JAX only. Collected when the backend is JAX
(`tests/test_backends.py` runs them from the default suite).
"""

import csv
import json
import os
import subprocess
import sys

import keras
import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="JAX-backend tests; run with KERAS_BACKEND=jax (tests/test_backends.py does)",
)
WITHOUT_TENSORFLOW = REPO_ROOT / "tests" / "without_tensorflow"


def _run_without_tensorflow(script, *flags):
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=os.pathsep.join(
        [str(WITHOUT_TENSORFLOW), str(REPO_ROOT)]))
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / script), *flags],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_the_blocker_hides_tensorflow():
    env = dict(os.environ, PYTHONPATH=str(WITHOUT_TENSORFLOW))
    probe = subprocess.run(
        [sys.executable, "-c",
         "import importlib.util\n"
         "assert importlib.util.find_spec('tensorflow') is None\n"
         "try:\n    import tensorflow\nexcept ModuleNotFoundError:\n    print('absent')"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert probe.stdout.strip() == "absent", probe.stderr


def test_benchmark_times_layers_and_training_on_jax(tmp_path):
    result = _run_without_tensorflow(
        "benchmark.py", "--suite=smoke", "--repeats=1", "--warmup=0",
        "--layers=conv,lrlc,locally_connected,tf_keras_locally_connected1",
        "--training=mnist_small_conv", "--training_steps=4", f"--output_dir={tmp_path}",
    )
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert (report["backend"], report["device"]) == ("jax", "cpu")
    rows = {row["layer"]: row for row in report["rows"]}
    assert {row["mode"] for row in rows.values()} == {"xla"}
    assert rows["tf_keras_locally_connected1"]["note"] == (
        "skipped: tf_keras runs on TensorFlow, not jax")
    for name in ("conv_kf", "lrlc", "locally_connected"):
        assert rows[name]["forward_backward_ms"] > 0, rows[name]
    # The same parameter counts as on TensorFlow (tests/test_benchmark.py).
    assert rows["lrlc"]["params"] == 9 * 4 * 2 * 4 + 2 * 6 * 2 + 2 * 6 + 4
    (training,) = report["training"]
    assert training["backend"] == "jax"
    assert training["trainer_examples_per_second"] > 0
    assert training["fit_examples_per_second"] > 0
    assert "Traceback" not in result.stderr


def test_reproduce_runs_a_grid_cell_and_visualize_draws_it_on_jax(tmp_path):
    _run_without_tensorflow(
        "reproduce_paper.py", "--scale=quick", "--layer_types=lrlc", "--ranks=2",
        "--num_filters=8,8,8", "--seeds=0", "--train_steps=4", "--eval_every_steps=2",
        f"--output_dir={tmp_path}",
    )
    with open(tmp_path / "results.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["layer_type"], row["rank"], row["backend"], row["train_steps"]) == (
        "lrlc", "2", "jax", "4")
    assert 0 <= float(row["test_accuracy"]) <= 1
    assert (tmp_path / "accuracy_vs_rank_mnist_small.png").exists()
    # The cell's combining weights, from its Orbax checkpoint.
    result = _run_without_tensorflow(
        "visualize_combining_weights.py",
        f"--model_dir={tmp_path / row['model_dir']}", f"--output_dir={tmp_path / 'maps'}")
    assert result.stdout.split() == [str(tmp_path / "maps" / "block2_lrlc.png")]
    assert result.stderr == ""


def test_conversion_experiment_and_finetune_start_from_the_source_on_jax(tmp_path):
    # Every fine-tuned arm starts from the base run's Orbax checkpoint with the
    # same function: its test accuracy before the first step is the base run's.
    _run_without_tensorflow(
        "conversion_experiment.py", "--dataset=mnist_small", "--seeds=0",
        "--num_filters=8", "--base_steps=4", "--finetune_steps=2",
        f"--output_dir={tmp_path}",
    )
    with open(tmp_path / "results.csv") as f:
        rows = {row["arm"]: row for row in csv.DictReader(f)}
    assert sorted(rows) == ["conv", "lrlc2"]
    for row in rows.values():
        assert row["start_test_accuracy"] == row["base_test_accuracy"], row
    # Rank 2 doubles the three 3x3 kernels (9*1*8 + 2 * 9*8*8 more) and adds,
    # per block of H x H outputs (valid padding: 26, 24, 22), row and column
    # combining weights (2 * H * 2) and spatial biases (2 * H).
    assert int(rows["lrlc2"]["num_parameters"]) - int(rows["conv"]["num_parameters"]) == (
        9 * 8 + 2 * 9 * 8 * 8 + sum(2 * h * 2 + 2 * h for h in (26, 24, 22)))
    result = _run_without_tensorflow(
        "finetune_lrlc.py", f"--source_dir={tmp_path / 'seed0' / 'base'}",
        f"--model_dir={tmp_path / 'cli'}", "--spatial_rank=2", "--train_steps=2",
    )
    assert "mnist_small_conv_to_lrlc2:" in result.stdout and "2 steps" in result.stdout
    results = json.loads((tmp_path / "cli" / "results.json").read_text())
    assert results["num_parameters"] == int(rows["lrlc2"]["num_parameters"])
