"""Tests of the grid declaration: cells, names, subsets and cell configs."""

import pytest

from low_rank_local_connectivity import experiments
from low_rank_local_connectivity import training


def test_grid_cells_count_and_names():
    grid = experiments.Grid(
        "mnist", "mnist", positions=(1, 2), ranks=(1, 2), seeds=(0, 1, 2)
    )
    cells = grid.cells()
    # conv + coord_conv: seeds; locally connected: positions × seeds; the three
    # ranked types: positions × ranks × seeds.
    expected = 2 * 3 + 2 * 3 + 3 * 2 * 2 * 3
    assert len(cells) == expected
    assert len({cell.name for cell in cells}) == expected
    assert {cell.precision for cell in cells} == {"float32"}


def test_float32_names_are_those_of_older_grids_and_others_have_a_suffix():
    # The names of a float32 grid must not change: the directories of runs made
    # before cells had a precision are found under them.
    assert experiments.Cell("mnist", "lrlc", 2, 4, 1).name == "lrlc_pos2_rank4_seed1"
    assert experiments.Cell("mnist", "conv", None, None, 0).name == "conv_seed0"
    bf16 = experiments.Cell("mnist", "lrlc", 2, 4, 0, "mixed_bfloat16")
    fp16 = experiments.Cell("mnist", "conv", None, None, 0, "mixed_float16")
    assert bf16.name == "lrlc_pos2_rank4_seed0_bf16"
    assert fp16.name == "conv_seed0_fp16"
    assert bf16.model_dir("/out") == "/out/mnist/lrlc_pos2_rank4_seed0_bf16"


def test_every_trainer_precision_has_a_cell_name():
    assert set(experiments.PRECISION_SUFFIXES) == set(training.PRECISIONS)
    assert len(set(experiments.PRECISION_SUFFIXES.values())) == len(training.PRECISIONS)


def test_get_grid_subsets_and_overrides():
    grid = experiments.get_grid(
        "trans_mnist42", ranks=[2], seeds=[0],
        train_overrides={"train_steps": 50, "eval_every_steps": 25},
        model_overrides={"num_filters": [8, 8, 8]},
    )
    assert grid.dataset == "trans_mnist42" and grid.recipe == "mnist"
    assert grid.ranks == (2,) and grid.seeds == (0,)
    assert grid.train["train_steps"] == 50
    assert grid.train["eval_every_steps"] == 25
    assert grid.train["checkpoint_every_steps"] == 25
    assert grid.model == {"num_filters": [8, 8, 8]}
    assert grid.precision == "float32"
    quick = experiments.get_grid(None, "quick")
    assert quick.dataset == "mnist_small"


def test_mixed_precision_override_sets_the_cells_precision():
    grid = experiments.get_grid(
        "mnist", positions=[2], ranks=[4], seeds=[0],
        train_overrides={"mixed_precision": "mixed_bfloat16"},
    )
    assert grid.precision == "mixed_bfloat16"
    cells = grid.cells()
    assert {cell.precision for cell in cells} == {"mixed_bfloat16"}
    assert all(cell.name.endswith("_bf16") for cell in cells)
    config = experiments.cell_config(cells[0], grid)
    assert config.train.mixed_precision == "mixed_bfloat16"


def test_cell_config_places_layer_rank_and_data():
    grid = experiments.get_grid(
        "trans_mnist42", train_overrides={"train_steps": 40},
        model_overrides={"num_filters": [8, 8, 8]}
    )
    cell = experiments.Cell("trans_mnist42", "lrlc_input_dependent", 3, 4, 2)
    config = experiments.cell_config(
        cell, grid, data_dir="/data", download=True, manual_dir="/originals"
    )
    training.validate_config(config)
    assert config.seed == 2
    assert config.dataset.name == "trans_mnist42"
    assert config.dataset.data_dir == "/data"
    assert config.dataset.download is True
    assert config.dataset.manual_dir == "/originals"
    assert list(config.model.layer_types) == [
        "conv2d", "conv2d", "low_rank_locally_connected2d",
    ]
    assert config.model.spatial_rank == 4
    assert config.model.input_dependent
    assert list(config.model.num_filters) == [8, 8, 8]
    assert config.train.train_steps == 40
    assert config.train.mixed_precision == "float32"
    coord = experiments.cell_config(
        experiments.Cell("trans_mnist42", "coord_conv", None, None, 0), grid
    )
    assert coord.model.coord_conv
    assert list(coord.model.layer_types) == ["conv2d"] * 3
    assert coord.dataset.download is False and coord.dataset.manual_dir is None


def test_cell_config_refuses_a_cell_of_another_grid():
    grid = experiments.get_grid("mnist")
    with pytest.raises(ValueError, match="`cell`"):
        experiments.cell_config(experiments.Cell("cifar10", "conv", None, None, 0), grid)
    with pytest.raises(ValueError, match="`cell`"):
        experiments.cell_config(
            experiments.Cell("mnist", "conv", None, None, 0, "mixed_float16"), grid
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(layer_type="conv", position=2, rank=None), "`position`"),
        (dict(layer_type="lrlc", position=4, rank=2), "`position`"),
        (dict(layer_type="lrlc", position=2, rank=0), "`rank`"),
        (dict(layer_type="locally_connected", position=2, rank=2), "`rank`"),
        (dict(layer_type="lrcl", position=2, rank=2), "`layer_type`"),
        (dict(layer_type="conv", position=None, rank=None, precision="bf16"),
         "`precision`"),
    ],
)
def test_cell_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        experiments.Cell(dataset="mnist", seed=0, **kwargs)


def test_grid_and_get_grid_validation():
    with pytest.raises(ValueError, match="`dataset`"):
        experiments.get_grid("svhn")
    with pytest.raises(ValueError, match="`scale`"):
        experiments.get_grid("mnist", "slow")
    with pytest.raises(ValueError, match="`ranks`"):
        experiments.get_grid("mnist", ranks=[0])
    with pytest.raises(ValueError, match="`model`"):
        experiments.get_grid("mnist", model_overrides={"spatial_rank": 2})
    with pytest.raises(ValueError, match="mixed_precision.*Received: 'float16'"):
        experiments.get_grid("mnist", train_overrides={"mixed_precision": "float16"})
