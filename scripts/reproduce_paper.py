"""`lrlc-reproduce`: see `low_rank_local_connectivity/cli/reproduce.py` (or `lrlc-reproduce --help`).

This file runs the command from a checkout, as the installed `lrlc-reproduce` does.
"""

from low_rank_local_connectivity.cli import reproduce

if __name__ == "__main__":
    reproduce.run()
