"""Turns the convolutions of a trained Keras model into LRLC layers.

An LRLC layer whose combining weights are equal at every position computes one
convolution, with the kernel sum_k a W_k. `to_lrlc` replaces each selected
`Conv2D` by a `LowRankLocallyConnected2D` set up that way, so the converted model
starts as the same function as the original and fine-tuning can then relax its
spatial invariance where that helps:

- combining weights: logits equal for every basis at every position (fixed
  weights), or a combining-weights network whose last layer has a zero kernel and
  a constant bias (input-dependent weights), so a[i, j, k] = w0 everywhere
  (w0 = 1/K with 'softmax' and '', 1/sqrt(K) with 'norm');
- bases: W_k = W / (K w0) + D_k with sum_k D_k = 0, so sum_k w0 W_k = W;
- channel bias: the convolution's bias; spatial bias: zero.

The perturbations D_k break the symmetry between the bases. With identical bases
every basis gets the same gradient and the combining weights none (softmax is
flat along equal logits), so the layer would stay a convolution forever. They are
seeded and scaled by `basis_perturbation` times the RMS of the basis W / (K w0).

Every other layer is cloned with its weights. Sequential and functional models
are rewritten, nested ones included (`keras.models.clone_model(recursive=True)`);
subclassed models have no graph to rewrite.
"""

import dataclasses
import math

from absl import logging
import keras
import numpy as np
# The class `keras.models.clone_model` rewrites and recurses into; Keras does not
# export it under `keras.*`.
from keras.src.models.functional import Functional

from low_rank_local_connectivity import layers as lrlc_layers
from low_rank_local_connectivity.validation import invalid_argument
from low_rank_local_connectivity.validation import is_int


# Keyword arguments of `LowRankLocallyConnected2D` that `to_lrlc` passes through.
# The geometry, activation and bias come from the convolution, and the weights are
# set by the conversion, so initializers are not among them.
LRLC_KWARGS = (
    "share_row_combining_weights",
    "share_col_combining_weights",
    "normalize_weights",
    "use_spatial_bias",
    "input_dependent",
    "kernel_regularizer",
    "combining_weights_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "combining_weights_constraint",
    "bias_constraint",
)
# Layers reported when they are not converted; all other layers are not convolutions.
CONVOLUTIONS_2D = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)
# The logit of every basis: its normalised weight w0 is then 1/K ('softmax', ''),
# or 1/sqrt(K) ('norm').
_UNIFORM_LOGITS = {"softmax": lambda rank: 0.0, "": lambda rank: 1.0 / rank,
                   "norm": lambda rank: 1.0}


@dataclasses.dataclass(frozen=True)
class ConversionPlan:
    """What `to_lrlc` does to a model.

    Attributes:
      converted: names of the convolutions that become LRLC layers, in model order.
      skipped: {name: reason} for the 2-D convolutions that stay as they are.
    """

    converted: tuple
    skipped: dict


def _check_arguments(model, spatial_rank, layers, basis_perturbation, seed, lrlc_kwargs):
    if not isinstance(model, (keras.Sequential, Functional)):
        raise invalid_argument(
            "model", type(model).__name__,
            "a Sequential or functional keras.Model (a subclassed model has no "
            "graph of layers to rewrite)",
        )
    if not model.built:
        raise invalid_argument("model", model.name, "a built model (give it an Input)")
    if not is_int(spatial_rank) or spatial_rank < 1:
        raise invalid_argument("spatial_rank", spatial_rank, "a positive integer")
    if not (
        layers is None or callable(layers)
        or (isinstance(layers, (list, tuple))
            and all(isinstance(name, str) for name in layers))
    ):
        raise invalid_argument(
            "layers", layers, "None, a list of layer names or a predicate on a layer"
        )
    if (
        isinstance(basis_perturbation, bool)
        or not isinstance(basis_perturbation, (int, float, np.floating))
        or not math.isfinite(basis_perturbation) or basis_perturbation < 0
    ):
        raise invalid_argument("basis_perturbation", basis_perturbation,
                       "a non-negative number")
    if not is_int(seed):
        raise invalid_argument("seed", seed, "an integer")
    unknown = sorted(set(lrlc_kwargs) - set(LRLC_KWARGS))
    if unknown:
        raise ValueError(
            f"Invalid keyword arguments {unknown} of `to_lrlc`: the geometry, "
            "activation and bias come from each convolution and the weights from "
            f"the conversion. Allowed: {', '.join(LRLC_KWARGS)}"
        )


def _leaf_layers(model):
    """The layers of a model in order, looking inside nested rewritable models."""
    for layer in model.layers:
        if isinstance(layer, (keras.Sequential, Functional)):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _lrlc_for(conv, spatial_rank, lrlc_kwargs):
    """A built LRLC layer that can replace `conv`, or the reason there is none."""
    if type(conv) is not keras.layers.Conv2D:
        return None, (
            f"a {type(conv).__name__}, not a Conv2D: only plain Conv2D layers "
            "are converted"
        )
    if conv.groups != 1:
        return None, f"a grouped convolution (groups={conv.groups})"
    build_config = conv.get_build_config()
    if not conv.built or not build_config:
        return None, "not built"
    kwargs = dict(
        kernel_regularizer=conv.kernel_regularizer,
        bias_regularizer=conv.bias_regularizer,
        activity_regularizer=conv.activity_regularizer,
        kernel_constraint=conv.kernel_constraint,
        bias_constraint=conv.bias_constraint,
    )
    if lrlc_kwargs.get("input_dependent"):
        kwargs.update(share_row_combining_weights=False,
                      share_col_combining_weights=False)
    kwargs.update(lrlc_kwargs)
    # Invalid options raise here; a spatial size the weights need but the model
    # leaves unknown fails the build, which skips the layer.
    lrlc = lrlc_layers.LowRankLocallyConnected2D(
        spatial_rank, conv.filters, conv.kernel_size,
        dilations=conv.dilation_rate, strides=conv.strides,
        padding=conv.padding, data_format=conv.data_format,
        activation=conv.activation, use_bias=conv.use_bias,
        name=conv.name, dtype=conv.dtype_policy, trainable=conv.trainable,
        **kwargs,
    )
    try:
        lrlc.build(build_config["input_shape"])
    except ValueError as error:
        return None, " ".join(str(error).split())
    return lrlc, None


def _replacements(model, spatial_rank, layers, lrlc_kwargs):
    """({id(conv): (conv, lrlc)}, {name: reason}) for the selected convolutions.

    Raises:
      ValueError: for a name in `layers` that is not a convertible Conv2D of the
        model, or when nothing would be converted.
    """
    all_layers = list(_leaf_layers(model))
    if isinstance(layers, (list, tuple)):
        known = {layer.name for layer in all_layers}
        missing = [name for name in layers if name not in known]
        if missing:
            raise invalid_argument("layers", missing, f"names of layers of model {model.name!r}")
    replacements, skipped = {}, {}
    for layer in all_layers:
        if isinstance(layers, (list, tuple)):
            if layer.name not in layers:
                continue
        elif not isinstance(layer, CONVOLUTIONS_2D) or (
            layers is not None and not layers(layer)
        ):
            continue
        lrlc, reason = _lrlc_for(layer, spatial_rank, lrlc_kwargs)
        if lrlc is not None:
            replacements[id(layer)] = (layer, lrlc)
        elif isinstance(layers, (list, tuple)):
            raise ValueError(
                f"Invalid value for argument `layers`: layer {layer.name!r} cannot "
                f"become a LowRankLocallyConnected2D ({reason})"
            )
        else:
            skipped[layer.name] = reason
    if not replacements:
        raise ValueError(
            f"Nothing to convert in model {model.name!r}: no selected Conv2D can "
            f"become an LRLC layer (layers={layers!r}; skipped: {skipped})"
        )
    return replacements, skipped


def conversion_plan(model, spatial_rank, layers=None, **lrlc_kwargs):
    """Which convolutions `to_lrlc` would convert, and why it would skip others.

    Takes the arguments of `to_lrlc` (its `basis_perturbation` and `seed` do not
    change the plan) and raises the same errors.

    Returns:
      A `ConversionPlan`.
    """
    _check_arguments(model, spatial_rank, layers, 0.0, 0, lrlc_kwargs)
    replacements, skipped = _replacements(model, spatial_rank, layers, lrlc_kwargs)
    return ConversionPlan(
        converted=tuple(conv.name for conv, _ in replacements.values()),
        skipped=skipped,
    )


def _initialize_from_conv(lrlc, conv, basis_perturbation, rng):
    """Sets `lrlc` (built) to compute `conv`, with zero-sum basis perturbations."""
    rank = lrlc.spatial_rank
    logit = _UNIFORM_LOGITS[lrlc.normalize_weights](rank)
    uniform = lrlc_layers.normalize_combining_weights(
        np.full((rank,), logit, np.float32), lrlc.normalize_weights
    )
    scale = 1.0 / (rank * float(keras.ops.convert_to_numpy(uniform)[0]))
    basis = scale * np.asarray(keras.ops.convert_to_numpy(conv.kernel), np.float64)
    noise = rng.standard_normal((rank, *basis.shape))
    noise -= noise.mean(axis=0)
    if rank > 1:  # Unit variance per entry after centring.
        noise *= math.sqrt(rank / (rank - 1))
    rms = math.sqrt(float(np.mean(np.square(basis))))
    bases = basis + basis_perturbation * rms * noise
    # Channel index k * F + f.
    lrlc.kernel_bases.assign(np.concatenate(list(bases), axis=-1).astype(np.float32))
    if lrlc.input_dependent:
        kernel, bias = lrlc.combining_weights_network.logits
        kernel.assign(np.zeros(kernel.shape, np.float32))
        bias.assign(np.full(bias.shape, logit, np.float32))
    else:
        factors = [
            variable
            for variable in (lrlc.combining_weights_row, lrlc.combining_weights_col,
                             lrlc.combining_weights_table)
            if variable is not None
        ]
        for variable in factors:  # Their sum is the logit.
            variable.assign(np.full(variable.shape, logit / len(factors), np.float32))
    for variable in (lrlc.spatial_bias_row, lrlc.spatial_bias_col, lrlc.spatial_bias):
        if variable is not None:
            variable.assign(np.zeros(variable.shape, np.float32))
    if lrlc.use_bias:
        lrlc.bias.assign(keras.ops.convert_to_numpy(conv.bias))


def to_lrlc(model, spatial_rank, layers=None, *, basis_perturbation=0.1, seed=0,
            **lrlc_kwargs):
    """Returns a copy of `model` whose convolutions are LRLC layers.

    Every selected `Conv2D` becomes a `LowRankLocallyConnected2D` of rank
    `spatial_rank` with the same name, filters, kernel size, strides, padding,
    dilation, data format, activation, bias, dtype policy, trainability,
    regularizers and constraints, set up to compute the same function (see the
    module docstring). Every other layer is cloned with its weights; the original
    model is left as it is. A compiled model's compile config is carried over.

    Convolutions that cannot be represented are skipped with a logged reason
    (`conversion_plan` returns them): DepthwiseConv2D, SeparableConv2D,
    Conv2DTranspose and subclasses of Conv2D, grouped convolutions, and inputs
    whose spatial size is unknown where the combining weights need it (e.g. the
    default row and column weights of a model with input (None, None, 3); share
    one axis only, or give the model a fixed size).

    Args:
      model: a built Sequential or functional `keras.Model`; nested Sequential
        and functional models are converted too.
      spatial_rank: int, K >= 1, the number of bases of every LRLC layer.
      layers: None (every eligible Conv2D), a list of layer names (each must be a
        Conv2D that can be converted, at any nesting depth), or a predicate
        `layer -> bool` called on every 2-D convolution layer.
      basis_perturbation: float >= 0, the standard deviation of the zero-sum
        perturbation of each basis entry, relative to the RMS of the basis. 0
        gives identical bases, which fine-tuning never separates.
      seed: int, seeds the perturbations.
      **lrlc_kwargs: options of `LowRankLocallyConnected2D` (see `LRLC_KWARGS`),
        e.g. `normalize_weights='norm'` or `input_dependent=True` (which turns both
        share flags off unless they are given). Regularizers and constraints
        default to the convolution's.

    Returns:
      A new `keras.Model` (Sequential stays Sequential; a functional subclass with
      a custom constructor becomes a plain functional model).

    Raises:
      ValueError: for invalid arguments, a named layer that is not a convertible
        Conv2D, or a model with nothing to convert.
    """
    _check_arguments(model, spatial_rank, layers, basis_perturbation, seed, lrlc_kwargs)
    replacements, skipped = _replacements(model, spatial_rank, layers, lrlc_kwargs)
    for name, reason in skipped.items():
        logging.warning("to_lrlc: %s stays as it is: %s", name, reason)
    clones = []

    def clone(layer):
        if id(layer) in replacements:
            return replacements[id(layer)][1]
        copy = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.layers.Layer):
            clones.append((layer, copy))
        return copy

    converted = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for layer, copy in clones:
        copy.set_weights(layer.get_weights())
    rng = np.random.default_rng(seed)
    for conv, lrlc in replacements.values():
        _initialize_from_conv(lrlc, conv, basis_perturbation, rng)
    return converted
