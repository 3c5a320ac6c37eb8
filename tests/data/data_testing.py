"""Helpers of the tests of `low_rank_local_connectivity.data`."""

import numpy as np

# Class counts of the real MNIST test split (LeCun & Cortes), an independent oracle.
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def collect(batches, max_batches=None):
    """Concatenates (image, label, mask) batches: a finite tf.data.Dataset,
    or an iterator of NumPy batches."""
    if hasattr(batches, "as_numpy_iterator"):
        if max_batches is not None:
            batches = batches.take(max_batches)
        batches = batches.as_numpy_iterator()
    images, labels, masks = [], [], []
    for count, (image, label, mask) in enumerate(batches):
        if max_batches is not None and count == max_batches:
            break
        images.append(image)
        labels.append(label)
        masks.append(mask)
    return np.concatenate(images), np.concatenate(labels), np.concatenate(masks)


def find_windows(canvases, patches):
    """Top-left corners where each patch appears exactly in its canvas.

    Args:
        canvases: (N, S, S, C) array.
        patches: (N, h, w, C) array.

    Returns:
        list of N lists of (row, col).
    """
    height, width = patches.shape[1:3]
    found = []
    for canvas, patch in zip(canvases, patches):
        windows = np.lib.stride_tricks.sliding_window_view(
            canvas, (height, width), axis=(0, 1)
        )  # (S-h+1, S-w+1, C, h, w)
        equal = np.all(windows == np.moveaxis(patch, -1, 0), axis=(2, 3, 4))
        found.append([tuple(int(v) for v in rc) for rc in np.argwhere(equal)])
    return found


def check_translated_digits(canvases, digits, side, digit_side=28):
    """Asserts the reference placement and Uniform[-1, 1) noise of canvases.

    Every digit (already in [-1, 1]) appears exactly once, its corner at
    side - digit_side - U{0, ..., side - digit_side - 1} on both axes, every
    corner used; every other pixel is uniform noise in [-1, 1).
    """
    corners = find_windows(canvases, digits)
    assert all(len(c) == 1 for c in corners)  # Exactly one placement each.
    rows = np.array([c[0][0] for c in corners])
    cols = np.array([c[0][1] for c in corners])
    np.testing.assert_array_equal(np.unique(rows), np.arange(1, side - digit_side + 1))
    np.testing.assert_array_equal(np.unique(cols), np.arange(1, side - digit_side + 1))
    outside = np.ones(canvases.shape, bool)
    for i, (row, col) in enumerate(zip(rows, cols)):
        outside[i, row : row + digit_side, col : col + digit_side] = False
    noise = canvases[outside]
    # Uniform[0, 1) mapped to the [-1, 1] convention: Uniform[-1, 1).
    assert noise.min() >= -1.0 and noise.max() < 1.0
    assert not np.any(noise == -1.0)  # Not the digits' background.
    assert abs(noise.mean()) < 0.01 and abs(noise.var() - 1 / 3) < 0.01
    counts, _ = np.histogram(noise, bins=10, range=(-1, 1))
    assert counts.min() > 0.95 * noise.size / 10
