"""Bad input of the campaign: command-line and config errors, bad data files,
and wrong tensors at the exported serving signature.

Each scenario returns report rows; a bad input survived when it was refused
with one clear `error:` line (exit code 1, no traceback) naming what was
wrong, before anything was written.
"""

import os
import pathlib
import shutil

from tools import campaign_report as report
from tools import campaign_runs as runs

# (name, config overrides, fragment of the error line) given to scripts/train.py.
_CLI_CASES = (
    ("unknown override key", {"train.nope": 1}, "unknown config field"),
    ("wrong type", {"train.train_steps": "abc"}, "train_steps"),
    ("negative steps", {"train.train_steps": -5}, "config.train.train_steps"),
    ("negative batch size", {"train.batch_size": -32}, "config.train.batch_size"),
)
# Not reachable from train.py flags on one CPU device / with a None field:
# the library API, through a child with the same error handling.
# (name, config overrides, fragment of the error line, extra spec keys).
_CONFIG_CASES = (
    ("batch size not divisible by replicas",
     {"train.distribution_strategy": "mirrored", "train.batch_size": 33},
     "multiple of the number of replicas", dict(logical_cpus=2)),
    ("wrong image shape for the model", {"model.input_shape": [32, 32, 1]},
     "config.model.input_shape", {}),
)


def _cli_row(name, code, stderr, ok):
    return report.row(f"CLI: {name}", 1, ok, 0, dict(
        exit=code, error=runs.error_lines(stderr) or stderr.strip()[-300:]))


def bad_cli(workspace):
    """Command-line and config errors: one line, exit code 1."""
    bad = workspace.root / "bad_cli"
    log = workspace.log("bad_cli")
    code, stderr = runs.train_cli(bad, log, overrides={}, preset="no_such_preset")
    rows = [_cli_row("unknown preset", code, stderr,
                     runs.one_line_error(code, stderr, "no_such_preset"))]
    for name, overrides, fragment in _CLI_CASES:
        code, stderr = runs.train_cli(bad, log, dict(runs.OVERRIDES, **overrides))
        rows.append(_cli_row(name, code, stderr,
                             runs.one_line_error(code, stderr, fragment)))
    code, stderr = runs.train_cli(None, log)
    rows.append(_cli_row(
        "missing --model_dir", code, stderr,
        runs.one_line_error(code, stderr, "model_dir")
        or (code != 0 and "model_dir" in stderr and "Traceback" not in stderr)))
    for name, overrides, fragment, extra in _CONFIG_CASES:
        spec = runs.spec(workspace.root / "bad_config", **extra)
        spec["overrides"].update(overrides)
        code, stderr = runs.child(spec, log)
        rows.append(report.row(
            f"Config: {name}", 1, runs.one_line_error(code, stderr, fragment), 0,
            dict(error=runs.error_lines(stderr)),
        ))
    return rows


def _damage(version, name):
    """Corrupts or removes one file of a copied MNIST; returns its path."""
    if name == "corrupted shard":
        shard = next(version.glob("mnist-train.tfrecord-*"))
        content = bytearray(shard.read_bytes())
        for i in range(len(content) // 40, len(content) // 40 + 64):
            content[i] ^= 0xFF  # In the first 8%: the 'valid' split.
        shard.write_bytes(bytes(content))
        return str(shard)
    missing = str(next(version.glob("mnist-test.tfrecord-*")))
    os.remove(missing)
    return missing


def bad_data(workspace, tfds_dir):
    """Corrupted shard and missing split of a copy of real MNIST in `tfds_dir`."""
    source = pathlib.Path(tfds_dir) / "mnist"
    if not source.is_dir():
        return [report.skipped_row("Data: corrupted shard / missing split",
                                   f"real MNIST not found at {source} (--tfds_dir)")]
    rows = []
    overrides = dict(runs.OVERRIDES, **{"train.train_steps": 4,
                                        "train.eval_every_steps": 2,
                                        "train.checkpoint_every_steps": 2,
                                        "train.eval_batch_size": 1000})
    for name, fragment in (("corrupted shard", "corrupted record"),
                           ("missing split", "is missing files")):
        slug = name.replace(" ", "_")
        data_dir = workspace.root / f"tfds_{slug}"
        shutil.copytree(source, data_dir / "mnist")
        version = next((data_dir / "mnist").iterdir())
        for path in version.iterdir():
            path.chmod(0o644)
        target = _damage(version, name)
        code, stderr = runs.train_cli(
            workspace.root / f"data_{slug}", workspace.log("bad_data"), overrides,
            preset="mnist_lrlc", extra=[f"--config.dataset.data_dir={data_dir}"])
        rows.append(report.row(
            f"Data: {name}", 1, runs.one_line_error(code, stderr, fragment, target), 0,
            dict(error=runs.error_lines(stderr)),
        ))
    return rows


def bad_serving_inputs(workspace):
    """Wrong dtype / rank / size at the exported serving signature."""
    import numpy as np
    import tensorflow as tf

    from low_rank_local_connectivity import export

    export_dir = str(workspace.ref / "export")
    raw = tf.saved_model.load(
        os.path.join(export_dir, "saved_model")).signatures["serving_default"]
    checked = export.load_serving_function(export_dir)
    good = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), np.uint8)
    ref = raw(images=tf.constant(good))["probabilities"].numpy()
    cases = [
        ("float32 tensor", tf.constant(good, tf.float32), raw),
        ("int32 tensor", tf.constant(good, tf.int32), raw),
        ("float32 NumPy array (checked loader)", good.astype(np.float32), checked),
        ("int64 NumPy array (checked loader)", good.astype(np.int64), checked),
        ("rank 3", tf.constant(good[0]), raw),
        ("rank 5", tf.constant(good[..., None]), raw),
        ("32x32 images", tf.zeros((4, 32, 32, 1), tf.uint8), raw),
        ("3 channels", tf.zeros((4, 28, 28, 3), tf.uint8), raw),
        ("27x28 images", tf.zeros((4, 27, 28, 1), tf.uint8), raw),
    ]
    rows = []
    for name, images, function in cases:
        try:
            function(images=images) if function is raw else function(images)
            refused, message = False, "answered"
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
            refused, message = True, str(error).splitlines()[0][:160]
        rows.append(report.row(f"Serving: {name}", 1, refused, 0,
                               dict(message=message)))
    same = np.array_equal(checked(good)["probabilities"].numpy(), ref)
    rows.append(report.row("Serving: valid uint8 batch answers as before", 1, same, 0,
                           {}))
    return rows
