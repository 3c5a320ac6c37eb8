"""The run directory (`model_dir`) as a file format: its layout and its records.

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

This module knows the names and the JSON formats, and nothing else: it imports
neither TensorFlow nor the models. JSON files are written to a temporary file
and renamed. What is inside a checkpoint is `checkpointing.py`'s business;
`runs.open_run` is the facade that reads a whole run.
"""

import contextlib
import dataclasses
import json
import os

from low_rank_local_connectivity import fileio
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
# The checkpoints of a run by name: 'best' in BEST_DIR, 'latest' in CHECKPOINT_DIR.
CHECKPOINT_DIRS = {"best": BEST_DIR, "latest": CHECKPOINT_DIR}
CHECKPOINTS = tuple(CHECKPOINT_DIRS)


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
        with fileio.open_file(tmp, "w") as f:
            f.write(text)
        fileio.rename(tmp, path)
    except fileio.io_errors() as error:
        with contextlib.suppress(*fileio.io_errors()):
            fileio.remove(tmp)
        raise errors.ModelDirWriteError(
            f"Could not write {path} ({errors.one_line(error)}); its previous "
            "version is intact. Free disk space or make the directory "
            "writable, then rerun to resume."
        ) from None
    return path


def atomic_write_json(path, value):
    """`atomic_write_text` of `value` as indented JSON."""
    return atomic_write_text(path, json.dumps(value, indent=2) + "\n")


def read_json(path):
    """The parsed JSON file `path`, or None when it is absent."""
    if not fileio.exists(path):
        return None
    with fileio.open_file(path) as f:
        return json.load(f)


def read_json_lines(path):
    """The JSON lines of `path` (a list, empty when the file is absent)."""
    if not fileio.exists(path):
        return []
    with fileio.open_file(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_json_lines(path, lines):
    atomic_write_text(path, "".join(json.dumps(line) + "\n" for line in lines))


def best_of(evaluations, up_to_step=None):
    """The best validation of evaluation lines (highest accuracy, earliest step).

    Args:
        evaluations: lines of `metrics.jsonl` (dicts with step, split, metrics).
        up_to_step: optional int, ignore later evaluations.

    Returns:
        dict(step=..., metrics=...), the format of `best.json`, or None.
    """
    best = None
    for line in evaluations:
        if line["split"] != "valid" or (up_to_step is not None and line["step"] > up_to_step):
            continue
        metrics = {k: v for k, v in line.items() if k not in ("step", "split")}
        if best is None or metrics["accuracy"] > best["metrics"]["accuracy"]:
            best = dict(step=line["step"], metrics=metrics)
    return best


class RunDirectory:
    """The files of one `model_dir`.

    Args:
        model_dir: str, the directory.
    """

    def __init__(self, model_dir):
        self.model_dir = os.fspath(model_dir)

    def path(self, *names):
        return os.path.join(self.model_dir, *names)

    def checkpoint_dir(self, checkpoint):
        """The directory of the 'latest' or 'best' checkpoints."""
        return self.path(CHECKPOINT_DIRS[checkpoint])

    def has_checkpoints(self):
        """Whether `checkpoints/` holds anything but its `corrupted/` folder."""
        directory = self.checkpoint_dir("latest")
        return fileio.isdir(directory) and any(
            name != CORRUPTED_DIR for name in fileio.listdir(directory)
        )

    def makedirs(self):
        fileio.makedirs(self.model_dir)

    def saved_config(self):
        """The `config.json` of the directory as a dict, or None."""
        return read_json(self.path(CONFIG_FILE))

    def write_config(self, config):
        """Writes `config.json` from an `ml_collections.ConfigDict`."""
        atomic_write_text(
            self.path(CONFIG_FILE), config.to_json_best_effort(indent=2, sort_keys=True)
        )

    def saved_metadata(self):
        """The `metadata.json` of the directory as a dict, or None."""
        return read_json(self.path(METADATA_FILE))

    def write_metadata(self, metadata):
        """Writes `metadata.json` from a `DatasetMetadata` dataclass."""
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

    def read_best(self):
        """The content of `best/best.json`, or None."""
        return read_json(self.path(BEST_DIR, BEST_FILE))

    def write_best(self, best):
        atomic_write_text(self.path(BEST_DIR, BEST_FILE), json.dumps(best, indent=2))

    def read_results(self):
        """The content of `results.json`, or None."""
        return read_json(self.path(RESULTS_FILE))

    def write_results(self, results):
        atomic_write_text(self.path(RESULTS_FILE), json.dumps(results, indent=2))
