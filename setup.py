"""Installs the `low_rank_local_connectivity` package.

`pip install -e .` for the library; `pip install -e '.[test]'` adds the test-only
dependencies (pytest, hypothesis and `tf_keras`, which the tests use ONLY as an
independent locally connected oracle).
"""

import setuptools

setuptools.setup(
    name="low_rank_local_connectivity",
    version="0.1.0",
    description=(
        "Low-rank locally connected (LRLC) layers for TensorFlow 2 / Keras 3 "
        "(Elsayed et al., ICML 2020)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache 2.0",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["low_rank_local_connectivity*"]),
    package_data={"low_rank_local_connectivity.data": ["*.npz"]},
    install_requires=[
        # Lower bounds are the versions the test suite was run with.
        "tensorflow>=2.21.0",
        "keras>=3.15.1",
        "tensorflow-datasets>=4.9.10",
        # tensorflow-datasets 4.9.10 imports it when preparing data without declaring it.
        "importlib_resources>=6.0",
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
        "test": [
            "pytest>=9.0",
            "hypothesis>=6.150",
            "tf-keras>=2.21.0",
            # TensorBoard's own event reader checks the summaries; also the viewer.
            "tensorboard>=2.21.0",
        ],
    },
)
