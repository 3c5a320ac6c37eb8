"""Precision parity: does a lower precision change a configuration's accuracy?

Before a grid runs in `mixed_bfloat16` (about twice as fast on CPUs with AMX),
the same configurations are trained with the same seeds in float32. Runs of one
configuration (dataset, learning rate, layer type, position, rank) with the
same seed share
their initialisation and data order, so the difference in test accuracy is
taken per seed (lower precision minus float32) and summarised as mean ±
standard error over seeds, with `stats.separability`'s verdict.
"""

import collections

from low_rank_local_connectivity.experiments import grid as grid_lib
from low_rank_local_connectivity.experiments import stats

REFERENCE_PRECISION = grid_lib.DEFAULT_PRECISION


def precision_pairs(rows):
    """Paired differences of every configuration run in float32 and another precision.

    Args:
        rows: run rows (`report.collect_runs`).

    Returns:
        A list of dicts, one per (configuration, lower precision) with at least
        one seed run in both: dataset, learning_rate, layer_type, position,
        rank, precision,
        seeds (those in both), reference_test_mean, test_mean (over those seeds),
        difference_mean, difference_se (test accuracy, lower precision minus
        float32) and verdict.
    """
    runs = collections.defaultdict(dict)
    for row in rows:
        key = (row["dataset"], row["learning_rate"], row["layer_type"],
               row["position"], row["rank"])
        runs[key, row["precision"]][row["seed"]] = row["test_accuracy"]
    pairs = []
    for (key, precision), lower in runs.items():
        reference = runs.get((key, REFERENCE_PRECISION))
        if precision == REFERENCE_PRECISION or not reference:
            continue
        seeds = sorted(set(lower) & set(reference))
        if not seeds:
            continue
        mean, se = stats.mean_and_standard_error(
            [lower[seed] - reference[seed] for seed in seeds])
        dataset, learning_rate, layer_type, position, rank = key
        pairs.append(dict(
            dataset=dataset, learning_rate=learning_rate, layer_type=layer_type,
            position=position, rank=rank,
            precision=precision, seeds=seeds,
            reference_test_mean=stats.mean_and_standard_error(
                [reference[seed] for seed in seeds])[0],
            test_mean=stats.mean_and_standard_error([lower[seed] for seed in seeds])[0],
            difference_mean=mean, difference_se=se,
            verdict=stats.separability(mean, se),
        ))
    pairs.sort(key=grid_lib.report_order)
    return pairs


def table(pairs):
    """(header, lines) of the parity table, accuracies and differences in %."""
    header = ("Dataset", "Learning rate", "Layer", "Position", "Rank", "Seeds",
              f"{REFERENCE_PRECISION} test acc. (%)", "test acc. (%)",
              "difference (points)", "verdict")
    lines = []
    for pair in pairs:
        difference = f"{100 * pair['difference_mean']:+.2f}"
        if len(pair["seeds"]) > 1:
            difference += f" ± {100 * pair['difference_se']:.2f}"
        lines.append((
            pair["dataset"], f"{pair['learning_rate']:g}",
            grid_lib.LAYER_LABELS[pair["layer_type"]],
            "any" if pair["position"] is None else pair["position"],
            "—" if pair["rank"] is None else pair["rank"],
            ",".join(map(str, pair["seeds"])),
            f"{100 * pair['reference_test_mean']:.2f}",
            f"{100 * pair['test_mean']:.2f} ({pair['precision']})",
            difference, pair["verdict"],
        ))
    return header, lines
