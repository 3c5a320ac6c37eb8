"""The networks' batch normalization: Keras' layer, fused for bfloat16 inputs.

Keras 3's `BatchNormalization` casts a bfloat16 input to float32 and normalises
it with separate TensorFlow ops (the moments, then the scale and shift) whose
gradients add as many again: about a dozen float32 passes over the activations
plus the casts. Under 'mixed_bfloat16', once the convolutions run on the CPU's
bfloat16 units, that is the largest part of a training step of the simple
network. TensorFlow's fused kernel (`FusedBatchNormV3`, oneDNN on CPU) reads
the bfloat16 input once, computes in float32 and writes bfloat16, and so does
its gradient: 7x less time for a (128, 26, 26, 64) batch, forward and backward.

Float32 (and float16) inputs take Keras' own code unchanged, so their results
are bit for bit those of `keras.layers.BatchNormalization`.
"""

import keras

# Layers computing in this dtype use the fused kernel.
FUSED_DTYPE = "bfloat16"


@keras.saving.register_keras_serializable(package="low_rank_local_connectivity")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` with TensorFlow's fused kernel in bfloat16.

    Same arguments, weights and semantics as Keras' layer: normalisation by the
    batch statistics in training (biased variance; the moving statistics are
    updated with `momentum`), by the moving statistics otherwise, in float32
    with bfloat16 inputs and outputs. The fused kernel runs on the TensorFlow
    backend for 4-D channels_last bfloat16 inputs without a mask, renorm or
    synchronised statistics; every other case is Keras' implementation.
    """

    def _fuses(self, inputs, mask):
        return (
            keras.backend.backend() == "tensorflow"
            and keras.backend.standardize_dtype(inputs.dtype) == FUSED_DTYPE
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and mask is None
            and not (self.renorm or self.synchronized)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fuses(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        scale = self.gamma if self.scale else tf.ones((channels,))
        offset = self.beta if self.center else tf.zeros((channels,))
        training = bool(training) and self.trainable
        # Raw op: tf.compat.v1.nn.fused_batch_norm raises epsilon to 1.001e-5.
        outputs, mean, variance = tf.raw_ops.FusedBatchNormV3(
            x=inputs,
            scale=tf.convert_to_tensor(scale),
            offset=tf.convert_to_tensor(offset),
            mean=tf.constant([]) if training else tf.convert_to_tensor(self.moving_mean),
            variance=(
                tf.constant([]) if training else tf.convert_to_tensor(self.moving_variance)
            ),
            epsilon=self.epsilon,
            is_training=training,
        )[:3]
        if training:
            # The kernel returns the unbiased variance; Keras tracks the biased one.
            count = tf.cast(tf.size(inputs) // channels, tf.float32)
            variance = variance * ((count - 1.0) / count)
            self.moving_mean.assign(
                self.moving_mean * self.momentum + mean * (1.0 - self.momentum)
            )
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
            )
        return outputs
