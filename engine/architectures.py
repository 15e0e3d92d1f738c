"""What structured pruning does differently for some models, gathered from the model families
(engine/families/, one module each); the rounding every model gets is in engine.preparation.

torch-pruning (1.6.1) prunes most classifiers as they are; the families it gets wrong quietly (auxiliary
heads, grouped convolutions, attention heads, ViT's recorded sizes, Swin, ResNeSt, ShuffleNet, MaxViT,
channels tied through a concatenation, recorded shapes) each say in their module what goes wrong and
what PruneLab does about it. Rounding: torch-pruning rounds the kept channels *down* to a multiple of
round_to (from a count it has already floored), so a ratio a hair above 0.5 took 32 channels to 8, and a
layer below round_to lost everything (and was skipped). `kept_channels` rounds to the nearest allowed
count instead, never below one unit nor below what the maximum layer ratio leaves, in every scope.

`prepare` is called on the working copy before the pruner is built; `Preparation.pruner_class` wraps the
method's torch-pruning pruner with the families' hooks (`engine.preparation.ArchitectureHooks`, through
engine.tp_compat); `engine.verify.check_pruned` checks the result.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.preparation import Preparation


def prepare(model: nn.Module, example: torch.Tensor, round_to: int | None) -> Preparation:
    """Adapt `model` (the working copy, changed in place) and say how the pruner must be built."""
    from engine.families import all_families
    from engine.tracing import tracing

    prep = Preparation(tracer=tracing)
    for family in all_families():
        found = family.detect(model)
        if found:
            prep.families.append(family)
            prep.found[family.name] = found
            family.prepare(model, found, prep, example, round_to)
            pruners = family.pruners(model)
            if pruners:
                prep.add_kwargs("customized_pruners", pruners)
    return prep
