"""Experiment configuration: one preset per (dataset, model) pair.

A preset is named `<dataset>_<model>`, e.g. `mnist_lrlc`,
`cifar10_locally_connected`, `celeba32_lrlc_input_dependent` or `imagenet2012_resnet50_lrlc`.
The dataset part selects the data and the training recipe; the model part is
a named model config of `low_rank_local_connectivity.models.get_model_config`
(one per layer type of `models.layer_types`, and the two ResNet-50s).

Use it from the command line with ml_collections' config flags; the preset
after the colon is required:

    python scripts/train.py \
        --config=low_rank_local_connectivity/configs/experiment.py:mnist_lrlc \
        --config.dataset.download=True \
        --config.train.train_steps=600 --model_dir=runs/mnist_lrlc

Layout (every field has one meaning; `trainer.validate_config` checks values):

- `seed` (int): seeds model initialisation and the training data order.
- `dataset`: `name` (a `data` dataset), `data_dir` (TFDS data_dir or
  None for the TFDS default), `download` (bool: let TFDS download and prepare),
  `manual_dir` (TFDS manual_dir, ImageNet), `idx_dir` (folder of MNIST's idx
  files: 'mnist' is then read from them without TFDS), `shuffle_buffer_size`
  (int), and the optional preprocessing overrides of `data.resolve`:
  `translate_to` (int: noise canvas side), `image_size` (int: resize),
  `value_range` ((lo, hi) pixel range); None keeps the dataset's default.
- `model`: a `models.get_model_config(<model>)` config (list fields as tuples,
  so that `--config.model.num_filters='(32, 32, 32)'` works). `num_classes`
  and `input_shape` are left None here and filled from the dataset metadata.
- `train`:
  - `batch_size` / `eval_batch_size` (int): GLOBAL batch sizes (over all
    replicas and workers).
  - `train_steps` (int): number of optimiser steps of the whole run.
  - `eval_every_steps` (int): validation period; validation also runs at the
    last step, and the test split is evaluated once at the end.
  - `log_every_steps` (int): period of the progress line and of the training
    summaries.
  - `checkpoint_every_steps` (int): checkpoint period (checkpoints are also
    written after every validation and at the end).
  - `keep_checkpoints` (int): number of recent checkpoints kept; the
    best-on-validation checkpoint is kept separately.
  - `optimizer`: `name` ('sgd' | 'adam' | 'adamw' | 'rmsprop'),
    `learning_rate` (peak), `momentum` (SGD and RMSProp), `nesterov` (SGD),
    `beta_1`, `beta_2`, `epsilon` (Adam/AdamW; `epsilon` also RMSProp),
    `rho` (RMSProp), `weight_decay` (decoupled weight decay applied by the
    optimiser; 0 disables it; the model's own L2 penalty is
    `model.weight_decay`), `clipnorm` (clip the all-reduced gradient to this
    global norm; 0 disables clipping).
  - `schedule`: `name` ('constant' | 'step' | 'cosine'), `warmup_steps`
    (linear warm-up from 0 to the peak rate), `boundaries` (step schedule:
    steps at which the rate is multiplied by `decay_rate`),
    `decay_rate`, `end_learning_rate_fraction` (cosine: final rate as a
    fraction of the peak).
  - `label_smoothing` (float in [0, 1)).
  - `distribution_strategy` ('default' | 'mirrored' | 'multi_worker_mirrored'
    | 'tpu'); `tpu_address` ('' = the TPU resolver's default, e.g. a local
    TPU VM or the TPU_NAME environment variable).
  - `mixed_precision` ('float32' | 'mixed_float16' | 'mixed_bfloat16').
  - `jit_compile` (bool): compile the train and eval steps with XLA.
  - `resume_input_position` (bool): when a run resumes at step s, skip the
    training batches of steps 1..s, so that it sees exactly the batches an
    uninterrupted run would (costs one read of the skipped data; off for
    ImageNet). When False, the training pipeline restarts with seed
    `seed + s` instead.
  - `deterministic` (bool): bit-reproducible runs (`training.enable_determinism`:
    deterministic kernels, and one kernel at a time; process-wide, and it must be
    set before the process runs its first TensorFlow op). False (default): faster,
    and runs agree only to float round-off.

Two optional fields are absent from the presets; `finetuning.finetune_config`
sets them to fine-tune a finished run:

- `init_from`: `model_dir` (a finished run) and `checkpoint` ('best',
  'latest' or a checkpoint prefix). A new run starts from that checkpoint's
  model weights (a fresh optimiser and step 0); a resumed run restores its
  own checkpoint instead.
- `model.convert`: keyword arguments of `convert.to_lrlc` (`spatial_rank`,
  and e.g. `layers`, `input_dependent`, `basis_perturbation`, `seed`). The
  model built from `model`, initialised from `init_from`, is then converted.
"""

import difflib

import ml_collections

from low_rank_local_connectivity import models

# Training recipe per dataset: (models allowed, overrides of `train`).
_SMALL_MODELS = tuple(
    name for name in models.MODEL_CONFIGS if not name.startswith("resnet")
)
_IMAGENET_MODELS = tuple(
    name for name in models.MODEL_CONFIGS if name.startswith("resnet")
)


def _small_network_recipe(train_steps, eval_every_steps, **train):
    """A recipe of the small network: its models, and overrides of `train`."""
    return dict(models=_SMALL_MODELS, train=dict(
        train_steps=train_steps, eval_every_steps=eval_every_steps, **train))


# 162,770 training images: 30 epochs at batch 128.
_CELEBA_RECIPE = _small_network_recipe(38_150, 2540)

_RECIPES = {
    # 55,200 training images: ~4 epochs at batch 128.
    "mnist": _small_network_recipe(1800, 450),
    # The embedded 5,000-image MNIST subset: a quick-start run of ~8 epochs.
    "mnist_small": _small_network_recipe(
        300, 100, log_every_steps=25, checkpoint_every_steps=100,
        eval_batch_size=500, optimizer=dict(learning_rate=2e-3),
    ),
    # 45,000 training images: 100 epochs at batch 128.
    "cifar10": _small_network_recipe(35_200, 1760),
    "celeba32": _CELEBA_RECIPE,
    "trans_celeba48": _CELEBA_RECIPE,
    # The standard ResNet-50 recipe: 90 epochs at batch 1024, SGD + Nesterov
    # momentum, 5 warm-up epochs then cosine decay, label smoothing 0.1.
    "imagenet2012": dict(
        models=_IMAGENET_MODELS,
        train=dict(
            batch_size=1024, eval_batch_size=1000, train_steps=112_590,
            eval_every_steps=6255, log_every_steps=100,
            checkpoint_every_steps=1251, label_smoothing=0.1,
            resume_input_position=False,
            optimizer=dict(
                name="sgd", learning_rate=0.4, momentum=0.9, nesterov=True,
            ),
            schedule=dict(name="cosine", warmup_steps=6255),
        ),
    ),
}

DATASETS = tuple(_RECIPES)
PRESETS = tuple(
    f"{dataset}_{model}"
    for dataset, recipe in _RECIPES.items()
    for model in recipe["models"]
)
# The preset that error messages show as an example (offline, quick).
EXAMPLE_PRESET = "mnist_small_lrlc"


def _default_train_config():
    return ml_collections.ConfigDict(
        dict(
            batch_size=128,
            eval_batch_size=1000,
            train_steps=1000,
            eval_every_steps=500,
            log_every_steps=50,
            checkpoint_every_steps=500,
            keep_checkpoints=3,
            optimizer=dict(
                name="adam",
                learning_rate=1e-3,
                momentum=0.9,
                nesterov=False,
                beta_1=0.9,
                beta_2=0.999,
                epsilon=1e-7,
                rho=0.9,
                weight_decay=0.0,
                clipnorm=0.0,
            ),
            schedule=dict(
                name="cosine",
                warmup_steps=0,
                boundaries=(),
                decay_rate=0.1,
                end_learning_rate_fraction=0.0,
            ),
            label_smoothing=0.0,
            distribution_strategy="default",
            tpu_address="",
            mixed_precision="float32",
            jit_compile=False,
            resume_input_position=True,
            deterministic=False,
        )
    )


def _preset_error(preset):
    """ValueError for an unknown or missing preset, with the closest names."""
    small = ", ".join(_SMALL_MODELS)
    names = (
        f"Presets are <dataset>_<model>: datasets {', '.join(DATASETS)}; models "
        f"{small} ({', '.join(_IMAGENET_MODELS)} for imagenet2012)."
    )
    if preset is None:
        return ValueError(
            "Invalid value for argument `preset`: none given. On the command "
            "line it follows the config file: --config=low_rank_local_connectivity"
            f"/configs/experiment.py:{EXAMPLE_PRESET}. {names}"
        )
    close = difflib.get_close_matches(str(preset), PRESETS, n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    return ValueError(
        f"Invalid value for argument `preset`. Received: {preset!r}.{hint} {names}"
    )


def split_preset(preset):
    """Splits an experiment preset name into (dataset, model config name).

    Args:
        preset: str, e.g. 'mnist_small_lrlc'.

    Returns:
        A tuple `(dataset_name, model_name)`.

    Raises:
        ValueError: if `preset` is not one of `PRESETS` (the message suggests
            the closest ones).
    """
    if preset not in PRESETS:
        raise _preset_error(preset)
    # Longest dataset name first: 'mnist_small_conv' is not 'mnist' + 'small_conv'.
    for dataset in sorted(DATASETS, key=len, reverse=True):
        if preset.startswith(dataset + "_"):
            return dataset, preset[len(dataset) + 1:]
    raise AssertionError(f"unreachable: {preset!r}")


def get_config(preset=None):
    """Returns the experiment configuration of a preset.

    ml_collections' config flags call it with the text after the colon of
    `--config=.../experiment.py:<preset>`, and without an argument when there
    is no colon: a preset must be named, so that no run trains a default
    experiment by surprise.

    Args:
        preset: str, `<dataset>_<model>`; one of `PRESETS`.

    Returns:
        An `ml_collections.ConfigDict` with the layout described in this
        module's docstring.

    Raises:
        ValueError: if `preset` is missing or unknown (the message suggests
            the closest valid ones).
    """
    dataset, model_name = split_preset(preset)
    config = ml_collections.ConfigDict()
    config.preset = preset
    config.seed = 0
    config.dataset = ml_collections.ConfigDict(
        dict(
            name=dataset,
            data_dir=ml_collections.config_dict.placeholder(str),
            download=False,
            manual_dir=ml_collections.config_dict.placeholder(str),
            idx_dir=ml_collections.config_dict.placeholder(str),
            shuffle_buffer_size=10_000,
            translate_to=ml_collections.config_dict.placeholder(int),
            image_size=ml_collections.config_dict.placeholder(int),
            value_range=ml_collections.config_dict.placeholder(tuple),
        )
    )
    # Command-line overrides (config_flags) support tuples, not lists.
    config.model = ml_collections.ConfigDict({
        key: tuple(value) if isinstance(value, list) else value
        for key, value in models.get_model_config(model_name).to_dict().items()
    })
    config.train = _default_train_config()
    config.train.update_from_flattened_dict(
        flatten(_RECIPES[dataset]["train"])
    )
    return config


def flatten(nested, prefix=""):
    """A nested dict as one dict with dotted keys ({'a': {'b': 1}} -> {'a.b': 1}).

    The keys are those of `ConfigDict.update_from_flattened_dict`.
    """
    flat = {}
    for key, value in nested.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
