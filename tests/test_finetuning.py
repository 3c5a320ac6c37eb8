"""Tests of fine-tuning a finished run: `init_from`, `model.convert`, the scripts.

The source run is a tiny trainer run on the embedded `mnist_small`; the oracle
of every fine-tuning run is that source run's model restored from its checkpoint.
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from low_rank_local_connectivity import export
from low_rank_local_connectivity import finetuning
from low_rank_local_connectivity import training
from low_rank_local_connectivity.configs import experiment
from low_rank_local_connectivity.training import run_dir
from low_rank_local_connectivity.layers import LowRankLocallyConnected2D as LRLC
from tests.layers.lrlc_testing import images

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _tiny_config(num_filters=8, steps=6, seed=0):
    config = experiment.get_config("mnist_small_conv")
    config.seed = seed
    config.model.num_filters = (num_filters,) * 3
    config.train.update(train_steps=steps, eval_every_steps=steps, batch_size=32,
                        eval_batch_size=500, checkpoint_every_steps=steps)
    return config


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("finetuning") / "source")
    training.train_and_evaluate(_tiny_config(), model_dir, progress=False)
    return model_dir


def _source_model(source_dir):
    return training.open_run(source_dir).load_model("latest")[0]


class _Snapshot(training.Callback):
    """The model of a run when training begins and ends."""

    def __init__(self, x=None):
        self.x = x

    def on_train_begin(self, controller):
        model = controller.task.model
        self.step = controller.step
        self.num_lrlc = sum(isinstance(layer, LRLC) for layer in model.layers)
        self.start_weights = [np.asarray(v) for v in model.weights]
        if self.x is not None:
            self.start_outputs = np.asarray(model(self.x, training=False))

    def on_train_end(self, controller, results):
        self.end_weights = [np.asarray(v) for v in controller.task.model.weights]


def _train(config, model_dir, x=None):
    snapshot = _Snapshot(x)
    results = training.train_and_evaluate(config, model_dir, callbacks=[snapshot],
                                          progress=False)
    return snapshot, results


def test_converted_run_starts_as_the_source_trains_resumes_and_exports(
    source_dir, tmp_path
):
    config = finetuning.finetune_config(
        source_dir, conversion=dict(spatial_rank=2), train_steps=3
    )
    assert config.init_from.to_dict() == dict(model_dir=source_dir, checkpoint="latest")
    assert config.model.convert.to_dict() == dict(spatial_rank=2, seed=0)
    model_dir = str(tmp_path / "converted")
    x = images((4, 28, 28, 1))
    run, results = _train(config, model_dir, x)
    assert run.num_lrlc == 3
    expected = np.asarray(_source_model(source_dir)(x, training=False))
    np.testing.assert_allclose(run.start_outputs, expected, atol=1e-5)
    assert results["train_steps"] == 3 and results["preset"] == "mnist_small_conv_to_lrlc2"

    # Resuming restores the run's own checkpoint: the source is not needed.
    shutil.move(source_dir, str(tmp_path / "moved"))
    try:
        resumed, _ = _train(config, model_dir)
    finally:
        shutil.move(str(tmp_path / "moved"), source_dir)
    assert resumed.step == 3
    for old, new in zip(run.end_weights, resumed.start_weights):
        np.testing.assert_array_equal(old, new)

    paths = export.export_model(model_dir, str(tmp_path / "export"), checkpoint="latest")
    model = training.open_run(model_dir).load_model("latest")[0]
    served = tf.saved_model.load(paths["saved_model"])
    pixels = np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1), np.uint8)
    probabilities = served.signatures["serving_default"](images=tf.constant(pixels))
    low, high = training.open_run(model_dir).metadata["value_range"]
    inputs = low + pixels.astype(np.float32) / 255.0 * (high - low)
    np.testing.assert_allclose(
        probabilities["probabilities"], tf.nn.softmax(model(inputs, training=False)),
        atol=1e-5,
    )


def test_unconverted_run_starts_from_the_source_weights(source_dir, tmp_path):
    config = finetuning.finetune_config(source_dir, train_steps=2, checkpoint="best",
                                        learning_rate=0.01, seed=5)
    assert "convert" not in config.model and config.seed == 5
    assert config.train.optimizer.learning_rate == 0.01
    assert config.train.eval_every_steps == 2
    run, _ = _train(config, str(tmp_path / "continued"))
    for old, new in zip(_source_model(source_dir).weights, run.start_weights):
        np.testing.assert_array_equal(np.asarray(old), new)
    assert run.step == 0


def test_finetune_config_and_init_from_errors(source_dir, tmp_path):
    with pytest.raises(ValueError, match=r"`checkpoint`.*'nope'"):
        finetuning.finetune_config(source_dir, checkpoint="nope")
    with pytest.raises(ValueError, match=r"`source_dir`.*config.json.*missing"):
        finetuning.finetune_config(str(tmp_path / "missing"))
    config = finetuning.finetune_config(source_dir, conversion=dict(spatial_rank=2))
    converted_dir = str(tmp_path / "converted")
    os.makedirs(converted_dir)
    with open(os.path.join(converted_dir, run_dir.CONFIG_FILE), "w") as f:
        f.write(config.to_json())
    with pytest.raises(ValueError, match=r"already converted"):
        finetuning.finetune_config(converted_dir)
    config.init_from.model_dir = ""
    with pytest.raises(ValueError, match=r"`config.init_from.model_dir`.*non-empty"):
        training.validate_config(config)
    # A checkpoint of another architecture.
    other = _tiny_config(num_filters=4)
    other.init_from = dict(model_dir=source_dir, checkpoint="latest")
    with pytest.raises(ValueError, match=r"checkpoint .* does not match model"):
        training.train_and_evaluate(other, str(tmp_path / "other"))
    bad = finetuning.finetune_config(source_dir, conversion=dict(spatial_rank=0))
    with pytest.raises(ValueError, match=r"`spatial_rank`.*positive integer"):
        training.train_and_evaluate(bad, str(tmp_path / "bad"))


def test_comparison_runs_start_as_their_base_and_are_reused(tmp_path):
    config = _tiny_config(num_filters=4, steps=3)
    arms = finetuning.comparison_arms(2)
    assert arms == {"conv": None, "lrlc2": dict(spatial_rank=2)}
    rows = finetuning.run_comparison(
        config, str(tmp_path), seeds=[1], finetune_steps=2, arms=arms
    )
    assert [row["arm"] for row in rows] == ["conv", "lrlc2"]
    for row in rows:
        assert row["seed"] == 1
        assert row["start_test_accuracy"] == pytest.approx(row["base_test_accuracy"], abs=2e-3)
    assert training.open_run(str(tmp_path / "seed1" / "lrlc2")).config.model.convert.seed == 1
    # Finished runs are read back, not trained again.
    assert finetuning.run_comparison(
        config, str(tmp_path), seeds=[1], finetune_steps=2, arms=arms
    ) == rows


def test_summaries_and_result_files(tmp_path):
    accuracy = {(0, "conv"): 0.90, (0, "lrlc2"): 0.93, (1, "conv"): 0.92,
                (1, "lrlc2"): 0.94, (2, "conv"): 0.91, (2, "lrlc2"): 0.95}
    rows = [
        dict(seed=seed, arm=arm, num_parameters=10 if arm == "conv" else 20,
             base_test_accuracy=0.8, start_test_accuracy=0.8, test_accuracy=value,
             valid_accuracy=value, train_seconds=1.0)
        for (seed, arm), value in accuracy.items()
    ]
    summaries = {s["arm"]: s for s in finetuning.summarize(rows)}
    assert summaries["conv"]["test_accuracy_mean"] == pytest.approx(0.91)
    assert summaries["conv"]["test_accuracy_se"] == pytest.approx(0.01 / np.sqrt(3))
    # Paired gains 0.03, 0.02, 0.04.
    assert summaries["lrlc2"]["gain_mean"] == pytest.approx(0.03)
    assert summaries["lrlc2"]["gain_se"] == pytest.approx(0.01 / np.sqrt(3))
    assert "gain_mean" not in summaries["conv"]
    paths = finetuning.write_results(rows, str(tmp_path), dict(finetune_steps=7))
    assert [os.path.basename(p) for p in paths] == ["results.csv", "results.json", "results.md"]
    assert json.load(open(paths[1]))["runs"] == rows
    assert open(paths[0]).read().splitlines()[1] == "0,conv,10,0.8,0.8,0.9,0.9,1.0"
    table = open(paths[2]).read()
    assert "test acc after 7 steps (%)" in table
    assert "| lrlc2 | 20 | 80.00 ± 0.00 | 94.00 ± 0.58 | +3.00 ± 0.58 (separable) |" in table
    rows[1]["test_accuracy"] = 0.90  # Gains 0.00, 0.02, 0.04: +2.00 ± 1.15.
    assert "(not separable)" in finetuning.render_markdown(finetuning.summarize(rows), 7)


def _script(name, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / name), *args],
        capture_output=True, text=True, timeout=240, env=env,
    )


def test_finetune_script(source_dir, tmp_path):
    model_dir = str(tmp_path / "script_run")
    result = _script("finetune_lrlc.py", f"--source_dir={source_dir}",
                     f"--model_dir={model_dir}", "--spatial_rank=3",
                     "--layers=block2_conv", "--train_steps=2")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mnist_small_conv_to_lrlc3:" in result.stdout and "2 steps" in result.stdout
    config = training.open_run(model_dir).config
    assert config.model.convert.layers == ["block2_conv"]
    assert config.model.convert.spatial_rank == 3


def test_scripts_report_bad_input_in_one_line(source_dir, tmp_path):
    result = _script("finetune_lrlc.py", f"--source_dir={source_dir}",
                     f"--model_dir={tmp_path / 'bad'}", "--layers=logits")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: Invalid value for argument `layers`: layer 'logits' cannot become"
    )
    result = _script("conversion_experiment.py", "--seeds=0,x",
                     f"--output_dir={tmp_path}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: --seeds expects integers, received ['0', 'x']"
    )
