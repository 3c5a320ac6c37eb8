"""Low-rank locally connected (LRLC) layers and experiments for TF 2 / Keras 3."""

from low_rank_local_connectivity.layers import CoordinateChannels
from low_rank_local_connectivity.layers import InputDependentCombiningWeights
from low_rank_local_connectivity.layers import LocallyConnected2D
from low_rank_local_connectivity.layers import LowRankLocallyConnected2D

__version__ = "0.1.0"
