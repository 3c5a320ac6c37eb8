"""`lrlc-export`: see `low_rank_local_connectivity/cli/export.py` (or `lrlc-export --help`).

This file runs the command from a checkout, as the installed `lrlc-export` does.
"""

from low_rank_local_connectivity.cli import export

if __name__ == "__main__":
    export.run()
