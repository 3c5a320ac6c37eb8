"""Tests of `CoordinateChannels`."""

import numpy as np
import pytest

from low_rank_local_connectivity.layers import CoordinateChannels
from tests.layers.lrlc_testing import images
from tests.layers.lrlc_testing import run


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_coordinate_channels(data_format):
    x = images((2, 4, 3, 2))
    y = run(CoordinateChannels(data_format=data_format), x)
    assert y.shape == (2, 4, 3, 4)
    np.testing.assert_array_equal(y[..., :2], x)
    np.testing.assert_allclose(y[1, :, 0, 2], [-1, -1 / 3, 1 / 3, 1], atol=1e-6)
    np.testing.assert_allclose(y[0, 2, :, 3], [-1, 0, 1], atol=1e-6)


def test_coordinate_channels_need_a_known_size():
    with pytest.raises(ValueError, match=r"known input height and width"):
        CoordinateChannels().build((None, None, 8, 3))
