"""The compiled steps `lrlc-benchmark` times, for each Keras backend.

`compiled_steps(layer, inputs, mode)` returns {'forward', 'forward_backward'}:
functions of no argument that run one step and return its result as a Python
float (which waits for the device). Modes per backend, `MODES`:

- TensorFlow: 'graph' (`tf.function`) and 'xla' (`tf.function(jit_compile=True)`);
- JAX: 'xla' (`jax.jit` of the layer's `stateless_call` and its VJP);
- PyTorch: 'eager' (autograd, as a PyTorch user runs a layer).

The forward+backward step returns the sum of the outputs and of every gradient
(input and trainable weights): the forward pass stays part of the step even where
a compiler could prune what the backward pass does not read.

`peak_memory_bytes(step)` is the allocator's peak during one step where the
backend reports it (TensorFlow's CPU allocator where oneDNN is on, a CUDA
device under PyTorch or JAX) and None elsewhere.
"""

import keras
import numpy as np

MODES = {"tensorflow": ("graph", "xla"), "jax": ("xla",), "torch": ("eager",)}


def backend_modes():
    """The compile modes of the Keras backend in use."""
    return MODES.get(keras.backend.backend(), ())


def random_inputs(shape, seed, dtype="float32"):
    """A backend tensor of standard normal values."""
    values = np.random.default_rng(seed).standard_normal(shape).astype("float32")
    return keras.ops.cast(keras.ops.convert_to_tensor(values), dtype)


def _total(values):
    """Sum of the sums of `values`, in float32 (a scalar tensor)."""
    sums = [keras.ops.cast(keras.ops.sum(v), "float32") for v in values]
    return sum(sums[1:], sums[0])


def compiled_steps(layer, inputs, mode):
    """{'forward', 'forward_backward'}: step functions returning Python floats."""
    outputs = layer(inputs)  # Builds the layer.
    upstream = random_inputs(tuple(outputs.shape), seed=1, dtype=outputs.dtype)
    backend = keras.backend.backend()
    if mode not in MODES.get(backend, ()):
        raise ValueError(
            f"Invalid value for argument `mode`: {mode!r}; the {backend} backend "
            f"runs {MODES.get(backend, ())}"
        )
    builder = {"tensorflow": _tensorflow_steps, "jax": _jax_steps,
               "torch": _torch_steps}[backend]
    return builder(layer, inputs, upstream, mode)


class _IntendedRetracing:
    """Drops TensorFlow's warning that many functions traced: each case is one."""

    def filter(self, record):
        return "triggered tf.function retracing" not in record.getMessage()


def _tensorflow_steps(layer, inputs, upstream, mode):
    import tensorflow as tf

    tf_logger = tf.get_logger()
    if not any(isinstance(f, _IntendedRetracing) for f in tf_logger.filters):
        tf_logger.addFilter(_IntendedRetracing())

    variables = list(layer.trainable_variables)
    jit = mode == "xla"

    @tf.function(jit_compile=jit)
    def forward():
        return _total([layer(inputs)])

    @tf.function(jit_compile=jit)
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs)
        gradients = tape.gradient(outputs, [inputs] + variables, output_gradients=upstream)
        return _total([outputs] + gradients)

    return {"forward": lambda: float(forward()),
            "forward_backward": lambda: float(forward_backward())}


def _jax_steps(layer, inputs, upstream, mode):
    del mode  # Always XLA.
    import jax

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    def apply(trainable, x):
        outputs, _ = layer.stateless_call(trainable, non_trainable, x)
        return outputs

    @jax.jit
    def forward(trainable, x):
        return _total([apply(trainable, x)])

    @jax.jit
    def forward_backward(trainable, x):
        outputs, pullback = jax.vjp(apply, trainable, x)
        weight_gradients, input_gradient = pullback(upstream)
        return _total([outputs, input_gradient] + list(weight_gradients))

    return {"forward": lambda: float(forward(trainable, inputs)),
            "forward_backward": lambda: float(forward_backward(trainable, inputs))}


def _torch_steps(layer, inputs, upstream, mode):
    del mode  # Eager.
    import torch

    weights = [v.value for v in layer.trainable_variables]

    def forward():
        with torch.no_grad():
            return float(_total([layer(inputs)]))

    def forward_backward():
        x = inputs.detach().requires_grad_(True)
        outputs = layer(x)
        gradients = torch.autograd.grad(outputs, [x] + weights, grad_outputs=upstream)
        with torch.no_grad():
            return float(_total([outputs, *gradients]))

    return {"forward": forward, "forward_backward": forward_backward}


def peak_memory_bytes(step):
    """Peak allocator bytes during `step` above those held before, or None."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            before = tf.config.experimental.get_memory_info("CPU:0")["current"]
        except ValueError:
            # No allocator statistics: TensorFlow keeps them on the CPU only
            # with oneDNN, which it turns on by default only on CPUs with
            # AVX-512 VNNI / bfloat16 or AMX (not on an AVX2-only CPU).
            return None
        tf.config.experimental.reset_memory_stats("CPU:0")
        step()
        return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        return torch.cuda.max_memory_allocated() - before
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        stats = device.memory_stats() if device.platform != "cpu" else None
        if not stats or "peak_bytes_in_use" not in stats:
            return None
        # JAX keeps a process-wide peak (no reset): report it only when this
        # step raised it.
        before = stats["peak_bytes_in_use"]
        step()
        peak = device.memory_stats()["peak_bytes_in_use"]
        return peak - stats["bytes_in_use"] if peak > before else None
    return None
