"""`lrlc-benchmark`: see `low_rank_local_connectivity/cli/benchmark.py` (or `lrlc-benchmark --help`).

This file runs the command from a checkout, as the installed `lrlc-benchmark` does.
"""

from low_rank_local_connectivity.cli import benchmark

if __name__ == "__main__":
    benchmark.run()
