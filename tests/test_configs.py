"""Tests of the experiment presets (`configs/experiment.py`)."""

import ml_collections
import pytest

from low_rank_local_connectivity import data_provider
from low_rank_local_connectivity import models
from low_rank_local_connectivity import trainer
from low_rank_local_connectivity.configs import experiment


def test_presets_are_dataset_times_model_presets():
    small = [p for p in models.MODEL_PRESETS if not p.startswith("resnet")]
    expected = {
        f"{dataset}_{model}"
        for dataset in ("mnist", "mnist_small", "cifar10", "celeba32", "trans_celeba48")
        for model in small
    } | {"imagenet2012_resnet50", "imagenet2012_resnet50_lrlc"}
    assert set(experiment.PRESETS) == expected
    assert set(experiment.DATASETS) <= set(data_provider.DATASET_NAMES)


@pytest.mark.parametrize("preset", experiment.PRESETS)
def test_every_preset_is_valid(preset):
    config = experiment.get_config(preset)
    trainer.validate_config(config)
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
    assert experiment.split_preset("trans_celeba48_lc") == ("trans_celeba48", "lc")


@pytest.mark.parametrize("preset", ["mnist", "mnist_resnet50", "imagenet2012_conv", ""])
def test_unknown_preset_lists_the_valid_ones(preset):
    message = "Expected one of mnist_conv, .*imagenet2012_resnet50_lrlc"
    with pytest.raises(ValueError, match=message):
        experiment.get_config(preset)


def test_default_preset_and_recipes():
    assert experiment.get_config().preset == experiment.DEFAULT_PRESET == "mnist_small_lrlc"
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
