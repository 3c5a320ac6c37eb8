"""Callbacks of the `Controller`: its interface and the built-in behaviour.

- `base.py`: `Callback` (the interface) and `CallbackList`;
- `nonfinite.py`: `TerminateOnNonFinite`, the NaN stop;
- `records.py`: `MetricsRecorder`, `metrics.jsonl`;
- `checkpoints.py`: `PeriodicCheckpoint` ('latest') and `BestCheckpoint` ('best');
- `tensorboard.py`: `TensorBoardSummaries`;
- `progress.py`: `ProgressLogger`, the progress lines.
"""

from low_rank_local_connectivity.training.callbacks.base import Callback
from low_rank_local_connectivity.training.callbacks.base import CallbackList
from low_rank_local_connectivity.training.callbacks.checkpoints import BestCheckpoint
from low_rank_local_connectivity.training.callbacks.checkpoints import PeriodicCheckpoint
from low_rank_local_connectivity.training.callbacks.nonfinite import TerminateOnNonFinite
from low_rank_local_connectivity.training.callbacks.progress import ProgressLogger
from low_rank_local_connectivity.training.callbacks.records import MetricsRecorder
from low_rank_local_connectivity.training.callbacks.tensorboard import TensorBoardSummaries


def default_callbacks(*, progress=True):
    """The built-in behaviour of a run, in the order it must run.

    The NaN stop first (nothing non-finite is recorded or saved), the record of
    an evaluation before the checkpoint of its step, 'latest' before 'best'.

    Args:
        progress: bool, include the `ProgressLogger` (False: a silent run).
    """
    callbacks = [
        TerminateOnNonFinite(),
        MetricsRecorder(),
        TensorBoardSummaries(),
        PeriodicCheckpoint(),
        BestCheckpoint(),
    ]
    if progress:
        callbacks.append(ProgressLogger())
    return callbacks


__all__ = [
    "BestCheckpoint",
    "Callback",
    "CallbackList",
    "MetricsRecorder",
    "PeriodicCheckpoint",
    "ProgressLogger",
    "TensorBoardSummaries",
    "TerminateOnNonFinite",
    "default_callbacks",
]
