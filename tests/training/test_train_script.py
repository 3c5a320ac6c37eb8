"""The command line of a run (`scripts/train.py`) and a real-MNIST run.

`scripts/quickstart.py` is checked on the README's own run of it
(tests/test_readme.py), which trains the same two short runs."""

import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest


from low_rank_local_connectivity import devices
from low_rank_local_connectivity import training
from low_rank_local_connectivity.configs import experiment

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(preset="mnist_small_lrlc", **overrides):
    config = experiment.get_config(preset)
    config.update_from_flattened_dict(overrides)
    return config


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


def test_train_script_refuses_a_model_dir_of_another_experiment(tmp_path):
    model_dir = tmp_path / "run"
    training.train_and_evaluate(_config(**{
        "model.num_filters": (4, 4, 4), "train.train_steps": 1,
        "train.eval_every_steps": 1}), str(model_dir), progress=False)
    result = _run_script(
        [str(REPO_ROOT / "scripts" / "train.py"),
         f"--config={REPO_ROOT}/low_rank_local_connectivity/configs/"
         "experiment.py:mnist_small_lrlc", "--config.model.spatial_rank=4",
         f"--model_dir={model_dir}"],
        cwd=tmp_path,
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {model_dir} holds a run of another experiment")
    # The message says what differs, with both values (not the same preset twice).
    assert "model.spatial_rank (2 there, 4 here)" in line


# ----------------------------------------------------------------------------
# Real MNIST (CI workspace only).


def test_real_mnist_short_run_reaches_95_percent(shared_tfds_dir, tmp_path):
    # The paper's all-convolution network, Adam 3e-3 with cosine decay,
    # batch 128, 600 steps (1.4 epochs): about a minute on 2 CPU cores in mixed
    # bfloat16 (the precision of the paper-scale grid). On a CPU without
    # bfloat16 instructions (AVX2 only) bfloat16 is emulated, 8-11x slower than
    # float32 there, so the run is float32 on such a CPU.
    precision = "mixed_bfloat16" if devices.cpu_bfloat16_instructions() else "float32"
    config = _config("mnist_conv", **{
        "dataset.data_dir": shared_tfds_dir,
        "train.mixed_precision": precision,
        "train.train_steps": 600,
        "train.eval_every_steps": 600,
        "train.log_every_steps": 100,
        "train.checkpoint_every_steps": 600,
        "train.optimizer.learning_rate": 3e-3,
    })
    results = training.train_and_evaluate(config, str(tmp_path))
    assert results["test"]["num_examples"] == 10_000
    assert results["best_valid"]["metrics"]["num_examples"] == 4_800
    assert results["test"]["accuracy"] >= 0.95


def _train_command(model_dir, *overrides):
    return [
        sys.executable, str(REPO_ROOT / "scripts" / "train.py"),
        f"--config={REPO_ROOT}/low_rank_local_connectivity/configs/"
        "experiment.py:mnist_small_lrlc", "--config.model.num_filters=(8, 8, 8)",
        "--config.train.log_every_steps=1", *overrides, f"--model_dir={model_dir}",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_stops_with_one_line_and_the_rerun_resumes(tmp_path, signum, code):
    model_dir = tmp_path / "run"
    process = subprocess.Popen(
        _train_command(model_dir, "--config.train.train_steps=100000",
                       "--config.train.eval_every_steps=100000",
                       "--config.train.checkpoint_every_steps=2"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), start_new_session=True,
    )
    for line in process.stdout:  # Wait until it trains.
        if line.startswith("step 3/"):
            break
    os.killpg(process.pid, signum)  # As a terminal's Ctrl-C reaches the group.
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "Interrupted. Rerun the same command to resume: finished work is kept and "
        "training continues from its last checkpoint.")
    assert not (model_dir / "lock.json").exists()  # The lock was released.
    rerun = _run_script(_train_command(
        model_dir, "--config.train.train_steps=40", "--config.train.eval_every_steps=40",
        "--config.train.checkpoint_every_steps=2")[1:], cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    start = re.search(r"from step (\d+) to 40", rerun.stdout)
    assert start and int(start.group(1)) >= 2, rerun.stdout[:500]  # Resumed.


def test_help_exits_zero_with_the_docstring_as_written(tmp_path):
    result = _run_script([str(REPO_ROOT / "scripts" / "train.py"), "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(
        "Trains and evaluates an experiment in a model_dir (resumes if it exists).\n\n"
        "Usage (the preset after the colon is required):\n")
    assert "--model_dir" in result.stdout and "--config" in result.stdout
