"""Runs of the fault campaign: children, the command line, and the reference.

Every campaign run trains the 'mnist_small_lrlc' preset for `TRAIN_STEPS`
steps with `OVERRIDES`, either in a `tools/child_run.py` child (which takes
the faults of a spec) or through `scripts/train.py` (what users run). A
`Workspace` is the campaign's output folder: one `model_dir`, events file
and log per run, and the uninterrupted reference run of each model.
`compare` lists what a finished run lost against its reference.
"""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

from tools import child_run
from tools import fault_injection as fi

REPO_ROOT = child_run.REPO_ROOT
PRESET = "mnist_small_lrlc"
TRAIN_STEPS = 40
EVAL_EVERY = 10
# Model overrides per campaign model: the preset's default network, and a tiny
# one for the scenarios that need many quick runs.
MODELS = {
    "default": {},
    "tiny": {"model.num_filters": [8, 8, 8], "model.global_avg_pooling": False},
}
MODEL_LABELS = {"default": "default 64-filter model", "tiny": "tiny model"}
OVERRIDES = {
    **MODELS["tiny"],
    "train.batch_size": 32,
    "train.eval_batch_size": 500,
    "train.train_steps": TRAIN_STEPS,
    "train.eval_every_steps": EVAL_EVERY,
    "train.log_every_steps": 10,
    "train.checkpoint_every_steps": 5,
    "train.keep_checkpoints": 3,
    "train.deterministic": True,
}
# Seconds one child may run; a loaded 2-core machine needs minutes for the
# default model's 40 steps and export.
CHILD_TIMEOUT = 900
TIMED_OUT = "timed out"


# ----------------------------------------------------------------------------
# Child processes and the command line.


def run(args, log_path):
    """Runs a command; returns (return code, its stderr).

    A command running longer than `CHILD_TIMEOUT` is killed; its return code
    is then `TIMED_OUT`.
    """
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(args)}\n")
        log.flush()
        try:
            process = subprocess.run(
                args, env=child_run.environment(), stdout=log,
                stderr=subprocess.PIPE, text=True, timeout=CHILD_TIMEOUT,
            )
        except subprocess.TimeoutExpired as error:
            stderr = error.stderr or ""
            stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
            stderr += f"\n(killed: ran longer than {CHILD_TIMEOUT} s)\n"
            log.write(stderr)
            return TIMED_OUT, stderr
        log.write(process.stderr)
    return process.returncode, process.stderr


def child(spec, log_path):
    """Runs a `tools/child_run.py` child on `spec`; (return code, stderr)."""
    return run(child_run.command(spec), log_path)


def spec(model_dir, model="tiny", **extra):
    """The child spec of a campaign run of `model` in `model_dir`."""
    overrides = {k: v for k, v in OVERRIDES.items() if not k.startswith("model.")}
    return dict(preset=PRESET, overrides=dict(overrides, **MODELS[model]),
                model_dir=str(model_dir), record=str(model_dir) + ".events.jsonl",
                **extra)


def cli_flags(overrides, preset=PRESET):
    """`scripts/train.py` flags of a preset with config overrides."""
    flags = [f"--config={REPO_ROOT}/low_rank_local_connectivity/configs/"
             f"experiment.py:{preset}"]
    for key, value in overrides.items():
        if isinstance(value, list):
            value = "(" + ",".join(map(str, value)) + ",)"
        flags.append(f"--config.{key}={value}")
    return flags


def train_cli(model_dir, log_path, overrides=None, preset=PRESET, extra=()):
    """Runs `scripts/train.py` (no `--model_dir` when it is None)."""
    args = [sys.executable, str(REPO_ROOT / "scripts" / "train.py"),
            *cli_flags(OVERRIDES if overrides is None else overrides, preset), *extra]
    if model_dir is not None:
        args.append(f"--model_dir={model_dir}")
    return run(args, log_path)


def error_lines(stderr):
    """The `error:` lines of a child's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def one_line_error(code, stderr, *fragments):
    """Exit code 1, one `error:` line ending stderr, no traceback, fragments."""
    errors = error_lines(stderr)
    return (
        code == 1 and len(errors) == 1
        and stderr.rstrip().endswith(errors[0])
        and "Traceback" not in stderr
        and all(f in errors[0] for f in fragments)
    )


class Workspace:
    """The campaign's output folder and the reference run of each model.

    Args:
        root: pathlib.Path, an empty folder.
    """

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.refs = {model: self.root / f"reference_{model}" for model in MODELS}
        self.ref = self.refs["tiny"]

    def log(self, name):
        """The log file of the runs named `name`."""
        return str(self.root / f"{name}.log")

    def reference(self, model):
        """Trains and exports the uninterrupted reference run of `model`.

        Raises:
            RuntimeError: when it fails (nothing can be compared then).
        """
        ref = self.refs[model]
        code, stderr = child(spec(ref, model, export=True), self.log(ref.name))
        if code != 0:
            raise RuntimeError(f"the {model} reference run failed ({code}):\n"
                               f"{stderr[-3000:]}")


# ----------------------------------------------------------------------------
# Checks against the reference run.


def tensors(prefix, skip=("save_counter", "train_seconds", "_CHECKPOINTABLE")):
    """The tensors of a checkpoint, without its bookkeeping ones."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(prefix)
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if not any(s in key for s in skip)
    }


def _same_tensors(prefix, ref_prefix):
    import numpy as np

    ours, theirs = tensors(prefix), tensors(ref_prefix)
    return ours.keys() == theirs.keys() and all(
        np.array_equal(ours[k], theirs[k]) for k in ours)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def compare(model_dir, ref_dir, *, export=True):
    """Discrepancies of a finished run against the reference (a list of str)."""
    try:
        return _discrepancies(pathlib.Path(model_dir), pathlib.Path(ref_dir), export)
    except Exception as error:  # A run file that cannot be read is a discrepancy.
        return [f"could not compare with the reference: {type(error).__name__}: "
                f"{error}"[:300]]


def _discrepancies(model_dir, ref_dir, export):
    problems = []
    if not (model_dir / "results.json").exists():
        return ["no results.json"]
    results, ref = (read_json(d / "results.json") for d in (model_dir, ref_dir))
    for key in ("train_steps", "best_valid", "test", "num_parameters"):
        if results[key] != ref[key]:
            problems.append(f"results.{key} {results[key]} != {ref[key]}")
    metrics = fi.metrics_report(model_dir, TRAIN_STEPS, EVAL_EVERY)
    for key in ("missing", "duplicates", "unexpected"):
        if metrics[key]:
            problems.append(f"metrics.jsonl {key}: {metrics[key]}")
    lines, ref_lines = (fi.read_records(d / "metrics.jsonl") for d in (model_dir, ref_dir))
    if lines != ref_lines:
        problems.append("metrics.jsonl values differ from the reference")
    best, ref_best = (read_json(d / "best" / "best.json") for d in (model_dir, ref_dir))
    if best != ref_best:
        problems.append("best/best.json differs")
    for subdir in ("checkpoints", "best"):
        report = fi.checkpoint_report(str(model_dir / subdir))
        if report["partial"] or report["unreadable"]:
            problems.append(f"{subdir}: partial {report['partial']} "
                            f"unreadable {report['unreadable']}")
    for prefix in ("checkpoints/ckpt-%d" % TRAIN_STEPS,
                   "best/best-%d" % ref["best_valid"]["step"]):
        try:
            same = _same_tensors(str(model_dir / prefix), str(ref_dir / prefix))
        except Exception as error:  # Any failure to read is a discrepancy.
            problems.append(f"{prefix}: {type(error).__name__}")
            continue
        if not same:
            problems.append(f"{prefix} tensors differ from the reference")
    if (model_dir / "lock.json").exists():
        problems.append("lock.json left behind")
    if export:
        problems += _compare_export(model_dir / "export", ref_dir / "export")
    return problems


def _compare_export(export_dir, ref_export_dir):
    staging = [n for n in os.listdir(export_dir) if n.startswith(".staging")] \
        if export_dir.exists() else []
    meta = export_dir / "serving_metadata.json"
    if not meta.exists() or read_json(meta)["step"] != TRAIN_STEPS or staging:
        return [f"export incomplete (staging {staging})"]
    variables = pathlib.Path("saved_model") / "variables" / "variables"
    if not _same_tensors(str(export_dir / variables), str(ref_export_dir / variables)):
        return ["exported variables differ from the reference"]
    return []


def snapshot(directory):
    """sha256 of every file of a directory (relative path -> digest)."""
    digests = {}
    for path in sorted(pathlib.Path(directory).rglob("*")):
        if path.is_file():
            digests[str(path.relative_to(directory))] = hashlib.sha256(
                path.read_bytes()).hexdigest()
    return digests


def newest_valid_step(model_dir):
    """(newest readable checkpoint step or 0, the checkpoint report)."""
    report = fi.checkpoint_report(os.path.join(model_dir, "checkpoints"))
    return max(report["readable"], default=0), report

