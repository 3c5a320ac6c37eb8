"""The accuracy-vs-rank figure of a dataset's grid summaries.

One panel per block position (and one row of panels per setting, precision and
learning rate, where the dataset has several: `grid.settings_of`; the row's
setting is named beside its y axis, and each row has its own y range, so that a
well-tuned setting's small differences are not flattened by an undertuned one's
low accuracies). Ranked layer types (wide conv, LRLC, input-dependent LRLC)
are lines with standard-error bars, each with its own colour and marker and a
small horizontal offset so that points at the same rank do not cover each
other; conv, locally connected and CoordConv are horizontal reference lines,
each with its own colour and dash pattern, over a shaded standard-error band.
The title says what the error bars are and the recipe (filters, steps, batch,
learning rate, precision, data).
"""

import math

import matplotlib
import matplotlib.figure
import matplotlib.ticker

from low_rank_local_connectivity.experiments import grid as grid_lib
from low_rank_local_connectivity.experiments import stats

# Reference lines of the accuracy-vs-rank plots.
REFERENCE_LAYER_TYPES = ("conv", "locally_connected", "coord_conv")
# Line and marker of each layer type; colours are tab10's in `LAYER_TYPES` order.
# The reference lines' dash patterns differ, so that coinciding lines show both.
_STYLES = {
    "conv": dict(linestyle=(0, (7, 3)), linewidth=1.6),
    "wide_conv": dict(marker="s", linestyle="-"),
    "locally_connected": dict(linestyle=(0, (1, 1.5)), linewidth=2.4),
    "coord_conv": dict(linestyle=(0, (5, 2, 1.5, 2)), linewidth=1.6),
    "lrlc": dict(marker="o", linestyle="-"),
    "lrlc_input_dependent": dict(marker="^", linestyle="-"),
}
# Horizontal offset between series at one rank, in octaves (log2 units).
_JITTER_OCTAVES = 0.07
# Space left and right of the extreme ranks, in octaves.
_MARGIN_OCTAVES = 0.6
# Reference lines closer than this share of the y range get stacked labels.
_LABEL_SPACING = 0.05


# Characters per line of the title's recipe (fits the narrowest figure).
_CAPTION_WIDTH = 90


def _zero_if_nan(value):
    return 0.0 if math.isnan(value) else value


def _joined(values):
    """The distinct values, in order, joined by ' / '."""
    return " / ".join(dict.fromkeys(str(value) for value in values))


def _caption(rows, dataset):
    """Two lines for the title: the recipe, and what the error bars are."""
    filters = _joined(",".join(map(str, s["num_filters"])) for s in rows)
    learning_rates = _joined(f"{s['learning_rate']:g}" for s in rows)
    parts = [
        f"recipe: filters {filters}", f"{_joined(s['train_steps'] for s in rows)} steps",
        f"batch {_joined(s['batch_size'] for s in rows)}",
        f"learning rate {learning_rates}",
        f"{_joined(s['precision'] for s in rows)}; data: {dataset}",
    ]
    # A grid of several settings lists them all: a new line where one is full.
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + len(part) + 2 > _CAPTION_WIDTH:
            lines.append(part)
        else:
            lines[-1] += f", {part}"
    recipe = "\n".join(lines)
    seeds = sorted({s["num_seeds"] for s in rows})
    if seeds == [1]:
        return f"{recipe}\none seed per point (no error bars)"
    counts = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    return f"{recipe}\nmean ± standard error over {counts} seeds (error bars, shaded bands)"


def _plot_panel(axis, rows, position, colors, offsets):
    for layer_type in grid_lib.RANKED_LAYER_TYPES:
        points = sorted(
            (s["rank"], s) for s in rows
            if s["layer_type"] == layer_type and s["position"] == position
        )
        if not points:
            continue
        axis.errorbar(
            [rank * offsets[layer_type] for rank, _ in points],
            [100 * s["test_mean"] for _, s in points],
            yerr=[100 * _zero_if_nan(s["test_se"]) for _, s in points],
            capsize=3, color=colors[layer_type], zorder=3,
            label=grid_lib.LAYER_LABELS[layer_type], **_STYLES[layer_type],
        )
    references = []
    for layer_type in REFERENCE_LAYER_TYPES:
        matches = [
            s for s in rows if s["layer_type"] == layer_type
            and s["position"] in (position, None)
        ]
        if not matches:
            continue
        mean = 100 * matches[0]["test_mean"]
        se = 100 * _zero_if_nan(matches[0]["test_se"])
        axis.axhspan(mean - se, mean + se, color=colors[layer_type], alpha=0.12,
                     linewidth=0)
        axis.axhline(mean, color=colors[layer_type], zorder=2,
                     label=grid_lib.LAYER_LABELS[layer_type], **_STYLES[layer_type])
        references.append((mean, layer_type, matches[0]))
    _label_references(axis, sorted(references, key=lambda r: r[0]), colors)


def _label_references(axis, references, colors):
    """Writes name and value of each reference line beside the panel's right edge.

    Labels of lines closer than `_LABEL_SPACING` of the y range are spread
    apart vertically, so that coinciding lines keep readable labels.
    """
    low, high = axis.get_ylim()
    groups = []
    for reference in references:
        if groups and reference[0] - groups[-1][-1][0] < _LABEL_SPACING * (high - low):
            groups[-1].append(reference)
        else:
            groups.append([reference])
    for group in groups:
        for i, (mean, layer_type, summary) in enumerate(group):
            axis.annotate(
                f"{grid_lib.LAYER_LABELS[layer_type]}\n"
                f"{stats.format_accuracy(summary['test_mean'], summary['test_se'])}",
                xy=(1.0, mean), xycoords=("axes fraction", "data"),
                xytext=(4, 19 * (i - (len(group) - 1) / 2)),
                textcoords="offset points", fontsize="x-small",
                color=colors[layer_type], va="center", annotation_clip=False,
            )


def accuracy_vs_rank_figure(summaries, dataset):
    """The figure of test accuracy vs rank, one panel per block position.

    Args:
        summaries: output of `report.summarize`.
        dataset: str.

    Returns:
        A `matplotlib.figure.Figure` (not registered with pyplot), or None
        when the dataset has no run at a block position.
    """
    rows = [s for s in summaries if s["dataset"] == dataset]
    positions = sorted({s["position"] for s in rows if s["position"] is not None})
    if not positions:
        return None
    settings = grid_lib.settings_of(rows, dataset)
    ranks = sorted({s["rank"] for s in rows if s["rank"] is not None}) or [1]
    ranked = [t for t in grid_lib.RANKED_LAYER_TYPES
              if any(s["layer_type"] == t for s in rows)]
    offsets = {
        layer_type: 2 ** (_JITTER_OCTAVES * (i - (len(ranked) - 1) / 2))
        for i, layer_type in enumerate(ranked)
    }
    colors = dict(zip(grid_lib.LAYER_TYPES, matplotlib.colormaps["tab10"].colors))
    figure = matplotlib.figure.Figure(
        figsize=(max(6.5, 4.5 * len(positions)), 3.4 * len(settings) + 1.6),
        layout="constrained",
    )
    axes = figure.subplots(len(settings), len(positions), squeeze=False,
                           sharey="row")
    for row, setting in enumerate(settings):
        label = grid_lib.setting_label(setting, settings)
        for axis, position in zip(axes[row], positions):
            _plot_panel(axis, [s for s in rows
                               if (s["precision"], s["learning_rate"]) == setting],
                        position, colors, offsets)
            axis.set_xscale("log", base=2)
            axis.set_xlim(ranks[0] * 2 ** -_MARGIN_OCTAVES,
                          ranks[-1] * 2 ** _MARGIN_OCTAVES)
            axis.set_xticks(ranks, [str(rank) for rank in ranks])
            axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            axis.set_xlabel("rank K")
            axis.set_title(f"layer at position {position}")
            axis.grid(alpha=0.3)
        axes[row][0].set_ylabel((f"{label}\n" if label else "") + "test accuracy (%)")
    handles, labels = [], []
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(handles, labels, loc="outside lower center", frameon=False,
                  ncol=min(len(labels), 3 if len(positions) == 1 else 6),
                  fontsize="small")
    smoke = " (smoke test)" if dataset in grid_lib.SMOKE_TEST_DATASETS else ""
    figure.suptitle(f"{dataset}: test accuracy vs rank{smoke}\n"
                    f"{_caption(rows, dataset)}", fontsize="small")
    return figure


def plot_accuracy_vs_rank(summaries, dataset, path):
    """Saves `accuracy_vs_rank_figure` as a PNG.

    Returns:
        True if a figure was written, False when the dataset has no run at a
        block position.
    """
    figure = accuracy_vs_rank_figure(summaries, dataset)
    if figure is None:
        return False
    figure.savefig(path, dpi=120)
    return True
