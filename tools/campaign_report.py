"""The fault campaign's report: its summary and its markdown table.

A row is one fault (`row`): how often it was injected and
survived and whether recorded data was lost, or, for a check that could not
run, the reason (`skipped_row`). Skipped rows are listed with
their reason and counted apart: they are never survived.
"""

# The first word of the bad-input rows' names.
BAD_INPUT_KINDS = ("CLI", "Config", "Data", "Serving")


def row(fault, injected, survived, data_lost, details):
    """One line of the report: a fault injected `injected` times."""
    return dict(fault=fault, injected=int(injected), survived=int(survived),
                data_lost=int(data_lost), details=details)


def skipped_row(fault, reason):
    """A check that could not run, and why (never counted as survived)."""
    return dict(fault=fault, skipped=reason, injected=0, survived=0, data_lost=0,
                details={})


def summarize(rows, kills, runs, wall_seconds, command, machine=None):
    """The summary of a campaign (a dict, in report order).

    Args:
        rows: list of report rows; skipped ones are counted apart.
        kills, runs: lists, the preemption section's kill and run records.
        wall_seconds: float, how long the campaign took.
        command: str, the command line that reproduces it.
        machine: optional dict, where it ran (cores, load average).
    """
    ran = [r for r in rows if not r.get("skipped")]
    trainer_faults = [r for r in ran if r["fault"].split(":")[0] not in BAD_INPUT_KINDS]
    bad_inputs = [r for r in ran if r not in trainer_faults]
    return dict(
        kills_fired=len(kills),
        kills_fired_at_default_model=sum(1 for k in kills if k["model"] == "default"),
        preemption_runs=len(runs),
        runs_matching_reference=sum(1 for r in runs if not r["problems"]),
        trainer_faults_injected=sum(r["injected"] for r in trainer_faults),
        trainer_faults_survived=sum(r["survived"] for r in trainer_faults),
        bad_input_cases=sum(r["injected"] for r in bad_inputs),
        bad_input_cases_refused_clearly=sum(r["survived"] for r in bad_inputs),
        data_lost=sum(r["data_lost"] for r in ran),
        checks_skipped=len(rows) - len(ran),
        skipped=[dict(fault=r["fault"], reason=r["skipped"])
                 for r in rows if r.get("skipped")],
        wall_seconds=round(wall_seconds, 1),
        machine=machine,
        command=command,
    )


def markdown(rows, summary):
    """The report table and the summary as markdown."""
    lines = ["| Fault | Injected | Survived | Data lost |", "|---|---:|---:|---:|"]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['fault']} | skipped: {r['skipped']} | — | — |")
        else:
            lines.append(f"| {r['fault']} | {r['injected']} | {r['survived']} "
                         f"| {r['data_lost']} |")
    lines.append("")
    for key, value in summary.items():
        if key == "skipped":
            lines += [f"- skipped: {s['fault']}: {s['reason']}" for s in value]
        else:
            lines.append(f"- {key}: {value}")
    return "\n".join(lines) + "\n"


def not_survived(rows):
    """The faults of `rows` that were not survived or lost data."""
    return [r["fault"] for r in rows if not r.get("skipped")
            and (r["survived"] < r["injected"] or r["data_lost"])]
