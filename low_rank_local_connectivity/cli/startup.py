"""Start-up shared by the package's commands: quiet TensorFlow, help, signals.

The commands are the console scripts `COMMANDS` (`lrlc-train`, ...), installed
with the package, and their `scripts/*.py` wrappers for a checkout. When the
process is one of them (`is_command_line`), the package's `__init__` calls
`quiet_start()` before anything imports TensorFlow. By default it drops the
start-up and runtime messages of TensorFlow, TensorFlow Datasets and absl that
tell a user nothing (the absl pre-initialisation banner, the oneDNN and
CPU-instruction notices, the missing-CUDA notices of a CPU-only machine,
checkpoint sharding timings, ...) and keeps every other line, the commands' own
progress lines included. TensorFlow's own INFO log records are dropped; its
warnings and errors are kept. `--verbose` (or the environment variable
`LRLC_VERBOSE=1`, which also reaches child processes) keeps everything. In any
other process (a user's program importing the package) nothing is changed.

`run(main)` replaces `absl.app.run`: `--help` prints the command's docstring
and flags and exits with status 0; Ctrl-C and SIGTERM end in one line.
"""

import contextlib
import importlib.util
import logging
import os
import pathlib
import re
import signal
import sys
import tempfile

from absl import app
from absl import flags

VERBOSE_ENV = "LRLC_VERBOSE"

# Console script -> the `cli` module it runs.
COMMANDS = {
    "lrlc-train": "train",
    "lrlc-reproduce": "reproduce",
    "lrlc-export": "export",
    "lrlc-finetune": "finetune",
    "lrlc-visualize": "visualize",
    "lrlc-quickstart": "quickstart",
    "lrlc-benchmark": "benchmark",
}
# The files of `scripts/` (and, for tools, of `tools/`) that run a command.
SCRIPTS = {
    "conversion_experiment.py": None,
    "train.py": "train",
    "reproduce_paper.py": "reproduce",
    "export_saved_model.py": "export",
    "finetune_lrlc.py": "finetune",
    "visualize_combining_weights.py": "visualize",
    "quickstart.py": "quickstart",
    "benchmark.py": "benchmark",
}


def is_command_line(argv=None):
    """Whether this process runs one of the package's commands."""
    argv = sys.argv if argv is None else argv
    if not argv or not argv[0]:
        return False
    path = pathlib.Path(argv[0])
    return path.name in COMMANDS or (
        path.parent.name == "scripts" and path.name in SCRIPTS
    ) or path.parent.name == "tools"

# Messages that carry no information for a user of the scripts.
NOISE_PATTERNS = tuple(re.compile(pattern) for pattern in (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called",
    r"oneDNN custom operations are on",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"^To enable the following instructions: .* rebuild TensorFlow",
    r"Could not find cuda drivers on your machine",
    r"failed call to cuInit",
    r"Variant folder .* has no dataset_info\.json",
))

_TRUE = ("1", "true", "t", "yes", "y")
# absl's flags that print help and exit (app.run defines them).
HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml", "?")


def is_noise(line):
    """Whether a line of output is one of `NOISE_PATTERNS`."""
    return any(pattern.search(line) for pattern in NOISE_PATTERNS)


def verbose_requested(argv=None, environ=None):
    """Whether `--verbose` (the last one given) or `LRLC_VERBOSE` asks for it."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    verbose = environ.get(VERBOSE_ENV, "").strip().lower() in _TRUE
    for arg in argv[1:]:
        if arg == "--verbose":
            verbose = True
        elif arg == "--noverbose":
            verbose = False
        elif arg.startswith("--verbose="):
            verbose = arg.split("=", 1)[1].strip().lower() in _TRUE
    return verbose


def help_requested(argv):
    """Whether the command line (before any '--') asks for help."""
    for arg in argv[1:]:
        if arg == "--":
            break
        if arg.startswith("-") and arg.lstrip("-").split("=", 1)[0] in HELP_FLAGS:
            return True
    return False


@contextlib.contextmanager
def _stderr_without_noise():
    """Captures file descriptor 2 (C++ logs too); writes back what is not noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(True)
            sys.stderr.write("".join(l for l in lines if not is_noise(l)))
            sys.stderr.flush()


class _DropNoise(logging.Filter):
    """Drops noise, and the INFO records of the libraries in `package_dirs`
    (TensorFlow, Orbax) whatever API logged them."""

    def __init__(self, package_dirs):
        super().__init__()
        if isinstance(package_dirs, str):
            raise TypeError(f"package_dirs must be a list of folders, not {package_dirs!r}")
        self._package_dirs = tuple(package_dirs)

    def filter(self, record):
        if record.levelno < logging.WARNING and record.pathname.startswith(
            self._package_dirs
        ):
            return False
        return not is_noise(record.getMessage())


def _package_dir(name):
    """The folder of an installed package (None if absent), without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0] + os.sep


def quiet_start():
    """Quiets TensorFlow unless verbose; call before TensorFlow is imported.

    Under another Keras backend than TensorFlow, TensorFlow is not imported.
    Orbax's INFO records are dropped too.
    """
    if verbose_requested():
        os.environ[VERBOSE_ENV] = "1"  # Child processes too.
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Orbax (the JAX trainer's checkpoints) logs every save at INFO, JAX its
    # search for accelerators.
    package_dirs = [d for d in map(_package_dir, ("orbax.checkpoint", "jax")) if d]
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow" and (
        importlib.util.find_spec("tensorflow") is not None
    ):
        # TensorFlow logs its start-up notices, twice (two shared libraries),
        # before its log level applies; the CUDA probe of a CPU-only machine
        # logs an error.
        with _stderr_without_noise():
            import tensorflow as tf

            tf.config.list_physical_devices()
        package_dirs.append(os.path.dirname(tf.__file__) + os.sep)
    drop_noise = _DropNoise(package_dirs)
    # TFDS, Orbax and parts of TensorFlow log through absl; JAX's search for
    # accelerators through its own logger.
    for name in ("tensorflow", "absl", "jax._src.xla_bridge"):
        logging.getLogger(name).addFilter(drop_noise)


def tensorboard_hint(logdir):
    """How to view the summaries in `logdir`, with the install step if needed.

    Runs write TensorBoard summaries with TensorFlow only; without it the hint
    names the runs' `metrics.jsonl` instead.
    """
    if importlib.util.find_spec("tensorflow") is None:
        return (f"No TensorBoard summaries (they need TensorFlow): every evaluation "
                f"is in the runs' metrics.jsonl under {logdir}")
    command = f"tensorboard --logdir {logdir}"
    if importlib.util.find_spec("tensorboard") is None:
        return (f"TensorBoard summaries are in {logdir}; to view them: "
                f"pip install tensorboard && {command}")
    return f"TensorBoard: {command}"


INTERRUPTED_MESSAGE = (
    "Interrupted. Rerun the same command to resume: finished work is kept and "
    "training continues from its last checkpoint."
)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt.

    A `BaseException`, as KeyboardInterrupt is: the signal can arrive in any
    code, and an `except Exception` there (a checkpoint reader's, a library's)
    must not turn it into an error of that code (exit status 1 instead of 143).
    """


def _terminate(signum, frame):
    raise Terminated()


def print_help(module, argv):
    """The command module's docstring as written, then its flags."""
    print((module.__doc__ or "").strip() + "\n")
    if "--helpfull" in argv:
        print(flags.FLAGS.get_help())
    else:
        print(flags.FLAGS.module_help(module))
        print("\nThe flags of every module: --helpfull")


def run(main, flags_parser=None):
    """`absl.app.run(main)`, with the endings a user of a long script expects.

    - `--help` prints the script's docstring with its line breaks and its flags,
      and exits with status 0;
    - positional arguments are refused (commands take flags only);
    - Ctrl-C (SIGINT) and SIGTERM stop the script with one line saying that
      rerunning the same command resumes, exit status 130 and 143, no traceback.
      What was interrupted cleans up on the way out (a trainer releases its
      `model_dir` lock; its last checkpoint is intact).
    """
    if "verbose" not in flags.FLAGS:
        flags.DEFINE_bool(
            "verbose", False,
            f"Show every TensorFlow / TFDS / absl message (or set {VERBOSE_ENV}=1).",
        )
    if help_requested(sys.argv):
        flags.FLAGS.mark_as_parsed()
        print_help(sys.modules[main.__module__], sys.argv)
        sys.exit(0)
    signal.signal(signal.SIGTERM, _terminate)

    def checked_main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
        return main(argv)

    try:
        if flags_parser is None:
            app.run(checked_main)
        else:
            app.run(checked_main, flags_parser=flags_parser)
    except (KeyboardInterrupt, Terminated) as interruption:
        print(f"\n{INTERRUPTED_MESSAGE}", file=sys.stderr, flush=True)
        sys.exit(143 if isinstance(interruption, Terminated) else 130)
