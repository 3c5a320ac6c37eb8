"""Tests of the SavedModel / .keras export and of serving without this package."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO_ROOT
from tests.conftest import noise_lines
from low_rank_local_connectivity import data
from low_rank_local_connectivity import export
from low_rank_local_connectivity import training

# Loads the SavedModel and serves two batch sizes; must not import the package.
_SERVE = r"""
import json, sys
import numpy as np
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
images = np.load(sys.argv[2])
outputs = [serve(images=tf.constant(images[:3])), serve(images=tf.constant(images[3:]))]
assert not any(m.startswith("low_rank_local_connectivity") for m in sys.modules), "imported"
np.savez(sys.argv[3],
         probabilities=np.concatenate([o["probabilities"].numpy() for o in outputs]),
         classes=np.concatenate([o["classes"].numpy() for o in outputs]))
print(json.dumps({k: str(v.dtype.name) for k, v in outputs[0].items()}))
"""


def _run(args, cwd, env=None):
    env = dict(env or os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A short LRLC run trained and exported through the two scripts."""
    tmp = tmp_path_factory.mktemp("export")
    model_dir, export_dir = tmp / "run", tmp / "exported"
    trained = _run(
        [
            str(REPO_ROOT / "scripts" / "train.py"),
            f"--config={REPO_ROOT}/low_rank_local_connectivity/configs/"
            "experiment.py:mnist_small_lrlc",
            "--config.model.num_filters=(8, 8, 8)",
            "--config.train.train_steps=8",
            "--config.train.eval_every_steps=4",
            "--config.train.batch_size=32",
            f"--model_dir={model_dir}",
        ],
        cwd=tmp,
    )
    result = _run(
        [
            str(REPO_ROOT / "scripts" / "export_saved_model.py"),
            f"--model_dir={model_dir}",
            f"--export_dir={export_dir}",
        ],
        cwd=tmp,
    )
    paths = json.loads(result.stdout)
    return tmp, model_dir, paths, (trained.stdout, trained.stderr + result.stderr)


def _images(count, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28, 1), np.uint8)


def test_export_writes_best_checkpoint_files(exported):
    _, model_dir, paths, _ = exported
    best = json.load(open(model_dir / "best" / "best.json"))
    assert paths["step"] == best["step"]
    assert paths["checkpoint"].endswith(f"best-{best['step']}")
    metadata = json.load(open(paths["metadata"]))
    assert metadata["class_names"] == [str(d) for d in range(10)]
    assert metadata["input_shape"] == [28, 28, 1]
    assert metadata["input_dtype"] == "uint8"
    assert os.path.isfile(paths["keras"])
    assert os.path.isfile(os.path.join(paths["saved_model"], "saved_model.pb"))


def test_saved_model_serves_in_a_process_without_the_package(exported):
    tmp, model_dir, paths, _ = exported
    images = _images(8)
    np.save(tmp / "images.npy", images)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = tmp / "serve.py"
    script.write_text(_SERVE)
    result = _run(
        [str(script), paths["saved_model"], str(tmp / "images.npy"),
         str(tmp / "served.npz")],
        cwd=tmp, env=env,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "probabilities": "float32", "classes": "int32"
    }
    served = np.load(tmp / "served.npz")

    # Oracle: the best checkpoint restored into a freshly built model, applied
    # to images scaled to the dataset's value range by hand.
    run = training.open_run(str(model_dir))
    model, _, _ = run.load_model("best")
    low, high = run.metadata["value_range"]
    inputs = low + images.astype(np.float32) / 255.0 * (high - low)
    expected = tf.nn.softmax(model(inputs, training=False)).numpy()
    np.testing.assert_allclose(served["probabilities"], expected, atol=1e-5)
    np.testing.assert_array_equal(served["classes"], expected.argmax(1))
    np.testing.assert_allclose(served["probabilities"].sum(1), 1.0, atol=1e-5)

    reloaded = keras.saving.load_model(paths["keras"])
    np.testing.assert_allclose(
        tf.nn.softmax(reloaded(inputs)).numpy(), expected, atol=1e-6
    )


def test_export_latest_and_errors(exported, tmp_path):
    _, model_dir, _, _ = exported
    paths = export.export_model(str(model_dir), str(tmp_path), checkpoint="latest")
    assert paths["step"] == 8 and paths["checkpoint"].endswith("ckpt-8")
    with pytest.raises(ValueError, match="checkpoint.*'best', 'latest'.*'nope'"):
        export.export_model(str(model_dir), str(tmp_path), checkpoint="nope")
    with pytest.raises(ValueError, match="model_dir.*config.json"):
        export.export_model(str(tmp_path / "missing"), str(tmp_path))


def test_training_and_export_scripts_print_no_tensorflow_noise(exported):
    stdout, stderr = exported[3]
    assert noise_lines(stdout + stderr) == []
    assert "Training mnist_small_lrlc from step 0 to 8" in stdout  # Our lines stay.


@pytest.mark.parametrize("images, error, message", [
    (np.zeros((2, 28, 28, 1), np.float32), TypeError,
     r"Expected uint8 pixels. Received: float32. The export takes raw pixels in "
     r"\[0, 255\] of shape \(batch, 28, 28, 1\). Convert floats in \[0, 1\] with "
     r"\(images \* 255\).round\(\).astype\('uint8'\).$"),
    (np.zeros((2, 28, 28, 1), np.int64), TypeError, r"Received: int64\. "),
    ([[0, 1], [2, 3]], TypeError, r"Received: int32\. "),
    (np.zeros((2, 28, 28), np.uint8), ValueError,
     r"^Invalid shape for argument `images`. Expected \(batch, 28, 28, 1\). "
     r"Received: \(2, 28, 28\). Add the channel axis: images\[..., None\].$"),
    (np.zeros((28, 28, 1), np.uint8), ValueError,
     r"Received: \(28, 28, 1\). Add the batch axis: images\[None\].$"),
    (np.zeros((2, 32, 32, 1), np.uint8), ValueError, r"Received: \(2, 32, 32, 1\).$"),
], ids=["float01", "int64", "list", "no-channel", "no-batch", "32x32"])
def test_serving_function_refuses_wrong_inputs_in_one_line(exported, images, error,
                                                           message):
    serve = export.load_serving_function(os.path.dirname(exported[2]["metadata"]))
    with pytest.raises(error, match=message) as raised:
        serve(images)
    assert "\n" not in str(raised.value)


def test_serving_function_serves_the_embedded_test_images(exported):
    _, model_dir, paths, _ = exported
    serve = export.load_serving_function(os.path.dirname(paths["metadata"]))
    images, _ = data.resolve("mnist_small").arrays("test")
    served = serve(images[:8])
    model, *_ = training.open_run(str(model_dir)).load_model()
    expected = model(data.resolve("mnist_small").serving_preprocess(
        tf.constant(images[:8])), training=False)
    np.testing.assert_array_equal(served["classes"].numpy(),
                                  np.argmax(expected.numpy(), axis=1))
