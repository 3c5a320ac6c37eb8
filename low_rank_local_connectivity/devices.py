"""What a process computes on, under each Keras backend.

`device_kind()` names it for result files ('cpu', or the GPU kind such as
'NVIDIA H200', with a count when there are several); `limit_cpu_threads(n)`
bounds the CPU threads of one process (a grid worker shares the cores with the
others); `cpu_bfloat16_instructions()` lists the CPU's bfloat16 instruction
sets and `warn_if_bfloat16_is_emulated(precision)` says when a bfloat16 run
would be emulated on a CPU without them. Each backend's package is imported only
when it is the one in use.
"""

import pathlib

from absl import logging
import keras

# x86 flags (/proc/cpuinfo) of the instructions that compute in bfloat16.
BFLOAT16_CPU_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16")


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


def cpu_bfloat16_instructions(cpuinfo="/proc/cpuinfo"):
    """The CPU's bfloat16 instruction sets (sorted), or None where unknown.

    Read from the first `flags` line of `cpuinfo`: None where that file or line
    is missing (not Linux on x86), else the flags of `BFLOAT16_CPU_FLAGS` it has.
    """
    try:
        text = pathlib.Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            return sorted(set(value.split()) & set(BFLOAT16_CPU_FLAGS))
    return None


def warn_if_bfloat16_is_emulated(precision):
    """Logs a warning for a bfloat16 run on a CPU without bfloat16 instructions.

    There (e.g. an AVX2-only CPU) TensorFlow emulates bfloat16: a
    `mixed_bfloat16` training step of the 64-filter networks was 8-11x slower
    than float32 on such a CPU. Returns whether it warned.
    """
    if precision != "mixed_bfloat16" or device_kind() != "cpu":
        return False
    if cpu_bfloat16_instructions() != []:
        return False
    logging.warning(
        "mixed_precision='mixed_bfloat16' on a CPU without bfloat16 "
        "instructions (none of %s): bfloat16 is emulated there and a training "
        "step is several times slower than in float32; use float32 on this CPU.",
        ", ".join(BFLOAT16_CPU_FLAGS))
    return True
