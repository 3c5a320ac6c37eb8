"""Property-based test of the LRLC layer over random configurations.

Every drawn configuration (rank, kernel sizes, per-basis lists, strides, dilations,
padding, data format, share flags, normalisation, input-dependent flag, input size,
including inputs too small for the kernel) must either match the independent NumPy
reference of docs/design.md §1 or raise a ValueError that names the offending
argument -- never an internal TensorFlow error. The run is derandomised, so CI tries
the same cases every time; `pytest tests/layers/test_layer_properties.py
--hypothesis-show-statistics` prints how many were matched and how many were
rejected, and why. TensorFlow tries 150 configurations; the other backends run
the same `keras.ops` code (on JAX every new shape is a compilation) and try 50,
also derandomised: the same 50 on every run.
"""

import hypothesis
import keras
import numpy as np
from hypothesis import strategies as st

from low_rank_local_connectivity.layers import LowRankLocallyConnected2D
from tests.backend_testing import numpy
from tests.layers.lrlc_reference import np_lrlc

NUM_CASES = 150 if keras.backend.backend() == "tensorflow" else 50


def _pair_or_int(draw, low, high):
    if draw(st.booleans()):
        return draw(st.integers(low, high))
    return (draw(st.integers(low, high)), draw(st.integers(low, high)))


def _violations(kwargs, height, width):
    """Names of the arguments this configuration violates (empty when valid)."""
    as_list = lambda v: v if isinstance(v, list) else [v]  # noqa: E731
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    violated = set()
    if kwargs["input_dependent"] and (
        kwargs["share_row_combining_weights"] or kwargs["share_col_combining_weights"]
    ):
        violated.add("share_")
    per_basis = isinstance(kwargs["kernel_size"], list) or isinstance(kwargs["dilations"], list)
    if per_basis and kwargs["padding"] != "same":
        violated.add("padding")
    dilations = [pair(d) for d in as_list(kwargs["dilations"])]
    if max(pair(kwargs["strides"])) > 1 and max(max(d) for d in dilations) > 1:
        violated.add("dilations")
    if kwargs["padding"] == "valid" and not per_basis:
        (kh, kw), (dh, dw) = pair(kwargs["kernel_size"]), dilations[0]
        if height < (kh - 1) * dh + 1 or width < (kw - 1) * dw + 1:
            violated.add("kernel_size")
    return violated


@st.composite
def configurations(draw):
    rank = draw(st.integers(1, 4))
    per_basis = draw(st.sampled_from(["none", "none", "none", "sizes", "dilations"]))
    kernel_size = _pair_or_int(draw, 1, 5)
    dilated = draw(st.integers(0, 3)) == 0  # mostly undilated, so strides vary too
    dilations = _pair_or_int(draw, 1, 3) if dilated else 1
    if per_basis == "sizes" or (per_basis == "dilations" and not dilated):
        kernel_size = [_pair_or_int(draw, 1, 5) for _ in range(rank)]
    elif per_basis == "dilations":
        dilations = [_pair_or_int(draw, 1, 3) if dilated else 1 for _ in range(rank)]
    input_dependent = draw(st.booleans())
    kwargs = dict(
        spatial_rank=rank,
        filters=draw(st.integers(1, 3)),
        kernel_size=kernel_size,
        dilations=dilations,
        strides=_pair_or_int(draw, 1, 3),
        padding=draw(st.sampled_from(["valid", "same"])),
        data_format=draw(st.sampled_from(["channels_last", "channels_first"])),
        share_row_combining_weights=draw(st.booleans()),
        share_col_combining_weights=draw(st.booleans()),
        normalize_weights=draw(st.sampled_from(["softmax", "norm", ""])),
        use_spatial_bias=draw(st.booleans()),
        use_bias=draw(st.booleans()),
        input_dependent=input_dependent,
    )
    if input_dependent and draw(st.integers(0, 3)):  # mostly valid combinations
        kwargs["share_row_combining_weights"] = False
        kwargs["share_col_combining_weights"] = False
    height, width = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    channels = draw(st.integers(1, 3))
    return kwargs, (height, width, channels)


@hypothesis.settings(
    max_examples=NUM_CASES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.too_slow],
)
@hypothesis.given(configurations())
def test_random_configuration_matches_reference_or_names_the_argument(case):
    kwargs, (height, width, channels) = case
    violated = _violations(kwargs, height, width)
    x = np.random.default_rng(0).normal(size=(2, height, width, channels)).astype("float32")
    channels_first = kwargs["data_format"] == "channels_first"
    try:
        layer = LowRankLocallyConnected2D(**kwargs)
        layer.build(x.transpose(0, 3, 1, 2).shape if channels_first else x.shape)
    except ValueError as error:
        assert violated, f"unexpected error for {kwargs}: {error}"
        named = sorted(name for name in violated if name in str(error))
        assert named, f"the error names none of {violated}: {error}"
        hypothesis.event(f"rejected: names `{named[0]}`")
        return
    assert not violated, f"accepted, but violates {violated}"
    rng = np.random.default_rng(1)
    for variable in layer.weights:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))
    y = numpy(layer(x.transpose(0, 3, 1, 2) if channels_first else x))
    if channels_first:
        y = y.transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, np_lrlc(layer, x), atol=1e-4, rtol=1e-5)
    hypothesis.event("matched the NumPy reference")
