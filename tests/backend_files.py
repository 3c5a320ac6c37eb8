"""Child process of `tests/test_backends.py`: saves or loads `.keras` files.

Runs under the Keras backend of its environment (`KERAS_BACKEND`):

    python -m tests.backend_files save DIR
        writes the layer fixtures (`tools.make_layer_fixtures`: every LRLC mode,
        LocallyConnected2D, CoordinateChannels, the 'lrlc' and
        'lrlc_input_dependent' models) and their `outputs.npz` to DIR;
    python -m tests.backend_files load OUT DIR [DIR ...]
        loads every `.keras` file of each DIR, runs it on the inputs in that DIR's
        `outputs.npz` and writes the outputs to OUT (keys `<i>/<name>`, i the
        position of DIR among the arguments).

It prints the backend it ran under, which the test checks.
"""

import pathlib
import sys

import keras
import numpy as np

# Importing the layers registers their classes for deserialisation.
from low_rank_local_connectivity import layers  # noqa: F401
from tools import make_layer_fixtures


def load_outputs(directories):
    """{f'{i}/{name}': outputs} of every saved model of each directory."""
    outputs = {}
    for index, directory in enumerate(map(pathlib.Path, directories)):
        inputs = np.load(directory / make_layer_fixtures.OUTPUTS_FILE)
        for path in sorted(directory.glob("*.keras")):
            model = keras.saving.load_model(path)
            x = inputs[f"{path.stem}/x"]
            outputs[f"{index}/{path.stem}"] = keras.ops.convert_to_numpy(model(x))
    return outputs


def main(argv):
    command, *paths = argv
    if command == "save" and len(paths) == 1:
        make_layer_fixtures.write_fixtures(paths[0])
    elif command == "load" and len(paths) >= 2:
        np.savez(paths[0], **load_outputs(paths[1:]))
    else:
        raise SystemExit(f"usage: {__doc__}")
    print(f"backend={keras.backend.backend()}")


if __name__ == "__main__":
    main(sys.argv[1:])
