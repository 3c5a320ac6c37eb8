"""Tests of the trainer: training, evaluation, checkpoints, resume, distribution.

Runs that need a fresh TensorFlow runtime (two logical CPU devices, multiple
workers, SIGKILL) happen in subprocesses (`trainer_runs.py`).
"""

import dataclasses
import glob
import json
import math
import os
import pathlib
import re
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from low_rank_local_connectivity import data
from low_rank_local_connectivity import layers
from low_rank_local_connectivity import trainer
from low_rank_local_connectivity import training
from low_rank_local_connectivity.configs import experiment
from tools import fault_injection as fi

from trainer_runs import (
    assert_same_run, child_spec, kill_and_resume, load_outputs, start_child, wait_child,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# A small, fast variant of the paper's network for the embedded dataset.
_TINY_MODEL = {"model.num_filters": (8, 8, 8), "model.global_avg_pooling": False}


def _config(preset="mnist_small_lrlc", **overrides):
    """Experiment config with flattened overrides ('train.batch_size': 32)."""
    config = experiment.get_config(preset)
    config.update_from_flattened_dict(overrides)
    return config


def _tiny_overrides(**extra):
    overrides = dict(
        _TINY_MODEL,
        **{
            "train.batch_size": 32,
            "train.eval_batch_size": 300,
            "train.train_steps": 6,
            "train.eval_every_steps": 3,
            "train.log_every_steps": 3,
            "train.checkpoint_every_steps": 3,
        },
    )
    overrides.update(extra)
    return overrides


# ----------------------------------------------------------------------------
# Configuration, schedule and optimiser.


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("train.optimizer.name", "lbfgs", r"config\.train\.optimizer\.name.*'lbfgs'"),
        ("train.schedule.name", "linear", r"config\.train\.schedule\.name"),
        ("train.batch_size", 0, r"config\.train\.batch_size.*positive integer"),
        ("train.train_steps", -5, r"config\.train\.train_steps.*-5"),
        ("train.label_smoothing", 1.0, r"config\.train\.label_smoothing.*\[0, 1\)"),
        ("train.optimizer.learning_rate", -1.0, r"learning_rate.*positive"),
        ("train.optimizer.clipnorm", -1.0, r"clipnorm.*non-negative"),
        ("train.schedule.warmup_steps", 10**9, r"warmup_steps"),
        ("train.schedule.boundaries", (20, 10), r"boundaries.*increasing"),
        ("train.distribution_strategy", "horovod", r"distribution_strategy"),
        ("train.mixed_precision", "float16", r"mixed_precision"),
        ("dataset.shuffle_buffer_size", 0, r"shuffle_buffer_size"),
    ],
)
def test_validate_config_names_field_and_value(field, value, message):
    config = _config()
    with config.unlocked():
        config.update_from_flattened_dict({field: value})
    with pytest.raises(ValueError, match=message):
        trainer.validate_config(config)


def test_validate_config_type_and_batch_divisibility(tmp_path):
    with pytest.raises(TypeError, match="ConfigDict"):
        trainer.validate_config({"train": {}})
    config = _config(**{"train.batch_size": 33})
    strategy = _FakeReplicas(2)
    message = r"batch_size.*multiple of the number of replicas \(2\).*33"
    with pytest.raises(ValueError, match=message):
        trainer.Trainer(config, str(tmp_path), strategy=strategy)


class _FakeReplicas:
    """Stands in for a strategy only as far as the batch-size check."""

    def __init__(self, replicas):
        self.num_replicas_in_sync = replicas


def _schedule_oracle(t, peak, total, decay, warmup, boundaries, rate, end):
    if t < warmup:
        return peak * (t + 1) / warmup
    if decay == "constant":
        return peak
    if decay == "step":
        return peak * rate ** sum(t >= b for b in boundaries)
    progress = min(max((t - warmup) / (total - warmup), 0.0), 1.0)
    return peak * (end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress)))


@pytest.mark.parametrize("decay", trainer.SCHEDULES)
@pytest.mark.parametrize("warmup", [0, 10])
def test_learning_rate_schedule_matches_formula(decay, warmup):
    args = dict(peak=0.4, total=100, decay=decay, warmup=warmup,
                boundaries=(30, 60), rate=0.1, end=0.05)
    schedule = trainer.WarmupDecaySchedule(
        args["peak"], args["total"], decay=decay, warmup_steps=warmup,
        boundaries=args["boundaries"], decay_rate=args["rate"],
        end_learning_rate_fraction=args["end"],
    )
    steps = [0, 1, 5, 9, 10, 11, 29, 30, 31, 59, 60, 77, 99, 100, 120]
    got = [float(schedule(t)) for t in steps]
    expected = [_schedule_oracle(t, **args) for t in steps]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    restored = trainer.WarmupDecaySchedule(**schedule.get_config())
    assert float(restored(42)) == float(schedule(42))


@pytest.mark.parametrize(
    "name, precision, expected",
    [
        ("sgd", "float32", "SGD"),
        ("adam", "float32", "Adam"),
        ("adamw", "float32", "AdamW"),
        ("rmsprop", "float32", "RMSprop"),
        ("adam", "mixed_float16", "LossScaleOptimizer"),
    ],
)
def test_create_optimizer(name, precision, expected):
    config = _config(**{"train.optimizer.name": name,
                        "train.optimizer.weight_decay": 1e-4,
                        "train.mixed_precision": precision})
    optimizer = trainer.create_optimizer(config.train)
    assert type(optimizer).__name__ == expected
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    assert inner.weight_decay == pytest.approx(1e-4)
    assert isinstance(inner._learning_rate, trainer.WarmupDecaySchedule)


def test_create_strategy_rejects_unknown_name():
    with pytest.raises(ValueError, match="Expected one of .*'default'.*Received: 'ps'"):
        trainer.create_strategy("ps")


# ----------------------------------------------------------------------------
# One short real training run on the embedded dataset, shared by several tests.

_SMALL_RUN = {
    "model.num_filters": (16, 16, 16),
    "model.global_avg_pooling": False,
    "train.batch_size": 64,
    "train.eval_batch_size": 300,  # 1000 valid/test examples: last batch padded.
    "train.train_steps": 100,
    "train.eval_every_steps": 50,
    "train.log_every_steps": 25,
    "train.checkpoint_every_steps": 25,
    "train.keep_checkpoints": 2,
    "train.optimizer.learning_rate": 3e-3,
}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("small_run"))
    run = trainer.Trainer(_config(**_SMALL_RUN), model_dir)
    results = run.train_and_evaluate()
    return run, results, model_dir


def test_embedded_dataset_run_reaches_stated_accuracy(small_run):
    # 100 steps of batch 64 (~1.3 epochs of the 5,000 images), ~15 s here.
    _, results, _ = small_run
    assert results["test"]["accuracy"] >= 0.90
    assert results["best_valid"]["metrics"]["accuracy"] >= 0.90


def test_model_dir_files(small_run):
    run, results, model_dir = small_run
    lines = [json.loads(l) for l in open(os.path.join(model_dir, "metrics.jsonl"))]
    assert [(l["step"], l["split"]) for l in lines] == [
        (50, "valid"), (100, "valid"), (100, "test")
    ]
    valid = [l for l in lines if l["split"] == "valid"]
    best = max(valid, key=lambda l: l["accuracy"])
    assert results["best_valid"]["step"] == best["step"]
    assert results["best_valid"]["metrics"]["accuracy"] == best["accuracy"]
    assert results["test"]["accuracy"] == lines[-1]["accuracy"]
    on_disk = json.load(open(os.path.join(model_dir, "results.json")))
    assert on_disk == json.loads(json.dumps(results))
    assert results["num_parameters"] == sum(
        int(np.prod(v.shape)) for v in run.model.trainable_variables
    )
    assert results["train_steps"] == 100 and results["examples_per_second"] > 0
    # Last two periodic checkpoints are kept, plus the best one.
    kept = sorted(
        int(p.rsplit("-", 1)[1].split(".")[0])
        for p in glob.glob(os.path.join(model_dir, "checkpoints", "ckpt-*.index"))
    )
    assert kept == [75, 100]
    best_files = glob.glob(os.path.join(model_dir, "best", "best-*.index"))
    assert [os.path.basename(p) for p in best_files] == [f"best-{best['step']}.index"]
    assert json.load(open(os.path.join(model_dir, "best", "best.json")))["step"] == best["step"]
    config = trainer.load_config(model_dir)
    assert config.model.num_classes == 10 and tuple(config.model.input_shape) == (28, 28, 1)
    assert trainer.load_metadata(model_dir)["num_examples"]["valid"] == 1000


def test_masked_evaluation_counts_exactly_the_real_examples(small_run):
    run, _, _ = small_run
    assert 1000 % run.config.train.eval_batch_size != 0  # padding does happen
    images, labels, mask = next(iter(data.resolve("mnist_small").make_dataset(
        "valid", batch_size=1000, is_training=False
    )))
    assert float(tf.reduce_sum(mask)) == 1000
    logits = run.model(images, training=False).numpy().astype(np.float64)
    labels = labels.numpy()
    log_norm = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    expected_loss = np.mean(log_norm - logits[np.arange(1000), labels])
    expected_accuracy = np.mean(logits.argmax(1) == labels)
    metrics = run.evaluate("valid")
    assert metrics["num_examples"] == 1000
    assert metrics["accuracy"] == pytest.approx(expected_accuracy, abs=1e-9)
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert "top5_accuracy" not in metrics  # 10 classes only
    with pytest.raises(ValueError, match="split.*'train'"):
        run.evaluate("train")


def test_top5_accuracy_with_more_than_ten_classes(tmp_path, monkeypatch):
    # A 20-class relabelling of the embedded MNIST: label' = 2 * label + (a
    # centre pixel is ink): more than 10 classes occur.
    resolve_config = data.resolve_config

    def relabel(images, labels, mask):
        ink = tf.cast(images[:, 14, 14, 0] > 0, tf.int32)
        return images, 2 * labels + ink, mask

    class Relabel(training.Hook):
        def transform_dataset(self, split, dataset):
            return dataset.map(relabel)

    def relabelled(dataset_config):
        dataset = resolve_config(dataset_config)
        dataset.metadata = dataclasses.replace(
            dataset.metadata, num_classes=20, class_names=tuple(map(str, range(20))))
        return dataset

    monkeypatch.setattr(data, "resolve_config", relabelled)
    run = training.Trainer(_config(**_tiny_overrides()), str(tmp_path), hooks=[Relabel()])
    metrics = run.evaluate("valid")
    images, labels, _ = next(iter(data.resolve("mnist_small").make_dataset(
        "valid", batch_size=1000, is_training=False).map(relabel)))
    logits = run.model(images, training=False).numpy()
    labels = labels.numpy()
    assert logits.shape == (1000, 20) and len(set(labels)) > 10
    rank = (logits > logits[np.arange(1000), labels][:, None]).sum(1)
    assert metrics["top5_accuracy"] == pytest.approx(np.mean(rank < 5), abs=1e-9)
    assert metrics["accuracy"] == pytest.approx(np.mean(rank == 0), abs=1e-9)
    assert metrics["num_examples"] == 1000


def _events(directory):
    """{tag: {step: (plugin_name, ndarray)}} from the event files of a dir."""
    found = {}
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = (
                    value.metadata.plugin_data.plugin_name,
                    tf.make_ndarray(value.tensor),
                )
    return found


def test_summaries_are_readable_with_the_event_reader(small_run):
    run, _, model_dir = small_run
    train_events = _events(os.path.join(model_dir, "train"))
    for tag in ("loss", "accuracy", "learning_rate", "examples_per_second",
                "gradient_norm"):
        assert sorted(train_events[tag]) == [25, 50, 75, 100]
        assert {plugin for plugin, _ in train_events[tag].values()} == {"scalars"}
    peak = _SMALL_RUN["train.optimizer.learning_rate"]
    for step, (_, value) in train_events["learning_rate"].items():
        expected = peak * 0.5 * (1 + math.cos(math.pi * step / 100))
        assert float(value) == pytest.approx(expected, rel=1e-5, abs=1e-9)

    valid_events = _events(os.path.join(model_dir, "valid"))
    assert sorted(valid_events["accuracy"]) == [50, 100]
    assert float(valid_events["num_examples"][100][1]) == 1000
    (lrlc,) = [
        layer for layer in run.model._flatten_layers()
        if isinstance(layer, layers.LowRankLocallyConnected2D)
    ]
    image_tag = f"combining_weights/{lrlc.name}"
    plugin, tensor = valid_events[image_tag][100]
    assert plugin == "images"
    weights = np.asarray(lrlc.combining_weights)  # (H_out, W_out, K) at step 100
    height, width, rank = weights.shape
    assert (int(tensor[0]), int(tensor[1])) == (width, height)
    assert len(tensor) == 2 + rank
    expected = np.round(
        (weights - weights.min()) / (weights.max() - weights.min()) * 255
    )
    for k in range(rank):
        png = tf.io.decode_png(tensor[2 + k]).numpy()
        assert png.shape == (height, width, 1)
        np.testing.assert_array_equal(png[..., 0], expected[..., k])
    test_events = _events(os.path.join(model_dir, "test"))
    assert sorted(test_events["accuracy"]) == [100]


def test_tensorboard_event_accumulator_reads_the_summaries(small_run):
    accumulator_module = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    _, _, model_dir = small_run
    accumulator = accumulator_module.EventAccumulator(os.path.join(model_dir, "valid"))
    accumulator.Reload()
    assert "accuracy" in accumulator.Tags()["tensors"]


def test_rerun_of_finished_run_resumes_without_training(small_run):
    run, results, model_dir = small_run
    again = trainer.Trainer(_config(**_SMALL_RUN), model_dir)
    assert again.step == 100
    for a, b in zip(again.model.weights, run.model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    rerun = again.train_and_evaluate()
    assert rerun["session_steps"] == 0
    assert rerun["test"] == results["test"]
    assert rerun["best_valid"] == json.loads(json.dumps(results["best_valid"]))
    lines = [json.loads(l) for l in open(os.path.join(model_dir, "metrics.jsonl"))]
    assert [(l["step"], l["split"]) for l in lines][-1] == (100, "test")


def test_model_dir_of_another_experiment_is_refused_before_restoring(small_run):
    _, _, model_dir = small_run
    with pytest.raises(trainer.ModelDirMismatchError) as error:
        trainer.Trainer(_config("mnist_small_conv", **_SMALL_RUN), model_dir)
    message = str(error.value)
    assert "\n" not in message
    assert f"{model_dir} holds a run of another experiment" in message
    assert "'mnist_small_lrlc' (its config.json), not 'mnist_small_conv'" in message
    assert "model.layer_types" in message and "delete" in message


def test_longer_run_warns_that_the_schedule_is_recomputed(small_run, tmp_path, caplog):
    model_dir = str(tmp_path / "run")
    shutil.copytree(small_run[2], model_dir)
    caplog.set_level("WARNING")

    def warnings():
        return [r.getMessage() for r in caplog.records
                if r.pathname.startswith(os.path.dirname(training.__file__))]

    trainer.Trainer(_config(**_SMALL_RUN), model_dir).train_and_evaluate()
    assert not warnings()  # Same config: nothing to say.
    longer = dict(_SMALL_RUN, **{"train.train_steps": 102})
    trainer.Trainer(_config(**longer), model_dir).train_and_evaluate()
    messages = warnings()
    assert len(messages) == 2, messages
    assert "train.train_steps: 100 -> 102" in messages[0]
    # Cosine decay over 100 steps ends at 0; over 102 it is not 0 at step 100.
    rate = trainer.create_learning_rate_schedule(_config(**longer).train)(100)
    assert messages[1] == (
        "The learning-rate schedule changed: at step 100 the rate is now "
        f"{float(rate):.3g} instead of 0, and it follows the new schedule from "
        "there (it is not continued)."
    )


def test_restore_best(small_run):
    run, results, model_dir = small_run
    other = trainer.Trainer(_config(**_SMALL_RUN), model_dir)
    path = other.restore("best")
    assert path.endswith(f"best-{results['best_valid']['step']}")
    assert other.step == results["best_valid"]["step"]
    with pytest.raises(ValueError, match="which.*'first'"):
        other.restore("first")


# ----------------------------------------------------------------------------
# NaN stop, precision and XLA.


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    config = _config(**_tiny_overrides(**{"train.checkpoint_every_steps": 1}))
    # NaN images from the 4th batch on.
    run = training.Trainer(config, str(tmp_path), hooks=[fi.NaNInputs(from_step=4)])
    message = r"step 4: the loss is nan.*ckpt-3, is kept"
    with pytest.raises(training.NonFiniteLossError, match=message):
        run.train_and_evaluate()
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-3")
    assert not (tmp_path / "results.json").exists()
    resumed = trainer.Trainer(config, str(tmp_path))
    assert resumed.step == 3
    assert all(np.isfinite(v.numpy()).all() for v in resumed.model.weights)


@pytest.mark.parametrize(
    "precision, jit_compile",
    [("mixed_float16", False), ("mixed_bfloat16", False), ("float32", True)],
)
def test_mixed_precision_and_xla_train_and_resume(tmp_path, precision, jit_compile):
    overrides = _tiny_overrides(**{
        "train.mixed_precision": precision,
        "train.jit_compile": jit_compile,
        "train.train_steps": 3,
    })
    run = trainer.Trainer(_config(**overrides), str(tmp_path))
    compute = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}.get(
        precision, "float32"
    )
    assert {layer.compute_dtype for layer in run.model.layers[1:-1]} >= {compute}
    assert run.model.output.dtype == "float32"
    results = run.train_and_evaluate()
    assert math.isfinite(results["test"]["loss"])
    assert all(v.dtype == "float32" for v in run.model.trainable_variables)
    resumed = trainer.Trainer(_config(**overrides), str(tmp_path))
    assert resumed.step == 3
    for a, b in zip(resumed.optimizer.variables, run.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


# ----------------------------------------------------------------------------
# Subprocess runs: SIGKILL + resume, MirroredStrategy, multi-worker.

def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path):
    overrides = _tiny_overrides(**{
        "train.train_steps": 30,
        "train.eval_every_steps": 15,
        "train.checkpoint_every_steps": 10,
        "train.log_every_steps": 10,
        "train.deterministic": True,
    })
    straight, killed, latest = kill_and_resume(tmp_path, overrides, 17)
    assert latest.endswith("ckpt-15")  # steps 16 and 17 were lost
    assert load_outputs(killed["out"])[2]["results"]["train_steps"] == 30
    assert load_outputs(killed["out"])[2]["results"]["session_steps"] == 15
    assert_same_run(straight, killed, metrics_lines=3)


def test_mirrored_two_logical_cpus_matches_one_device(tmp_path):
    # Without batch norm (whose statistics are per replica) a 2-replica step
    # on the same global batch is the same computation as a 1-device step.
    overrides = _tiny_overrides(**{
        "model.batch_norm": False,
        "train.train_steps": 4,
        "train.eval_every_steps": 4,
        "train.optimizer.clipnorm": 0.5,
    })
    runs = {
        strategy: child_spec(tmp_path, strategy, dict(overrides, **{
            "train.distribution_strategy": strategy}), logical_cpus=2)
        for strategy in ("default", "mirrored")
    }
    processes = {name: start_child(tmp_path, spec) for name, spec in runs.items()}
    for name, process in processes.items():
        wait_child(process, runs[name])
    weights_1, _, info_1 = load_outputs(runs["default"]["out"])
    weights_2, _, info_2 = load_outputs(runs["mirrored"]["out"])
    assert info_1["results"]["num_replicas"] == 1
    assert info_2["results"]["num_replicas"] == 2
    for a, b in zip(weights_1, weights_2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for info in (info_1, info_2):
        assert info["results"]["test"]["num_examples"] == 1000
        assert info["results"]["best_valid"]["metrics"]["num_examples"] == 1000
    assert info_2["results"]["test"]["accuracy"] == info_1["results"]["test"]["accuracy"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_multi_worker_two_local_workers_end_identical(tmp_path):
    overrides = _tiny_overrides(**{
        "train.train_steps": 4,
        "train.eval_every_steps": 2,
        "train.checkpoint_every_steps": 2,
        "train.distribution_strategy": "multi_worker_mirrored",
    })
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    specs, processes = [], []
    for index in range(2):
        spec = child_spec(tmp_path, "run", overrides)
        spec["out"] = str(tmp_path / f"worker{index}")
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        specs.append(spec)
        processes.append(
            start_child(tmp_path, spec, {"TF_CONFIG": json.dumps(tf_config)})
        )
    for process, spec in zip(processes, specs):
        wait_child(process, spec)
    (w0, s0, info0), (w1, s1, info1) = load_outputs(specs[0]["out"]), load_outputs(specs[1]["out"])
    assert info0["results"]["num_replicas"] == 2
    assert len(w0) > info0["trainable"]  # batch-norm statistics included
    for a, b in zip(w0 + s0, w1 + s1):
        np.testing.assert_array_equal(a, b)
    assert info0["results"]["test"] == info1["results"]["test"]
    assert info0["results"]["test"]["num_examples"] == 1000
    model_dir = specs[0]["model_dir"]
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-4")
    assert json.load(open(os.path.join(model_dir, "results.json")))["train_steps"] == 4
    leftovers = [p for p in glob.glob(os.path.join(model_dir, ".workers", "**"), recursive=True)
                 if os.path.isfile(p)]
    assert leftovers == []


# ----------------------------------------------------------------------------
# Command line.


def _run_script(args, cwd, timeout=240):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=timeout,
    )


def test_train_script_rejects_bad_flags_with_one_line(tmp_path):
    config = f"--config={REPO_ROOT}/low_rank_local_connectivity/configs/experiment.py"
    for args, fragments in [
        ([f"{config}:mnist_small_conv", "--config.train.optimizer.name=lbfgs"],
         ["error: Invalid value for `config.train.optimizer.name`"]),
        ([f"{config}:mnist_small_conv", "--config.train.train_step=1"],
         ["error: unknown config field config.train.train_step "
          "(--config.train.train_step=1); did you mean config.train.train_steps?"]),
        ([f"{config}:mnist_small_lrcl"],
         ["error: flag --config=", "Received: 'mnist_small_lrcl'. "
          "Did you mean 'mnist_small_lrlc'"]),
        ([config], ["error: flag --config=", "`preset`: none given"]),
    ]:
        result = _run_script(
            [str(REPO_ROOT / "scripts" / "train.py"), *args,
             f"--model_dir={tmp_path / 'run'}"],
            cwd=tmp_path,
        )
        assert result.returncode == 1
        # One line and nothing else: no traceback, no TensorFlow messages.
        assert len(result.stderr.splitlines()) == 1, result.stderr[-2000:]
        assert re.match(".*".join(map(re.escape, fragments)), result.stderr), (
            result.stderr)
    assert not (tmp_path / "run").exists()


def test_train_script_names_the_data_flags_when_data_is_missing(tmp_path):
    result = _run_script(
        [str(REPO_ROOT / "scripts" / "train.py"),
         f"--config={REPO_ROOT}/low_rank_local_connectivity/configs/"
         "experiment.py:mnist_lrlc", f"--config.dataset.data_dir={tmp_path / 'tfds'}",
         f"--model_dir={tmp_path / 'run'}"],
        cwd=tmp_path,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()  # No TFDS warning before it.
    assert line.startswith("error: Dataset 'mnist' (TFDS 'mnist', version 3.0.1) is "
                           f"not prepared in data_dir '{tmp_path / 'tfds'}'")
    for flag in ("--config.dataset.download is False",
                 "1. --config.dataset.download=True (needs internet)",
                 "2. --config.dataset.data_dir=<folder>",
                 "3. --config.dataset.manual_dir=<folder>"):
        assert flag in line
    assert not (tmp_path / "run").exists() and not (tmp_path / "tfds").exists()


def test_train_script_refuses_a_model_dir_of_another_experiment(small_run, tmp_path):
    result = _run_script(
        [str(REPO_ROOT / "scripts" / "train.py"),
         f"--config={REPO_ROOT}/low_rank_local_connectivity/configs/"
         "experiment.py:mnist_small_conv", f"--model_dir={small_run[2]}"],
        cwd=tmp_path,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {small_run[2]} holds a run of another experiment")


def test_quickstart_script_prints_both_accuracies(tmp_path):
    result = _run_script(
        [str(REPO_ROOT / "scripts" / "quickstart.py"), "--train_steps=2",
         f"--model_dir={tmp_path}"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for preset in ("mnist_small_conv", "mnist_small_lrlc"):
        results = json.load(open(tmp_path / preset / "results.json"))
        assert results["train_steps"] == 2
        (row,) = [l for l in result.stdout.splitlines() if l.startswith(preset + " ")]
        assert row.split()[-1] == f"{results['test']['accuracy']:.4f}"
        assert row.split()[-2] == f"{results['best_valid']['metrics']['accuracy']:.4f}"


# ----------------------------------------------------------------------------
# Real MNIST (CI workspace only).


def test_real_mnist_short_run_reaches_95_percent(shared_tfds_dir, tmp_path):
    # The paper's all-convolution network, Adam 3e-3 with cosine decay,
    # batch 128, 600 steps (1.4 epochs): about 2-3 minutes on 2 CPU cores.
    config = _config("mnist_conv", **{
        "dataset.data_dir": shared_tfds_dir,
        "train.train_steps": 600,
        "train.eval_every_steps": 600,
        "train.log_every_steps": 100,
        "train.checkpoint_every_steps": 600,
        "train.optimizer.learning_rate": 3e-3,
    })
    results = trainer.train_and_evaluate(config, str(tmp_path))
    assert results["test"]["num_examples"] == 10_000
    assert results["best_valid"]["metrics"]["num_examples"] == 4_800
    assert results["test"]["accuracy"] >= 0.95


def test_measure_step_throughput_runs_the_training_step(tmp_path):
    run = trainer.Trainer(_config(**_tiny_overrides()), str(tmp_path))
    for kwargs in (dict(num_steps=0), dict(num_steps=2.5), dict(warmup_steps=-1)):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            run.measure_step_throughput(**kwargs)
    before = [v.numpy().copy() for v in run.model.trainable_variables]
    assert run.measure_step_throughput(num_steps=3, warmup_steps=1) > 0
    assert run.step == 4  # the trainer's own step ran 1 + 3 times
    after = run.model.trainable_variables
    assert all(not np.array_equal(b, a.numpy()) for b, a in zip(before, after))
