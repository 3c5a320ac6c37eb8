"""Named model configurations (`ml_collections.ConfigDict`).

A model config is plain data: `name` selects the architecture ('simple' or
'resnet50') and every other field is a keyword argument of its builder
(`simple_model.simple_network` or `resnet.resnet50`), with the builder's default
unless the named config overrides it. It is a full config whose fields can be
overridden one by one, in Python (`config.spatial_rank = 4`) or from the
command line through `ml_collections.config_flags`.

Named configs (`MODEL_CONFIGS`):
- one per layer type of `layer_types.py` ('conv', 'wide_conv',
  'locally_connected', 'coord_conv', 'lrlc', 'lrlc_input_dependent'): the small
  network with that layer in block 2 and, for ranked types, rank 2;
- 'resnet50': plain ResNet-50 v1.5;
- 'resnet50_lrlc': ResNet-50 with the 3x3 convolutions of stage 4 replaced by
  LRLC layers of rank 2.

The small-network configs leave `num_classes` and `input_shape` None: they
depend on the dataset and are filled by the trainer from its metadata.
"""

import inspect

import ml_collections

from low_rank_local_connectivity.models import layer_types
from low_rank_local_connectivity.models import resnet
from low_rank_local_connectivity.models import simple_model

# Builder of each architecture, keyed by the config's `name`.
BUILDERS = {"simple": simple_model.simple_network, "resnet50": resnet.resnet50}



# The layer types are the small network's named configs: block 2, rank 2.
_NAMED_OVERRIDES = {
    name: ("simple", layer_type.network_fields(
        position=2, rank=2 if layer_type.ranked else None))
    for name, layer_type in layer_types.REGISTRY.items()
}
_NAMED_OVERRIDES.update({
    "resnet50": ("resnet50", {}),
    "resnet50_lrlc": ("resnet50", {"lrlc_stages": [4], "spatial_rank": 2}),
})
MODEL_CONFIGS = tuple(_NAMED_OVERRIDES)


def _plain(value):
    """Tuples as lists (ConfigDict keeps them either way; lists read better)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def default_config(name):
    """The full config of architecture `name` with every field at its default.

    Args:
      name: str, 'simple' or 'resnet50'.

    Returns:
      An `ml_collections.ConfigDict` with `name` and one field per builder argument.

    Raises:
      ValueError: for an unknown architecture name.
    """
    if name not in BUILDERS:
        raise ValueError(
            "Invalid value for argument `name`. Expected one of "
            f"{tuple(BUILDERS)}. Received: name={name!r}"
        )
    fields = {"name": name}
    for parameter in inspect.signature(BUILDERS[name]).parameters.values():
        fields[parameter.name] = _plain(parameter.default)
    return ml_collections.ConfigDict(fields)


def get_model_config(name):
    """A named model config (see the module docstring).

    Args:
      name: str, one of `MODEL_CONFIGS`.

    Returns:
      A new `ml_collections.ConfigDict` (every field present, overridable).

    Raises:
      ValueError: for an unknown name; the message lists the valid ones.
    """
    if name not in _NAMED_OVERRIDES:
        raise ValueError(
            "Invalid value for argument `name`. Expected one of "
            f"{MODEL_CONFIGS}. Received: name={name!r}"
        )
    architecture, overrides = _NAMED_OVERRIDES[name]
    config = default_config(architecture)
    config.update(overrides)
    return config
