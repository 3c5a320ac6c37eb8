"""The errors that stop a run with an actionable message, and their wording."""

import re


class TrainerError(RuntimeError):
    """Base of the errors that stop a run with an actionable message."""


class NonFiniteLossError(TrainerError):
    """Raised when the training loss or the weights become NaN or infinite."""


class ModelDirLockedError(TrainerError):
    """Raised when another live trainer holds the lock of a `model_dir`."""


class ModelDirWriteError(TrainerError):
    """Raised when a checkpoint or a run file cannot be written."""


class CheckpointCorruptedError(TrainerError):
    """Raised when no checkpoint of a non-empty checkpoint directory is readable."""


class InputDataError(TrainerError):
    """Raised when the input data cannot be read (e.g. a corrupted shard)."""


class ModelDirMismatchError(TrainerError):
    """Raised when a `model_dir` holds a run of another experiment."""


def one_line(error):
    """The informative first line of an exception, prefixed with its type.

    TensorFlow's function-node prefixes, `[Op:...]` suffixes and graph
    execution boilerplate are dropped.
    """
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(error))
    text = re.sub(r"\s*\[Op:[^\]]*\]( name: \S*)?", "", text)
    lines = [  # Indented lines are stack frames and source code.
        line.strip() for line in text.splitlines()
        if line.strip() and not line.startswith((" ", "\t")) and not re.match(
            r"(Graph execution error:|Detected at node|<stack traces|\[\[)",
            line.strip(),
        )
    ]
    return f"{type(error).__name__}: {lines[0] if lines else ''}"
