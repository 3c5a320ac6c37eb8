"""Tests of `layers.ops` not covered by `test_gradients.py`."""

import keras
import numpy as np
import pytest

from low_rank_local_connectivity.layers import ops
from tests.backend_testing import numpy
from tests.backend_testing import requires_tensorflow
from tests.layers.lrlc_reference import np_resize_align_corners
from tests.layers.lrlc_testing import images

RESIZES = [((9, 9), (7, 7)), ((5, 8), (13, 3)), ((1, 4), (3, 1)), ((6, 6), (6, 6))]


def test_norm_normalization_of_zero_logits_is_finite():
    logits = keras.ops.zeros((2, 3))
    out = ops.normalize_combining_weights(logits, "norm")
    np.testing.assert_array_equal(numpy(out), 0.0)


@pytest.mark.parametrize("in_size,out_size", RESIZES)
def test_align_corners_resize_matches_numpy(in_size, out_size):
    x = images((1, *in_size, 2))
    rows = ops.align_corners_resize_matrix(in_size[0], out_size[0])
    cols = ops.align_corners_resize_matrix(in_size[1], out_size[1])
    ours = np.einsum("oh,bhwc->bowc", rows, x)
    ours = np.einsum("pw,bhwc->bhpc", cols, ours)
    np.testing.assert_allclose(ours, np_resize_align_corners(x, out_size), atol=1e-5)


@requires_tensorflow("TF1's resize_bilinear(align_corners=True)")
@pytest.mark.parametrize("in_size,out_size", RESIZES)
def test_numpy_resize_reference_matches_tf1(in_size, out_size):
    import tensorflow as tf

    x = images((1, *in_size, 2))
    tf1 = tf.compat.v1.image.resize_bilinear(x, out_size, align_corners=True)
    np.testing.assert_allclose(np_resize_align_corners(x, out_size), tf1, atol=1e-5)
