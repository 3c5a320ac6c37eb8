"""The paper's small experiment network, with every baseline layer type.

A stack of blocks `layer -> BatchNorm (optional) -> ReLU` followed by global average
pooling (or flatten) and a dense layer that outputs logits (docs/design.md §2). The
layer of each block is one of:

- 'conv2d': `keras.layers.Conv2D` (bias only without batch norm);
- 'wide_conv2d': a convolution widened to match the parameter count of an LRLC
  layer of rank K: int((K * C_in + F) / (C_in + F) * F) filters, or F * K filters
  when it is the last block;
- 'locally_connected2d': `LocallyConnected2D` (unshared weights, always a bias);
- 'low_rank_locally_connected2d': `LowRankLocallyConnected2D` (channel bias only
  without batch norm).

Every layer has a stable name, so intermediate outputs can be read for
visualisation with `endpoints_model`:

- 'coord_channels' (when `coord_conv`), then for block i = 1, 2, ...:
  'block{i}_conv', 'block{i}_wide_conv', 'block{i}_lc' or 'block{i}_lrlc' (the
  block's layer, by type), 'block{i}_bn' (when `batch_norm`) and 'block{i}_relu';
- 'global_avg_pool' or 'flatten', and 'logits'.
"""

import numbers

import keras

from low_rank_local_connectivity import layers as lrlc_layers
from low_rank_local_connectivity.validation import invalid_argument
from low_rank_local_connectivity.validation import is_int
from low_rank_local_connectivity.validation import positive_int
from low_rank_local_connectivity.validation import standardize_pair

# The Keras layer of a block, by the reference's names (an experiment's layer
# type, `layer_types.py`, says which one is substituted where).
BLOCK_LAYERS = (
    "conv2d",
    "wide_conv2d",
    "locally_connected2d",
    "low_rank_locally_connected2d",
)
# Block layers whose construction uses `spatial_rank`.
RANKED_BLOCK_LAYERS = ("wide_conv2d", "low_rank_locally_connected2d")
# Suffix of the block layer's name, per layer type.
LAYER_NAME_SUFFIXES = {
    "conv2d": "conv",
    "wide_conv2d": "wide_conv",
    "locally_connected2d": "lc",
    "low_rank_locally_connected2d": "lrlc",
}


def check_combining_weight_options(
    input_dependent, share_row_combining_weights, share_col_combining_weights
):
    """Rejects input-dependent combining weights with a sharing flag set.

    Raises:
      ValueError: if `input_dependent` and either share flag is True.
    """
    if input_dependent and (share_row_combining_weights or share_col_combining_weights):
        raise ValueError(
            "Input-dependent combining weights are predicted at every position: "
            "`share_row_combining_weights` and `share_col_combining_weights` must "
            "both be False when input_dependent=True. Received: "
            f"share_row_combining_weights={share_row_combining_weights!r}, "
            f"share_col_combining_weights={share_col_combining_weights!r}"
        )


def check_num_classes_and_input_shape(num_classes, input_shape):
    """Validates the classifier's output size and the (H, W, C) image shape.

    Returns:
      `(num_classes, input_shape)` as an int and a tuple of 3 ints.

    Raises:
      ValueError: if either is unset (None) or malformed.
    """
    if num_classes is None:
        raise ValueError(
            "`num_classes` is not set (received None). Set it in the model config; "
            "the trainer fills it from the dataset's metadata."
        )
    positive_int("num_classes", num_classes)
    if input_shape is None:
        raise ValueError(
            "`input_shape` is not set (received None). Set it to the (height, "
            "width, num_channels) of the images in the model config; the trainer "
            "fills it from the dataset's metadata."
        )
    if (
        not isinstance(input_shape, (list, tuple))
        or len(input_shape) != 3
        or not all(is_int(size) and size >= 1 for size in input_shape)
    ):
        raise invalid_argument(
            "input_shape", input_shape, "(height, width, num_channels), positive ints"
        )
    return int(num_classes), tuple(int(size) for size in input_shape)


def lrlc_options(
    normalize_weights,
    input_dependent,
    share_row_combining_weights,
    share_col_combining_weights,
    combining_weights_initializer,
    regularizer,
    regularize_lrlc,
):
    """The keyword arguments the model configs give every LRLC layer.

    Args:
      normalize_weights, input_dependent, share_row_combining_weights,
        share_col_combining_weights, combining_weights_initializer: the model
        fields of the same names, passed through.
      regularizer: the model's kernel regularizer (`weight_decay_regularizer`).
      regularize_lrlc: bool, whether `regularizer` also applies to the LRLC kernel
        bases and combining weights.

    Returns:
      A dict of `LowRankLocallyConnected2D` keyword arguments.

    Raises:
      ValueError: for input-dependent weights with a share flag set.
    """
    check_combining_weight_options(
        input_dependent, share_row_combining_weights, share_col_combining_weights
    )
    lrlc_regularizer = regularizer if regularize_lrlc else None
    return {
        "combining_weights_initializer": combining_weights_initializer,
        "kernel_regularizer": lrlc_regularizer,
        "combining_weights_regularizer": lrlc_regularizer,
        "share_row_combining_weights": share_row_combining_weights,
        "share_col_combining_weights": share_col_combining_weights,
        "normalize_weights": normalize_weights,
        "input_dependent": input_dependent,
    }


def weight_decay_regularizer(weight_decay):
    """The kernel regularizer implementing `weight_decay`, or None for 0.

    `weight_decay` is the usual SGD weight-decay coefficient lambda: the penalty
    added to the loss is lambda / 2 * sum(w ** 2), whose gradient is lambda * w.

    Raises:
      ValueError: if `weight_decay` is negative or not a number.
    """
    if (
        isinstance(weight_decay, bool)
        or not isinstance(weight_decay, numbers.Real)
        or weight_decay < 0
    ):
        raise invalid_argument("weight_decay", weight_decay, "a non-negative float")
    if weight_decay == 0:
        return None
    return keras.regularizers.L2(float(weight_decay) / 2)


def wide_conv_filters(spatial_rank, in_channels, filters, is_last):
    """Filters of a 'wide_conv2d' layer matching an LRLC layer of rank K.

    An LRLC layer of rank K has about K times the kernel parameters of a
    convolution. Widening a convolution to F' filters also widens the next layer's
    input, so F' solves C_in * F' + F' * F = K * C_in * F + F * F (assuming the next
    layer has F filters too); the last layer has no next layer and uses F * K.

    Args:
      spatial_rank: int, K.
      in_channels: int, C_in, the channels of the layer input.
      filters: int, F, the filters of the convolution being widened.
      is_last: bool, whether this is the network's last block.

    Returns:
      The number of filters, an int.
    """
    if is_last:
        return filters * spatial_rank
    ratio = (spatial_rank * in_channels + filters) / (in_channels + filters)
    return int(ratio * filters)


def simple_network(
    num_classes=None,
    input_shape=None,
    kernel_sizes=(3, 3, 3),
    num_filters=(64, 64, 64),
    strides=(1, 1, 1),
    padding="valid",
    layer_types=("conv2d", "conv2d", "conv2d"),
    spatial_rank=1,
    normalize_weights="softmax",
    input_dependent=False,
    kernel_initializer="he_uniform",
    combining_weights_initializer="conv_init",
    batch_norm=True,
    bn_momentum=0.9,
    bn_epsilon=1e-5,
    global_avg_pooling=True,
    coord_conv=False,
    share_row_combining_weights=True,
    share_col_combining_weights=True,
    weight_decay=0.0,
    regularize_lrlc=True,
):
    """Builds the paper's small classification network (docs/design.md §2).

    Args:
      num_classes: int, the number of classes (size of the logits). Required.
      input_shape: tuple of 3 ints, (height, width, num_channels) of the
        channels_last input images. Required (the LRLC and locally connected layers
        need a fixed spatial size).
      kernel_sizes: sequence of ints or (kh, kw) pairs, one per block.
      num_filters: sequence of ints, the filters F of each block.
      strides: sequence of ints or pairs, one per block.
      padding: 'valid' or 'same', for every block.
      layer_types: sequence of layer types, one per block, each in `BLOCK_LAYERS`.
      spatial_rank: int, the rank K of every 'low_rank_locally_connected2d' block,
        and the rank a 'wide_conv2d' block matches.
      normalize_weights: 'softmax', 'norm' or '' (LRLC combining weights).
      input_dependent: bool, LRLC combining weights predicted from the input
        (requires both share flags False).
      kernel_initializer: initializer of every block's kernel (LRLC: its bases).
      combining_weights_initializer: LRLC combining-weights initializer
        ('conv_init' or a Keras initializer).
      batch_norm: bool, batch norm after every block's layer.
      bn_momentum: float, batch-norm momentum.
      bn_epsilon: float, batch-norm epsilon.
      global_avg_pooling: bool, global average pooling before the dense head
        (False: flatten).
      coord_conv: bool, append row and column coordinate channels in [-1, 1] to the
        image (CoordConv).
      share_row_combining_weights: bool, LRLC row-factorised combining weights.
      share_col_combining_weights: bool, LRLC column-factorised combining weights.
      weight_decay: float, coefficient lambda of the penalty lambda / 2 * sum(w**2)
        on every block's kernel and the dense kernel (0 disables it).
      regularize_lrlc: bool, whether the weight decay also applies to the LRLC
        kernel bases and combining weights (the kernels of the combining-weights
        network when input-dependent).

    Returns:
      A functional `keras.Model` named 'simple_model' mapping images
      (batch, height, width, num_channels) to float32 logits (batch, num_classes).

    Raises:
      ValueError: for an unset `num_classes` or `input_shape`, per-block lists of
        different lengths, an unknown layer type, `spatial_rank` < 1 with a layer
        type that uses it, input-dependent weights with a share flag set, and any
        other invalid argument.
    """
    num_classes, input_shape = check_num_classes_and_input_shape(
        num_classes, input_shape
    )
    per_block = {
        "kernel_sizes": kernel_sizes,
        "num_filters": num_filters,
        "strides": strides,
        "layer_types": layer_types,
    }
    for name, value in per_block.items():
        if not isinstance(value, (list, tuple)) or not value:
            raise invalid_argument(name, value, "a non-empty list with one entry per block")
    lengths = {name: len(value) for name, value in per_block.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            "The per-block lists must have one entry per block, i.e. equal lengths. "
            f"Received lengths: {lengths}"
        )
    for index, layer_type in enumerate(layer_types):
        if layer_type not in BLOCK_LAYERS:
            raise ValueError(
                f"Invalid value for argument `layer_types`. Expected each entry in "
                f"{BLOCK_LAYERS}. Received: layer_types[{index}]={layer_type!r}"
            )
    kernel_sizes = [
        standardize_pair(f"kernel_sizes[{i}]", k) for i, k in enumerate(kernel_sizes)
    ]
    strides = [standardize_pair(f"strides[{i}]", s) for i, s in enumerate(strides)]
    for index, filters in enumerate(num_filters):
        positive_int(f"num_filters[{index}]", filters)
    if any(layer_type in RANKED_BLOCK_LAYERS for layer_type in layer_types):
        positive_int("spatial_rank", spatial_rank)
    if padding not in ("valid", "same"):
        raise invalid_argument("padding", padding, "'valid' or 'same'")
    regularizer = weight_decay_regularizer(weight_decay)
    lrlc_kwargs = lrlc_options(
        normalize_weights, input_dependent, share_row_combining_weights,
        share_col_combining_weights, combining_weights_initializer, regularizer,
        regularize_lrlc,
    )

    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    if coord_conv:
        x = lrlc_layers.CoordinateChannels(name="coord_channels")(x)
    num_blocks = len(layer_types)
    for index, layer_type in enumerate(layer_types):
        prefix = f"block{index + 1}"
        common = {
            "kernel_size": kernel_sizes[index],
            "strides": strides[index],
            "padding": padding,
            "kernel_initializer": kernel_initializer,
            "name": f"{prefix}_{LAYER_NAME_SUFFIXES[layer_type]}",
        }
        filters = num_filters[index]
        if layer_type in ("conv2d", "wide_conv2d"):
            if layer_type == "wide_conv2d":
                filters = wide_conv_filters(
                    spatial_rank, x.shape[-1], filters, index == num_blocks - 1
                )
            layer = keras.layers.Conv2D(
                filters,
                use_bias=not batch_norm,
                kernel_regularizer=regularizer,
                **common,
            )
        elif layer_type == "locally_connected2d":
            layer = lrlc_layers.LocallyConnected2D(
                filters, use_bias=True, kernel_regularizer=regularizer, **common
            )
        else:
            layer = lrlc_layers.LowRankLocallyConnected2D(
                spatial_rank, filters, use_bias=not batch_norm, **lrlc_kwargs, **common
            )
        x = layer(x)
        if batch_norm:
            x = lrlc_layers.FusedBatchNormalization(
                momentum=bn_momentum, epsilon=bn_epsilon, name=f"{prefix}_bn"
            )(x)
        x = keras.layers.ReLU(name=f"{prefix}_relu")(x)
    if global_avg_pooling:
        x = keras.layers.GlobalAveragePooling2D(name="global_avg_pool")(x)
    else:
        x = keras.layers.Flatten(name="flatten")(x)
    logits = keras.layers.Dense(
        num_classes, kernel_regularizer=regularizer, dtype="float32", name="logits"
    )(x)
    return keras.Model(inputs, logits, name="simple_model")


def endpoints_model(model, layer_names=None):
    """A model returning the outputs of named layers of a functional model.

    For visualising activations: e.g. `endpoints_model(model)(images)['block2_lrlc']`
    is the output of the second block's LRLC layer. The combining weights of an LRLC
    layer are read from the layer itself:
    `model.get_layer('block2_lrlc').combining_weights` (fixed weights) or
    `.get_combining_weights(inputs_of_that_layer)` (input-dependent weights, where
    the inputs are the previous endpoint).

    Args:
      model: a functional `keras.Model` (e.g. from `simple_network` or `resnet50`).
      layer_names: names of the layers whose outputs to return; None returns every
        layer except the input layer.

    Returns:
      A `keras.Model` with the same inputs, returning a dict {layer name: output}
      that shares the original model's layers and weights.

    Raises:
      ValueError: if a name is not a layer of `model`.
    """
    if layer_names is None:
        layer_names = [
            layer.name
            for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer)
        ]
    known = {layer.name for layer in model.layers}
    unknown = [name for name in layer_names if name not in known]
    if unknown:
        raise ValueError(
            f"Invalid value for argument `layer_names`: {unknown} are not layers of "
            f"model {model.name!r}. Known layers: {sorted(known)}"
        )
    outputs = {name: model.get_layer(name).output for name in layer_names}
    return keras.Model(model.input, outputs, name=f"{model.name}_endpoints")
