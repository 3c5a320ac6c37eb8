"""`.keras` files saved by earlier code still load and give the same outputs.

The fixtures in `tests/fixtures/layers/` were written by `tools/make_layer_fixtures.py`
(every LRLC combining-weights mode and normalisation, per-basis kernels,
channels_first, `LocallyConnected2D`, `CoordinateChannels` and two full preset
models). They pin the registered serialisation names, the configs, the variables
and the numbers of the layers across refactorings.
"""

import pathlib

import keras
import numpy as np
import pytest

# Importing the layers registers their classes for deserialisation.
from low_rank_local_connectivity import layers  # noqa: F401
from tests.backend_testing import numpy

FIXTURES_DIR = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "layers"
OUTPUTS = np.load(FIXTURES_DIR / "outputs.npz")
NAMES = sorted({key.split("/")[0] for key in OUTPUTS.files})


def test_every_saved_model_has_its_outputs():
    saved = sorted(path.stem for path in FIXTURES_DIR.glob("*.keras"))
    assert saved == NAMES
    assert len(NAMES) == 14


@pytest.mark.parametrize("name", NAMES)
def test_saved_model_loads_with_the_same_outputs(name):
    """Within 1e-5 (outputs of order 1): the kernels of another CPU or backend
    sum in other orders than those that saved them (an AVX2-only CPU differs by
    up to 1.3e-6 on TensorFlow), while a changed layer differs by far more."""
    model = keras.saving.load_model(FIXTURES_DIR / f"{name}.keras")
    atol = 1e-5
    np.testing.assert_allclose(
        numpy(model(OUTPUTS[f"{name}/x"])), OUTPUTS[f"{name}/y"], atol=atol, rtol=0
    )
