"""Trainer runs in child processes, for tests that need a fresh TensorFlow runtime.

A child trains one experiment (`child_spec`: preset, flattened overrides,
model_dir) and saves its final weights, optimizer slots and results under the
spec's `out` prefix, so that tests can compare runs bit for bit: SIGKILL and
resume, MirroredStrategy, multiple workers, determinism.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time
spec = json.loads(sys.argv[1])
import tensorflow as tf
if spec.get("logical_cpus"):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * spec["logical_cpus"])
import numpy as np
from low_rank_local_connectivity import trainer
from low_rank_local_connectivity.configs import experiment
from tools import fault_injection
config = experiment.get_config(spec["preset"])
config.update_from_flattened_dict(
    {k: tuple(v) if isinstance(v, list) else v for k, v in spec["overrides"].items()})
def mark_then_hang(run):
    open(spec["hang_marker"], "w").close()
    time.sleep(600)
hang = spec.get("hang_after_step")
hooks = [fault_injection.AfterStep(hang, mark_then_hang)] if hang else []
run = trainer.Trainer(config, spec["model_dir"], hooks=hooks)
results = run.train_and_evaluate()
np.savez(spec["out"] + ".npz", *[v.numpy() for v in run.model.weights])
np.savez(spec["out"] + "_opt.npz", *[v.numpy() for v in run.optimizer.variables])
with open(spec["out"] + ".json", "w") as f:
    json.dump(dict(results=results, trainable=len(run.model.trainable_weights)), f)
"""


def start_child(tmp_path, spec, env_extra=None):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(env_extra or {})
    log = open(spec["out"] + ".log", "w")
    return subprocess.Popen(
        [sys.executable, str(script), json.dumps(spec)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path),
    )


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
    straight_process = start_child(tmp_path, straight)
    killed_process = start_child(tmp_path, killed)
    deadline = time.time() + 240
    while not os.path.exists(killed["hang_marker"]):
        assert killed_process.poll() is None, open(killed["out"] + ".log").read()[-3000:]
        assert time.time() < deadline, f"the child never reached step {hang_after_step}"
        time.sleep(0.2)
    os.kill(killed_process.pid, signal.SIGKILL)
    killed_process.wait()
    latest = tf.train.latest_checkpoint(os.path.join(killed["model_dir"], "checkpoints"))
    del killed["hang_after_step"]
    wait_child(start_child(tmp_path, killed), killed)
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
