"""Argument checks shared by the layers, the models and the trainer.

Every error names the argument, the value received and what is allowed.
"""

import keras
import numpy as np

DATA_FORMATS = ("channels_last", "channels_first")


def is_int(value):
    """Whether `value` is an integer (NumPy ones included, bools excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value):
    """Whether `value` is a real number (NumPy ones included, bools excluded)."""
    return isinstance(value, (int, float, np.number)) and not isinstance(
        value, bool
    )


def invalid_argument(name, value, expected):
    """The `ValueError` of argument `name`: expected vs received."""
    return ValueError(
        f"Invalid value for argument `{name}`. Expected {expected}. "
        f"Received: {name}={value!r}"
    )


def positive_int(name, value):
    """`value` as an int if it is an integer >= 1, else a `ValueError` naming it."""
    if not is_int(value) or value < 1:
        raise invalid_argument(name, value, "a positive integer")
    return int(value)


def standardize_pair(name, value, expected="a positive integer or a tuple of 2 "
                     "positive integers"):
    """Normalises an int or a pair of positive ints to a tuple of 2 ints.

    Raises:
        ValueError: (`invalid_argument`) saying `expected`.
    """
    pair = (value, value) if is_int(value) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(is_int(v) and v >= 1 for v in pair)
    ):
        raise invalid_argument(name, value, expected)
    return tuple(int(v) for v in pair)


def standardize_choice(name, value, choices):
    """`value` (lower-cased if a string) if it is one of `choices`, else a `ValueError`."""
    normalised = value.lower() if isinstance(value, str) else value
    if normalised not in choices:
        raise invalid_argument(name, value, f"one of {choices}")
    return normalised


def standardize_data_format(value):
    """A data format in `DATA_FORMATS`; None means `keras.config.image_data_format()`."""
    if value is None:
        value = keras.config.image_data_format()
    return standardize_choice("data_format", value, DATA_FORMATS)
