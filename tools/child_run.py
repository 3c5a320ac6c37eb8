"""Trainer runs in child processes: the one child runner of the tests and tools.

A child is a fresh Python process, hence a fresh TensorFlow runtime (thread
pools, determinism and logical devices are fixed per process), that trains
the runs of a JSON spec (or a list of specs, one after another) with
`training.train_and_evaluate` and the faults of `tools/fault_injection.py`:

    python -m tools.child_run '<spec JSON>'

Spec keys (all optional but `model_dir`):

- `preset` (default 'mnist_small_lrlc'), `overrides` (flattened config
  fields; lists become tuples), `model_dir`;
- `logical_cpus` (int): split the CPU into that many logical devices first
  (MirroredStrategy over CPUs);
- `out` (str prefix): save the final weights (`<out>.npz`), the optimiser
  variables (`<out>_opt.npz`) and the results (`<out>.json`);
- `record` (str): JSON-lines file of events ('start' with the restored step,
  'kill' with the target and landed phases, 'done');
- `kill` (dict `phase`, `occurrence`, `delay`): SIGKILL inside a phase
  (`fault_injection.PhaseTracker.arm_kill`);
- `hang_after_step` and `hang_marker`: after that step, create the marker
  file and sleep (the parent then kills the child where it wants);
- `nan_from_step`, `fail_writes_from_step`, `step_sleep`: see
  `fault_injection`;
- `export` (bool): export the run ('latest' checkpoint) after training.

An error that stops a run is one `error: ...` line on stderr, exit status 1.
The parent side is `command`, `environment` and `start`.
"""

import json
import os
import pathlib
import subprocess
import sys
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_PRESET = "mnist_small_lrlc"


def command(spec):
    """The command line of a child running `spec` (a dict or a list of dicts)."""
    return [sys.executable, "-m", "tools.child_run", json.dumps(spec)]


def environment(extra=None):
    """The environment of a child: quiet TensorFlow, the repository importable."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.update(extra or {})
    return env


def start(spec, log_path, env_extra=None):
    """Starts a child; its stdout and stderr go to `log_path`. Returns the Popen."""
    log = open(log_path, "w")
    return subprocess.Popen(
        command(spec), env=environment(env_extra), stdout=log,
        stderr=subprocess.STDOUT, cwd=str(REPO_ROOT),
    )


def _config(spec):
    from low_rank_local_connectivity.configs import experiment

    config = experiment.get_config(spec.get("preset", DEFAULT_PRESET))
    config.update_from_flattened_dict({
        key: tuple(value) if isinstance(value, list) else value
        for key, value in spec.get("overrides", {}).items()
    })
    return config


class _SaveOutputs:
    """Saves the final weights, optimiser variables and results under `out`."""

    def __init__(self, out):
        self.out = out

    def on_train_end(self, controller, results):
        import numpy as np

        task = controller.task
        np.savez(self.out + ".npz", *[v.numpy() for v in task.model.weights])
        np.savez(self.out + "_opt.npz", *[v.numpy() for v in task.optimizer.variables])
        with open(self.out + ".json", "w") as f:
            json.dump(dict(results=results,
                           trainable=len(task.model.trainable_weights)), f)


def _hang(marker):
    def hang(controller):
        open(marker, "w").close()
        time.sleep(600)

    return hang


def run(spec):
    """Runs one spec in this process (see the module docstring).

    Returns:
        The results dict of the run.
    """
    from low_rank_local_connectivity import training
    from tools import fault_injection as fi

    record = spec.get("record")
    tracker = fi.PhaseTracker(record)
    callbacks = [tracker]
    if spec.get("step_sleep"):
        callbacks.append(fi.SlowSteps(spec["step_sleep"]))
    if spec.get("hang_after_step"):
        callbacks.append(fi.AfterStep(spec["hang_after_step"], _hang(spec["hang_marker"])))
    if spec.get("out"):
        callbacks.append(_SaveOutputs(spec["out"]))
    if spec.get("kill"):
        tracker.arm_kill(**spec["kill"])
    results = training.train_and_evaluate(
        _config(spec), spec["model_dir"], callbacks=callbacks,
        input_transform=(
            fi.nan_inputs(spec["nan_from_step"]) if spec.get("nan_from_step") else None
        ),
        checkpoint_manager_factory=(
            fi.disk_full_checkpoints(spec["fail_writes_from_step"])
            if spec.get("fail_writes_from_step") else None
        ),
    )
    if spec.get("export"):
        from low_rank_local_connectivity import export

        with tracker.in_phase("export"):
            export.export_model(
                spec["model_dir"], os.path.join(spec["model_dir"], "export"),
                checkpoint="latest",
            )
    if record:
        fi.append_record(record, dict(event="done", time=time.time()))
    return results


def main(argv):
    specs = json.loads(argv[1])
    specs = specs if isinstance(specs, list) else [specs]
    if any(spec.get("logical_cpus") for spec in specs):
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()]
            * max(spec.get("logical_cpus", 1) for spec in specs)
        )
    from low_rank_local_connectivity import data
    from low_rank_local_connectivity import training

    try:
        for spec in specs:
            run(spec)
    except (TypeError, ValueError, data.DataNotFoundError,
            training.TrainerError) as error:
        sys.exit(f"error: {' '.join(str(error).split())}")


if __name__ == "__main__":
    main(sys.argv)
