"""The start-up every command shares (`cli/startup.py`): quiet output, help, hints."""

import importlib.util
import logging
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.conftest import noise_lines

from low_rank_local_connectivity.cli import startup as _cli

# A TensorFlow C++ log line: 'I0000 00:00:1796061753.352078    3164 port.cc:153] ...'.
_CPP_LOG_LINE = re.compile(r"^[IWEF]\d{4} ", re.MULTILINE)


@pytest.mark.parametrize("argv, environ, verbose", [
    ([], {}, False),
    (["--verbose"], {}, True),
    (["--verbose=true"], {}, True),
    (["--verbose", "--noverbose"], {}, False),
    (["--verbose=0"], {"LRLC_VERBOSE": "1"}, False),
    ([], {"LRLC_VERBOSE": "1"}, True),
    ([], {"LRLC_VERBOSE": "0"}, False),
    (["--verbosity=1"], {}, False),  # absl's own flag is another one.
])
def test_verbose_switches(argv, environ, verbose):
    assert _cli.verbose_requested(["script.py", *argv], environ) is verbose


def test_tensorboard_hint_agrees_with_the_install(monkeypatch):
    find_spec = importlib.util.find_spec
    assert _cli.tensorboard_hint("runs/q") == (
        "TensorBoard: tensorboard --logdir runs/q"
        if find_spec("tensorboard") else
        "TensorBoard summaries are in runs/q; to view them: "
        "pip install tensorboard && tensorboard --logdir runs/q"
    )
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *args: None if name == "tensorboard" else find_spec(name, *args),
    )
    assert _cli.tensorboard_hint("runs/q").endswith(
        "pip install tensorboard && tensorboard --logdir runs/q"
    )
    # Without TensorFlow no run writes summaries (a JAX run): no TensorBoard hint.
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *args: None if name in ("tensorflow", "tensorboard")
        else find_spec(name, *args),
    )
    assert _cli.tensorboard_hint("runs/q") == (
        "No TensorBoard summaries (they need TensorFlow): every evaluation is in "
        "the runs' metrics.jsonl under runs/q"
    )


def _record(pathname, level, message):
    return logging.LogRecord("absl", level, pathname, 1, message, None, None)


def test_log_filter_drops_tensorflow_info_and_known_noise():
    tensorflow_dir = "/site-packages/tensorflow/"
    drop = _cli._DropNoise([tensorflow_dir])
    kept = [
        _record(f"{tensorflow_dir}python/x.py", logging.WARNING, "a real warning"),
        _record("/repo/low_rank_local_connectivity/trainer.py", logging.INFO,
                "step 2/2  loss 2.2808"),
    ]
    dropped = [
        _record(f"{tensorflow_dir}python/checkpoint/functional_saver.py",
                logging.INFO, "Sharding callback duration: 26 microseconds"),
        _record("/site-packages/tensorflow_datasets/core/utils/file_utils.py",
                logging.WARNING,
                "Variant folder /x/mnist/3.0.1 has no dataset_info.json"),
    ]
    assert [drop.filter(r) for r in kept + dropped] == [True, True, False, False]


def _missing_export(tmp_path, *flags, **environ):
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", _cli.VERBOSE_ENV)}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "export_saved_model.py"),
         f"--model_dir={tmp_path / 'missing'}", *flags],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env=dict(env, **environ),
    )


@pytest.mark.parametrize("argv0, command", [
    ("/venv/bin/lrlc-train", True),
    ("scripts/train.py", True),
    ("/repo/scripts/reproduce_paper.py", True),
    ("/repo/tools/fault_campaign.py", True),
    ("/usr/bin/python", False),
    ("/home/me/train.py", False),  # A user's own script of the same name.
    ("", False),
])
def test_only_the_package_commands_are_quieted(argv0, command):
    assert _cli.is_command_line([argv0]) is command


def test_installed_command_is_quiet_and_its_help_exits_zero(tmp_path):
    command = os.path.join(os.path.dirname(sys.executable), "lrlc-export")
    if not os.path.exists(command):
        pytest.skip(f"{command} is not installed (pip install -e . installs it)")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    missing = subprocess.run([command, f"--model_dir={tmp_path / 'missing'}"],
                             capture_output=True, text=True, timeout=240, env=env)
    assert missing.returncode == 1
    (line,) = missing.stderr.splitlines()
    assert line.startswith("error: Invalid value for argument `model_dir`")
    help_ = subprocess.run([command, "--help"], capture_output=True, text=True,
                           timeout=240, env=env)
    assert help_.returncode == 0 and help_.stdout.startswith("Exports a trained run")


def test_scripts_are_quiet_unless_asked(tmp_path):
    quiet = _missing_export(tmp_path)
    assert quiet.returncode == 1
    (line,) = quiet.stderr.splitlines()  # TensorFlow was imported: no noise.
    assert line.startswith("error: Invalid value for argument `model_dir`")

    verbose = _missing_export(tmp_path, "--verbose")
    assert verbose.returncode == 1 and line in verbose.stderr
    assert _CPP_LOG_LINE.search(verbose.stderr) or noise_lines(verbose.stderr), (
        verbose.stderr)


@pytest.mark.parametrize("argv, requested", [
    (["--help"], True),
    (["--helpfull"], True),
    (["-?"], True),
    (["--helpshort"], True),
    (["--output_dir=help"], False),
    (["--", "--help"], False),
    ([], False),
])
def test_help_requested(argv, requested):
    assert _cli.help_requested(["script.py", *argv]) is requested

