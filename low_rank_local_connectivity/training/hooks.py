"""The hook interface of the training loop.

A hook is an object with some of the methods of `Hook`; the loop (`loop.py`)
calls them on every worker, in the order the hooks were given, at these points:

| method | when | arguments |
| --- | --- | --- |
| `transform_dataset(split, dataset)` | when a split's pipeline is built, before it is positioned at the restored step and distributed | returns the dataset to use |
| `on_train_begin(trainer)` | after the lock, repair and run files, before the first step | |
| `before_step(trainer, step)` | before a training step | `step`: steps done so far |
| `after_step(trainer, step, logs)` | once the step's outputs are read, before the NaN check | `step`: steps done now; `logs`: loss, reg_loss, correct, count, grad_norm (global sums / mean) |
| `before_evaluation(trainer, split)` | at the start of `Trainer.evaluate` | |
| `after_evaluation(trainer, split, metrics)` | at its end | the metrics returned |
| `before_checkpoint(trainer, kind, step)` | before a checkpoint save | `kind`: 'latest' or 'best' |
| `after_checkpoint(trainer, kind, step, path)` | after it | the checkpoint path |
| `on_train_end(trainer, results)` | after `results.json` | the results dict |

A hook may read the trainer's public attributes (`step`, `model`,
`optimizer`, `config`, ...) and change variables (tests poison weights that
way); raising an exception stops the run there. Nothing a hook does changes
the step functions, so a run without hooks is the run users get.
"""


class Hook:
    """Base class of training hooks: every method does nothing."""

    def transform_dataset(self, split, dataset):
        return dataset

    def on_train_begin(self, trainer):
        pass

    def before_step(self, trainer, step):
        pass

    def after_step(self, trainer, step, logs):
        pass

    def before_evaluation(self, trainer, split):
        pass

    def after_evaluation(self, trainer, split, metrics):
        pass

    def before_checkpoint(self, trainer, kind, step):
        pass

    def after_checkpoint(self, trainer, kind, step, path):
        pass

    def on_train_end(self, trainer, results):
        pass


class HookList(Hook):
    """Calls a sequence of hooks in order (methods a hook lacks are skipped)."""

    def __init__(self, hooks=()):
        self.hooks = list(hooks)

    def _call(self, method, *args):
        for hook in self.hooks:
            function = getattr(hook, method, None)
            if function is not None:
                function(*args)

    def transform_dataset(self, split, dataset):
        for hook in self.hooks:
            if hasattr(hook, "transform_dataset"):
                dataset = hook.transform_dataset(split, dataset)
        return dataset

    def on_train_begin(self, trainer):
        self._call("on_train_begin", trainer)

    def before_step(self, trainer, step):
        self._call("before_step", trainer, step)

    def after_step(self, trainer, step, logs):
        self._call("after_step", trainer, step, logs)

    def before_evaluation(self, trainer, split):
        self._call("before_evaluation", trainer, split)

    def after_evaluation(self, trainer, split, metrics):
        self._call("after_evaluation", trainer, split, metrics)

    def before_checkpoint(self, trainer, kind, step):
        self._call("before_checkpoint", trainer, kind, step)

    def after_checkpoint(self, trainer, kind, step, path):
        self._call("after_checkpoint", trainer, kind, step, path)

    def on_train_end(self, trainer, results):
        self._call("on_train_end", trainer, results)
