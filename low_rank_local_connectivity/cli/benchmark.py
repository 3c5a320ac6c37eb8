r"""Benchmarks LRLC layers against convolutions and locally connected layers.

For every input shape and rank K it times, inside `tf.function` (graph mode and/or
XLA `jit_compile`), the forward and the forward+backward pass of:
Conv2D(F), Conv2D(K*F) -- the floor of an LRLC layer of rank K --, fixed LRLC
(row+col factorised and full table), input-dependent LRLC, our LocallyConnected2D,
tf_keras' LocallyConnected2D (implementations 1, 2, 3) and the parameter-matched
wide convolution. All cases of one shape are timed in interleaved rounds and every
time is also reported as a ratio to Conv2D(K*F) from the same rounds, since this
machine's absolute times drift. Peak memory is TF's allocator peak per case.

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

Training throughput runs `training.train_and_evaluate` on the embedded MNIST subset
(no external data) and reports its steady-state examples/s (the first, tracing step
excluded), next to `task.measure_step_throughput` of the same configuration.
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
flags.DEFINE_list("modes", ["graph", "xla"], "Compile modes: graph and/or xla.")
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
    import tf_keras

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
        implementation = int(name[-1])
        dense_gib = (height * width * channels) * ((height - 2) * (width - 2) * filters) * 4 / 2**30
        if implementation == 2 and dense_gib > FLAGS.max_kernel_gib:
            return f"skipped: dense kernel of {dense_gib:.0f} GiB"
        return tf_keras.layers.LocallyConnected2D(filters, 3, implementation=implementation)
    raise app.UsageError(f"Unknown layer {name!r}; choose from {LAYERS}")


def _steps(layer, inputs, jit):
    """Compiled forward and forward+backward steps of `layer` on `inputs`."""
    import tensorflow as tf

    outputs = layer(inputs)  # builds
    upstream = tf.cast(tf.random.stateless_normal(outputs.shape, seed=(1, 2)), outputs.dtype)
    variables = list(layer.trainable_variables)

    @tf.function(jit_compile=jit)
    def forward():
        return tf.cast(tf.reduce_sum(layer(inputs)), tf.float32)

    @tf.function(jit_compile=jit)
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs)
        gradients = tape.gradient(outputs, [inputs] + variables, output_gradients=upstream)
        # The outputs are part of the result, as a loss would be: otherwise graph
        # pruning drops a forward pass whose values the backward pass does not read
        # (a convolution's), and the step would time the backward pass alone.
        sums = [tf.reduce_sum(outputs)] + [tf.reduce_sum(g) for g in gradients]
        return tf.add_n([tf.cast(value, tf.float32) for value in sums])

    return {"forward": forward, "forward_backward": forward_backward}


def _peak_memory_bytes(step):
    """Peak bytes TF's CPU allocator holds during `step`, above what it held before."""
    import tensorflow as tf

    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tf.config.experimental.reset_memory_stats("CPU:0")
    step().numpy()
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def benchmark_shape(batch_size, shape, rank, layer_names, mode):
    """Times every layer on one shape; returns a list of result rows."""
    import tensorflow as tf

    height, width, channels, filters = shape
    inputs = tf.random.stateless_normal((batch_size, height, width, channels), seed=(3, 4))
    jit = mode == "xla"
    rows, steps = [], {}
    for name in layer_names:
        layer = make_layer(name, rank, filters, channels, height, width)
        row = dict(layer=name, mode=mode, batch_size=batch_size, height=height,
                   width=width, channels=channels, filters=filters, rank=rank)
        if isinstance(layer, str):
            rows.append(dict(row, note=layer))
            continue
        try:
            steps[name] = _steps(layer, inputs, jit)
            for kind, step in steps[name].items():
                step().numpy()  # trace and compile
                for _ in range(FLAGS.warmup):
                    step().numpy()
                row[f"{kind}_peak_memory_mb"] = _peak_memory_bytes(step) / 2**20
            row["params"] = int(sum(v.shape.num_elements() for v in layer.trainable_variables))
            row["compute_dtype"] = layer.compute_dtype
        except (tf.errors.OpError, ValueError) as error:  # e.g. XLA unsupported op
            steps.pop(name, None)
            row["note"] = f"failed: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
        rows.append(row)
    times = {(name, kind): [] for name in steps for kind in ("forward", "forward_backward")}
    for _ in range(FLAGS.repeats):  # interleaved rounds: drift hits every case alike
        for name, layer_steps in steps.items():
            for kind, step in layer_steps.items():
                start = time.perf_counter()
                step().numpy()
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


def markdown_table(rows):
    header = ("| mode | shape (B,H,W,C→F) | K | layer | fwd ms | fwd+bwd ms | fwd ratio | "
              "fwd+bwd ratio | peak MiB (fwd+bwd) | params |")
    lines = [header, "|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|"]

    def fmt(value, spec):
        return "" if value is None else format(value, spec)

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


def benchmark_training(preset, steps, workdir):
    """Trainer examples/s against the pure step rate, for one experiment preset."""
    from low_rank_local_connectivity import training
    from low_rank_local_connectivity.configs import experiment

    config = experiment.get_config(preset)
    train = config.train
    train.mixed_precision = FLAGS.mixed_precision
    train.train_steps = train.eval_every_steps = train.checkpoint_every_steps = steps
    train.log_every_steps = max(steps // 4, 1)
    # The in-memory step is timed before and after the trainer run, and averaged,
    # so that drift of the machine's speed does not bias the ratio.
    step_task = training.create_task(config)
    step_before = step_task.measure_step_throughput(num_steps=steps // 2)
    results = training.train_and_evaluate(config, str(workdir / preset / "trainer"))
    step_after = step_task.measure_step_throughput(num_steps=steps // 2)
    step_only = (step_before + step_after) / 2
    with_pipeline = results["steady_examples_per_second"]
    return dict(
        preset=preset, batch_size=train.batch_size, steps=steps,
        trainer_examples_per_second=with_pipeline,
        step_examples_per_second=step_only,
        ratio=with_pipeline / step_only,
    )


def training_table(rows):
    lines = [
        "| preset | batch | trainer examples/s | in-memory step examples/s | ratio |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['preset']} | {r['batch_size']} | {r['trainer_examples_per_second']:.0f} | "
            f"{r['step_examples_per_second']:.0f} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


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
    bad_modes = sorted(set(FLAGS.modes) - {"graph", "xla"})
    if bad_modes:
        raise app.UsageError(f"--modes must be graph and/or xla; got {bad_modes}")
    layer_names = list(dict.fromkeys([REFERENCE] + FLAGS.layers)) if FLAGS.layers else []
    from low_rank_local_connectivity.configs import experiment

    unknown = sorted(set(FLAGS.training) - set(experiment.PRESETS))
    if unknown:
        raise app.UsageError(
            f"--training: unknown presets {unknown}; choose from {list(experiment.PRESETS)}"
        )
    import tempfile

    import keras
    import tensorflow as tf
    import tf_keras

    keras.config.set_dtype_policy(FLAGS.mixed_precision)
    tf_keras.mixed_precision.set_global_policy(FLAGS.mixed_precision)

    cpu = os.cpu_count()
    print(f"TensorFlow {tf.__version__}; {cpu} CPU cores; batch {batch_size}; "
          f"{FLAGS.mixed_precision}", flush=True)
    rows = []
    for mode in FLAGS.modes if layer_names else []:
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
            dict(tensorflow=tf.__version__, cpu_count=cpu, reference=REFERENCE,
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
