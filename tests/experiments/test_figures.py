"""Tests of the accuracy-vs-rank figure: every series and line can be told apart."""

import math

from matplotlib import image as mpimg
import numpy as np
import pytest

from low_rank_local_connectivity import experiments


def _summary(layer_type, position, rank, test_mean, precision="float32", seeds=3,
             learning_rate=0.03):
    return dict(
        dataset="mnist", precision=precision, layer_type=layer_type,
        position=position, rank=rank, num_filters=[32, 32, 32], train_steps=250,
        batch_size=128, learning_rate=learning_rate, num_seeds=seeds,
        seeds=list(range(seeds)), num_parameters=100, valid_mean=test_mean,
        valid_se=0.001, test_mean=test_mean, test_se=0.001 if seeds > 1 else math.nan,
    )


def _all_layer_types(ranks, precision="float32"):
    summaries = [
        _summary("conv", None, None, 0.947, precision),
        # Locally connected and CoordConv 0.01 points apart: they coincide.
        _summary("locally_connected", 2, None, 0.9754, precision),
        _summary("coord_conv", None, None, 0.9755, precision),
    ]
    for layer_type in experiments.RANKED_LAYER_TYPES:
        summaries += [_summary(layer_type, 2, rank, 0.96, precision) for rank in ranks]
    return summaries


def _series(axis):
    """{label: (colour, marker, x data)} of the error-bar series of a panel."""
    out = {}
    for container in axis.containers:
        line = container.lines[0]
        out[container.get_label()] = (line.get_color(), line.get_marker(),
                                      list(line.get_xdata()))
    return out


def _reference_lines(axis):
    labels = {experiments.LAYER_LABELS[t] for t in experiments.REFERENCE_LAYER_TYPES}
    return {line.get_label(): line for line in axis.get_lines()
            if line.get_label() in labels}


def test_every_series_and_reference_line_is_distinguishable():
    figure = experiments.accuracy_vs_rank_figure(_all_layer_types([1, 2, 4]), "mnist")
    (axis,) = figure.axes
    series = _series(axis)
    assert set(series) == {"Wide conv", "LRLC", "Input-dependent LRLC"}
    assert len({colour for colour, _, _ in series.values()}) == 3
    assert len({marker for _, marker, _ in series.values()}) == 3
    references = _reference_lines(axis)
    assert set(references) == {"Conv", "Locally connected", "CoordConv"}
    assert len({str(line.get_color()) for line in references.values()}) == 3
    # Line2D has no public getter of a custom dash pattern.
    assert len({line._unscaled_dash_pattern for line in references.values()}) == 3
    colours = {str(c) for c, _, _ in series.values()} | {
        str(line.get_color()) for line in references.values()}
    assert len(colours) == 6

    # Each reference line is named with its value beside the panel; the labels
    # of the two coinciding lines are apart.
    labels = {text.get_text().split("\n")[0]: text for text in axis.texts}
    assert set(labels) == {"Conv", "Locally connected", "CoordConv"}
    assert labels["CoordConv"].get_text() == "CoordConv\n97.55 ± 0.10"
    offsets = {name: labels[name].xyann[1] for name in ("Locally connected", "CoordConv")}
    assert abs(offsets["Locally connected"] - offsets["CoordConv"]) >= 15

    # One legend, with every layer type.
    (legend,) = figure.legends
    assert {t.get_text() for t in legend.get_texts()} == set(experiments.LAYER_LABELS.values())


def test_title_gives_recipe_precision_data_and_error_bars():
    figure = experiments.accuracy_vs_rank_figure(_all_layer_types([1, 2]), "mnist")
    title = figure.get_suptitle()
    for part in ("filters 32,32,32", "250 steps", "batch 128", "learning rate 0.03",
                 "float32", "data: mnist", "mean ± standard error over 3 seeds"):
        assert part in title


def test_one_rank_keeps_ticks_and_separates_the_points():
    figure = experiments.accuracy_vs_rank_figure(_all_layer_types([2]), "mnist")
    (axis,) = figure.axes
    assert list(axis.get_xticks()) == [2]
    low, high = axis.get_xlim()
    assert low < 2 < high and np.log2(2 / low) == pytest.approx(np.log2(high / 2))
    xs = [x for _, _, (x,) in _series(axis).values()]
    assert len(set(xs)) == 3 and all(low < x < high for x in xs)
    assert max(xs) / min(xs) < 2 ** 0.25  # Still read as rank 2.


def test_precisions_get_their_own_rows_of_panels():
    summaries = _all_layer_types([1, 2]) + _all_layer_types([1, 2], "mixed_bfloat16")
    figure = experiments.accuracy_vs_rank_figure(summaries, "mnist")
    assert [axis.get_title() for axis in figure.axes] == ["layer at position 2"] * 2
    assert [axis.get_ylabel() for axis in figure.axes] == [
        "float32\ntest accuracy (%)", "mixed_bfloat16\ntest accuracy (%)"]
    assert "float32 / mixed_bfloat16" in figure.get_suptitle()


def test_learning_rates_get_their_own_rows_of_panels():
    summaries = [_summary("conv", None, None, 0.9, learning_rate=lr) for lr in (0.01, 0.001)]
    summaries += [_summary("lrlc", 2, 2, 0.95, learning_rate=lr) for lr in (0.01, 0.001)]
    figure = experiments.accuracy_vs_rank_figure(summaries, "mnist")
    assert [axis.get_ylabel() for axis in figure.axes] == [
        "learning rate 0.001\ntest accuracy (%)", "learning rate 0.01\ntest accuracy (%)"]
    assert "learning rate 0.01 / 0.001" in figure.get_suptitle()
    # Many settings: the title's recipe breaks between its parts, within the width.
    sweep = [_summary("conv", None, None, 0.9, precision, learning_rate=lr)
             for lr in (0.0003, 0.001, 0.003, 0.01, 0.03)
             for precision in ("float32", "mixed_bfloat16")]
    title = experiments.accuracy_vs_rank_figure(
        sweep + [_summary("lrlc", 2, 2, 0.95)], "mnist").get_suptitle()
    assert max(len(line) for line in title.splitlines()) <= 90
    assert "learning rate 0.0003 / 0.001 / 0.003 / 0.01 / 0.03" in title
    assert "float32 / mixed_bfloat16; data: mnist" in title


def test_each_row_of_panels_has_its_own_accuracy_range():
    """An undertuned setting's low accuracies do not flatten a tuned one's."""
    summaries = []
    for lr, low in ((0.001, 0.90), (0.03, 0.99)):
        summaries += [_summary("conv", None, None, low, learning_rate=lr)]
        summaries += [_summary("lrlc", position, rank, low + 0.001 * rank, learning_rate=lr)
                      for position in (1, 2) for rank in (1, 2, 4)]
    figure = experiments.accuracy_vs_rank_figure(summaries, "mnist")
    ranges = [axis.get_ylim() for axis in figure.axes]
    assert len(ranges) == 4
    # The two panels of a row share their range; the rows' ranges differ.
    assert ranges[0] == ranges[1] and ranges[2] == ranges[3]
    (low_001, high_001), (low_003, high_003) = ranges[0], ranges[2]
    assert low_001 < 90 < 90.4 < high_001 < 99
    assert 90.4 < low_003 < 99 < 99.4 < high_003
    # Only the first panel of a row names its setting.
    assert [axis.get_ylabel() for axis in figure.axes] == [
        "learning rate 0.001\ntest accuracy (%)", "",
        "learning rate 0.03\ntest accuracy (%)", ""]


def test_one_seed_says_there_are_no_error_bars():
    summaries = [_summary("lrlc", 2, 1, 0.9, seeds=1), _summary("conv", None, None, 0.8, seeds=1)]
    figure = experiments.accuracy_vs_rank_figure(summaries, "mnist")
    assert "one seed per point (no error bars)" in figure.get_suptitle()


def test_plot_writes_a_png_or_nothing_without_positions(tmp_path):
    path = str(tmp_path / "plot.png")
    assert experiments.plot_accuracy_vs_rank(_all_layer_types([1, 2]), "mnist", path)
    assert mpimg.imread(path).ndim == 3
    conv_only = [_summary("conv", None, None, 0.9)]
    assert not experiments.plot_accuracy_vs_rank(conv_only, "mnist", str(tmp_path / "x.png"))
    assert experiments.accuracy_vs_rank_figure(conv_only, "mnist") is None
