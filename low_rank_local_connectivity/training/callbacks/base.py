"""The callback interface of the `Controller`, and a list of callbacks.

A callback is an object with some of the methods of `Callback`; the controller
calls them on every worker, in the order the callbacks were given (see
`controller.py` for when). Every method receives the controller first: a
callback may read its public attributes (`step`, `task` with its `model` and
`optimizer`, `config`, `evaluations`, `best`, `run_dir`, `checkpoints`),
evaluate or save a checkpoint through it, and change variables (tests poison
weights that way); raising an exception stops the run there.

The built-in behaviour of a run is callbacks of this interface
(`default_callbacks`), and so are the fault-injection tools: a run without
extra callbacks is the run users get.
"""


class Callback:
    """Base class of controller callbacks: every method does nothing."""

    def on_train_begin(self, controller):
        """After the restore and the run files, before the first step."""

    def on_train_batch_begin(self, controller, step):
        """Before a training step; `step` = steps done so far."""

    def on_train_batch_end(self, controller, step, logs):
        """After the step's outputs are read; `step` counts it.

        `logs`: `loss` (summed cross-entropy), `reg_loss`, `correct`, `count`,
        `grad_norm` and `seconds` (the step's wall time).
        """

    def on_evaluate_begin(self, controller, split):
        """Before a recorded evaluation of 'valid' or 'test'."""

    def on_evaluate_end(self, controller, split, metrics):
        """After it, with its metrics (`loss`, `accuracy`, `num_examples`, ...)."""

    def on_step_end(self, controller, step, logs):
        """After the step and its validation, if one was due.

        `logs`: {'train': the batch logs, 'valid': metrics (validated steps only)}.
        """

    def on_checkpoint_begin(self, controller, checkpoint, step):
        """Before a 'latest' or 'best' checkpoint of `step` is written."""

    def on_checkpoint_end(self, controller, checkpoint, step, path):
        """After it, with the checkpoint path."""

    def on_train_end(self, controller, results):
        """After `results.json`, with the results dict."""


_EVENTS = tuple(name for name in vars(Callback) if name.startswith("on_"))


class CallbackList:
    """Calls a sequence of callbacks in order (methods a callback lacks are skipped)."""

    def __init__(self, callbacks=()):
        self.callbacks = list(callbacks)

    def __getattr__(self, event):
        if event not in _EVENTS:
            raise AttributeError(event)

        def call(*args):
            for callback in self.callbacks:
                method = getattr(callback, event, None)
                if method is not None:
                    method(*args)

        return call
