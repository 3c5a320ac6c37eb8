"""On PYTHONPATH, makes TensorFlow, tf_keras and TFDS absent from a process.

Tests run commands with this folder first on PYTHONPATH to show that they need
none of them, on a machine where they are installed: importing them raises
ModuleNotFoundError and `importlib.util.find_spec` finds nothing, as where they
were never installed.
"""

import sys

for _name in ("tensorflow", "tf_keras", "tensorflow_datasets"):
    sys.modules[_name] = None
