"""`lrlc-visualize`: see `low_rank_local_connectivity/cli/visualize.py` (or `lrlc-visualize --help`).

This file runs the command from a checkout, as the installed `lrlc-visualize` does.
"""

from low_rank_local_connectivity.cli import visualize

if __name__ == "__main__":
    visualize.run()
