"""The model families torch-pruning gets wrong quietly, one module each, registered like the methods.

A family says how it is detected and what it changes: notes, extra pruner arguments, layers held whole
and the rounding units of layers it prunes as a unit (`prepare`), stand-in forwards while the dependency
graph is traced (`stand_ins`), torch-pruning pruners for its own modules (`pruners`), and, inside the
pruner, the scores, the count a group keeps and what happens right before a group is cut. Adding a family
is adding a module here with a `Family` subclass decorated with `@register_family`; `engine.architectures`
(the run's preparation and the pruner's hooks) and `engine.tracing` (the graph) only walk the registry.

Family modules may import torch-pruning; they are imported on first use, so importing the engine stays
light. Private torch-pruning names go through `engine.tp_compat` only.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from engine.preparation import Preparation


class Family:
    """One model family's adaptations; every hook does nothing unless the family overrides it."""

    name: str = ""  # the key of what `detect` found, in Preparation.found
    # prepare() visits families by `order` (their notes, fixes after a step and pruner hooks follow it)
    order: int = 50

    def detect(self, model: nn.Module) -> Any:
        """What of this family `model` holds (falsy: none); handed to `prepare` and kept in prep.found."""
        return None

    def prepare(self, model: nn.Module, found: Any, prep: Preparation, example: torch.Tensor,
                round_to: int | None) -> None:
        """Adapt the working copy and `prep` (notes, pruner_kwargs, fixes, units, held layers)."""

    def endless_walk(self, model: nn.Module) -> str | None:
        """Which layer torch-pruning's dependency walk would never finish on, and why (None: it finishes):
        the model is refused in a second instead (engine.checks.check_walkable)."""
        return None

    def stand_ins(self, model: nn.Module) -> list[tuple[nn.Module, str, Callable]]:
        """(module, method name, function) to run instead while a dependency graph is traced."""
        return []

    def pruners(self, model: nn.Module) -> dict:
        """torch-pruning's `customized_pruners` for this family's own modules (by type): the dependency graph
        (engine.tracing) and, for a family found in the model, the run's pruner (engine.architectures) get them."""
        return {}

    def cuts_evenly(self, group) -> bool:
        """Whether a torch-pruning group must lose the same positions in every head or split, which only a
        run of a method keeps (hand-picked channels are refused)."""
        return False

    def record_units(self, model: nn.Module, units: dict) -> None:
        """The rounding unit of each layer inside a unit this family prunes whole, from the unit's own."""

    # inside the pruner (engine.preparation.ArchitectureHooks; `pruner` is torch-pruning's)
    def after_graph(self, pruner, prep: Preparation) -> None:
        """The dependency graph is built (pruner.DG)."""

    def scores(self, pruner, prep: Preparation, group, imp: torch.Tensor) -> torch.Tensor:
        """The group's channel scores, changed (ties kept together, heads scored whole)."""
        return imp

    def pruned_count(self, pruner, prep: Preparation, group, n_pruned: int, current_channels: int,
                     round_to: int) -> int | None:
        """How many of `current_channels` the group loses when the ranking asked for `n_pruned`, or None to
        leave it to the next family (and in the end to plain rounding)."""
        return None

    def before_cut(self, pruner, prep: Preparation, group) -> None:
        """Right before torch-pruning cuts `group`."""

    def after_cut(self, pruner, prep: Preparation, group) -> None:
        """Right after `group` was cut, before torch-pruning builds the next group."""


REGISTRY: list[Family] = []
_loaded: list[bool] = []


def register_family(cls: type[Family]) -> type[Family]:
    """Decorator: register the family (one instance; per-model state lives in the Preparation)."""
    if not cls.name or any(f.name == cls.name for f in REGISTRY):
        raise ValueError(f"model family {cls.__name__} needs a name of its own, got {cls.name!r}")
    REGISTRY.append(cls())
    REGISTRY.sort(key=lambda f: (f.order, f.name))
    return cls


def all_families() -> list[Family]:
    """Every family, in `order`; the modules of this package are imported on the first call."""
    if not _loaded:
        for info in pkgutil.iter_modules(__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{__name__}.{info.name}")
        if not REGISTRY:  # a bundle that left the modules out would otherwise prune every family wrongly
            raise RuntimeError("no model family modules found in engine/families: the installation is incomplete")
        _loaded.append(True)
    return list(REGISTRY)


def get_family(name: str) -> Family:
    """The registered family called `name`."""
    return next(f for f in all_families() if f.name == name)


def endless_walk(model: nn.Module) -> str | None:
    """The first family's reason torch-pruning's dependency walk would never finish on `model`, or None."""
    return next((reason for family in all_families() if (reason := family.endless_walk(model))), None)
