"""A run end to end: model_dir files, evaluation, summaries, resume, the NaN stop,
precision, the lock, and the controller's callbacks (`training/`)."""

import dataclasses
import glob
import json
import logging
import math
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from low_rank_local_connectivity import data
from low_rank_local_connectivity import devices
from low_rank_local_connectivity import layers
from low_rank_local_connectivity import training
from low_rank_local_connectivity.configs import experiment
from low_rank_local_connectivity.training import checkpointing
from low_rank_local_connectivity.training import summaries
from tools import fault_injection as fi
from tests.trainer_runs import tiny_overrides

def _config(preset="mnist_small_lrlc", **overrides):
    """Experiment config with flattened overrides ('train.batch_size': 32)."""
    config = experiment.get_config(preset)
    config.update_from_flattened_dict(overrides)
    return config


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


class _Capture(training.Callback):
    """Keeps the controller of a run (and the events it saw, when asked)."""

    def __init__(self, events=False):
        self.controller = None
        self.events = [] if events else None

    def on_train_begin(self, controller):
        self.controller = controller
        self.begin_step = controller.step
        self.begin_weights = [v.numpy().copy() for v in controller.task.model.weights]


def _run(config, model_dir, **kwargs):
    """train_and_evaluate -> (controller, results)."""
    capture = _Capture()
    callbacks = [capture, *kwargs.pop("callbacks", ())]
    results = training.train_and_evaluate(config, model_dir, callbacks=callbacks, **kwargs)
    return capture, results


def _restored_task(config, model_dir, checkpoint="latest"):
    """A fresh task with a checkpoint of `model_dir` restored -> (task, path)."""
    task = training.create_task(config)
    return task, task.checkpoints(model_dir).restore(checkpoint)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("small_run"))
    capture, results = _run(_config(**_SMALL_RUN), model_dir)
    return capture.controller, results, model_dir


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
        int(np.prod(v.shape)) for v in run.task.model.trainable_variables
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
    opened = training.open_run(model_dir)
    assert opened.config.model.num_classes == 10
    assert tuple(opened.config.model.input_shape) == (28, 28, 1)
    assert opened.metadata["num_examples"]["valid"] == 1000
    assert opened.results == on_disk and opened.best == results["best_valid"]


def test_masked_evaluation_counts_exactly_the_real_examples(small_run):
    run, _, _ = small_run
    assert 1000 % run.config.train.eval_batch_size != 0  # padding does happen
    images, labels, mask = next(iter(data.resolve("mnist_small").make_dataset(
        "valid", batch_size=1000, is_training=False
    )))
    assert float(tf.reduce_sum(mask)) == 1000
    logits = run.task.model(images, training=False).numpy().astype(np.float64)
    labels = labels.numpy()
    log_norm = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    expected_loss = np.mean(log_norm - logits[np.arange(1000), labels])
    expected_accuracy = np.mean(logits.argmax(1) == labels)
    lines = len(run.evaluations)
    metrics = run.evaluate("valid", record=False)
    assert len(run.evaluations) == lines  # A look that is not recorded.
    assert metrics["num_examples"] == 1000
    assert metrics["accuracy"] == pytest.approx(expected_accuracy, abs=1e-9)
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert "top5_accuracy" not in metrics  # 10 classes only
    with pytest.raises(ValueError, match="split.*'train'"):
        run.evaluate("train", record=False)


def test_top5_accuracy_with_more_than_ten_classes():
    # A 20-class relabelling of the embedded MNIST: label' = 2 * label + (a
    # centre pixel is ink): more than 10 classes occur.
    def relabel(images, labels, mask):
        ink = tf.cast(images[:, 14, 14, 0] > 0, tf.int32)
        return images, 2 * labels + ink, mask

    dataset = data.resolve("mnist_small")
    dataset.metadata = dataclasses.replace(
        dataset.metadata, num_classes=20, class_names=tuple(map(str, range(20))),
    )
    task = training.create_task(
        _config(**tiny_overrides()), dataset,
        input_transform=lambda split, dataset: dataset.map(relabel),
    )
    metrics = task.evaluate("valid")
    images, labels, _ = next(iter(data.resolve("mnist_small").make_dataset(
        "valid", batch_size=1000, is_training=False).map(relabel)))
    logits = task.model(images, training=False).numpy()
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
        layer for layer in run.task.model._flatten_layers()
        if isinstance(layer, layers.LowRankLocallyConnected2D)
    ]
    image_tag = f"combining_weights/{lrlc.name}"
    assert sorted(valid_events[image_tag]) == [50, 100]
    plugin, tensor = valid_events[image_tag][100]
    assert plugin == "images" and len(tensor) == 3  # width, height, one PNG
    png = tf.io.decode_png(tensor[2]).numpy()
    assert (int(tensor[0]), int(tensor[1])) == (png.shape[1], png.shape[0])
    # A readable heat map with a colour scale, not a 24x24 grey thumbnail.
    assert min(png.shape[:2]) >= 200
    colours = png[..., :3].reshape(-1, 3).astype(int)
    assert (np.abs(colours[:, 0] - colours[:, 2]) > 40).any()
    # The picture is that of the layer's weights at step 100 (the end state).
    expected = summaries.combining_weight_png(
        lrlc, f"{lrlc.name}: combining weights at step 100"
    )
    np.testing.assert_array_equal(png, tf.io.decode_png(expected).numpy())
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
    again, rerun = _run(_config(**_SMALL_RUN), model_dir)
    assert again.begin_step == 100
    for a, b in zip(again.begin_weights, run.task.model.weights):
        np.testing.assert_array_equal(a, b.numpy())
    assert rerun["session_steps"] == 0
    assert rerun["test"] == results["test"]
    assert rerun["best_valid"] == json.loads(json.dumps(results["best_valid"]))
    lines = [json.loads(l) for l in open(os.path.join(model_dir, "metrics.jsonl"))]
    assert [(l["step"], l["split"]) for l in lines][-1] == (100, "test")


def test_model_dir_of_another_experiment_is_refused_before_restoring(
        small_run, monkeypatch):
    _, _, model_dir = small_run
    restored = []
    monkeypatch.setattr(checkpointing.Checkpoints, "restore",
                        lambda self, *args: restored.append(args))
    with pytest.raises(training.ModelDirMismatchError) as error:
        training.train_and_evaluate(_config("mnist_small_conv", **_SMALL_RUN), model_dir)
    assert restored == []
    message = str(error.value)
    assert "\n" not in message
    assert f"{model_dir} holds a run of another experiment" in message
    assert "(preset 'mnist_small_lrlc' in its config.json)" in message
    assert ("model.layer_types (['conv2d', 'low_rank_locally_connected2d', "
            "'conv2d'] there, ['conv2d', 'conv2d', 'conv2d'] here)") in message
    assert "delete" in message


def test_the_lock_is_taken_before_anything_is_restored(small_run, monkeypatch):
    _, _, model_dir = small_run
    restored = []
    monkeypatch.setattr(checkpointing.Checkpoints, "restore",
                        lambda self, *args: restored.append(args))
    with training.ModelDirLock(model_dir):
        with pytest.raises(training.ModelDirLockedError, match="in use by another"):
            training.train_and_evaluate(_config(**_SMALL_RUN), model_dir)
    assert restored == []


def test_longer_run_warns_that_the_schedule_is_recomputed(small_run, tmp_path, caplog):
    model_dir = str(tmp_path / "run")
    shutil.copytree(small_run[2], model_dir)
    caplog.set_level("WARNING")

    def warnings():
        return [r.getMessage() for r in caplog.records
                if r.pathname.startswith(os.path.dirname(training.__file__))]

    training.train_and_evaluate(_config(**_SMALL_RUN), model_dir)
    assert not warnings()  # Same config: nothing to say.
    longer = dict(_SMALL_RUN, **{"train.train_steps": 102})
    training.train_and_evaluate(_config(**longer), model_dir)
    messages = warnings()
    assert len(messages) == 2, messages
    assert "train.train_steps: 100 -> 102" in messages[0]
    # Cosine decay over 100 steps ends at 0; over 102 it is not 0 at step 100.
    rate = training.create_learning_rate_schedule(_config(**longer).train)(100)
    assert messages[1] == (
        "The learning-rate schedule changed: at step 100 the rate is now "
        f"{float(rate):.3g} instead of 0, and it follows the new schedule from "
        "there (it is not continued)."
    )


def test_restore_and_evaluate_the_best_checkpoint(small_run):
    _, results, model_dir = small_run
    best = results["best_valid"]
    task, path = _restored_task(_config(**_SMALL_RUN), model_dir, "best")
    assert path.endswith(f"best-{best['step']}")
    assert task.step == best["step"]
    with pytest.raises(ValueError, match="checkpoint.*'first'"):
        task.checkpoints(model_dir).restore("first")
    # The same checkpoint on the same split gives the recorded metrics.
    valid = training.evaluate_checkpoint(model_dir, "valid", "best")
    assert valid == pytest.approx(best["metrics"], rel=1e-6)


# ----------------------------------------------------------------------------
# NaN stop, precision and XLA.


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    config = _config(**tiny_overrides(**{"train.checkpoint_every_steps": 1}))
    # NaN images from the 4th batch on.
    message = r"step 4: the loss is nan.*ckpt-3, is kept"
    with pytest.raises(training.NonFiniteLossError, match=message):
        training.train_and_evaluate(config, str(tmp_path),
                                    input_transform=fi.nan_inputs(from_step=4))
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-3")
    assert not (tmp_path / "results.json").exists()
    resumed, _ = _restored_task(config, str(tmp_path))
    assert resumed.step == 3
    assert all(np.isfinite(v.numpy()).all() for v in resumed.model.weights)


@pytest.mark.parametrize(
    "precision, jit_compile",
    [("mixed_float16", False), ("mixed_bfloat16", False), ("float32", True)],
)
def test_mixed_precision_and_xla_train_and_resume(tmp_path, caplog, precision, jit_compile):
    overrides = tiny_overrides(**{
        "train.mixed_precision": precision,
        "train.jit_compile": jit_compile,
        "train.train_steps": 3,
    })
    with caplog.at_level(logging.WARNING):
        capture, results = _run(_config(**overrides), str(tmp_path))
    # bfloat16 on a CPU without its instructions (emulated, slow) is announced.
    emulated = precision == "mixed_bfloat16" and devices.cpu_bfloat16_instructions() == []
    assert any("bfloat16 is emulated" in r.getMessage() for r in caplog.records) is emulated
    model = capture.controller.task.model
    compute = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}.get(
        precision, "float32"
    )
    assert {layer.compute_dtype for layer in model.layers[1:-1]} >= {compute}
    assert model.output.dtype == "float32"
    assert math.isfinite(results["test"]["loss"])
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    resumed, _ = _restored_task(_config(**overrides), str(tmp_path))
    assert resumed.step == 3
    for a, b in zip(resumed.optimizer.variables, capture.controller.task.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_measure_step_throughput_runs_the_training_step():
    run = training.create_task(_config(**tiny_overrides()))
    for kwargs in (dict(num_steps=0), dict(num_steps=2.5), dict(warmup_steps=-1)):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            run.measure_step_throughput(**kwargs)
    before = [v.numpy().copy() for v in run.model.trainable_variables]
    assert run.measure_step_throughput(num_steps=3, warmup_steps=1) > 0
    assert run.step == 4  # the task's own step ran 1 + 3 times
    after = run.model.trainable_variables
    assert all(not np.array_equal(b, a.numpy()) for b, a in zip(before, after))


# ----------------------------------------------------------------------------
# The controller's callbacks and the progress lines.


class _Events(training.Callback):
    """Records every callback event of a run."""

    def __init__(self):
        self.events = []

    def on_train_begin(self, controller):
        self.events.append(("train_begin", controller.step))

    def on_train_batch_begin(self, controller, step):
        self.events.append(("batch_begin", step))

    def on_train_batch_end(self, controller, step, logs):
        assert set(logs) == {"loss", "reg_loss", "correct", "count", "grad_norm", "seconds"}
        self.events.append(("batch_end", step))

    def on_evaluate_begin(self, controller, split):
        self.events.append(("evaluate_begin", split, controller.step))

    def on_evaluate_end(self, controller, split, metrics):
        self.events.append(("evaluate_end", split, controller.step))

    def on_step_end(self, controller, step, logs):
        self.events.append(("step_end", step, tuple(sorted(logs))))

    def on_checkpoint_begin(self, controller, checkpoint, step):
        self.events.append(("checkpoint_begin", checkpoint, step))

    def on_checkpoint_end(self, controller, checkpoint, step, path):
        assert path.endswith(f"-{step}")
        self.events.append(("checkpoint_end", checkpoint, step))

    def on_train_end(self, controller, results):
        self.events.append(("train_end", results["train_steps"]))


def test_callbacks_see_every_event_in_the_documented_order(tmp_path, capsys):
    events = _Events()
    config = _config(**tiny_overrides(**{
        "train.train_steps": 4, "train.eval_every_steps": 2,
        "train.checkpoint_every_steps": 3, "train.log_every_steps": 2,
    }))
    results = training.train_and_evaluate(config, str(tmp_path), callbacks=[events])
    valid = {line["step"]: line["accuracy"] for line in map(
        json.loads, open(tmp_path / "metrics.jsonl")) if line["split"] == "valid"}

    def saved(checkpoint, step):
        return [("checkpoint_begin", checkpoint, step), ("checkpoint_end", checkpoint, step)]

    expected = [("train_begin", 0)]
    for step in range(1, 5):
        expected += [("batch_begin", step - 1), ("batch_end", step)]
        if step % 2 == 0:
            expected += [("evaluate_begin", "valid", step), ("evaluate_end", "valid", step)]
        if step % 2 == 0 or step == 3:
            expected += saved("latest", step)  # The built-in callbacks come first.
        if step == 2 or (step == 4 and valid[4] > valid[2]):
            expected += saved("best", step)
        expected.append(("step_end", step, ("train", "valid") if step % 2 == 0 else ("train",)))
    expected += [("evaluate_begin", "test", 4), ("evaluate_end", "test", 4), ("train_end", 4)]
    assert events.events == expected
    assert results["best_valid"]["step"] == (4 if valid[4] > valid[2] else 2)
    # The Python API prints the same progress lines as the command line.
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (f"Training mnist_small_lrlc from step 0 to 4 "
                        f"({results['num_parameters']} parameters) in {tmp_path}.")
    assert [line.split()[1] for line in lines if line.startswith("step ")] == ["2/4", "4/4"]
    assert all("examples/s  ETA 0:00:" in line for line in lines if line.startswith("step "))
    assert [line.split(":")[0] for line in lines if line.split(" ")[1:3] == ["at", "step"]] == [
        "valid at step 2", "valid at step 4", "test at step 4"]
    best = results["best_valid"]
    assert lines[-1] == (
        f"Done: best valid accuracy {best['metrics']['accuracy']:.4f} at step {best['step']}; "
        f"test accuracy {results['test']['accuracy']:.4f} of the final model (step 4; "
        "`training.evaluate_checkpoint(model_dir)` tests the best one).")


def test_progress_false_is_silent_and_a_finished_run_trains_nothing(tmp_path, capsys):
    config = _config(**tiny_overrides(**{"train.train_steps": 2, "train.eval_every_steps": 2}))
    training.train_and_evaluate(config, str(tmp_path), progress=False)
    assert capsys.readouterr().out == ""
    events = _Events()
    training.train_and_evaluate(config, str(tmp_path), callbacks=[events], progress=False)
    assert events.events == [
        ("train_begin", 2), ("evaluate_begin", "test", 2), ("evaluate_end", "test", 2),
        ("train_end", 2),
    ]


def test_fixed_combining_weights_of_one_share_flag():
    from low_rank_local_connectivity.layers import LowRankLocallyConnected2D

    for share_row, expected in ((True, (3, 6, 1)), (False, (3, 1, 5))):
        layer = LowRankLocallyConnected2D(
            3, 2, 3, share_row_combining_weights=share_row,
            share_col_combining_weights=not share_row,
            combining_weights_initializer="random_uniform",
        )
        layer.build((None, 8, 7, 2))
        weights = summaries.fixed_combining_weights(layer)
        assert weights.shape == expected
        np.testing.assert_allclose(
            weights.reshape(3, -1).T,
            np.asarray(layer.combining_weights).reshape(-1, 3), rtol=1e-6,
        )
