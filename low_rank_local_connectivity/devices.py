"""What a process computes on, under each Keras backend.

`device_kind()` names it for result files ('cpu', or the GPU kind such as
'NVIDIA H200', with a count when there are several); `limit_cpu_threads(n)`
bounds the CPU threads of one process (a grid worker shares the cores with the
others). Each backend's package is imported only when it is the one in use.
"""

import keras


def _count(names):
    if not names:
        return "cpu"
    return names[0] if len(names) == 1 else f"{len(names)} x {names[0]}"


def device_kind():
    """'cpu', or the kind of the GPU(s) the Keras backend computes on."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return _count([
            tf.config.experimental.get_device_details(gpu).get("device_name", "GPU")
            for gpu in gpus
        ])
    if backend == "jax":
        import jax

        return _count([device.device_kind for device in jax.devices()
                       if device.platform != "cpu"])
    if backend == "torch":
        import torch

        return _count([torch.cuda.get_device_name(i)
                       for i in range(torch.cuda.device_count())])
    return "cpu"


def limit_cpu_threads(num_threads):
    """Bounds this process's CPU threads to `num_threads` (before any computation).

    TensorFlow: intra- and inter-op threads; PyTorch: `torch.set_num_threads`.
    JAX fixes its CPU threads when it starts (XLA_FLAGS), so there it does nothing.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(num_threads)
        tf.config.threading.set_inter_op_parallelism_threads(num_threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(num_threads)
