"""Tests of mean ± standard error over seeds."""

import math

import pytest

from low_rank_local_connectivity.experiments import stats


def _oracle(values):
    """Mean and standard error written out by hand."""
    n = len(values)
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance) / math.sqrt(n)


def test_mean_and_standard_error_matches_hand_formula():
    values = [0.91, 0.93, 0.92, 0.96]
    mean, se = stats.mean_and_standard_error(values)
    expected_mean, expected_se = _oracle(values)
    assert mean == pytest.approx(expected_mean, abs=1e-12)
    assert se == pytest.approx(expected_se, abs=1e-12)


def test_mean_and_standard_error_single_and_empty():
    mean, se = stats.mean_and_standard_error([0.5])
    assert mean == 0.5 and math.isnan(se)
    with pytest.raises(ValueError, match="`values`"):
        stats.mean_and_standard_error([])


def test_format_accuracy_in_percent():
    assert stats.format_accuracy(0.97951, 0.00104) == "97.95 ± 0.10"
    assert stats.format_accuracy(0.5, math.nan) == "50.00"
