"""Installs the `low_rank_local_connectivity` package.

The core (layers, models, conversion, validation) runs on Keras 3 with any of its
TensorFlow, JAX or PyTorch backends; pick one with an extra:

    pip install -e '.[tensorflow]'   # the core and the whole experiment stack
                                     # (trainer, TFDS input pipelines, export, scripts)
    pip install -e '.[jax]'          # the core, and the trainer and scripts on JAX
                                     # (NumPy input pipelines, Orbax checkpoints)
    pip install -e '.[torch]'        # the core on PyTorch
    pip install -e '.[test]'         # what the test suite needs: all three backends,
                                     # pytest, hypothesis and the TF-only oracles

`pip install -e .` installs the core's own dependencies and no backend.
"""

import setuptools

# Lower bounds are the versions the test suite was run with.
TENSORFLOW_STACK = [
    "tensorflow>=2.21.0",
    "tensorflow-datasets>=4.9.10",
    # tensorflow-datasets 4.9.10 imports it when preparing data without declaring it.
    "importlib_resources>=6.0",
]
# The JAX trainer checkpoints with Orbax.
JAX = ["jax>=0.10.2", "orbax-checkpoint>=0.12.8"]

setuptools.setup(
    name="low_rank_local_connectivity",
    version="0.1.0",
    description=(
        "Low-rank locally connected (LRLC) layers for Keras 3 on TensorFlow, JAX "
        "and PyTorch (Elsayed et al., ICML 2020)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache 2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["low_rank_local_connectivity*"]),
    package_data={"low_rank_local_connectivity.data": ["*.npz"]},
    install_requires=[
        "keras>=3.15.1",
        "absl-py>=2.1.0",
        "ml-collections>=1.1.0",
        "numpy>=2.0",
        "matplotlib>=3.8",
    ],
    entry_points={
        "console_scripts": [
            f"{command}=low_rank_local_connectivity.cli.{module}:run"
            for command, module in (
                ("lrlc-train", "train"),
                ("lrlc-reproduce", "reproduce"),
                ("lrlc-export", "export"),
                ("lrlc-finetune", "finetune"),
                ("lrlc-visualize", "visualize"),
                ("lrlc-quickstart", "quickstart"),
                ("lrlc-benchmark", "benchmark"),
            )
        ],
    },
    extras_require={
        "tensorflow": TENSORFLOW_STACK,
        "jax": JAX,
        "torch": ["torch>=2.13.0"],
        "test": TENSORFLOW_STACK + JAX + [
            # Exactly the CPU build the CI machine has on disk: a range would
            # download a CUDA build of several GB.
            "torch==2.13.0",
            "pytest>=9.0",
            # Runs the suite in parallel (pytest.ini).
            "pytest-xdist>=3.8",
            "hypothesis>=6.150",
            # TensorFlow-only test oracle (Keras 2's LocallyConnected2D).
            "tf-keras>=2.21.0",
            # TensorBoard's own event reader checks the summaries; also the viewer.
            "tensorboard>=2.21.0",
        ],
    },
)
