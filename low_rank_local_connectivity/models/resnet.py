"""ResNet-50 v1.5 whose 3x3 convolutions can become LRLC layers (docs/design.md §3).

The network is the standard bottleneck ResNet-50 in its v1.5 form: the stride of a
down-sampling block sits on the 3x3 convolution (not on the first 1x1), all
convolutions are bias-free and followed by batch norm, the first block of every
stage has a 1x1 projection shortcut. With 224x224 inputs and 1000 classes it has
25,557,032 trainable parameters.

A substitution spec (`lrlc_stages`, optionally `lrlc_blocks`) chooses which 3x3
convolutions become `LowRankLocallyConnected2D` layers ('same' padding, the block's
stride, no channel bias since batch norm follows).

Layer names: 'stem_conv', 'stem_bn', 'stem_relu', 'stem_pool'; per block
'stage{s}_block{b}_' + 'conv1'/'bn1'/'relu1', 'conv2' or 'lrlc2'/'bn2'/'relu2',
'conv3'/'bn3', 'proj_conv'/'proj_bn' (first block), 'add', 'out'; then
'global_avg_pool' and 'logits'. Stages s = 1..4 and blocks b = 1.. are 1-based.
"""

import keras

from low_rank_local_connectivity import layers as lrlc_layers
from low_rank_local_connectivity import validation
from low_rank_local_connectivity.models import simple_model

# (bottleneck width, number of blocks) of each stage; block output = 4 * width.
STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))
EXPANSION = 4
DATA_FORMATS = ("channels_last", "channels_first")


def _lrlc_block_set(lrlc_stages, lrlc_blocks):
    """The (stage, block) pairs, 1-based, whose 3x3 convolution becomes LRLC."""
    if not isinstance(lrlc_stages, (list, tuple)):
        raise ValueError(
            "Invalid value for argument `lrlc_stages`. Expected a list of stage "
            f"numbers in 1..{len(STAGES)}. Received: lrlc_stages={lrlc_stages!r}"
        )
    for stage in lrlc_stages:
        if not validation.is_int(stage) or not 1 <= stage <= len(STAGES):
            raise ValueError(
                "Invalid value for argument `lrlc_stages`. Expected stage numbers in "
                f"1..{len(STAGES)}. Received: lrlc_stages={lrlc_stages!r}"
            )
    if len(set(lrlc_stages)) != len(lrlc_stages):
        raise ValueError(
            "Invalid value for argument `lrlc_stages`. Expected distinct stage "
            f"numbers. Received: lrlc_stages={lrlc_stages!r}"
        )
    if lrlc_blocks is None:
        return {
            (stage, block)
            for stage in lrlc_stages
            for block in range(1, STAGES[stage - 1][1] + 1)
        }
    if not isinstance(lrlc_blocks, (list, tuple)) or len(lrlc_blocks) != len(
        lrlc_stages
    ):
        raise ValueError(
            "Invalid value for argument `lrlc_blocks`. Expected None or a list with "
            "one list of block numbers per entry of `lrlc_stages` "
            f"(lrlc_stages={lrlc_stages!r}). Received: lrlc_blocks={lrlc_blocks!r}"
        )
    chosen = set()
    for stage, blocks in zip(lrlc_stages, lrlc_blocks):
        num_blocks = STAGES[stage - 1][1]
        if not isinstance(blocks, (list, tuple)) or not all(
            validation.is_int(b) and 1 <= b <= num_blocks for b in blocks
        ):
            raise ValueError(
                "Invalid value for argument `lrlc_blocks`. Expected, for stage "
                f"{stage}, a list of block numbers in 1..{num_blocks}. Received: "
                f"lrlc_blocks={lrlc_blocks!r}"
            )
        chosen.update((stage, block) for block in blocks)
    return chosen


def resnet50(
    num_classes=1000,
    input_shape=(224, 224, 3),
    data_format="channels_last",
    bn_momentum=0.9,
    bn_epsilon=1e-5,
    weight_decay=1e-4,
    kernel_initializer="he_normal",
    lrlc_stages=(),
    lrlc_blocks=None,
    spatial_rank=2,
    normalize_weights="softmax",
    input_dependent=False,
    share_row_combining_weights=True,
    share_col_combining_weights=True,
    combining_weights_initializer="conv_init",
    regularize_lrlc=True,
    use_conv_bias=False,
):
    """Builds ResNet-50 v1.5, optionally with LRLC layers in chosen blocks.

    Args:
      num_classes: int, the number of classes (size of the logits).
      input_shape: tuple of 3 ints, (height, width, channels) of the channels_last
        input images, any size ('same' padding everywhere; 32x32 gives a 1x1
        stage-4 map). LRLC layers are built for this fixed size.
      data_format: 'channels_last' or 'channels_first', the layout of the
        network's internal feature maps. The input is always channels_last images
        (as the data pipelines produce); with 'channels_first' they are transposed
        once at the start.
      bn_momentum: float, batch-norm momentum.
      bn_epsilon: float, batch-norm epsilon.
      weight_decay: float, coefficient lambda of the penalty lambda / 2 * sum(w**2)
        on every convolution kernel and the dense kernel (the reference's
        1e-4 * l2_loss; 0 disables it). Biases and batch-norm parameters are not
        decayed.
      kernel_initializer: initializer of the convolution kernels and LRLC bases.
      lrlc_stages: sequence of stage numbers in 1..4 whose 3x3 convolutions become
        LRLC layers. Empty (default): plain ResNet-50.
      lrlc_blocks: None (every block of the chosen stages) or a sequence parallel to
        `lrlc_stages` giving, per stage, the 1-based block numbers to replace
        (stage s has 3, 4, 6, 3 blocks for s = 1..4), e.g. lrlc_stages=(3, 4),
        lrlc_blocks=((5, 6), (1,)).
      spatial_rank: int, rank K of the LRLC layers.
      normalize_weights: 'softmax', 'norm' or '' (LRLC combining weights).
      input_dependent: bool, LRLC combining weights predicted from the input
        (requires both share flags False).
      share_row_combining_weights: bool, LRLC row-factorised combining weights.
      share_col_combining_weights: bool, LRLC column-factorised combining weights.
      combining_weights_initializer: LRLC combining-weights initializer.
      regularize_lrlc: bool, whether the weight decay also applies to the LRLC
        kernel bases and combining weights (the reference decays them too).
      use_conv_bias: bool, give every convolution a bias. Off in ResNet v1.5; on
        only to compare the topology with `keras.applications.ResNet50`, whose
        convolutions carry biases.

    Returns:
      A functional `keras.Model` named 'resnet50' mapping images (batch, height,
      width, channels) to float32 logits (batch, num_classes).

    Raises:
      ValueError: for invalid arguments, e.g. an unknown stage or block number,
        `lrlc_blocks` not parallel to `lrlc_stages`, `spatial_rank` < 1 with LRLC
        stages, or input-dependent weights with a share flag set.
    """
    num_classes, input_shape = simple_model.check_num_classes_and_input_shape(
        num_classes, input_shape
    )
    if data_format not in DATA_FORMATS:
        raise ValueError(
            "Invalid value for argument `data_format`. Expected one of "
            f"{DATA_FORMATS}. Received: data_format={data_format!r}"
        )
    lrlc_blocks_set = _lrlc_block_set(lrlc_stages, lrlc_blocks)
    if lrlc_blocks_set:
        validation.positive_int("spatial_rank", spatial_rank)
    regularizer = simple_model.weight_decay_regularizer(weight_decay)
    lrlc_kwargs = simple_model.lrlc_options(
        normalize_weights, input_dependent, share_row_combining_weights,
        share_col_combining_weights, combining_weights_initializer, regularizer,
        regularize_lrlc,
    )
    channel_axis = -1 if data_format == "channels_last" else 1
    # What every convolution and LRLC layer of the network has in common.
    common = {
        "padding": "same",
        "data_format": data_format,
        "use_bias": use_conv_bias,
        "kernel_initializer": kernel_initializer,
    }

    def conv(filters, kernel_size, strides, name):
        return keras.layers.Conv2D(
            filters, kernel_size, strides=strides, kernel_regularizer=regularizer,
            name=name, **common,
        )

    def lrlc(filters, strides, name):
        return lrlc_layers.LowRankLocallyConnected2D(
            spatial_rank, filters, 3, strides=strides, name=name, **lrlc_kwargs, **common
        )

    def batch_norm(name):
        return lrlc_layers.FusedBatchNormalization(
            axis=channel_axis, momentum=bn_momentum, epsilon=bn_epsilon, name=name
        )

    def relu(name):
        return keras.layers.ReLU(name=name)

    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    if data_format == "channels_first":
        x = keras.layers.Permute((3, 1, 2), name="to_channels_first")(x)
    x = conv(64, 7, 2, "stem_conv")(x)
    x = relu("stem_relu")(batch_norm("stem_bn")(x))
    x = keras.layers.MaxPooling2D(
        3, 2, padding="same", data_format=data_format, name="stem_pool"
    )(x)
    for stage, (width, num_blocks) in enumerate(STAGES, start=1):
        for block in range(1, num_blocks + 1):
            prefix = f"stage{stage}_block{block}_"
            strides = 2 if stage > 1 and block == 1 else 1
            shortcut = x
            if block == 1:
                shortcut = conv(EXPANSION * width, 1, strides, prefix + "proj_conv")(x)
                shortcut = batch_norm(prefix + "proj_bn")(shortcut)
            y = conv(width, 1, 1, prefix + "conv1")(x)
            y = relu(prefix + "relu1")(batch_norm(prefix + "bn1")(y))
            if (stage, block) in lrlc_blocks_set:
                y = lrlc(width, strides, prefix + "lrlc2")(y)
            else:
                y = conv(width, 3, strides, prefix + "conv2")(y)
            y = relu(prefix + "relu2")(batch_norm(prefix + "bn2")(y))
            y = conv(EXPANSION * width, 1, 1, prefix + "conv3")(y)
            y = batch_norm(prefix + "bn3")(y)
            x = keras.layers.Add(name=prefix + "add")([shortcut, y])
            x = relu(prefix + "out")(x)
    x = keras.layers.GlobalAveragePooling2D(
        data_format=data_format, name="global_avg_pool"
    )(x)
    logits = keras.layers.Dense(
        num_classes, kernel_regularizer=regularizer, dtype="float32", name="logits"
    )(x)
    return keras.Model(inputs, logits, name="resnet50")
