"""The facade of a finished or running run: `open_run(model_dir)`.

Export, visualisation, fine-tuning and the experiment grid read a run through
it, and nothing else knows where a run keeps what:

>>> run = open_run("runs/mnist_lrlc")                      # doctest: +SKIP
>>> run.config.model.spatial_rank, run.metadata["class_names"][:2]
>>> model, path, step = run.load_model("best")
>>> run.results["test"]["accuracy"]
"""

import os

import ml_collections

from low_rank_local_connectivity import models
from low_rank_local_connectivity.training import run_dir


class Run:
    """A run directory written by the trainer, opened for reading.

    Args:
        model_dir: str, the run directory.

    Raises:
        ValueError: if `model_dir` has no `config.json` (it is not a run).

    Attributes:
        model_dir: str.
        config: the resolved experiment config (`ml_collections.ConfigDict`).
    """

    def __init__(self, model_dir):
        self.model_dir = os.fspath(model_dir)
        self._files = run_dir.RunDirectory(self.model_dir)
        config = self._files.saved_config()
        if config is None:
            raise _not_a_run(self.model_dir, run_dir.CONFIG_FILE)
        self.config = ml_collections.ConfigDict(config)

    @property
    def metadata(self):
        """The dataset metadata of `metadata.json` (a dict)."""
        metadata = self._files.saved_metadata()
        if metadata is None:
            raise _not_a_run(self.model_dir, run_dir.METADATA_FILE)
        return metadata

    @property
    def results(self):
        """The content of `results.json`, or None while the run has not finished."""
        return self._files.read_results()

    @property
    def evaluations(self):
        """The lines of `metrics.jsonl` (dicts with step, split and metrics)."""
        return self._files.evaluations()

    @property
    def best(self):
        """The content of `best/best.json` (step and metrics), or None."""
        return self._files.read_best()

    def checkpoint_path(self, checkpoint="best"):
        """The path of the 'best' or 'latest' checkpoint (or a given prefix).

        Raises:
            ValueError: if there is no such checkpoint.
        """
        return _checkpoint_io(self.model_dir).checkpoint_path(self.model_dir, checkpoint)

    def load_model(self, checkpoint="best"):
        """Rebuilds the run's model and restores a checkpoint into it.

        No strategy, optimiser or dataset is involved. The model is built with
        the float32 dtype policy whatever the training precision (variables are
        float32 in both cases).

        Args:
            checkpoint: 'best', 'latest' or a checkpoint prefix.

        Returns:
            A tuple (keras.Model, checkpoint path, step).

        Raises:
            ValueError: if there is no such checkpoint or it does not fit.
        """
        model = models.build_model(self.config.model)
        path, step = restore_model_weights(model, self.model_dir, checkpoint)
        return model, path, step


def _checkpoint_io(model_dir):
    """The checkpoint module of a run's format: Orbax step directories (a JAX
    run) or TensorFlow checkpoints."""
    from low_rank_local_connectivity.training import orbax_checkpointing

    if orbax_checkpointing.is_orbax_run(model_dir):
        return orbax_checkpointing
    from low_rank_local_connectivity.training import checkpointing

    return checkpointing


def restore_model_weights(model, model_dir, checkpoint="best"):
    """Restores a run's checkpoint ('best', 'latest' or a prefix) into `model`,
    whichever backend wrote it. Returns (checkpoint path, step)."""
    return _checkpoint_io(model_dir).restore_model_weights(model, model_dir, checkpoint)


def remove_older_checkpoints(model_dir):
    """Frees a finished run's disk: every 'latest' checkpoint but the newest goes.

    What remains is what a longer rerun resumes from (the newest) and the best
    model ('best'). Returns the removed checkpoints' paths.
    """
    return _checkpoint_io(model_dir).remove_older_checkpoints(model_dir)


def _not_a_run(model_dir, filename):
    return ValueError(
        f"Invalid value for argument `model_dir`. Expected a directory with "
        f"{filename} written by the trainer. Received: {model_dir!r}"
    )


def open_run(model_dir):
    """Opens a run directory written by the trainer (see `Run`)."""
    return Run(model_dir)
