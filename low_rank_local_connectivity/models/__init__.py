"""Experiment models: the paper's small network and ResNet-50, both with LRLC.

`build_model(config)` builds a model from a config (see `model_configs`; the
experiments' layer types are `layer_types`); the builders
`simple_network` and `resnet50` take the same fields as keyword arguments. An
optional `convert` field turns the built model's convolutions into LRLC layers
(`convert.to_lrlc`).

Example:

>>> from low_rank_local_connectivity import models
>>> config = models.get_model_config("lrlc")
>>> config.num_classes, config.input_shape = 10, (32, 32, 3)
>>> model = models.build_model(config)
>>> sum(int(w.numpy().size) for w in model.trainable_weights)
113522
"""

from collections import abc

import ml_collections

from low_rank_local_connectivity import convert
from low_rank_local_connectivity.models import layer_types
from low_rank_local_connectivity.models.model_configs import BUILDERS
from low_rank_local_connectivity.models.model_configs import MODEL_CONFIGS
from low_rank_local_connectivity.models.model_configs import default_config
from low_rank_local_connectivity.models.model_configs import get_model_config
from low_rank_local_connectivity.models.resnet import resnet50
from low_rank_local_connectivity.models.simple_model import BLOCK_LAYERS
from low_rank_local_connectivity.models.simple_model import endpoints_model
from low_rank_local_connectivity.models.simple_model import simple_network


def build_model(model_config, initialize=None):
    """Builds the Keras model a config describes.

    Args:
      model_config: `ml_collections.ConfigDict` (or a mapping, e.g. a config read
        back from JSON) with `name` in ('simple', 'resnet50') and any of the
        builder's keyword arguments; `num_classes` and `input_shape` (channels_last
        (H, W, C)) must be set. An optional field `convert` holds keyword
        arguments of `convert.to_lrlc` (`spatial_rank` and e.g. `layers`,
        `input_dependent`, `seed`): the built model is then converted.
      initialize: optional function called with the built model before it is
        converted, e.g. to restore trained weights into it.

    Returns:
      A functional `keras.Model` mapping (batch, H, W, C) images to float32 logits
      (batch, num_classes).

    Raises:
      TypeError: if `model_config` is not a mapping.
      ValueError: for an unknown `name` or field, or invalid field values (see the
        builders and `convert.to_lrlc`).
    """
    if isinstance(model_config, ml_collections.ConfigDict):
        fields = model_config.to_dict()
    elif isinstance(model_config, abc.Mapping):
        fields = dict(model_config)
    else:
        raise TypeError(
            "Invalid type for argument `model_config`. Expected an "
            "ml_collections.ConfigDict or a mapping. Received: "
            f"{type(model_config).__name__}"
        )
    conversion = fields.pop("convert", None)
    if conversion is not None and not (
        isinstance(conversion, abc.Mapping) and "spatial_rank" in conversion
    ):
        raise ValueError(
            "Invalid value for field `convert` of the model config. Expected None "
            "or a mapping of `convert.to_lrlc` arguments with `spatial_rank`. "
            f"Received: convert={conversion!r}"
        )
    name = fields.pop("name", None)
    if name not in BUILDERS:
        raise ValueError(
            "Invalid value for field `name` of the model config. Expected one of "
            f"{tuple(BUILDERS)}. Received: name={name!r}"
        )
    allowed = default_config(name).keys()
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ValueError(
            f"Unknown fields {unknown} in the config of model {name!r}. Allowed "
            f"fields: {sorted(allowed)}"
        )
    model = BUILDERS[name](**fields)
    if initialize is not None:
        initialize(model)
    if conversion is None:
        return model
    return convert.to_lrlc(model, **conversion)


__all__ = [
    "BLOCK_LAYERS",
    "MODEL_CONFIGS",
    "build_model",
    "layer_types",
    "default_config",
    "endpoints_model",
    "get_model_config",
    "resnet50",
    "simple_network",
]
