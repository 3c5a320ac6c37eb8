"""The distributed input pipelines of a run, and input-reading errors."""

import contextlib

import tensorflow as tf

from low_rank_local_connectivity.training import errors


class Inputs:
    """Builds the distributed pipelines of the splits of a run.

    Args:
        dataset: the run's `data.ResolvedDataset`.
        config: the experiment config (its `seed` and `train` sections are
            read).
        strategy: the `tf.distribute.Strategy` of the run.
        transform: optional function `(split, dataset) -> dataset` applied to
            every batched pipeline before it is positioned and distributed
            (the `input_transform` of `train_and_evaluate`).

    Attributes:
        options: the run's `data.ResolvedDataset`.
    """

    def __init__(self, dataset, config, strategy, transform=None):
        self.options = dataset
        self._config = config
        self._strategy = strategy
        self._transform = transform or (lambda split, dataset: dataset)

    def distributed(self, split, start_step=0, one_batch_in_memory=False):
        """The distributed input pipeline of a split.

        Training uses one pipeline per worker (`input_context`: sharded,
        per-replica batches). `start_step` steps of batches have already been
        used: with `train.resume_input_position` they are skipped (the run
        sees the batches of an uninterrupted run: exact, at the cost of
        reading them again), otherwise the pipeline restarts with seed
        `seed + start_step`. (Distributed iterators cannot be stored in a
        checkpoint, hence the skip.)

        Evaluation batches are global, padded to full size and masked; the
        strategy splits every batch evenly over the replicas (element-wise
        sharding across workers), so each replica always receives a full
        batch and every real example is counted exactly once.
        """
        config = self._config
        if split != "train":
            dataset = self._transform(split, self.options.make_dataset(
                split, batch_size=config.train.eval_batch_size, is_training=False,
            ))
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA
            )
            return self._strategy.experimental_distribute_dataset(
                dataset.with_options(options)
            )
        exact = config.train.resume_input_position

        def dataset_fn(input_context):
            dataset = self._transform(split, self.options.make_dataset(
                split, batch_size=config.train.batch_size, is_training=True,
                input_context=input_context,
                seed=config.seed + (0 if exact else start_step),
            ))
            if exact and start_step:
                batches_per_step = (
                    input_context.num_replicas_in_sync
                    // input_context.num_input_pipelines
                )
                dataset = dataset.skip(start_step * batches_per_step)
            if one_batch_in_memory:
                dataset = dataset.take(1).cache().repeat()
            return dataset

        return self._strategy.distribute_datasets_from_function(dataset_fn)

    @contextlib.contextmanager
    def reading(self, split, step):
        """Turns input-reading errors into an `InputDataError` naming files."""
        try:
            yield
        except (tf.errors.DataLossError, tf.errors.NotFoundError) as error:
            try:
                unreadable = self.options.find_unreadable_files(split)
            except Exception as scan_error:  # The scan is best effort.
                unreadable = [("(scan failed)", errors.one_line(scan_error))]
            files = "; ".join(f"{path}: {reason}" for path, reason in unreadable)
            raise errors.InputDataError(
                f"Could not read the {split!r} split of dataset "
                f"{self.options.name!r} at step {step} ({errors.one_line(error)}). "
                f"Unreadable files: {files or 'none found'}. Prepare the "
                "dataset again, then rerun to resume."
            ) from None
