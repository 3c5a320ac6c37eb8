"""Distribution: the `tf.distribute` strategy, determinism and replica sync.

With `steps.py` and `checkpointing.py`, this is the TensorFlow-specific part of
the training loop.
"""

import os

import tensorflow as tf

from low_rank_local_connectivity.training import errors
from low_rank_local_connectivity.training.config_checks import STRATEGIES


def enable_determinism():
    """Makes this process's TensorFlow training steps bit-reproducible on CPU.

    `tf.config.experimental.enable_op_determinism()` makes every kernel
    deterministic, but not the schedule: with TensorFlow's default inter-op
    thread pool, kernels of one training step run concurrently, and in the
    paper's 64-filter networks (batch norm, global pooling and an LRLC layer) the
    gradients then differ in their last bits from run to run, and from call to
    call within one process (measured: 0 of 15 repeated gradient evaluations
    agree; oneDNN on or off, the hand-written gradients or autodiff alike; one
    intra-op thread does not help, one inter-op thread does). So this also runs
    one kernel at a time (`set_inter_op_parallelism_threads(1)`); each kernel
    still uses every intra-op thread (README, "Reliability").

    The thread pool is fixed when TensorFlow's runtime starts, so this must run
    before the first TensorFlow op of the process, or the process must have been
    started with `TF_NUM_INTEROP_THREADS=1`.

    Raises:
        TrainerError: the runtime already started with more inter-op threads.
    """
    tf.config.experimental.enable_op_determinism()
    if (
        os.environ.get("TF_NUM_INTEROP_THREADS") == "1"
        or tf.config.threading.get_inter_op_parallelism_threads() == 1
    ):
        return
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        raise errors.TrainerError(
            "`config.train.deterministic=True` needs TensorFlow's inter-op thread "
            "pool to have 1 thread, but TensorFlow's runtime already started in this "
            "process with another setting. Create the Trainer before running any "
            "TensorFlow op, or start the process with TF_NUM_INTEROP_THREADS=1."
        ) from None


def create_strategy(name="default", tpu_address=""):
    """Creates a `tf.distribute.Strategy`.

    Args:
        name: str, one of `STRATEGIES`:
            - 'default': the current (by default, single-device) strategy.
            - 'mirrored': all local GPUs, or all logical CPU devices when there
              is no GPU (so that logical CPU devices can stand in for GPUs).
            - 'multi_worker_mirrored': synchronous training over the workers
              described by the `TF_CONFIG` environment variable.
            - 'tpu': a TPU found by `TPUClusterResolver(tpu_address)`.
        tpu_address: str, TPU name or `grpc://` address; '' for the
            resolver's default (local TPU VM or the `TPU_NAME` variable).

    Returns:
        The strategy.

    Raises:
        ValueError: if `name` is unknown.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        cpus = [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=cpus)
    if name == "multi_worker_mirrored":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu_address or None
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(
        f"Invalid value for argument `name`. Expected one of {STRATEGIES}. "
        f"Received: {name!r}"
    )


def is_chief(strategy):
    """Whether this worker writes the shared files of a run."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    cluster = resolver.cluster_spec().as_dict()
    return (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in cluster
    )


def make_sync_statistics(strategy, model):
    """Returns a function averaging floating non-trainable variables over replicas.

    Keras batch normalisation updates its moving statistics from each
    replica's own batch, so replicas drift apart. The moving averages are
    linear in the batch statistics, so averaging the replicas' copies
    (before every evaluation and checkpoint) gives the moving average of
    the replica-averaged batch statistics, and leaves every replica and
    worker with the same state.
    """
    variables = [
        v for v in model.non_trainable_variables if "float" in str(v.dtype)
    ]
    if strategy.num_replicas_in_sync == 1 or not variables:
        return lambda: None

    @tf.function
    def sync_statistics():
        values = strategy.run(
            lambda: [tf.identity(v.value) for v in variables]
        )
        for variable, value in zip(variables, values):
            variable.assign(
                strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
            )

    return sync_statistics


def worker_dir(strategy, model_dir, subdir):
    """Where this worker writes `subdir`: the chief in `model_dir`, other
    workers in a private folder (their writes only take part in collectives)."""
    if is_chief(strategy):
        return os.path.join(model_dir, subdir)
    resolver = strategy.cluster_resolver
    return os.path.join(
        model_dir, ".workers", f"{resolver.task_type}_{resolver.task_id}", subdir,
    )
