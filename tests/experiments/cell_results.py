"""Hand-made finished cells: the `cell_result.json` files `run_cell` writes."""

import json
import os

from low_rank_local_connectivity import experiments


def saved_config(precision="float32", num_filters=(32, 32, 32), batch_size=128,
                 learning_rate=0.03):
    """The fields of a cell's saved config that the report reads."""
    return dict(
        model=dict(num_filters=list(num_filters)),
        train=dict(mixed_precision=precision, batch_size=batch_size,
                   optimizer=dict(learning_rate=learning_rate)),
    )


def write_cell(output_dir, cell, *, valid, test, params, best_step=100,
               train_steps=100, config=None, environment=None):
    """Writes a finished cell; returns its model_dir.

    Without `environment` the file is one of a grid that predates the
    backend / device / cpu_count records (and the cell's precision field).
    """
    model_dir = cell.model_dir(output_dir)
    os.makedirs(model_dir)
    cell_fields = dict(dataset=cell.dataset, layer_type=cell.layer_type,
                       position=cell.position, rank=cell.rank, seed=cell.seed)
    if environment is not None:
        cell_fields["precision"] = cell.precision
    result = dict(
        cell=cell_fields,
        config=config or saved_config(cell.precision),
        num_parameters=params,
        train_steps=train_steps,
        best_valid=dict(step=best_step, metrics=dict(accuracy=valid)),
        test=dict(accuracy=test, loss=0.1, num_examples=10),
        test_at_step=best_step,
        train_seconds=1.0,
        **(environment or {}),
    )
    with open(os.path.join(model_dir, experiments.CELL_RESULT_FILE), "w") as f:
        json.dump(result, f)
    return model_dir
