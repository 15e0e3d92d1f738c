"""What the pruning pipeline does differently for one model (`Preparation`), the hooks that carry it into a
torch-pruning pruner (`ArchitectureHooks`, through engine.tp_compat), and the rounding every model gets.

A leaf below the families (engine/families/ import it) and below `engine.architectures.prepare`, which walks
the family registry to fill a Preparation: so the registry and this module never import each other.
"""
from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn

from engine.verify import out_size as _out_size


@dataclass
class Preparation:
    """What the pruning pipeline does differently for this model."""

    notes: list[str] = field(default_factory=list)  # said in the run's notes
    pruner_kwargs: dict = field(default_factory=dict)  # extra keyword arguments for the torch-pruning pruner
    fixes: list[Callable[[nn.Module], list[str]]] = field(default_factory=list)  # after each step; return notes
    dropped_params: int = 0  # parameters removed by prepare itself (auxiliary heads)
    units: dict = field(default_factory=dict)  # module -> channels per rounding step, filled while pruning
    held: list[nn.Module] = field(default_factory=list)  # layers torch-pruning must leave whole
    families: list = field(default_factory=list)  # the engine.families found in the model, in order
    found: dict[str, Any] = field(default_factory=dict)  # family name -> what its detect found
    state: dict[str, Any] = field(default_factory=dict)  # family name -> what it keeps while pruning
    current: Any = None  # the torch-pruning group being scored or cut (names the layer when that fails)
    # how the dependency graph is traced (engine.tracing.tracing, set by prepare: the families' stand-ins)
    tracer: Callable[[nn.Module], Any] = nullcontext

    def hold(self, layers) -> None:
        """Leave these convolutions or linear layers whole: torch-pruning skips them, and the share check expects
        them at full width (their rounding unit is their whole width)."""
        for layer in layers:
            self.held.append(layer)
            self.units[layer] = layer.weight.shape[0]

    def after_step(self, model: nn.Module) -> list[str]:
        """Fix what a step left stale (recorded sizes, units); returns what to say."""
        notes: list[str] = []
        for fix in self.fixes:
            notes.extend(fix(model))
        return notes

    def pruner_class(self, base: type) -> type:
        """`base` (a torch-pruning pruner class) with the families' hooks."""
        from engine import tp_compat

        return tp_compat.pruner_class(base, ArchitectureHooks(self))

    def add_kwargs(self, key: str, values: dict) -> None:
        """Merge `values` into the pruner's dict-valued keyword argument `key` (channel groups, pruners)."""
        self.pruner_kwargs.setdefault(key, {}).update(values)


# ----------------------------------------------------------------------------- rounding

def ratio_keeping(channels: int, kept: int) -> float:
    """A ratio that makes torch-pruning keep exactly `kept` of `channels` (half a channel of margin against
    floating-point rounding in its int(C·(1 − r)): the exact share kept one fewer for about half of all
    widths)."""
    return 0.0 if kept >= channels else round(1.0 - (kept + 0.5) / channels, 6)


def kept_channels(keep: int, channels: int, unit: int, least: int = 0) -> int:
    """The channels a layer of `channels` keeps when the ratio asks for `keep`: the nearest allowed
    count (a multiple of `unit`, or the whole layer; half a unit rounds up, keeping more), never
    below one unit (a layer never disappears) nor below `least` (what the maximum layer ratio
    leaves, rounded up to a unit)."""
    unit = max(1, int(unit))
    if keep >= channels:
        return channels
    down = max(0, keep) // unit * unit
    up = min(down + unit, channels)
    kept = up if up - keep <= keep - down else down
    floor = min(channels, max(unit, -(-least // unit) * unit))
    return max(kept, floor)


def least_kept(channels: int, max_ratio: float) -> int:
    """The fewest of `channels` a layer may keep when it loses at most `max_ratio` of them."""
    return math.ceil(channels * (1.0 - max_ratio) - 1e-9)


def most_zeroed(weights: int, max_ratio: float) -> int:
    """The most of a layer's `weights` global unstructured pruning may zero: its cap rounds down."""
    return int(max_ratio * weights + 1e-9)


def least(pruner, group, channels: int) -> int:
    """The fewest of `channels` (the root's count, or one convolution group's) the maximum layer ratio lets
    `group` keep, measured against the layer's width before pruning."""
    from engine import tp_compat

    if group is None:
        return 0
    dep = group[0].dep
    out = pruner.DG.is_out_channel_pruning_fn(dep.handler)
    module = dep.target.module
    first = tp_compat.initial_width(pruner, module, out)
    now = pruner.DG.get_out_channels(module) if out else pruner.DG.get_in_channels(module)
    if not first or not now:
        return 0
    return least_kept(first, pruner.max_pruning_ratio) * channels // now


def rounded(pruner, group, n_pruned: int, current_channels: int, unit: int) -> int:
    """How many of `current_channels` go when the ranking asked for `n_pruned`, kept in multiples of `unit`."""
    return current_channels - kept_channels(current_channels - n_pruned, current_channels, unit,
                                            least(pruner, group, current_channels))


def counts_root(pruner, group, current_channels: int) -> bool:
    """Whether `current_channels` is the width of the group's root layer (not one convolution group's)."""
    module = group[0].dep.target.module if group is not None else None
    return module is not None and current_channels in (pruner.DG.get_out_channels(module),
                                                       pruner.DG.get_in_channels(module))


def record_unit(units: dict, group, graph, unit: int, width: int | None = None) -> None:
    """Remember each pruned layer's rounding unit; with `width` (the group's channels), a layer with k
    times as many outputs (a fused qkv) moves k units at a time."""
    for dep, _ in group:
        module = dep.target.module
        if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(module, nn.Module):
            size = _out_size(module) if width else None
            units[module] = unit * (size // width if size and size % width == 0 else 1)


class ArchitectureHooks:
    """The families' hooks in a torch-pruning pruner (engine.tp_compat.pruner_class calls them)."""

    def __init__(self, prep: Preparation) -> None:
        self.prep = prep

    def before_init(self, kwargs: dict) -> None:
        if self.prep.held:
            kwargs["ignored_layers"] = [*(kwargs.get("ignored_layers") or []), *self.prep.held]

    def tracing(self, model: nn.Module):
        return self.prep.tracer(model)

    def after_init(self, pruner) -> None:
        for family in self.prep.families:
            family.after_graph(pruner, self.prep)

    def scoring(self, pruner, group) -> None:
        self.prep.current = group

    def scores(self, pruner, group, imp: torch.Tensor | None) -> torch.Tensor | None:
        if imp is None:
            return None
        for family in self.prep.families:
            imp = family.scores(pruner, self.prep, group, imp)
        return imp

    def pruned_count(self, pruner, group, n_pruned: int, current_channels: int, round_to: int) -> int:
        for family in self.prep.families:
            count = family.pruned_count(pruner, self.prep, group, n_pruned, current_channels, round_to)
            if count is not None:
                return count
        return rounded(pruner, group, n_pruned, current_channels, round_to)

    def before_cut(self, pruner, group) -> None:
        self.prep.current = group
        for family in self.prep.families:
            family.before_cut(pruner, self.prep, group)

    def after_cut(self, pruner, group) -> None:
        for family in self.prep.families:
            family.after_cut(pruner, self.prep, group)
