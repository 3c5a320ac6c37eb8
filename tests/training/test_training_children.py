"""Runs in child processes: SIGKILL and resume, MirroredStrategy over logical
CPUs, two local workers (`tools/child_run.py`)."""

import glob
import json
import os
import socket

import numpy as np
import pytest
import tensorflow as tf

from tests.trainer_runs import (
    assert_same_run, child_spec, kill_and_resume, load_outputs, start_child,
    tiny_overrides, wait_child,
)


@pytest.mark.slow
def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path):
    overrides = tiny_overrides(**{
        "train.train_steps": 30,
        "train.eval_every_steps": 15,
        "train.checkpoint_every_steps": 10,
        "train.log_every_steps": 10,
        "train.deterministic": True,
    })
    straight, killed, latest = kill_and_resume(tmp_path, overrides, 17)
    assert latest.endswith("ckpt-15")  # steps 16 and 17 were lost
    assert load_outputs(killed["out"])[2]["results"]["train_steps"] == 30
    assert load_outputs(killed["out"])[2]["results"]["session_steps"] == 15
    assert_same_run(straight, killed, metrics_lines=3)


@pytest.mark.slow
def test_mirrored_two_logical_cpus_matches_one_device(tmp_path):
    # Without batch norm (whose statistics are per replica) a 2-replica step
    # on the same global batch is the same computation as a 1-device step.
    overrides = tiny_overrides(**{
        "model.batch_norm": False,
        "train.train_steps": 4,
        "train.eval_every_steps": 4,
        "train.optimizer.clipnorm": 0.5,
    })
    runs = {
        strategy: child_spec(tmp_path, strategy, dict(overrides, **{
            "train.distribution_strategy": strategy}), logical_cpus=2)
        for strategy in ("default", "mirrored")
    }
    processes = {name: start_child(spec) for name, spec in runs.items()}
    for name, process in processes.items():
        wait_child(process, runs[name])
    weights_1, _, info_1 = load_outputs(runs["default"]["out"])
    weights_2, _, info_2 = load_outputs(runs["mirrored"]["out"])
    assert info_1["results"]["num_replicas"] == 1
    assert info_2["results"]["num_replicas"] == 2
    for a, b in zip(weights_1, weights_2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for info in (info_1, info_2):
        assert info["results"]["test"]["num_examples"] == 1000
        assert info["results"]["best_valid"]["metrics"]["num_examples"] == 1000
    assert info_2["results"]["test"]["accuracy"] == info_1["results"]["test"]["accuracy"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_multi_worker_two_local_workers_end_identical(tmp_path):
    overrides = tiny_overrides(**{
        "train.train_steps": 4,
        "train.eval_every_steps": 2,
        "train.checkpoint_every_steps": 2,
        "train.distribution_strategy": "multi_worker_mirrored",
    })
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    specs, processes = [], []
    for index in range(2):
        spec = child_spec(tmp_path, "run", overrides)
        spec["out"] = str(tmp_path / f"worker{index}")
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        specs.append(spec)
        processes.append(
            start_child(spec, {"TF_CONFIG": json.dumps(tf_config)})
        )
    for process, spec in zip(processes, specs):
        wait_child(process, spec)
    (w0, s0, info0), (w1, s1, info1) = load_outputs(specs[0]["out"]), load_outputs(specs[1]["out"])
    assert info0["results"]["num_replicas"] == 2
    assert len(w0) > info0["trainable"]  # batch-norm statistics included
    for a, b in zip(w0 + s0, w1 + s1):
        np.testing.assert_array_equal(a, b)
    assert info0["results"]["test"] == info1["results"]["test"]
    assert info0["results"]["test"]["num_examples"] == 1000
    model_dir = specs[0]["model_dir"]
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("ckpt-4")
    assert json.load(open(os.path.join(model_dir, "results.json")))["train_steps"] == 4
    leftovers = [p for p in glob.glob(os.path.join(model_dir, ".workers", "**"), recursive=True)
                 if os.path.isfile(p)]
    assert leftovers == []
