r"""Trains and evaluates an experiment in a model_dir (resumes if it exists).

Usage (the preset after the colon is required):

    lrlc-train \
        --config=low_rank_local_connectivity/configs/experiment.py:mnist_small_lrlc \
        --config.train.train_steps=600 \
        --model_dir=runs/mnist_small_lrlc

Any config field can be overridden with `--config.<field>=<value>` (see
`low_rank_local_connectivity/configs/experiment.py`); the presets of real
datasets download them with `--config.dataset.download=True`. Progress lines
(step, loss, accuracy, examples/s, ETA) go to the log; results land in
`<model_dir>/results.json`. `--verbose` shows TensorFlow's own messages too.
Exit status: 0 on success, 1 with a one-line `error:` message for an invalid
flag, preset or config, missing or corrupted data, a NaN/Inf loss, a
`model_dir` in use by another trainer or holding another experiment,
unreadable checkpoints or a failed write (see `training.TrainerError`).
"""

import re
import sys

from absl import flags
from ml_collections import config_flags

from low_rank_local_connectivity import data
from low_rank_local_connectivity import training
from low_rank_local_connectivity.cli import startup

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Experiment config file and preset, e.g. "
    "low_rank_local_connectivity/configs/experiment.py:mnist_lrlc.",
    lock_config=True,
)
_MODEL_DIR = flags.DEFINE_string(
    "model_dir", None, "Directory of the run (checkpoints, summaries, results)."
)
flags.mark_flags_as_required(["config", "model_dir"])


def _unknown_field_message(error, argv):
    """'unknown config field ...' naming the override and a close field."""
    # ml_collections raises KeyError("'train_step'\nDid you mean "train_steps"
    # instead of "train_step"?"), sometimes inside an AttributeError.
    key_error = error if isinstance(error, KeyError) else error.__context__
    text = str(key_error.args[0]) if isinstance(key_error, KeyError) else str(error)
    key = text.splitlines()[0].strip("'\"")
    suggestion = re.search(r'Did you mean "([^"]+)"', text)
    for arg in argv[1:]:
        path = arg[2:].split("=", 1)[0] if arg.startswith("--config.") else ""
        if key in path.split("."):
            message = f"unknown config field {path} ({arg})"
            if suggestion:
                fixed = [suggestion.group(1) if part == key else part
                         for part in path.split(".")]
                message += f"; did you mean {'.'.join(fixed)}?"
            return message
    return f"unknown config field {key!r}"


def parse_flags(argv):
    """Parses flags; any error (bad flag, preset or override) is one line."""
    try:
        return flags.FLAGS(argv)
    except Exception as error:  # config_flags raises many exception types.
        if isinstance(error, (AttributeError, KeyError)):
            detail = _unknown_field_message(error, argv)
        else:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            raised = [line for line in lines if re.match(r"\w+Error: ", line)]
            detail = (
                f"{lines[0].split(':')[0]}: {raised[-1].split(': ', 1)[1]}"
                if raised else (lines[0] if lines else type(error).__name__)
            )
        sys.exit(f"error: {detail}")


def main(argv):
    del argv  # Flags only (`startup.run` refuses positional arguments).
    try:
        training.train_and_evaluate(_CONFIG.value, _MODEL_DIR.value)
    except data.DataNotFoundError as error:
        sys.exit(f"error: {' '.join(str(error.named_for('--config.dataset.')).split())}")
    except (TypeError, ValueError, training.TrainerError) as error:
        sys.exit(f"error: {' '.join(str(error).split())}")


def run():
    """The `lrlc-train` command."""
    startup.run(main, flags_parser=parse_flags)
