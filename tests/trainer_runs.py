"""Trainer runs in child processes (`tools/child_run.py`), for tests that need a
fresh TensorFlow runtime.

A child trains one experiment (`child_spec`: preset, flattened overrides,
model_dir) and saves its final weights, optimizer slots and results under the
spec's `out` prefix, so that tests can compare runs bit for bit: SIGKILL and
resume, MirroredStrategy, multiple workers, determinism.
"""

import json
import os
import signal
import subprocess
import time

import numpy as np

from tools import child_run

REPO_ROOT = child_run.REPO_ROOT


def start_child(spec, env_extra=None):
    """Starts a child running `spec`; its output goes to `<out>.log`."""
    return child_run.start(spec, spec["out"] + ".log", env_extra)


def wait_child(process, spec, timeout=240):
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        code = "timeout"
    log = open(spec["out"] + ".log").read()
    assert code == 0, f"child exited with {code}:\n{log[-4000:]}"


def load_outputs(out):
    weights = np.load(out + ".npz")
    optimizer = np.load(out + "_opt.npz")
    info = json.load(open(out + ".json"))
    return [weights[k] for k in weights.files], [optimizer[k] for k in optimizer.files], info


class StartOfRun:
    """A callback keeping the controller and the step a run (re)started from."""

    controller = step = None

    def on_train_begin(self, controller):
        self.controller, self.step = controller, controller.step


def train_quietly(config, model_dir, **kwargs):
    """`train_and_evaluate` without progress lines -> (StartOfRun, results)."""
    from low_rank_local_connectivity import training

    start = StartOfRun()
    results = training.train_and_evaluate(
        config, str(model_dir), callbacks=[start, *kwargs.pop("callbacks", ())],
        progress=False, **kwargs)
    return start, results


def tiny_overrides(**extra):
    """Flattened config overrides of a small, fast variant of the paper's
    network on the embedded dataset (8 filters, no global pooling, 6 steps)."""
    overrides = {
        "model.num_filters": (8, 8, 8),
        "model.global_avg_pooling": False,
        "train.batch_size": 32,
        "train.eval_batch_size": 300,
        "train.train_steps": 6,
        "train.eval_every_steps": 3,
        "train.log_every_steps": 3,
        "train.checkpoint_every_steps": 3,
    }
    overrides.update(extra)
    return overrides


def child_spec(tmp_path, name, overrides, **extra):
    return dict(
        preset="mnist_small_lrlc",
        overrides=overrides,
        model_dir=str(tmp_path / name),
        out=str(tmp_path / name) + "_out",
        **extra,
    )


def kill_and_resume(tmp_path, overrides, hang_after_step):
    """Trains `overrides` straight and, beside it, SIGKILLed after a step, resumed.

    Returns the two specs (both finished) and the newest checkpoint at the kill.
    """
    straight = child_spec(tmp_path, "straight", overrides)
    killed = child_spec(tmp_path, "killed", overrides, hang_after_step=hang_after_step,
                   hang_marker=str(tmp_path / "hanging"))
    straight_process = start_child(straight)
    killed_process = start_child(killed)
    deadline = time.time() + 240
    while not os.path.exists(killed["hang_marker"]):
        assert killed_process.poll() is None, open(killed["out"] + ".log").read()[-3000:]
        assert time.time() < deadline, f"the child never reached step {hang_after_step}"
        time.sleep(0.2)
    os.kill(killed_process.pid, signal.SIGKILL)
    killed_process.wait()
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(os.path.join(killed["model_dir"], "checkpoints"))
    del killed["hang_after_step"]
    wait_child(start_child(killed), killed)
    wait_child(straight_process, straight)
    return straight, killed, latest


def assert_same_run(a, b, metrics_lines):
    """Two finished child runs agree bit for bit: weights, slots, every metric."""
    weights_a, slots_a, info_a = load_outputs(a["out"])
    weights_b, slots_b, info_b = load_outputs(b["out"])
    assert info_a["results"]["train_steps"] == info_b["results"]["train_steps"]
    assert len(weights_a) == len(weights_b) > 0 and len(slots_a) == len(slots_b) > 2
    for x, y in zip(weights_a + slots_a, weights_b + slots_b):
        np.testing.assert_array_equal(x, y)
    assert info_a["results"]["test"] == info_b["results"]["test"]
    metrics = [
        open(os.path.join(spec["model_dir"], "metrics.jsonl")).read()
        for spec in (a, b)
    ]
    assert metrics[0] == metrics[1] and metrics[0].count("\n") == metrics_lines
