"""`lrlc-train`: see `low_rank_local_connectivity/cli/train.py` (or `lrlc-train --help`).

This file runs the command from a checkout, as the installed `lrlc-train` does.
"""

from low_rank_local_connectivity.cli import train

if __name__ == "__main__":
    train.run()
