"""The layer types of the paper's experiments: one registry, one vocabulary.

A layer type is what an experiment substitutes into the small network
(docs/design.md §2): its name is used everywhere — the model configs
(`models.get_model_config('lrlc')`), the experiment presets
(`mnist_lrlc`), the grid and its `results.csv`, the benchmark, the command
lines and the README:

| name | substitution | rank | position |
| --- | --- | --- | --- |
| `conv` | none: every block a convolution | — | — |
| `wide_conv` | a convolution widened to match an LRLC layer's parameters | yes | yes |
| `locally_connected` | a locally connected layer | — | yes |
| `coord_conv` | convolutions with CoordConv coordinate channels | — | — |
| `lrlc` | an LRLC layer, fixed combining weights (row + column) | yes | yes |
| `lrlc_input_dependent` | an LRLC layer, input-dependent combining weights | yes | yes |

In a model config the substituted block is named by its Keras layer
(`layer_types` entries `conv2d`, `wide_conv2d`, `locally_connected2d`,
`low_rank_locally_connected2d`, the reference's names: `BLOCK_LAYERS` of
`simple_model`); `LayerType.block_layer` says which.
"""

import dataclasses

from low_rank_local_connectivity.validation import invalid_argument

NUM_BLOCKS = 3


@dataclasses.dataclass(frozen=True)
class LayerType:
    """One layer type.

    Attributes:
        name: str, the name used everywhere.
        label: str, for tables and figures.
        block_layer: str, the simple network's Keras layer of the substituted
            block.
        ranked: bool, whether it has a rank K (LRLC rank, or the rank a wide
            convolution matches in parameters).
        positional: bool, whether it replaces the layer of one block (else it
            does not depend on the block position).
        options: dict, other simple-network fields it sets.
    """

    name: str
    label: str
    block_layer: str
    ranked: bool
    positional: bool
    options: dict = dataclasses.field(default_factory=dict)

    def network_fields(self, position=None, rank=None):
        """The simple-network fields of this layer type at a position and rank.

        Args:
            position: int in 1..3 (the substituted block) for a positional
                layer type, else None.
            rank: int for a ranked layer type, else None (the builder's
                default rank is kept).

        Returns:
            dict with `layer_types` (and `spatial_rank` when `rank` is given)
            and the type's options.
        """
        layer_types = ["conv2d"] * NUM_BLOCKS
        if self.positional:
            layer_types[position - 1] = self.block_layer
        fields = dict(layer_types=layer_types, **self.options)
        if rank is not None:
            fields["spatial_rank"] = rank
        return fields


_LRLC = "low_rank_locally_connected2d"
REGISTRY = {
    layer_type.name: layer_type
    for layer_type in (
        LayerType("conv", "Conv", "conv2d", ranked=False, positional=False),
        LayerType("wide_conv", "Wide conv", "wide_conv2d", ranked=True, positional=True),
        LayerType("locally_connected", "Locally connected", "locally_connected2d",
                  ranked=False, positional=True),
        LayerType("coord_conv", "CoordConv", "conv2d", ranked=False, positional=False,
                  options=dict(coord_conv=True)),
        LayerType("lrlc", "LRLC", _LRLC, ranked=True, positional=True),
        LayerType("lrlc_input_dependent", "Input-dependent LRLC", _LRLC, ranked=True,
                  positional=True,
                  options=dict(input_dependent=True, share_row_combining_weights=False,
                               share_col_combining_weights=False)),
    )
}
NAMES = tuple(REGISTRY)
RANKED = tuple(name for name, t in REGISTRY.items() if t.ranked)
POSITIONLESS = tuple(name for name, t in REGISTRY.items() if not t.positional)
LABELS = {name: t.label for name, t in REGISTRY.items()}


def get(name):
    """The `LayerType` of a name.

    Raises:
        ValueError: for an unknown name (the message lists the known ones).
    """
    if name not in REGISTRY:
        raise invalid_argument("layer_type", name, f"one of {NAMES}")
    return REGISTRY[name]
