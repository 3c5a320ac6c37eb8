"""Tests of the experiment presets (`configs/experiment.py`)."""

import ml_collections
import pytest

from low_rank_local_connectivity import data
from low_rank_local_connectivity import models
from low_rank_local_connectivity import training
from low_rank_local_connectivity.configs import experiment


def test_presets_are_dataset_times_model_presets():
    small = [p for p in models.MODEL_CONFIGS if not p.startswith("resnet")]
    expected = {
        f"{dataset}_{model}"
        for dataset in ("mnist", "mnist_small", "cifar10", "celeba32", "trans_celeba48")
        for model in small
    } | {"imagenet2012_resnet50", "imagenet2012_resnet50_lrlc"}
    assert set(experiment.PRESETS) == expected
    assert set(experiment.DATASETS) <= set(data.DATASET_NAMES)


@pytest.mark.parametrize("preset", experiment.PRESETS)
def test_every_preset_is_valid(preset):
    config = experiment.get_config(preset)
    training.validate_config(config)
    dataset, model_preset = experiment.split_preset(preset)
    assert config.dataset.name == dataset
    expected_model = models.get_model_config(model_preset).to_dict()
    got_model = config.model.to_dict()
    assert got_model.keys() == expected_model.keys()
    for key, value in expected_model.items():
        assert got_model[key] == (tuple(value) if isinstance(value, list) else value)


def test_split_preset_prefers_the_longest_dataset_name():
    assert experiment.split_preset("mnist_small_lrlc_input_dependent") == (
        "mnist_small", "lrlc_input_dependent"
    )
    assert experiment.split_preset("trans_celeba48_locally_connected") == (
        "trans_celeba48", "locally_connected")


@pytest.mark.parametrize("preset, suggestions", [
    ("mnist_lrcl", "'mnist_lrlc'"),
    ("mnist_small_lrcl", "'mnist_small_lrlc'"),
    ("cifar_lrlc", "'cifar10_lrlc'"),
    ("imagenet2012_conv", "'imagenet2012_resnet50' or 'imagenet2012_resnet50_lrlc'"),
    ("resnet", None),
    ("", None),
])
def test_unknown_preset_suggests_the_closest_ones(preset, suggestions):
    with pytest.raises(ValueError) as error:
        experiment.get_config(preset)
    message = str(error.value)
    assert f"Received: {preset!r}." in message and "\n" not in message
    assert "datasets mnist, mnist_small, cifar10" in message
    assert len(message) < 400  # Not a list of all 32 presets.
    if suggestions is None:
        assert "Did you mean" not in message
    else:
        assert f"Did you mean {suggestions}" in message


def test_a_preset_must_be_named():
    # config_flags calls get_config() when --config has no ':<preset>'.
    with pytest.raises(ValueError, match="none given.*experiment.py:mnist_small_lrlc"):
        experiment.get_config()


def test_recipes():
    imagenet = experiment.get_config("imagenet2012_resnet50_lrlc").train
    assert (imagenet.optimizer.name, imagenet.optimizer.nesterov) == ("sgd", True)
    assert imagenet.schedule.warmup_steps > 0 and imagenet.label_smoothing == 0.1
    assert not imagenet.resume_input_position
    mnist = experiment.get_config("mnist_lrlc").train
    assert (mnist.optimizer.name, mnist.schedule.name, mnist.batch_size) == (
        "adam", "cosine", 128
    )


def test_model_list_fields_are_tuples_so_the_command_line_can_override_them():
    config = experiment.get_config("cifar10_lrlc")
    assert isinstance(config.model.layer_types, tuple)
    assert isinstance(config, ml_collections.ConfigDict)
