#!/usr/bin/env bash
# The GPU check of the JAX stack, as one command for a borrowed machine that has
# JAX but neither TensorFlow nor Keras (see the README's "Backends" section).
#
# Prepare on this machine (ignored folders, carried with the checkout):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 \
#     --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex optree \
#     ml_collections orbax-checkpoint==0.12.8 etils typing_extensions msgpack \
#     prometheus-client tensorstore aiofiles protobuf humanize simplejson psutil \
#     uvloop zipp importlib_resources fsspec
#   mkdir -p .gpu_data && cp -r ../shared/data/mnist_idx .gpu_data/
# Run there (carry .whl and .gpu_data), e.g. with a 540 s limit:
#   OUT=<folder> bash tools/gpu_check.sh
#
# Writes under $OUT, each file as soon as its step ends (a timeout keeps the
# finished ones): environment.txt; benchmark/ (the 'targets' layer suite, then the
# training throughput of the four 64-filter small presets); grid/ (one paper-scale
# cell: fixed LRLC K=4 at position 2, real MNIST from its idx files, the 'mnist'
# recipe of 1800 steps, seed 0, float32); a log per step. Budget: under 8 minutes
# on an H200 (compilation included); each step has its own time limit.
set -uo pipefail
OUT=${OUT:?set OUT to the folder for the results}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:. KERAS_BACKEND=jax PYTHONUNBUFFERED=1
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices()); print('keras', keras.__version__)"
} > "$OUT/environment.txt" 2>&1

step() {  # step NAME SECONDS COMMAND...: runs it with a limit, logs, records its status
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: exit $? after $((SECONDS - start)) s" >> "$OUT/steps.txt"
}

step benchmark_layers 120 python3 scripts/benchmark.py --suite=targets \
  --output_dir="$OUT/benchmark/layers"
step benchmark_training 120 python3 scripts/benchmark.py --layers= \
  --training=mnist_small_conv,mnist_small_lrlc,mnist_small_lrlc_input_dependent,mnist_small_locally_connected \
  --training_steps=60 --output_dir="$OUT/benchmark/training"
step grid_cell 200 python3 scripts/reproduce_paper.py --dataset=mnist \
  --idx_dir=.gpu_data/mnist_idx --layer_types=lrlc --positions=2 --ranks=4 \
  --seeds=0 --output_dir="$OUT/grid"
cat "$OUT/steps.txt"
