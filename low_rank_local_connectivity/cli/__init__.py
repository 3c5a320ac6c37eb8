"""The package's commands (console scripts `lrlc-*`, see `startup.COMMANDS`).

Each module is one command: its docstring is its `--help`, its absl flags its
options, and `run()` its entry point. `startup.py` is what they share.
"""
