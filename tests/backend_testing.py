"""Backend-neutral test support: the Keras backend, TensorFlow-only marks, gradients.

Keras fixes its backend once per process (`KERAS_BACKEND`), so the core suites run
once per backend, as Keras' own suite does: `KERAS_BACKEND=jax python -m pytest -m
core`. Tests whose oracle is TensorFlow itself are marked `requires_tensorflow`;
each has a NumPy counterpart that runs on every backend.

`gradients` and `layer_gradients` compute vector-Jacobian products with the
backend's own autodiff (`tf.GradientTape`, `jax.vjp` under `jax.jit`,
`torch.autograd.grad`) and return NumPy arrays; the layers' hand-written gradients
(`keras.ops.custom_gradient`) are what they differentiate on every backend.
"""

import importlib

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()


def requires_tensorflow(oracle):
    """Skips a test off TensorFlow; `oracle` says what it needs TensorFlow for."""
    return pytest.mark.skipif(
        BACKEND != "tensorflow",
        reason=f"TensorFlow-only oracle ({oracle}); the Keras backend is {BACKEND}",
    )


def numpy(value):
    """A tensor or variable of any backend as a NumPy array (None stays None)."""
    return None if value is None else keras.ops.convert_to_numpy(value)


def gradients(function, arguments, upstream):
    """[function(*arguments), d/d argument of sum(upstream * outputs) for each].

    Args:
      function: a function of tensors returning one tensor.
      arguments: NumPy arrays, passed to `function` as tensors.
      upstream: NumPy array shaped like the outputs.

    Returns:
      NumPy arrays: the outputs, then one gradient per argument (None where the
      backend reports the argument as unconnected; JAX reports zeros).
    """
    if BACKEND == "tensorflow":
        tf = importlib.import_module("tensorflow")
        tensors = [tf.constant(a) for a in arguments]
        with tf.GradientTape() as tape:
            tape.watch(tensors)
            outputs = function(*tensors)
        grads = tape.gradient(outputs, tensors, output_gradients=tf.constant(upstream))
    elif BACKEND == "jax":
        jax = importlib.import_module("jax")

        def vjp(arguments, upstream):
            outputs, pullback = jax.vjp(function, *arguments)
            return outputs, pullback(upstream.astype(outputs.dtype))

        # One compiled program: far faster than JAX's op-by-op dispatch here.
        outputs, grads = jax.jit(vjp)([jax.numpy.asarray(a) for a in arguments],
                                      jax.numpy.asarray(upstream))
    elif BACKEND == "torch":
        torch = importlib.import_module("torch")
        tensors = [
            keras.ops.convert_to_tensor(a).detach().requires_grad_(True) for a in arguments
        ]
        outputs = function(*tensors)
        grads = torch.autograd.grad(
            outputs, tensors, grad_outputs=keras.ops.convert_to_tensor(upstream),
            allow_unused=True,
        )
    else:
        raise NotImplementedError(f"no gradients on the {BACKEND} backend")
    return [numpy(outputs)] + [numpy(g) for g in grads]


def layer_gradients(layer, x, upstream, call=None):
    """Outputs, then gradients w.r.t. x and each of the (built) layer's trainables.

    The variables are replaced by tensors for the call (`keras.StatelessScope`), so
    every backend differentiates them as ordinary inputs. `call` (default: the
    layer) maps x to the outputs.
    """
    variables = layer.trainable_variables
    call = call or layer

    def function(inputs, *values):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return call(inputs)

    return gradients(function, [x] + [numpy(v) for v in variables], upstream)
