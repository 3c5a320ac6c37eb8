"""The low-rank locally connected layer (Elsayed et al., ICML 2020; design §1).

`LowRankLocallyConnected2D` evaluates its K bases as ONE convolution with K * F
output channels and combines them with `layers.ops.combine_bases`, so it costs
about a `Conv2D(K * F)`; per-position kernels are never built in `call`. Its
combining weights are in `lrlc_combining_weights`.
"""

import keras
from keras import ops

from low_rank_local_connectivity.layers.base import SERIALIZATION_PACKAGE
from low_rank_local_connectivity.layers.base import BaseLocallyConnected2D
from low_rank_local_connectivity.layers.lrlc_combining_weights import CONV_INIT
from low_rank_local_connectivity.layers.lrlc_combining_weights import (
    LowRankCombiningWeights,
)
from low_rank_local_connectivity.layers.ops import NORMALIZATIONS
from low_rank_local_connectivity.layers.ops import combine_bases
from low_rank_local_connectivity.validation import is_int
from low_rank_local_connectivity.validation import positive_int
from low_rank_local_connectivity.validation import standardize_choice
from low_rank_local_connectivity.validation import standardize_pair


def _pairs_per_basis(name, value, rank):
    """`rank` pairs: one per basis from a Python list, else `value` for every basis.

    Raises:
      ValueError: for a list whose length is not `rank`, or an invalid pair.
    """
    if not isinstance(value, list):
        return (standardize_pair(name, value),) * rank
    if len(value) != rank:
        raise ValueError(
            f"Invalid value for argument `{name}`. A list gives one value per "
            f"basis, so its length must equal spatial_rank={rank} (use a tuple "
            f"(height, width) for a single rectangular value). "
            f"Received: {name}={value!r}"
        )
    return tuple(standardize_pair(f"{name}[{k}]", v) for k, v in enumerate(value))


@keras.saving.register_keras_serializable(package=SERIALIZATION_PACKAGE)
class LowRankLocallyConnected2D(LowRankCombiningWeights, BaseLocallyConnected2D):
    """2-D low-rank locally connected layer.

    Learns K = `spatial_rank` convolution filter banks (the bases) and combines their
    outputs at every output position (i, j) with weights a[i, j, :] normalised over
    the bases:

        y[b, i, j, :] = sum_k a[i, j, k] * (W_k * x)[b, i, j, :] + s[i, j] + c[:]

    The combining weights are either fixed learned parameters -- factorised as
    r[i, k] + c[j, k] when shared along rows and columns (default), along one axis
    only, or a full (H_out, W_out, K) table -- or, with `input_dependent=True`,
    predicted per example by `InputDependentCombiningWeights`. With the default
    'conv_init' every position starts with equal weights, so a freshly built layer is
    a convolution with kernel mean_k(W_k).

    Args:
      spatial_rank: int, K >= 1, the number of basis filter banks.
      filters: int, F >= 1, the number of output channels.
      kernel_size: int or tuple of 2 ints, the size of every basis; or a LIST of K
        ints/pairs, one per basis (requires padding='same').
      dilations: int or tuple of 2 ints; or a LIST of K values, one per basis
        (requires padding='same').
      strides: int or tuple of 2 ints. Strides > 1 cannot be combined with
        dilations > 1.
      padding: 'valid' or 'same' (case-insensitive).
      data_format: 'channels_last' (B, H, W, C) or 'channels_first' (B, C, H, W);
        None means `keras.config.image_data_format()`.
      activation: activation applied to the output (name or callable).
      use_bias: bool, whether to add a per-channel bias c of shape (F,).
      kernel_initializer: initializer of the bases.
      combining_weights_initializer: 'conv_init' (constant 1/sqrt(K) split evenly
        between the row and column factors) or any Keras initializer.
      bias_initializer: initializer of the channel and spatial biases.
      kernel_regularizer: regularizer of the bases.
      combining_weights_regularizer: regularizer of the fixed combining weights (of
        the kernels of the combining-weights network when `input_dependent`).
      bias_regularizer: regularizer of the channel and spatial biases.
      activity_regularizer: regularizer of the layer output.
      kernel_constraint: constraint of the bases.
      combining_weights_constraint: constraint of the fixed combining weights (of the
        network's kernels when `input_dependent`).
      bias_constraint: constraint of the channel and spatial biases.
      share_row_combining_weights: bool, factorise the weights with a per-row term
        r[i, k] (variable (H_out, K)).
      share_col_combining_weights: bool, factorise the weights with a per-column term
        c[j, k] (variable (W_out, K)). With only one of the two flags the weights vary
        along that axis only, and the other spatial size may be unknown (None).
        With neither, a full (H_out, W_out, K) table is learned.
      normalize_weights: 'softmax' (default), 'norm' (unit L2 norm over k) or ''
        (no normalisation; None is accepted for '').
      use_spatial_bias: bool, whether to add a spatial bias s[i, j] shared over
        channels (factorised like the combining weights; a full map otherwise).
      input_dependent: bool, predict the combining weights from the input. Requires
        both share flags to be False.
      **kwargs: base `Layer` arguments (name, dtype, trainable, ...).

    Input shape:
      channels_last: (batch, H, W, C_in); channels_first: (batch, C_in, H, W).

    Output shape:
      channels_last: (batch, H_out, W_out, F); channels_first: (batch, F, H_out,
      W_out), with H_out, W_out as for a convolution with the same arguments.

    Raises:
      ValueError: for invalid arguments (at construction) and for inputs whose
        channel dimension, or spatial size needed by the chosen parametrisation, is
        unknown or too small for the kernel (at build).

    Example:

    >>> layer = LowRankLocallyConnected2D(spatial_rank=4, filters=64, kernel_size=3)
    >>> layer(np.zeros((2, 32, 32, 3), "float32")).shape
    (2, 30, 30, 64)
    >>> layer.combining_weights.shape
    (30, 30, 4)
    """

    def __init__(
        self,
        spatial_rank,
        filters,
        kernel_size,
        dilations=1,
        strides=(1, 1),
        padding="valid",
        data_format="channels_last",
        activation=None,
        use_bias=True,
        kernel_initializer="he_uniform",
        combining_weights_initializer=CONV_INIT,
        bias_initializer="zeros",
        kernel_regularizer=None,
        combining_weights_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        combining_weights_constraint=None,
        bias_constraint=None,
        share_row_combining_weights=True,
        share_col_combining_weights=True,
        normalize_weights="softmax",
        use_spatial_bias=True,
        input_dependent=False,
        **kwargs,
    ):
        rank = positive_int("spatial_rank", spatial_rank)
        super().__init__(
            filters=filters, strides=strides, padding=padding, data_format=data_format,
            activation=activation, use_bias=use_bias,
            kernel_initializer=kernel_initializer, bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, bias_constraint=bias_constraint,
            **kwargs,
        )
        self.spatial_rank = rank
        self.kernel_sizes = _pairs_per_basis("kernel_size", kernel_size, rank)
        self.dilation_rates = _pairs_per_basis("dilations", dilations, rank)
        self.per_basis = isinstance(kernel_size, list) or isinstance(dilations, list)
        if self.per_basis and self.padding != "same":
            raise ValueError(
                "Bases of different kernel sizes or dilations (`kernel_size` or "
                "`dilations` given as a list) are only aligned with "
                "padding='same'. Received: "
                f"padding={padding!r}, kernel_size={kernel_size!r}, "
                f"dilations={dilations!r}"
            )
        if max(self.strides) > 1 and max(max(d) for d in self.dilation_rates) > 1:
            raise ValueError(
                "Strides > 1 cannot be combined with dilations > 1. Received: "
                f"strides={strides!r}, dilations={dilations!r}"
            )
        if self.per_basis:
            self.kernel_size = list(self.kernel_sizes)
            self.dilations = list(self.dilation_rates)
        else:
            self.kernel_size, self.dilations = self.kernel_sizes[0], self.dilation_rates[0]
        if combining_weights_initializer == CONV_INIT:
            self.combining_weights_initializer = CONV_INIT
        else:
            self.combining_weights_initializer = keras.initializers.get(
                combining_weights_initializer
            )
        self.combining_weights_regularizer = keras.regularizers.get(
            combining_weights_regularizer
        )
        self.combining_weights_constraint = keras.constraints.get(
            combining_weights_constraint
        )
        self.share_row_combining_weights = bool(share_row_combining_weights)
        self.share_col_combining_weights = bool(share_col_combining_weights)
        if normalize_weights is None:
            normalize_weights = ""
        self.normalize_weights = standardize_choice(
            "normalize_weights", normalize_weights, NORMALIZATIONS
        )
        self.use_spatial_bias = bool(use_spatial_bias)
        self.input_dependent = bool(input_dependent)
        if self.input_dependent and (
            self.share_row_combining_weights or self.share_col_combining_weights
        ):
            raise ValueError(
                "Input-dependent combining weights are predicted at every position, "
                "so `share_row_combining_weights` and `share_col_combining_weights` "
                "must both be False when input_dependent=True. Received: "
                f"share_row_combining_weights={share_row_combining_weights!r}, "
                f"share_col_combining_weights={share_col_combining_weights!r}"
            )

    # -- geometry --------------------------------------------------------------

    def _window(self):
        # With bases of different sizes the padding is 'same': any one will do.
        return self.kernel_sizes[0], self.dilation_rates[0]

    def _check_spatial_size(self, input_shape, height, width):
        out_height, out_width = self._output_spatial_shape(height, width)
        needs = (
            ("height", "row", height, out_height, self._weights_vary_along_rows),
            ("width", "column", width, out_width, self._weights_vary_along_cols),
        )
        for axis, line, size, out_size, needed in needs:
            if size is None and (needed or self.input_dependent):
                raise ValueError(
                    f"`{type(self).__name__}` needs the input {axis} at build time: "
                    f"its combining weights (share_row_combining_weights="
                    f"{self.share_row_combining_weights}, "
                    f"share_col_combining_weights={self.share_col_combining_weights}"
                    f", input_dependent={self.input_dependent}) and spatial bias "
                    f"have one entry per output {line}. Received "
                    f"input_shape={tuple(input_shape)}. Give the model a fixed "
                    "input size, or share the weights along this axis only."
                )
            if out_size is not None and out_size < 1:
                raise ValueError(
                    f"The input {axis} ({size}) is too small for "
                    f"kernel_size={self.kernel_size}, dilations={self.dilations} with "
                    f"padding='{self.padding}': the output would be empty. Received "
                    f"input_shape={tuple(input_shape)}"
                )
        return out_height, out_width

    # -- variables -------------------------------------------------------------

    def build(self, input_shape):
        _, height, width, channels = self._channels_last_shape(input_shape)
        out_height, out_width = self._check_spatial_size(input_shape, height, width)
        self.output_size = (out_height, out_width)
        self._set_input_channels(channels)
        rank, filters = self.spatial_rank, self.filters

        def basis(name, size, num_filters):
            return self.add_weight(
                name=name,
                shape=(*size, channels, num_filters),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )

        if self.per_basis:
            self.kernel_bases = [
                basis(f"kernel_bases_{k}", size, filters)
                for k, size in enumerate(self.kernel_sizes)
            ]
        else:
            self.kernel_bases = basis("kernel_bases", self.kernel_size, rank * filters)
        self._build_combining_weights(height, width, channels)
        self.spatial_bias_row = None
        self.spatial_bias_col = None
        self.spatial_bias = None
        if self.use_spatial_bias:
            factorised = not self.input_dependent

            def spatial_bias(name, shape):
                return self.add_weight(
                    name=name,
                    shape=shape,
                    initializer=self.bias_initializer,
                    regularizer=self.bias_regularizer,
                    constraint=self.bias_constraint,
                )

            if factorised and self.share_row_combining_weights:
                self.spatial_bias_row = spatial_bias(
                    "spatial_bias_row", (out_height, 1, 1)
                )
            if factorised and self.share_col_combining_weights:
                self.spatial_bias_col = spatial_bias(
                    "spatial_bias_col", (1, out_width, 1)
                )
            if not (self.spatial_bias_row is not None or self.spatial_bias_col is not None):
                self.spatial_bias = spatial_bias(
                    "spatial_bias", (out_height, out_width, 1)
                )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(filters,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )

    # -- computation -----------------------------------------------------------

    def _basis_outputs(self, inputs):
        """Outputs of the K bases, (B, H_out, W_out, K, F), channels_last."""
        conv = lambda kernel, dilation: ops.conv(  # noqa: E731
            inputs,
            kernel,
            strides=self.strides,
            padding=self.padding,
            data_format="channels_last",
            dilation_rate=dilation,
        )
        if self.per_basis:
            return ops.stack(
                [
                    conv(kernel, dilation)
                    for kernel, dilation in zip(self.kernel_bases, self.dilation_rates)
                ],
                axis=-2,
            )
        outputs = conv(self.kernel_bases, self.dilations)
        shape = ops.shape(outputs)
        return ops.reshape(
            outputs, (-1, shape[1], shape[2], self.spatial_rank, self.filters)
        )

    def _total_bias(self, outputs):
        """All biases summed on their small shapes and broadcast to (H_out, W_out, F).

        One add over the (B, H_out, W_out, F) outputs, whose gradient is a sum over
        the batch axis only, instead of one add (and one strided reduction in the
        backward pass) per bias. The explicit broadcast matters: `keras.ops.add`
        (Keras 3.15, TensorFlow backend) turns an add of a tensor with one
        non-singleton axis into a `bias_add` along whichever axis has that size, so
        e.g. (1, W_out, 1) + (filters,) gives (1, W_out, 1) when W_out == filters,
        and a (H_out, 1, 1) row bias lands on the filters when H_out == filters.
        None without biases.
        """
        biases = [
            bias
            for bias in (
                self.spatial_bias_row, self.spatial_bias_col, self.spatial_bias, self.bias
            )
            if bias is not None
        ]
        if not biases:
            return None
        shape = ops.shape(outputs)[1:]
        total = ops.broadcast_to(biases[0], shape)
        for bias in biases[1:]:
            total = total + ops.broadcast_to(bias, shape)
        return total

    def call(self, inputs):
        inputs = self._to_channels_last(inputs)
        outputs = combine_bases(
            self._normalized_weights(inputs), self._basis_outputs(inputs)
        )
        bias = self._total_bias(outputs)
        if bias is not None:
            outputs = outputs + bias
        return self._activation_in_data_format(outputs)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # get_config writes per-basis values as a list of pairs, so a flat list of
        # ints is a single (height, width) pair that serialisation turned into a list.
        for name in ("kernel_size", "dilations"):
            value = config.get(name)
            if isinstance(value, list) and all(is_int(v) for v in value):
                config[name] = tuple(value)
        return super().from_config(config)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "spatial_rank": self.spatial_rank,
                "kernel_size": (
                    [list(size) for size in self.kernel_sizes]
                    if self.per_basis
                    else self.kernel_size
                ),
                "dilations": (
                    [list(d) for d in self.dilation_rates]
                    if self.per_basis
                    else self.dilations
                ),
                "combining_weights_initializer": (
                    CONV_INIT
                    if self.combining_weights_initializer == CONV_INIT
                    else keras.initializers.serialize(self.combining_weights_initializer)
                ),
                "combining_weights_regularizer": keras.regularizers.serialize(
                    self.combining_weights_regularizer
                ),
                "combining_weights_constraint": keras.constraints.serialize(
                    self.combining_weights_constraint
                ),
                "share_row_combining_weights": self.share_row_combining_weights,
                "share_col_combining_weights": self.share_col_combining_weights,
                "normalize_weights": self.normalize_weights,
                "use_spatial_bias": self.use_spatial_bias,
                "input_dependent": self.input_dependent,
            }
        )
        return config
