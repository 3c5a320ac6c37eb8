"""Tests of the LRLC layer's combining weights (`layers.lrlc_combining_weights`).

Their initial values, the row + column factorisation, the normalisations (against
the NumPy reference `lrlc_reference.np_normalize`), the views
(`combining_weights`, `get_combining_weights`) and their gradients.
"""

import math

import numpy as np
import pytest

from low_rank_local_connectivity.layers import LowRankLocallyConnected2D as LRLC
from tests.backend_testing import layer_gradients
from tests.backend_testing import numpy
from tests.layers.lrlc_reference import np_conv
from tests.layers.lrlc_reference import np_normalize
from tests.layers.lrlc_testing import ATOL
from tests.layers.lrlc_testing import images
from tests.layers.lrlc_testing import make_lrlc
from tests.layers.lrlc_testing import randomize
from tests.layers.lrlc_testing import run


# -- Initial weights and factorisation -----------------------------------------


def test_conv_init_is_a_convolution_with_the_mean_basis():
    layer = LRLC(4, 6, 3, padding="same", use_bias=False, use_spatial_bias=False)
    x = images((2, 8, 8, 3))
    layer.build(x.shape)
    kernel = numpy(layer.kernel_bases).reshape(3, 3, 3, 4, 6).mean(axis=3)
    np.testing.assert_allclose(
        numpy(layer.combining_weights), np.full((8, 8, 4), 0.25), atol=1e-7
    )
    np.testing.assert_allclose(
        numpy(layer(x)), np_conv(x, kernel, padding="same"), atol=ATOL, rtol=0
    )
    row = numpy(layer.combining_weights_row)
    np.testing.assert_allclose(row, 0.5 / math.sqrt(4))  # row + col = 1/sqrt(K)


def test_conv_init_without_factorisation_is_one_over_sqrt_rank():
    layer = make_lrlc("full", spatial_rank=4)
    layer.build((1, 6, 6, 2))
    np.testing.assert_allclose(layer.combining_weights_table, 0.5)


def test_row_col_sharing_equals_full_table_of_sums():
    x = images((2, 9, 7, 3))
    shared = make_lrlc("row_col")
    full = make_lrlc("full", use_spatial_bias=False)
    shared.build(x.shape)
    full.build(x.shape)
    randomize(shared)
    row = numpy(shared.combining_weights_row)
    col = numpy(shared.combining_weights_col)
    full.kernel_bases.assign(shared.kernel_bases)
    full.bias.assign(shared.bias)
    full.combining_weights_table.assign(row[:, None, :] + col[None, :, :])
    spatial_bias = numpy(shared.spatial_bias_row) + numpy(shared.spatial_bias_col)
    np.testing.assert_allclose(
        numpy(shared(x)), numpy(full(x)) + spatial_bias, atol=ATOL, rtol=0
    )


# -- Normalisation and views ---------------------------------------------------


@pytest.mark.parametrize("mode", ["row_col", "row_only", "col_only", "full"])
def test_normalizations(mode):
    x = images((1, 8, 8, 2))
    layers_by_norm = {}
    for normalization in ("softmax", "norm", ""):
        layer = make_lrlc(mode, spatial_rank=5, normalize_weights=normalization)
        layer.build(x.shape)
        randomize(layer, seed=7)
        layers_by_norm[normalization] = numpy(layer.combining_weights)
    np.testing.assert_allclose(layers_by_norm["softmax"].sum(-1), 1.0, atol=1e-6)
    assert (layers_by_norm["softmax"] > 0).all()
    np.testing.assert_allclose(
        np.linalg.norm(layers_by_norm["norm"], axis=-1), 1.0, atol=1e-6
    )
    raw = layers_by_norm[""]
    np.testing.assert_allclose(np_normalize(raw, "softmax"), layers_by_norm["softmax"], atol=1e-6)
    np.testing.assert_allclose(np_normalize(raw, "norm"), layers_by_norm["norm"], atol=1e-6)
    assert np.abs(raw.sum(-1) - 1).max() > 0.1  # untouched


@pytest.mark.parametrize(
    "mode,shape", [("row_col", (6, 5, 3)), ("row_only", (6, 3)), ("col_only", (5, 3)), ("full", (6, 5, 3))]
)
def test_combining_weights_shape_and_batched_view(mode, shape):
    layer = make_lrlc(mode)
    x = images((4, 8, 7, 2))
    layer.build(x.shape)
    randomize(layer)
    assert tuple(layer.combining_weights.shape) == shape
    batched = numpy(layer.get_combining_weights(x))
    assert batched.shape == (4, 6, 5, 3)
    expanded = numpy(layer.combining_weights)
    if mode == "row_only":
        expanded = expanded[:, None, :]
    elif mode == "col_only":
        expanded = expanded[None, :, :]
    np.testing.assert_allclose(batched, np.broadcast_to(expanded, batched.shape), atol=1e-7)


def test_combining_weights_property_raises_in_input_dependent_mode():
    layer = make_lrlc("input_dependent")
    layer.build((1, 8, 8, 2))
    with pytest.raises(ValueError, match="get_combining_weights"):
        layer.combining_weights
    with pytest.raises(ValueError, match="needs `inputs`"):
        layer.locally_connected_kernel()


def test_input_dependent_weights_differ_per_example():
    layer = make_lrlc("input_dependent")
    x = images((3, 12, 12, 3))
    layer.build(x.shape)
    randomize(layer)
    weights = numpy(layer.get_combining_weights(x))
    assert weights.shape == (3, 10, 10, 3)
    assert np.abs(weights[0] - weights[1]).max() > 1e-3
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    # A batch gives each example the same output as on its own.
    single = np.concatenate([run(layer, x[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(run(layer, x), single, atol=ATOL, rtol=0)


@pytest.mark.parametrize("rank", [1, 3])
@pytest.mark.parametrize("normalize_weights", ["softmax", "norm", ""])
def test_every_trainable_variable_gets_a_gradient(rank, normalize_weights):
    layer = make_lrlc("row_col", spatial_rank=rank, normalize_weights=normalize_weights)
    x = images((2, 7, 7, 2))
    layer.build(x.shape)
    upstream = images((2, 5, 5, 4), seed=2)
    gradients = layer_gradients(layer, x, upstream)[2:]
    assert len(gradients) == len(layer.trainable_variables) == 6
    assert all(g is not None for g in gradients)
    if rank == 1 and normalize_weights == "softmax":  # the weight is always 1
        np.testing.assert_array_equal(gradients[1], 0.0)
