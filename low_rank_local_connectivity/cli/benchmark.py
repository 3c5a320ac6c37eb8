r"""Benchmarks LRLC layers against convolutions and locally connected layers.

On the Keras backend of KERAS_BACKEND, for every input shape and rank K, it times
the forward and the forward+backward pass of: Conv2D(F), Conv2D(K*F) -- the floor
of an LRLC layer of rank K --, fixed LRLC (row+col factorised and full table),
input-dependent LRLC, our LocallyConnected2D, tf_keras' LocallyConnected2D
(implementations 1, 2, 3; TensorFlow only, skipped with a note elsewhere) and the
parameter-matched wide convolution. Modes: TensorFlow's `tf.function` ('graph')
and XLA ('xla'), JAX's `jax.jit` ('xla'), PyTorch eager ('eager'); see
`benchmark_steps.py`. All cases of one shape are timed in interleaved rounds and
every time is also reported as a ratio to Conv2D(K*F) from the same rounds, since
a machine's absolute times drift. Peak memory is the allocator's peak per case
where the backend reports it (TensorFlow's CPU allocator, CUDA).

Examples:

  # The issue's targets (batch 64, 32x32x64 -> 64, K = 2, 4, 8).
  lrlc-benchmark --suite=targets --output_dir=runs/benchmark
  # The paper's shapes (batch 128; 28, 32, 48; K = 1..16) and a ResNet stage-4 shape.
  lrlc-benchmark --suite=paper --output_dir=runs/benchmark_paper
  # Training throughput of the simple model per layer type: the real trainer and
  # input pipeline versus the same training step on one batch held in memory.
  lrlc-benchmark --layers= --training=mnist_small_conv,mnist_small_lrlc
  # The same layers in bfloat16 (Keras' and tf_keras' 'mixed_bfloat16' policy).
  lrlc-benchmark --mixed_precision=mixed_bfloat16 --output_dir=runs/benchmark_bf16
  # On JAX (no TensorFlow needed), e.g. on a GPU.
  KERAS_BACKEND=jax lrlc-benchmark --suite=paper --output_dir=runs/benchmark_jax

Training throughput runs `training.train_and_evaluate` on the embedded MNIST subset
(no external data) and reports its steady-state examples/s (the first, tracing step
excluded), next to `task.measure_step_throughput` of the same configuration
(TensorFlow and JAX), and Keras `model.fit` with the same model, optimiser and
batches (every backend).
"""

import json
import os
import pathlib
import shlex
import statistics
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

from low_rank_local_connectivity.cli import benchmark_steps
from low_rank_local_connectivity.cli import startup

# Suites of cases: (batch, (height, width, channels, filters)) shapes and ranks.
SUITES = {
    "targets": dict(batch_size=64, shapes=["32x32x64x64"], ranks=[2, 4, 8]),
    "paper": dict(
        batch_size=128,
        shapes=["28x28x64x64", "32x32x64x64", "48x48x64x64", "7x7x512x512"],
        ranks=[1, 2, 4, 8, 16],
    ),
    "smoke": dict(batch_size=2, shapes=["8x8x4x4"], ranks=[2]),
}
LAYERS = (
    "conv",
    "conv_kf",
    "lrlc",
    "lrlc_full",
    "lrlc_input_dependent",
    "locally_connected",
    "tf_keras_locally_connected1",
    "tf_keras_locally_connected2",
    "tf_keras_locally_connected3",
    "wide_conv",
)
REFERENCE = "conv_kf"

FLAGS = flags.FLAGS
flags.DEFINE_enum("suite", "targets", list(SUITES), "Shapes, ranks and batch size.")
flags.DEFINE_integer("batch_size", None, "Overrides the suite's batch size.")
flags.DEFINE_list("shapes", None, "Overrides the suite's HxWxCxF shapes.")
flags.DEFINE_list("ranks", None, "Overrides the suite's ranks.")
flags.DEFINE_list("layers", list(LAYERS), f"Layers to time, from {LAYERS}.")
flags.DEFINE_list(
    "modes", None,
    "Compile modes (default: all of the backend's): TensorFlow 'graph' "
    "(tf.function) and 'xla' (jit_compile); JAX 'xla' (jax.jit); PyTorch 'eager'.",
)
flags.DEFINE_integer("warmup", 2, "Untimed steps per case (after tracing).")
flags.DEFINE_integer("repeats", 10, "Timed rounds; the median is reported.")
flags.DEFINE_float(
    "max_kernel_gib", 4.0,
    "Skip tf_keras implementation 2, whose dense masked kernel needs "
    "(H*W*C)*(H_out*W_out*F) floats, above this size.",
)
flags.DEFINE_list(
    "training", [],
    "Experiment presets (configs/experiment.py) whose training throughput to "
    "measure, e.g. mnist_small_conv,mnist_small_lrlc.",
)
flags.DEFINE_integer("training_steps", 40, "Trainer steps per training benchmark.")
flags.DEFINE_enum(
    "mixed_precision", "float32", ["float32", "mixed_float16", "mixed_bfloat16"],
    "Dtype policy of every layer timed (Keras and tf_keras) and of the "
    "training benchmarks' config.train.mixed_precision.",
)
flags.DEFINE_string("output_dir", None, "Writes benchmark.json and benchmark.md here.")


def _parse_shape(text):
    try:
        height, width, channels, filters = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise app.UsageError(
            f"--shapes entries must look like 32x32x64x64 (HxWxCxF); got {text!r}"
        ) from None
    return height, width, channels, filters


def make_layer(name, rank, filters, channels, height, width):
    """Returns the layer to time, or a string saying why it is skipped."""
    import keras

    from low_rank_local_connectivity import layers

    if name == "conv":
        return keras.layers.Conv2D(filters, 3)
    if name == "conv_kf":
        return keras.layers.Conv2D(rank * filters, 3)
    if name == "wide_conv":
        return keras.layers.Conv2D(int((rank * channels + filters) / (channels + filters) * filters), 3)
    if name == "lrlc":
        return layers.LowRankLocallyConnected2D(rank, filters, 3)
    if name in ("lrlc_full", "lrlc_input_dependent"):
        return layers.LowRankLocallyConnected2D(
            rank, filters, 3, share_row_combining_weights=False,
            share_col_combining_weights=False,
            input_dependent=name == "lrlc_input_dependent",
        )
    if name == "locally_connected":
        return layers.LocallyConnected2D(filters, 3)
    if name.startswith("tf_keras_locally_connected"):
        if keras.backend.backend() != "tensorflow":
            return f"skipped: tf_keras runs on TensorFlow, not {keras.backend.backend()}"
        import tf_keras

        implementation = int(name[-1])
        dense_gib = (height * width * channels) * ((height - 2) * (width - 2) * filters) * 4 / 2**30
        if implementation == 2 and dense_gib > FLAGS.max_kernel_gib:
            return f"skipped: dense kernel of {dense_gib:.0f} GiB"
        return tf_keras.layers.LocallyConnected2D(filters, 3, implementation=implementation)
    raise app.UsageError(f"Unknown layer {name!r}; choose from {LAYERS}")


def benchmark_shape(batch_size, shape, rank, layer_names, mode):
    """Times every layer on one shape; returns a list of result rows."""
    height, width, channels, filters = shape
    # float32 inputs: the layers cast them to their compute dtype.
    inputs = benchmark_steps.random_inputs((batch_size, height, width, channels), seed=3)
    rows, steps = [], {}
    for name in layer_names:
        layer = make_layer(name, rank, filters, channels, height, width)
        row = dict(layer=name, mode=mode, batch_size=batch_size, height=height,
                   width=width, channels=channels, filters=filters, rank=rank)
        if isinstance(layer, str):
            rows.append(dict(row, note=layer))
            continue
        try:
            steps[name] = benchmark_steps.compiled_steps(layer, inputs, mode)
            for kind, step in steps[name].items():
                step()  # trace and compile
                for _ in range(FLAGS.warmup):
                    step()
                peak = benchmark_steps.peak_memory_bytes(step)
                if peak is not None:
                    row[f"{kind}_peak_memory_mb"] = peak / 2**20
            row["params"] = int(sum(np.prod(v.shape) for v in layer.trainable_variables))
            row["compute_dtype"] = layer.compute_dtype
        except Exception as error:  # noqa: BLE001  (e.g. an op XLA cannot compile)
            steps.pop(name, None)
            row["note"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
        rows.append(row)
    times = {(name, kind): [] for name in steps for kind in ("forward", "forward_backward")}
    for _ in range(FLAGS.repeats):  # interleaved rounds: drift hits every case alike
        for name, layer_steps in steps.items():
            for kind, step in layer_steps.items():
                start = time.perf_counter()
                step()
                times[(name, kind)].append(time.perf_counter() - start)
    for row in rows:
        for kind in ("forward", "forward_backward"):
            if (row["layer"], kind) in times:
                row[f"{kind}_ms"] = 1000 * statistics.median(times[(row["layer"], kind)])
                reference = times.get((REFERENCE, kind))
                if reference:
                    # Ratio per round, then the median: robust to drift between rounds.
                    ratios = [t / r for t, r in zip(times[(row["layer"], kind)], reference)]
                    row[f"{kind}_ratio"] = statistics.median(ratios)
    return rows


def ratio_table(rows):
    """One line per (mode, shape, K): the reference's fwd+bwd ms, every layer's ratio."""
    layers = list(dict.fromkeys(r["layer"] for r in rows if r["layer"] != REFERENCE))
    lines = [
        "| mode | shape (B,H,W,C→F) | K | conv_kf fwd+bwd ms | "
        + " | ".join(layers) + " |",
        "|" + "---|" * (4 + len(layers)),
    ]
    groups = {}
    for r in rows:
        key = (r["mode"], r["batch_size"], r["height"], r["width"], r["channels"],
               r["filters"], r["rank"])
        groups.setdefault(key, {})[r["layer"]] = r
    for (mode, b, h, w, c, f, k), by_layer in groups.items():
        reference = by_layer.get(REFERENCE, {}).get("forward_backward_ms")
        cells = []
        for layer in layers:
            ratio = by_layer.get(layer, {}).get("forward_backward_ratio")
            cells.append("" if ratio is None else f"{ratio:.2f}")
        lines.append(
            f"| {mode} | {b},{h},{w},{c}→{f} | {k} | "
            f"{'' if reference is None else format(reference, '.1f')} | "
            + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def _format_or_blank(value, spec):
    return "" if value is None else format(value, spec)


def markdown_table(rows):
    header = ("| mode | shape (B,H,W,C→F) | K | layer | fwd ms | fwd+bwd ms | fwd ratio | "
              "fwd+bwd ratio | peak MiB (fwd+bwd) | params |")
    lines = [header, "|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|"]
    fmt = _format_or_blank
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['batch_size']},{r['height']},{r['width']},"
            f"{r['channels']}→{r['filters']} | {r['rank']} | {r['layer']} | "
            f"{fmt(r.get('forward_ms'), '.1f')} | {fmt(r.get('forward_backward_ms'), '.1f')} | "
            f"{fmt(r.get('forward_ratio'), '.2f')} | {fmt(r.get('forward_backward_ratio'), '.2f')} | "
            f"{fmt(r.get('forward_backward_peak_memory_mb'), '.0f')} | "
            f"{r.get('params', '')}{' ' + r['note'] if 'note' in r else ''} |"
        )
    return "\n".join(lines)


def _fit_examples_per_second(config, steps):
    """Examples/s of Keras `model.fit` with the trainer's model and optimiser.

    The same model, optimiser, batch size and NumPy batches of the embedded
    data; two epochs of `steps // 2` steps, the second one timed (the first
    compiles). Runs on every backend.
    """
    import keras

    from low_rank_local_connectivity import data
    from low_rank_local_connectivity.training import task as task_lib

    dataset = data.resolve_config(config.dataset)
    batches = dataset.numpy_batches("train", batch_size=config.train.batch_size,
                                    is_training=True, seed=config.seed)
    images, labels, _ = (np.concatenate(parts) for parts in zip(
        *(next(batches) for _ in range(steps // 2))))
    keras.utils.set_random_seed(config.seed)
    model, optimizer = task_lib.build_model_and_optimizer(config, dataset.metadata)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.start

    timer = EpochTimes()
    model.fit(images, labels, batch_size=config.train.batch_size, epochs=2,
              shuffle=False, verbose=0, callbacks=[timer])
    return len(images) / timer.seconds


def benchmark_training(preset, steps, workdir):
    """Examples/s of the trainer, of its step alone and of `model.fit`, for a preset.

    The trainer and its in-memory step run on TensorFlow and JAX (None under
    PyTorch); `model.fit` on every backend.
    """
    import keras

    from low_rank_local_connectivity import training
    from low_rank_local_connectivity.configs import experiment

    config = experiment.get_config(preset)
    train = config.train
    train.mixed_precision = FLAGS.mixed_precision
    train.train_steps = train.eval_every_steps = train.checkpoint_every_steps = steps
    train.log_every_steps = max(steps // 4, 1)
    row = dict(preset=preset, backend=keras.backend.backend(),
               batch_size=train.batch_size, steps=steps,
               trainer_examples_per_second=None, step_examples_per_second=None,
               ratio=None)
    if row["backend"] in ("tensorflow", "jax"):
        # The in-memory step is timed before and after the trainer run, and
        # averaged, so that drift of the machine's speed does not bias the ratio.
        step_task = training.create_task(config)
        step_before = step_task.measure_step_throughput(num_steps=steps // 2)
        results = training.train_and_evaluate(
            config, str(workdir / preset / "trainer"), progress=False)
        # Compiled and warm by now: every step after the trainer run is timed.
        step_after = step_task.measure_step_throughput(
            num_steps=steps // 2, warmup_steps=0)
        step_only = (step_before + step_after) / 2
        with_pipeline = results["steady_examples_per_second"]
        row.update(trainer_examples_per_second=with_pipeline,
                   step_examples_per_second=step_only, ratio=with_pipeline / step_only)
    row["fit_examples_per_second"] = _fit_examples_per_second(config, steps)
    return row


def training_table(rows):
    lines = [
        "| preset | backend | batch | trainer examples/s | in-memory step examples/s "
        "| trainer / step | model.fit examples/s |",
        "|---|---|---|---|---|---|---|",
    ]
    fmt = _format_or_blank
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['backend']} | {r['batch_size']} | "
            f"{fmt(r['trainer_examples_per_second'], '.0f')} | "
            f"{fmt(r['step_examples_per_second'], '.0f')} | {fmt(r['ratio'], '.2f')} | "
            f"{r['fit_examples_per_second']:.0f} |"
        )
    return "\n".join(lines)


def _backend_version(backend):
    import importlib

    return importlib.import_module(backend).__version__


def main(argv):
    del argv  # Flags only (`startup.run` refuses positional arguments).
    suite = SUITES[FLAGS.suite]
    batch_size = FLAGS.batch_size or suite["batch_size"]
    shapes = [_parse_shape(s) for s in (FLAGS.shapes or suite["shapes"])]
    ranks = [int(r) for r in (FLAGS.ranks or suite["ranks"])]
    unknown = sorted(set(FLAGS.layers) - set(LAYERS))
    if unknown or batch_size < 1 or min(ranks) < 1:
        raise app.UsageError(
            f"Check --layers (unknown: {unknown}; valid: {LAYERS}), --batch_size and "
            "--ranks (positive integers)."
        )
    if FLAGS.training and FLAGS.training_steps < 4:
        raise app.UsageError(
            f"--training_steps must be >= 4 (the first step traces); got {FLAGS.training_steps}"
        )
    import keras

    backend = keras.backend.backend()
    modes = FLAGS.modes or list(benchmark_steps.backend_modes())
    bad_modes = sorted(set(modes) - set(benchmark_steps.backend_modes()))
    if bad_modes:
        raise app.UsageError(
            f"--modes of the {backend} backend are {benchmark_steps.backend_modes()}; "
            f"got {bad_modes}")
    layer_names = list(dict.fromkeys([REFERENCE] + FLAGS.layers)) if FLAGS.layers else []
    from low_rank_local_connectivity.configs import experiment

    unknown = sorted(set(FLAGS.training) - set(experiment.PRESETS))
    if unknown:
        raise app.UsageError(
            f"--training: unknown presets {unknown}; choose from {list(experiment.PRESETS)}"
        )
    import tempfile

    from low_rank_local_connectivity import devices

    keras.config.set_dtype_policy(FLAGS.mixed_precision)
    if backend == "tensorflow":
        import tf_keras

        tf_keras.mixed_precision.set_global_policy(FLAGS.mixed_precision)
    versions = dict(keras=keras.__version__, backend=backend,
                    backend_version=_backend_version(backend),
                    device=devices.device_kind())

    cpu = os.cpu_count()
    print(f"Keras {keras.__version__} on {backend} {versions['backend_version']} "
          f"({versions['device']}); {cpu} CPU cores; batch {batch_size}; "
          f"{FLAGS.mixed_precision}", flush=True)
    rows = []
    for mode in modes if layer_names else []:
        for shape in shapes:
            for rank in ranks:
                started = time.time()
                new_rows = benchmark_shape(batch_size, shape, rank, layer_names, mode)
                rows.extend(new_rows)
                print(markdown_table(new_rows), flush=True)
                logging.info("%s %s K=%d done in %.0fs", mode, shape, rank, time.time() - started)
    training_rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for preset in FLAGS.training:
            training_rows.append(
                benchmark_training(preset, FLAGS.training_steps, pathlib.Path(workdir))
            )
            print(training_table(training_rows[-1:]), flush=True)
    if FLAGS.output_dir:
        out = pathlib.Path(FLAGS.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "benchmark.json").write_text(json.dumps(
            dict(**versions, cpu_count=cpu, reference=REFERENCE,
                 mixed_precision=FLAGS.mixed_precision,
                 command=shlex.join(["python"] + sys.argv), rows=rows,
                 training=training_rows),
            indent=1))
        tables = [ratio_table(rows), markdown_table(rows)] if rows else []
        tables += [training_table(training_rows)] if training_rows else []
        (out / "benchmark.md").write_text("\n\n".join(tables) + "\n")
        print(f"Wrote {out / 'benchmark.json'} and {out / 'benchmark.md'}")


def run():
    """The `lrlc-benchmark` command."""
    startup.run(main)
