"""Tests of `InputDependentCombiningWeights`, the network predicting the weights.

Its numbers are checked inside the LRLC layer against the NumPy reference
(`test_low_rank_locally_connected2d.py`); here its structure and serialisation.
"""

import keras
import numpy as np
import pytest

from low_rank_local_connectivity.layers import InputDependentCombiningWeights
from tests.backend_testing import numpy
from tests.layers.lrlc_testing import images
from tests.layers.lrlc_testing import randomize


@pytest.mark.parametrize(
    "size,dilations", [(3, (1,)), (4, (1,)), (5, (1, 2)), (9, (1, 2, 4)), (17, (1, 2, 4, 8)), (2, ())]
)
def test_input_dependent_network_dilations_and_parameter_count(size, dilations):
    rank, channels = 3, 5
    network = InputDependentCombiningWeights(rank, (4, 4))
    network.build((None, size, size + 3, channels))
    assert network.dilations == dilations
    concat, hidden = (2 + len(dilations)) * rank, 6 * rank
    expected = (
        channels * rank + rank  # 1x1 projection
        + len(dilations) * (9 * rank + rank)  # depthwise 3x3
        + concat * (hidden // 2) + hidden // 2
        + (hidden // 2) * hidden + hidden
        + hidden * rank + rank
    )
    assert network.count_params() == expected


def test_input_dependent_network_is_a_serialisable_layer(tmp_path):
    network = InputDependentCombiningWeights(
        3, (5, 4), kernel_regularizer="l2", name="network"
    )
    inputs = keras.Input((9, 8, 2))
    model = keras.Model(inputs, network(inputs))
    assert tuple(model.output.shape) == (None, 5, 4, 3)
    clone = InputDependentCombiningWeights.from_config(network.get_config())
    assert clone.get_config() == network.get_config()
    randomize(network)
    path = str(tmp_path / "network.keras")
    model.save(path)
    x = images((2, 9, 8, 2))
    np.testing.assert_array_equal(numpy(keras.saving.load_model(path)(x)), numpy(model(x)))
