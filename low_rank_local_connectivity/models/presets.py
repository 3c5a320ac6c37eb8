"""Named model configurations (`ml_collections.ConfigDict`).

A model config is plain data: `name` selects the architecture ('simple' or
'resnet50') and every other field is a keyword argument of its builder
(`simple_model.simple_network` or `resnet.resnet50`), with the builder's default
unless the preset overrides it. A preset is therefore a full config whose fields
can be overridden one by one, in Python (`config.spatial_rank = 4`) or from the
command line through `ml_collections.config_flags`.

Presets:
- 'conv': the all-convolution simple network (docs/design.md §2 defaults).
- 'wide_conv': block 2 a convolution widened to match an LRLC layer of rank 2.
- 'lc': block 2 locally connected.
- 'coord_conv': 'conv' with CoordConv coordinate channels.
- 'lrlc': block 2 an LRLC layer of rank 2 (row + column combining weights).
- 'lrlc_input_dependent': block 2 an LRLC layer of rank 2 with input-dependent
  combining weights (share flags off).
- 'resnet50': plain ResNet-50 v1.5.
- 'resnet50_lrlc': ResNet-50 with the 3x3 convolutions of stage 4 replaced by
  LRLC layers of rank 2.

The simple-network presets leave `num_classes` and `input_shape` None: they depend
on the dataset and are filled by the trainer from its metadata.
"""

import inspect

import ml_collections

from low_rank_local_connectivity.models import resnet
from low_rank_local_connectivity.models import simple_model

# Builder of each architecture, keyed by the config's `name`.
BUILDERS = {"simple": simple_model.simple_network, "resnet50": resnet.resnet50}



def _block2(layer_type):
    """Layer types of a 3-block simple network with `layer_type` in block 2."""
    return ["conv2d", layer_type, "conv2d"]


_PRESET_OVERRIDES = {
    "conv": ("simple", {}),
    "wide_conv": ("simple", {"layer_types": _block2("wide_conv2d"), "spatial_rank": 2}),
    "lc": ("simple", {"layer_types": _block2("locally_connected2d")}),
    "coord_conv": ("simple", {"coord_conv": True}),
    "lrlc": (
        "simple",
        {"layer_types": _block2("low_rank_locally_connected2d"), "spatial_rank": 2},
    ),
    "lrlc_input_dependent": (
        "simple",
        {
            "layer_types": _block2("low_rank_locally_connected2d"),
            "spatial_rank": 2,
            "input_dependent": True,
            "share_row_combining_weights": False,
            "share_col_combining_weights": False,
        },
    ),
    "resnet50": ("resnet50", {}),
    "resnet50_lrlc": ("resnet50", {"lrlc_stages": [4], "spatial_rank": 2}),
}
MODEL_PRESETS = tuple(_PRESET_OVERRIDES)


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


def get_model_config(preset):
    """The full model config of a named preset.

    Args:
      preset: str, one of `MODEL_PRESETS`.

    Returns:
      A new `ml_collections.ConfigDict` (every field present, overridable).

    Raises:
      ValueError: for an unknown preset; the message lists the valid ones.
    """
    if preset not in _PRESET_OVERRIDES:
        raise ValueError(
            "Invalid value for argument `preset`. Expected one of "
            f"{MODEL_PRESETS}. Received: preset={preset!r}"
        )
    name, overrides = _PRESET_OVERRIDES[preset]
    config = default_config(name)
    config.update(overrides)
    return config
