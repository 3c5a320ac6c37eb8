"""Low-rank locally connected (LRLC) layers and experiments for Keras 3."""

from low_rank_local_connectivity.cli import startup as _startup

if _startup.is_command_line():  # A command of the package: quiet TensorFlow first.
    _startup.quiet_start()

from low_rank_local_connectivity.layers import CoordinateChannels  # noqa: E402
from low_rank_local_connectivity.layers import InputDependentCombiningWeights  # noqa: E402
from low_rank_local_connectivity.layers import LocallyConnected2D  # noqa: E402
from low_rank_local_connectivity.layers import LowRankLocallyConnected2D  # noqa: E402

__version__ = "0.1.0"
