"""`train.deterministic=True` is bit-reproducible on the models users run.

Every check compares fresh processes (TensorFlow's thread pools are fixed per
process) on the DEFAULT model of each preset: 64 filters, batch norm and global
pooling, the configuration in which TensorFlow's concurrent kernel schedule used
to change the gradients' last bits. Steps are few, but every weight, every
optimizer slot and every `metrics.jsonl` value must be identical.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from low_rank_local_connectivity import models

from tools import child_run
from tests.trainer_runs import assert_same_run, child_spec, kill_and_resume, load_outputs

_SMALL_PRESETS = tuple(p for p in models.MODEL_CONFIGS if not p.startswith("resnet"))

_SHORT_RUN = {
    "train.train_steps": 4,
    "train.eval_every_steps": 4,
    "train.log_every_steps": 2,
    "train.checkpoint_every_steps": 2,
    "train.deterministic": True,
}


def test_every_small_preset_shipped_is_covered():
    assert set(_SMALL_PRESETS) == {
        "conv", "wide_conv", "locally_connected", "coord_conv", "lrlc", "lrlc_input_dependent",
    }


@pytest.mark.slow
def test_two_fresh_runs_of_each_default_model_are_bit_identical(tmp_path):
    # One process trains every preset once, a second process trains them again:
    # fresh runtimes and model_dirs, without paying 12 TensorFlow start-ups.
    runs = {
        name: [
            dict(child_spec(tmp_path, f"{name}_{preset}", _SHORT_RUN),
                 preset=f"mnist_small_{preset}")
            for preset in _SMALL_PRESETS
        ]
        for name in ("first", "second")
    }
    for specs in runs.values():
        result = subprocess.run(
            child_run.command(specs), env=child_run.environment(),
            capture_output=True, text=True, timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
    for preset, first, second in zip(_SMALL_PRESETS, runs["first"], runs["second"]):
        try:
            assert_same_run(first, second, metrics_lines=2)
        except AssertionError as error:
            raise AssertionError(f"preset {preset}: {error}") from None


@pytest.mark.slow
def test_sigkill_mid_step_on_the_default_model_resumes_bit_identical(tmp_path):
    overrides = {
        "train.train_steps": 12,
        "train.eval_every_steps": 6,
        "train.checkpoint_every_steps": 4,
        "train.log_every_steps": 4,
        "train.deterministic": True,
    }
    straight, killed, latest = kill_and_resume(tmp_path, overrides, 7)
    assert latest.endswith("ckpt-6")  # Step 7 was lost with the process.
    assert load_outputs(killed["out"])[2]["results"]["session_steps"] == 6
    assert_same_run(straight, killed, metrics_lines=3)


_RESNET_CHILD = """
import json, sys
import numpy as np
import pytest
import keras
import tensorflow as tf
from low_rank_local_connectivity import models, training
from low_rank_local_connectivity.configs import experiment
from low_rank_local_connectivity.training import distribution
distribution.enable_determinism()
config = experiment.get_config("imagenet2012_resnet50_lrlc")
config.model.num_classes, config.model.input_shape = 10, (64, 64, 3)
keras.utils.set_random_seed(0)
model = models.build_model(config.model)
optimizer = training.create_optimizer(config.train)
rng = np.random.default_rng(0)
images = tf.constant(rng.random((8, 64, 64, 3), dtype=np.float32))
labels = tf.constant(rng.integers(0, 10, 8), dtype=tf.int32)

@tf.function
def step():
    with tf.GradientTape() as tape:
        logits = model(images, training=True)
        loss = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

losses = [float(step()) for _ in range(2)]
np.savez(sys.argv[1] + ".npz", *[v.numpy() for v in model.weights],
         *[v.numpy() for v in optimizer.variables])
json.dump(losses, open(sys.argv[1] + ".json", "w"))
"""


@pytest.mark.slow
def test_resnet50_lrlc_steps_on_tiny_inputs_are_bit_identical(tmp_path):
    script = tmp_path / "resnet_child.py"
    script.write_text(_RESNET_CHILD)
    outs = [str(tmp_path / name) for name in ("first", "second")]
    for out in outs:
        result = subprocess.run([sys.executable, str(script), out], env=child_run.environment(),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    arrays = [np.load(out + ".npz") for out in outs]
    assert arrays[0].files == arrays[1].files and len(arrays[0].files) > 300
    for name in arrays[0].files:
        np.testing.assert_array_equal(arrays[0][name], arrays[1][name])
    losses = [json.load(open(out + ".json")) for out in outs]
    assert losses[0] == losses[1] and losses[0][0] != losses[0][1]


_LATE_DETERMINISM = """
import tensorflow as tf
from low_rank_local_connectivity import training
from low_rank_local_connectivity.training import distribution
tf.constant(1.0) + 1.0  # Starts TensorFlow's runtime with its default thread pools.
try:
    distribution.enable_determinism()
except training.TrainerError as error:
    print("error:", error)
else:
    print("enabled")
"""


@pytest.mark.slow
@pytest.mark.parametrize("interop_env, expected", [
    (None, "error: `config.train.deterministic=True` needs TensorFlow's inter-op"),
    ("1", "enabled"),
])
def test_determinism_after_the_runtime_started_needs_one_interop_thread(
    interop_env, expected
):
    env = child_run.environment()
    env.pop("TF_NUM_INTEROP_THREADS", None)
    if interop_env:
        env["TF_NUM_INTEROP_THREADS"] = interop_env
    result = subprocess.run([sys.executable, "-c", _LATE_DETERMINISM], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stdout
