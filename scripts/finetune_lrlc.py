"""`lrlc-finetune`: see `low_rank_local_connectivity/cli/finetune.py` (or `lrlc-finetune --help`).

This file runs the command from a checkout, as the installed `lrlc-finetune` does.
"""

from low_rank_local_connectivity.cli import finetune

if __name__ == "__main__":
    finetune.run()
