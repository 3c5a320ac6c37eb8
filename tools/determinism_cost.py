"""Training-step throughput with and without `train.deterministic`.

Each round starts one process per mode (the inter-op thread pool is fixed per
process) and times `task.measure_step_throughput` for every preset's default
model on the embedded `mnist_small`; modes alternate within a round so that both
see the same machine load. Prints one JSON line per process and the ratio
deterministic / default per preset and round:

    python -m tools.determinism_cost --rounds=3 > runs/determinism_cost.jsonl
"""

import json
import subprocess
import sys

from absl import flags
from low_rank_local_connectivity.cli import startup

_ROUNDS = flags.DEFINE_integer("rounds", 3, "Interleaved rounds of both modes.")
_PRESETS = flags.DEFINE_list(
    "presets", ["conv", "lrlc", "lrlc_input_dependent", "locally_connected"],
    "Model presets of mnist_small to time.",
)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per preset.")
_MEASURE = flags.DEFINE_bool("measure", None, "Internal: time one mode in this process.")


def _measure(deterministic):
    from low_rank_local_connectivity import training
    from low_rank_local_connectivity.configs import experiment

    rates = {}
    for preset in _PRESETS.value:
        config = experiment.get_config(f"mnist_small_{preset}")
        config.train.deterministic = deterministic
        task = training.create_task(config)
        rates[preset] = task.measure_step_throughput(num_steps=_STEPS.value)
    return rates


def main(argv):
    del argv  # Flags only (`startup.run` refuses positional arguments).
    if _MEASURE.value is not None:
        print(json.dumps(_measure(_MEASURE.value)))
        return
    for round_index in range(_ROUNDS.value):
        rates = {}
        for deterministic in (False, True):
            output = subprocess.run(
                [sys.executable, "-m", "tools.determinism_cost", f"--measure={deterministic}",
                 f"--presets={','.join(_PRESETS.value)}", f"--steps={_STEPS.value}"],
                check=True, capture_output=True, text=True,
            ).stdout
            rates[deterministic] = json.loads(output.strip().splitlines()[-1])
            print(json.dumps(dict(round=round_index, deterministic=deterministic,
                                  examples_per_second=rates[deterministic])), flush=True)
        ratios = {p: round(rates[True][p] / rates[False][p], 3) for p in _PRESETS.value}
        print(json.dumps(dict(round=round_index, ratio=ratios)), flush=True)


if __name__ == "__main__":
    startup.run(main)
