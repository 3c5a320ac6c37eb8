"""`lrlc-quickstart`: see `low_rank_local_connectivity/cli/quickstart.py` (or `lrlc-quickstart --help`).

This file runs the command from a checkout, as the installed `lrlc-quickstart` does.
"""

from low_rank_local_connectivity.cli import quickstart

if __name__ == "__main__":
    quickstart.run()
