"""How PruneLab builds torch-pruning's dependency graph: the one way, for every model.

torch-pruning (1.6.1) traces channels through every tensor operation. Some families defeat it (Swin's
windows, ShuffleNet's channel shuffle, ResNeSt's radix splits: engine/families/): while a graph is built,
their blocks run a stand-in forward (same output shape, plain channels), and their units are pruned by
their own torch-pruning pruners (`customized_pruners`); the real forward is back before anything else runs.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn


def _families():
    from engine.families import all_families

    return all_families()


@contextmanager
def recorded_concat_sizes() -> Iterator[dict]:
    """While inside, every channel concatenation of images (4-D, dim 1) records its inputs' channels under its
    output's grad_fn; torch-pruning takes them where it cannot infer them (engine.tp_compat)."""
    from engine import tp_compat

    sizes: dict = {}
    cat = torch.cat

    def recording(tensors, dim=0, **kwargs):
        out = cat(tensors, dim, **kwargs)
        if out.grad_fn is not None and out.dim() == 4 and dim in (1, -3):
            sizes[out.grad_fn] = [t.shape[1] for t in tensors]
        return out

    torch.cat = recording
    try:
        with tp_compat.known_concat_sizes(sizes):
            yield sizes
    finally:
        torch.cat = cat


@contextmanager
def tracing(model: nn.Module) -> Iterator[None]:
    """The families' blocks run their stand-in forward (instance attributes, so nothing outside the model
    changes), and concatenations record their sizes."""
    patched = [stand_in for family in _families() for stand_in in family.stand_ins(model)]
    saved = [(module, method, module.__dict__.get(method)) for module, method, _ in patched]
    try:
        for module, method, stand_in in patched:
            setattr(module, method, stand_in.__get__(module))
        with recorded_concat_sizes():
            yield
    finally:
        for module, method, before in saved:  # an instance attribute the model had is put back
            if before is None:
                module.__dict__.pop(method, None)
            else:
                module.__dict__[method] = before


def customized_pruners(model: nn.Module) -> dict:
    """torch-pruning's `customized_pruners` for this model (empty unless a family prunes a unit of its own)."""
    return {kind: pruner for family in _families() for kind, pruner in family.pruners(model).items()}


def cuts_heads(group) -> bool:
    """Whether a torch-pruning group must lose the same positions in every head (Swin's stream) or split
    (ResNeSt's input): only the pruner's channel groups keep that; a cut of arbitrary channels would shift
    the head boundaries, or leave the splits' chunks unequal."""
    return any(family.cuts_evenly(group) for family in _families())


def record_units(model: nn.Module, units: dict) -> None:
    """The rounding unit of each layer inside a unit a family prunes whole, from the unit's own (for the
    share check)."""
    for family in _families():
        family.record_units(model, units)


def traced_inputs(example: torch.Tensor) -> tuple[torch.Tensor]:
    """The example as torch-pruning's trace should get it: a bare tensor is first unpacked along the batch
    (model(*x): an unbatched run that fails part-way, then the whole model runs again), a one-tuple runs once."""
    return (example,)


def dependency_graph(model: nn.Module, example: torch.Tensor):
    """torch-pruning's dependency graph of `model`, with the families' stand-ins and pruners."""
    import torch_pruning as tp

    with tracing(model):
        return tp.DependencyGraph().build_dependency(model, example_inputs=traced_inputs(example),
                                                     customized_pruners=customized_pruners(model))
