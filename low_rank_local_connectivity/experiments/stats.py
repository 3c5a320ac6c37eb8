"""Mean ± standard error over seeds: computed, written as in the tables, judged.

A difference (a paired gain over seeds, a precision's shift) is called
separable from zero when its mean exceeds twice its standard error, and not
separable otherwise. Shared by the grid's report, figures and precision parity
and by `finetuning`.
"""

import math

import numpy as np


def mean_and_standard_error(values):
    """Mean and standard error of the mean (sample std / sqrt(n)).

    Args:
        values: non-empty sequence of floats.

    Returns:
        (mean, standard error); the standard error is NaN for one value.

    Raises:
        ValueError: if `values` is empty.
    """
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("Invalid value for argument `values`: it is empty.")
    if values.size == 1:
        return float(values[0]), math.nan
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(values.size))


def format_accuracy(mean, se):
    """'97.95 ± 0.10': an accuracy and its standard error in %, or the mean alone."""
    text = f"{100 * mean:.2f}"
    return text if math.isnan(se) else f"{text} ± {100 * se:.2f}"


def separability(mean, se):
    """'separable' when |mean| > 2 standard errors, else 'not separable'.

    One seed (a NaN standard error) is never separable.
    """
    return "separable" if not math.isnan(se) and abs(mean) > 2 * se else "not separable"
