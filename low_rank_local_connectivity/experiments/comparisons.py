"""The claims' comparisons: the validation-chosen fixed LRLC against the rest.

The paper's claims compare fixed LRLC at its validation-chosen rank with the
other layer types and ranks. In each setting (dataset, precision, learning
rate) and block position, that LRLC configuration (`report.select_best_ranks`)
is compared with every other configuration of the setting at the same
position, or at any position for the position-independent layer types. The
runs of two configurations are independent, so the difference of their mean
test accuracies has standard error sqrt(se1² + se2²), judged by
`stats.separability`.
"""

import math

from low_rank_local_connectivity.experiments import grid as grid_lib
from low_rank_local_connectivity.experiments import stats

REFERENCE_LAYER_TYPE = "lrlc"


def _setting(summary):
    return (summary["dataset"], summary["precision"], summary["learning_rate"])


def lrlc_comparisons(summaries, selected):
    """Differences between each validation-chosen fixed LRLC and the rest.

    Args:
        summaries: `report.summarize` output.
        selected: `report.select_best_ranks` of those summaries.

    Returns:
        A list of dicts, in report order of the compared configuration:
        dataset, precision, learning_rate, position and rank (of the chosen
        LRLC), layer_type, other_position and other_rank (of the configuration
        it is compared with), test_mean and other_test_mean, difference_mean
        (chosen LRLC minus the other, test accuracy), difference_se (NaN when
        either side has one seed) and verdict.
    """
    comparisons = []
    for reference in selected:
        if reference["layer_type"] != REFERENCE_LAYER_TYPE:
            continue
        for other in summaries:
            if (other is reference or _setting(other) != _setting(reference)
                    or other["position"] not in (None, reference["position"])):
                continue
            mean = reference["test_mean"] - other["test_mean"]
            se = math.hypot(reference["test_se"], other["test_se"])
            comparisons.append(dict(
                dataset=reference["dataset"], precision=reference["precision"],
                learning_rate=reference["learning_rate"],
                position=reference["position"], rank=reference["rank"],
                layer_type=other["layer_type"], other_position=other["position"],
                other_rank=other["rank"], test_mean=reference["test_mean"],
                other_test_mean=other["test_mean"], difference_mean=mean,
                difference_se=se, verdict=stats.separability(mean, se),
            ))
    comparisons.sort(key=lambda c: grid_lib.report_order(dict(
        c, position=c["other_position"], rank=c["other_rank"])) + (c["position"],))
    return comparisons


def table(comparisons):
    """(header, lines) of a comparison table, differences in points."""
    header = ("LRLC (chosen rank)", "test acc. (%)", "against", "test acc. (%)",
              "difference (points)", "verdict")
    lines = []
    for c in comparisons:
        other = grid_lib.LAYER_LABELS[c["layer_type"]]
        if c["other_rank"] is not None:
            other += f" (K={c['other_rank']})"
        difference = f"{100 * c['difference_mean']:+.2f}"
        if not math.isnan(c["difference_se"]):
            difference += f" ± {100 * c['difference_se']:.2f}"
        lines.append((
            f"K={c['rank']}, position {c['position']}", f"{100 * c['test_mean']:.2f}",
            other, f"{100 * c['other_test_mean']:.2f}", difference, c["verdict"],
        ))
    return header, lines
