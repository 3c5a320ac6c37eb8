"""The run directory (`model_dir`): its layout, atomic writes and records.

A `model_dir` holds everything about a run:

- `config.json`: the resolved experiment configuration.
- `metadata.json`: the dataset metadata (class names, shapes, split sizes).
- `checkpoints/`: the last `train.keep_checkpoints` checkpoints (model,
  optimiser with its slots, step and training time); `checkpoints/corrupted/`
  holds unreadable ones moved aside.
- `best/`: the checkpoint with the best validation accuracy and `best.json`
  (its step and metrics).
- `train/`, `valid/`, `test/`: TensorBoard event files.
- `metrics.jsonl`: one JSON line per evaluation (step, split, metrics).
- `results.json`: written at the end of a run.
- `lock.json`: the lock of the trainer using the directory (`lock.py`).

JSON files are written to a temporary file and renamed. This module is the
only one that knows these names: the trainer, export, visualisation and
experiments read a run through it (`load_config`, `load_metadata`,
`load_model`, `read_results`).
"""

import contextlib
import dataclasses
import json
import os

import ml_collections
import tensorflow as tf

from low_rank_local_connectivity import models
from low_rank_local_connectivity.training import errors

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
BEST_FILE = "best.json"
LOCK_FILE = "lock.json"
CORRUPTED_DIR = "corrupted"
CHECKPOINTS = ("best", "latest")


def atomic_write_text(path, text):
    """Writes `text` to a temporary file, then renames it onto `path`.

    Returns:
        `path`.

    Raises:
        ModelDirWriteError: if the file cannot be written (the previous
            content of `path`, if any, is left untouched).
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with tf.io.gfile.GFile(tmp, "w") as f:
            f.write(text)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except (OSError, tf.errors.OpError) as error:
        with contextlib.suppress(OSError, tf.errors.OpError):
            tf.io.gfile.remove(tmp)
        raise errors.ModelDirWriteError(
            f"Could not write {path} ({errors.one_line(error)}); its previous "
            "version is intact. Free disk space or make the directory "
            "writable, then rerun to resume."
        ) from None
    return path


def read_json_lines(path):
    """The JSON lines of `path` (a list, empty when the file is absent)."""
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_json_lines(path, lines):
    atomic_write_text(path, "".join(json.dumps(line) + "\n" for line in lines))


def _read_json(path):
    """The parsed JSON file `path`, or None when it is absent."""
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


class RunDirectory:
    """The files of one `model_dir`, written by the chief of a run.

    Args:
        model_dir: str, the directory.
    """

    def __init__(self, model_dir):
        self.model_dir = model_dir

    def path(self, *names):
        return os.path.join(self.model_dir, *names)

    def saved_config(self):
        """The `config.json` of the directory as a dict, or None."""
        return _read_json(self.path(CONFIG_FILE))

    def write_config(self, config):
        """Writes `config.json` (`config_checks.warn_about_changes` says what
        changed since the saved one)."""
        atomic_write_text(
            self.path(CONFIG_FILE), config.to_json_best_effort(indent=2, sort_keys=True)
        )

    def write_metadata(self, metadata):
        """Writes `metadata.json` from a `data.DatasetMetadata`."""
        atomic_write_text(
            self.path(METADATA_FILE),
            json.dumps(dataclasses.asdict(metadata), indent=2),
        )

    def evaluations(self):
        """The lines of `metrics.jsonl` (dicts with step, split and metrics)."""
        return read_json_lines(self.path(METRICS_FILE))

    def record_evaluation(self, step, split, metrics):
        """Records one evaluation, replacing an older one of the same step and split."""
        lines = [
            line for line in self.evaluations()
            if (line["step"], line["split"]) != (step, split)
        ]
        lines.append(dict(step=step, split=split, **metrics))
        _write_json_lines(self.path(METRICS_FILE), lines)

    def truncate_evaluations(self, step):
        """Drops evaluations newer than `step` (a resumed run redoes them)."""
        lines = self.evaluations()
        kept = [line for line in lines if line["step"] <= step]
        if len(kept) != len(lines):
            _write_json_lines(self.path(METRICS_FILE), kept)

    def best_evaluation(self, up_to_step):
        """The best validation up to `up_to_step` in `metrics.jsonl`, or None.

        Returns:
            dict(step=..., metrics=...), the format of `best.json`.
        """
        best = None
        for line in self.evaluations():
            if line["split"] != "valid" or line["step"] > up_to_step:
                continue
            metrics = {k: v for k, v in line.items() if k not in ("step", "split")}
            if best is None or metrics["accuracy"] > best["metrics"]["accuracy"]:
                best = dict(step=line["step"], metrics=metrics)
        return best

    def read_best(self):
        """The content of `best/best.json`, or None."""
        return _read_json(self.path(BEST_DIR, BEST_FILE))

    def write_best(self, best):
        atomic_write_text(self.path(BEST_DIR, BEST_FILE), json.dumps(best, indent=2))

    def read_results(self):
        """The content of `results.json`, or None."""
        return _read_json(self.path(RESULTS_FILE))

    def write_results(self, results):
        atomic_write_text(self.path(RESULTS_FILE), json.dumps(results, indent=2))


def _read_run_file(model_dir, filename):
    """Parses the JSON file `filename` the trainer wrote in `model_dir`."""
    content = _read_json(os.path.join(model_dir, filename))
    if content is None:
        raise ValueError(
            f"Invalid value for argument `model_dir`. Expected a directory "
            f"with {filename} written by the trainer. Received: {model_dir!r}"
        )
    return content


def load_config(model_dir):
    """Reads the resolved config saved in `model_dir/config.json`."""
    return ml_collections.ConfigDict(_read_run_file(model_dir, CONFIG_FILE))


def load_metadata(model_dir):
    """Reads the dataset metadata saved in `model_dir/metadata.json` (a dict)."""
    return _read_run_file(model_dir, METADATA_FILE)


def read_results(model_dir):
    """The `results.json` of a run, or None when the run has not finished."""
    return RunDirectory(model_dir).read_results()


def checkpoint_path(model_dir, checkpoint="best"):
    """Resolves a checkpoint of a run.

    Args:
        model_dir: str, a run directory written by the trainer.
        checkpoint: 'best' (best validation accuracy), 'latest', or an explicit
            checkpoint prefix path.

    Returns:
        str, the checkpoint prefix.

    Raises:
        ValueError: if there is no such checkpoint.
    """
    if checkpoint in CHECKPOINTS:
        subdir = BEST_DIR if checkpoint == "best" else CHECKPOINT_DIR
        path = tf.train.latest_checkpoint(os.path.join(model_dir, subdir))
    else:
        path = checkpoint if tf.io.gfile.exists(f"{checkpoint}.index") else None
    if path is None:
        raise ValueError(
            f"Invalid value for argument `checkpoint`. Expected one of "
            f"{CHECKPOINTS} (existing in {model_dir!r}) or a checkpoint prefix. "
            f"Received: {checkpoint!r}"
        )
    return path


def restore_model(model, model_dir, checkpoint="best"):
    """Restores the model weights of a run's checkpoint into `model`.

    Args:
        model: a `keras.Model` of the run's architecture.
        model_dir, checkpoint: see `checkpoint_path`.

    Returns:
        A tuple (checkpoint path, step).

    Raises:
        ValueError: if there is no such checkpoint, or it does not hold the
            weights of `model`.
    """
    path = checkpoint_path(model_dir, checkpoint)
    step = tf.Variable(0, dtype=tf.int64)
    try:
        tf.train.Checkpoint(model=model, global_step=step).read(
            path
        ).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as error:
        raise ValueError(
            f"The checkpoint {path} does not match model {model.name!r}: "
            f"{errors.one_line(error)}"
        ) from None
    return path, int(step.numpy())


def load_model(model_dir, checkpoint="best"):
    """Rebuilds the model of a run and restores a checkpoint into it.

    The one way to load a trained model: export, visualisation and scripts use
    it. No strategy, optimiser or dataset is involved. The model is built with
    the float32 dtype policy whatever the training precision (variables are
    float32 in both cases).

    Args:
        model_dir: str, a run directory written by the trainer.
        checkpoint: see `checkpoint_path`.

    Returns:
        A tuple (keras.Model, resolved config, checkpoint path, step).

    Raises:
        ValueError: if `model_dir` is not a run directory or has no such
            checkpoint.
    """
    config = load_config(model_dir)
    model = models.build_model(config.model)
    path, step = restore_model(model, model_dir, checkpoint)
    return model, config, path, step
