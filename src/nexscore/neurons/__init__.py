"""Causal checks of NEX neuron weights: ablate or transplant the neurons the weights rank.

    >>> from nexscore.neurons import choose_sets, ablate, transfer, Snapshot
    >>> sets = choose_sets(weights, m=64, intermediate_size=1536, seed=0)
    >>> sorted(sets)    # the two ranked sets and a random control matched to each one's layers
    ['effective', 'random-effective', 'random-redundant', 'redundant']
    >>> layers = mlp_layers(lm.model)
    >>> with edited(layers, sets["effective"]):
    ...     ablate(layers, sets["effective"], scale=0.0)    # measure here; restored afterwards

`nex ablate` and `nex transfer` run the whole grid from model specs and weights files
(`ablate_experiment` / `transfer_experiment`; with models already loaded: `run_ablate` / `run_transfer`);
both write the same table (`neurons.table`). Importing this package does not import torch.
"""

from .choose import (ALL_SETS, CONTROLS, SETS, NeuronSet, check_grid, check_keys_fit, choose_effective,
                     choose_random, choose_redundant, choose_sets, control_name, control_of, signed_counts)
from .edit import Snapshot, ablate, check_same_mlps, edited, group_by_layer, mlp_layers, transfer
from .experiment import (Arm, GridResult, GridSpec, ablate_experiment, check_disjoint,
                         check_provenance, check_same_architecture, contrasts, disjoint_problems, run_ablate,
                         run_transfer, summarise, trace_prompts, transfer_experiment)

__all__ = ["SETS", "CONTROLS", "ALL_SETS", "NeuronSet", "choose_effective", "choose_redundant", "choose_random",
           "choose_sets", "control_name", "control_of", "check_grid", "check_keys_fit", "signed_counts", "Snapshot",
           "edited", "ablate", "transfer", "mlp_layers", "group_by_layer", "check_same_mlps", "GridSpec", "GridResult",
           "Arm", "run_ablate", "run_transfer", "ablate_experiment", "transfer_experiment", "check_provenance",
           "check_same_architecture", "check_disjoint", "disjoint_problems", "trace_prompts", "summarise",
           "contrasts"]
