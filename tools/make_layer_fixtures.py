r"""Writes the saved-layer fixtures of `tests/layers/test_saved_fixtures.py`.

Each fixture is a small functional model saved as a `.keras` file by the code
of the day it was made, with random (seeded) values in every variable, and the
outputs it gave then on a fixed input. The test loads every file with today's
code and checks that the outputs have not changed, so a refactoring of the
layers that alters their registered names, their configs, their variables or
their numbers fails it.

Re-run only to add a fixture or on purpose to change the format:

    python -m tools.make_layer_fixtures

It writes `tests/fixtures/layers/<name>.keras` and `tests/fixtures/layers/outputs.npz`
(`<name>/x`, the input, and `<name>/y`, the output, for every fixture), under the
Keras backend of `KERAS_BACKEND` (the committed ones: TensorFlow).
`tests/test_backends.py` writes the same set under every backend into a temporary
folder (`write_fixtures`) and loads each under the others.
"""

import pathlib

from absl import app
from absl import flags
import keras
import numpy as np

from low_rank_local_connectivity import layers
from low_rank_local_connectivity import models

FIXTURES_DIR = pathlib.Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "layers"
OUTPUTS_FILE = "outputs.npz"

_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", str(FIXTURES_DIR), "Folder receiving the fixtures."
)


def _lrlc(share_row, share_col, **kwargs):
    kwargs.setdefault("spatial_rank", 3)
    kwargs.setdefault("filters", 4)
    kwargs.setdefault("kernel_size", 3)
    return layers.LowRankLocallyConnected2D(
        share_row_combining_weights=share_row,
        share_col_combining_weights=share_col,
        **kwargs,
    )


# name: (function returning the layer, input shape without the batch axis).
LAYER_FIXTURES = {
    "lrlc_row_col_softmax": (lambda: _lrlc(True, True), (9, 8, 3)),
    "lrlc_row_only_norm_same_strided": (lambda: _lrlc(
        True, False, normalize_weights="norm", padding="same", strides=2,
        activation="relu"), (9, 8, 3)),
    "lrlc_col_only_unnormalised_dilated": (lambda: _lrlc(
        False, True, normalize_weights="", dilations=2, use_bias=False), (9, 8, 3)),
    "lrlc_full_table": (lambda: _lrlc(
        False, False, kernel_size=(3, 2), use_spatial_bias=False,
        kernel_regularizer="l2", combining_weights_constraint="non_neg"), (9, 8, 3)),
    "lrlc_per_basis": (lambda: _lrlc(
        True, True, padding="same", kernel_size=[1, 3, (5, 3)], dilations=[1, 2, 1]),
        (9, 8, 3)),
    "lrlc_input_dependent": (lambda: _lrlc(
        False, False, input_dependent=True, padding="same",
        combining_weights_regularizer="l2"), (12, 11, 3)),
    "lrlc_channels_first": (lambda: _lrlc(
        True, True, data_format="channels_first", strides=(1, 2)), (3, 9, 8)),
    "lrlc_input_dependent_channels_first": (lambda: _lrlc(
        False, False, input_dependent=True, normalize_weights="norm",
        data_format="channels_first"), (3, 10, 10)),
    "locally_connected": (
        lambda: layers.LocallyConnected2D(4, (3, 2), strides=(1, 2)), (9, 8, 3)),
    "locally_connected_channels_first_same": (lambda: layers.LocallyConnected2D(
        3, 3, strides=2, padding="same", data_format="channels_first",
        activation="tanh"), (2, 7, 8)),
    "coordinate_channels": (lambda: layers.CoordinateChannels(), (5, 4, 2)),
    "coordinate_channels_channels_first": (
        lambda: layers.CoordinateChannels(data_format="channels_first"), (2, 5, 4)),
}
# name: model preset built by `models.build_model` on 28x28x1 images, 10 classes.
MODEL_FIXTURES = {
    "model_lrlc": "lrlc",
    "model_lrlc_input_dependent": "lrlc_input_dependent",
}
BATCH = 2


def randomize(model, seed):
    """Seeded random values in every variable, scaled to keep outputs near 1.

    Kernels get a standard deviation of 1 / sqrt(fan-in), batch-norm variances
    values in [0.5, 1.5], every other variable (biases, combining weights,
    spatial biases, batch-norm means and scales) a standard deviation of 0.5.
    """
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if variable.path.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, size=shape)
        elif "kernel" in variable.path.rsplit("/", 1)[-1] and len(shape) >= 2:
            value = rng.normal(scale=1.0 / np.sqrt(np.prod(shape[:-1])), size=shape)
        else:
            value = rng.normal(scale=0.5, size=shape)
        variable.assign(value.astype("float32"))


def layer_model(make_layer, input_shape):
    inputs = keras.Input(input_shape, name="inputs")
    return keras.Model(inputs, make_layer()(inputs))


def preset_model(preset):
    config = models.get_model_config(preset)
    config.num_classes, config.input_shape = 10, (28, 28, 1)
    config.num_filters = (4, 6, 8)
    return models.build_model(config)


def fixture_models():
    """(name, model) of every fixture, built but not yet randomised."""
    for name, (make_layer, input_shape) in LAYER_FIXTURES.items():
        yield name, layer_model(make_layer, input_shape)
    for name, preset in MODEL_FIXTURES.items():
        yield name, preset_model(preset)


def write_fixtures(output_dir, verbose=False):
    """Saves every fixture model to `output_dir`, with the inputs and outputs file."""
    output_dir = pathlib.Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for seed, (name, model) in enumerate(fixture_models()):
        randomize(model, seed)
        x = np.random.default_rng(1000 + seed).normal(
            size=(BATCH, *model.input_shape[1:])
        ).astype("float32")
        model.save(output_dir / f"{name}.keras")
        outputs[f"{name}/x"] = x
        outputs[f"{name}/y"] = keras.ops.convert_to_numpy(model(x))
        if verbose:
            print(f"{name}: {outputs[f'{name}/y'].shape}")
    np.savez_compressed(output_dir / OUTPUTS_FILE, **outputs)


def main(argv):
    del argv
    write_fixtures(_OUTPUT_DIR.value, verbose=True)


if __name__ == "__main__":
    app.run(main)
