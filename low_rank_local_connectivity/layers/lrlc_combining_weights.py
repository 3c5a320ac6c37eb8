"""The combining weights of the LRLC layer: variables, values and views.

At output position (i, j) the LRLC layer weights its K bases with a[i, j, :],
the normalised combining weights (`normalize_weights`). Their logits are either
learned variables -- a row factor r[i, k] plus a column factor c[j, k], one of
the two, or a full (H_out, W_out, K) table -- or predicted from every input by
`InputDependentCombiningWeights`.
"""

import math

import keras
from keras import ops

from low_rank_local_connectivity.layers.input_dependent_combining_weights import (
    InputDependentCombiningWeights,
)
from low_rank_local_connectivity.layers.ops import normalize_combining_weights

# The default combining-weights initializer: equal weights at every position.
CONV_INIT = "conv_init"


class LowRankCombiningWeights:
    """The combining weights of `LowRankLocallyConnected2D` (mixed into it).

    Builds and reads them from the layer's arguments (`spatial_rank`, the share
    flags, `input_dependent`, `normalize_weights` and the `combining_weights_*`
    initializer, regularizer and constraint) and its `output_size`. The public
    views are `combining_weights`, `get_combining_weights(inputs)` and
    `locally_connected_kernel`, which combines them with the layer's bases.
    """

    @property
    def _weights_vary_along_rows(self):
        """Whether the combining weights depend on the row index i."""
        return self.share_row_combining_weights or not self.share_col_combining_weights

    @property
    def _weights_vary_along_cols(self):
        return self.share_col_combining_weights or not self.share_row_combining_weights

    def _build_combining_weights(self, height, width, channels):
        """The variables of the combining weights (or the network predicting them)."""
        rank = self.spatial_rank
        out_height, out_width = self.output_size
        self.combining_weights_network = None
        self.combining_weights_row = None
        self.combining_weights_col = None
        self.combining_weights_table = None
        if self.input_dependent:
            self.combining_weights_network = InputDependentCombiningWeights(
                rank,
                (out_height, out_width),
                kernel_regularizer=self.combining_weights_regularizer,
                kernel_constraint=self.combining_weights_constraint,
                dtype=self.dtype_policy,
                name="combining_weights_network",
            )
            self.combining_weights_network.build((None, height, width, channels))
        else:
            if self.combining_weights_initializer == CONV_INIT:
                both = self.share_row_combining_weights and self.share_col_combining_weights
                initializer = keras.initializers.Constant(
                    (0.5 if both else 1.0) / math.sqrt(rank)
                )
            else:
                initializer = self.combining_weights_initializer

            def combining(name, shape):
                return self.add_weight(
                    name=name,
                    shape=shape,
                    initializer=initializer,
                    regularizer=self.combining_weights_regularizer,
                    constraint=self.combining_weights_constraint,
                )

            if self.share_row_combining_weights:
                self.combining_weights_row = combining(
                    "combining_weights_row", (out_height, rank)
                )
            if self.share_col_combining_weights:
                self.combining_weights_col = combining(
                    "combining_weights_col", (out_width, rank)
                )
            if not (self.share_row_combining_weights or self.share_col_combining_weights):
                self.combining_weights_table = combining(
                    "combining_weights", (out_height, out_width, rank)
                )

    def _fixed_logits(self):
        """Unnormalised fixed logits, broadcastable to (H_out, W_out, K)."""
        if self.combining_weights_table is not None:
            return self.combining_weights_table
        logits = 0.0
        if self.combining_weights_row is not None:
            logits = logits + self.combining_weights_row[:, None, :]
        if self.combining_weights_col is not None:
            logits = logits + self.combining_weights_col[None, :, :]
        return logits

    def _normalized_weights(self, inputs_channels_last):
        """Combining weights broadcastable to (B, H_out, W_out, K)."""
        if self.input_dependent:
            logits = self.combining_weights_network(inputs_channels_last)
        else:
            logits = self._fixed_logits()
        return normalize_combining_weights(logits, self.normalize_weights)

    @property
    def combining_weights(self):
        """The normalised fixed combining weights.

        Shape (H_out, W_out, K); (H_out, K) with row-only sharing and (W_out, K) with
        column-only sharing.

        Raises:
          ValueError: in input-dependent mode (use `get_combining_weights(inputs)`)
            or before the layer is built.
        """
        if self.input_dependent:
            raise ValueError(
                "This layer predicts its combining weights from the input "
                "(input_dependent=True); use `get_combining_weights(inputs)`."
            )
        if not self.built:
            raise ValueError("The layer has no combining weights until it is built.")
        weights = normalize_combining_weights(self._fixed_logits(), self.normalize_weights)
        if not self.share_col_combining_weights and self.share_row_combining_weights:
            return weights[:, 0, :]
        if not self.share_row_combining_weights and self.share_col_combining_weights:
            return weights[0]
        return weights

    def get_combining_weights(self, inputs):
        """Normalised combining weights for a batch, (B, H_out, W_out, K).

        Works in every mode; fixed weights are broadcast over the batch.

        Args:
          inputs: a batch in the layer's data format.
        """
        if not self.built:
            self.build(tuple(inputs.shape))
        inputs = self._to_channels_last(ops.convert_to_tensor(inputs))
        weights = self._normalized_weights(inputs)
        shape = ops.shape(inputs)
        out_height, out_width = self._output_spatial_shape(shape[1], shape[2])
        return ops.broadcast_to(
            weights, (shape[0], out_height, out_width, self.spatial_rank)
        )

    def locally_connected_kernel(self, inputs=None):
        """The equivalent per-position kernel.

        kernel[i, j, :, :, :, f] = sum_k a[i, j, k] W_k[:, :, :, f]. Together with the
        bias s[i, j] + c[f] it reproduces the layer as a locally connected layer with
        the same kernel size, strides, padding and dilation.

        Args:
          inputs: a batch; required in input-dependent mode or when a spatial size is
            unknown at build time.

        Returns:
          (H_out, W_out, kh, kw, C_in, F); with a leading batch axis in
          input-dependent mode.

        Raises:
          ValueError: for bases of different sizes, or missing `inputs`.
        """
        if self.per_basis:
            raise ValueError(
                "`locally_connected_kernel` needs bases of a single kernel size and "
                f"dilation. Received kernel_size={self.kernel_size}, "
                f"dilations={self.dilations}"
            )
        if inputs is not None:
            weights = self.get_combining_weights(inputs)
            if not self.input_dependent:
                weights = weights[0]
        elif self.input_dependent:
            raise ValueError(
                "`locally_connected_kernel` needs `inputs` when input_dependent=True: "
                "the kernel differs per example."
            )
        elif None in self.output_size:
            raise ValueError(
                "`locally_connected_kernel` needs `inputs` because the output size "
                f"{self.output_size} was not fully known at build time."
            )
        else:
            weights = normalize_combining_weights(
                self._fixed_logits(), self.normalize_weights
            )
            weights = ops.broadcast_to(weights, (*self.output_size, self.spatial_rank))
        kernel = ops.reshape(
            self.kernel_bases, (*self.kernel_size, -1, self.spatial_rank, self.filters)
        )
        return ops.einsum("...hwk,abckf->...hwabcf", weights, kernel)
