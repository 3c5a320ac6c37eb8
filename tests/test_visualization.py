"""Tests of the combining-weight heat maps."""

import os

import keras
import matplotlib.figure
from matplotlib import image as mpimg
import numpy as np
import pytest

from low_rank_local_connectivity import experiments
from low_rank_local_connectivity import layers
from low_rank_local_connectivity import run_visualization
from low_rank_local_connectivity import visualization


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _model(layer, shape=(9, 8, 2)):
    inputs = keras.Input(shape=shape)
    hidden = keras.layers.Conv2D(3, 1, name="stem")(inputs)
    outputs = layer(hidden)
    return keras.Model(inputs, outputs)


def test_fixed_combining_weights_match_numpy_softmax():
    layer = layers.LowRankLocallyConnected2D(3, 4, 3, name="lrlc")
    model = _model(layer)
    rng = np.random.default_rng(0)
    row = rng.normal(size=(7, 3))
    col = rng.normal(size=(6, 3))
    layer.combining_weights_row.assign(row)
    layer.combining_weights_col.assign(col)
    images = rng.normal(size=(2, 9, 8, 2)).astype(np.float32)

    weights = visualization.combining_weights(model, layer, images)

    expected = np.moveaxis(_softmax(row[:, None, :] + col[None, :, :]), -1, 0)
    assert weights.shape == (3, 7, 6)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)
    assert visualization.lrlc_layers(model) == [layer]


def test_input_dependent_combining_weights_are_per_example():
    layer = layers.LowRankLocallyConnected2D(
        2, 4, 3, input_dependent=True, share_row_combining_weights=False,
        share_col_combining_weights=False, name="lrlc",
    )
    model = _model(layer)
    rng = np.random.default_rng(1)
    images = rng.normal(size=(3, 9, 8, 2)).astype(np.float32)

    weights = visualization.combining_weights(model, layer, images)

    assert weights.shape == (3, 2, 7, 6)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    # The layer's input is the stem's output: same weights from the layer itself.
    stem = model.get_layer("stem")(images)
    direct = keras.ops.convert_to_numpy(layer.get_combining_weights(stem))
    np.testing.assert_allclose(weights, np.moveaxis(direct, -1, 1), rtol=1e-5)
    assert not np.allclose(weights[0], weights[1])


def test_combining_weights_rejects_non_lrlc_layer_and_empty_batch():
    layer = layers.LowRankLocallyConnected2D(2, 4, 3, name="lrlc")
    model = _model(layer)
    with pytest.raises(TypeError, match="`layer`"):
        visualization.combining_weights(model, model.get_layer("stem"), np.zeros((1, 9, 8, 2)))
    with pytest.raises(ValueError, match="`images`"):
        visualization.combining_weights(model, layer, np.zeros((0, 9, 8, 2)))


def test_plot_combining_weights_writes_decodable_pngs(tmp_path):
    rng = np.random.default_rng(2)
    fixed = str(tmp_path / "fixed.png")
    visualization.plot_combining_weights(rng.random((4, 7, 6)), fixed, title="t")
    per_image = str(tmp_path / "per_image.png")
    visualization.plot_combining_weights(
        rng.random((4, 1, 7, 6)), per_image, images=rng.random((4, 9, 8, 1))
    )
    fixed_png, per_image_png = mpimg.imread(fixed), mpimg.imread(per_image)
    # 4 maps in one row: wider than tall; 4 rows of an image and a map: taller.
    assert fixed_png.shape[1] > fixed_png.shape[0]
    assert per_image_png.shape[0] > per_image_png.shape[1]
    with pytest.raises(ValueError, match="`weights`"):
        visualization.plot_combining_weights(np.zeros((7, 6)), fixed)
    with pytest.raises(ValueError, match="`images`"):
        visualization.plot_combining_weights(
            np.zeros((3, 2, 7, 6)), fixed, images=np.zeros((2, 9, 8, 1))
        )


def test_maps_have_labelled_axes_and_colour_bar(tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda figure, *args, **kwargs: saved.append(figure))
    rng = np.random.default_rng(3)
    visualization.plot_combining_weights(
        rng.random((2, 3, 7, 6)), str(tmp_path / "x.png"), images=rng.random((2, 9, 8, 1))
    )
    (figure,) = saved
    *panels, colour_bar = figure.axes
    assert colour_bar.get_ylabel() == "combining weight a[i, j, k]"
    grid = np.array(panels).reshape(2, 4)  # Per row: the image, then 3 bases.
    assert [axis.get_title() for axis in grid[0]] == [
        "input", "basis k = 1", "basis k = 2", "basis k = 3"]
    assert all(axis.get_ylabel() == "row i" for axis in grid[:, 1])
    assert all(axis.get_xlabel() == "column j" for axis in grid[-1, 1:])
    assert all(len(axis.get_xticks()) == 0 for axis in grid[:, 0])  # The images.
    assert all(len(axis.get_yticks()) > 0 for axis in grid[:, 1])


def test_visualize_model_dir_after_training(tmp_path):
    """Train 1 step of an input-dependent LRLC on the embedded data, then plot."""
    grid = experiments.get_grid(
        None, "quick", train_overrides={"train_steps": 1, "eval_every_steps": 1},
        model_overrides={"num_filters": [4, 4, 4]},
    )
    cell = experiments.Cell("mnist_small", "lrlc_input_dependent", 2, 2, 0)
    model_dir = str(tmp_path / "run")
    experiments.run_cell(cell, experiments.cell_config(cell, grid), model_dir)

    paths = run_visualization.visualize_model_dir(
        model_dir, str(tmp_path / "maps"), num_images=2
    )

    assert paths == [str(tmp_path / "maps" / "block2_lrlc.png")]
    assert os.path.getsize(paths[0]) > 0
    assert mpimg.imread(paths[0]).ndim == 3
