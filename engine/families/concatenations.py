"""Channels joined by a concatenation (any model; decided per group).

GhostNet concatenates a layer with its own depthwise copy and adds the result to the stream, so one cut
removes stream channels i and i + w together; torch-pruning counts and rounds the root's channels as if
each went alone (0.3 became 0.6, or, rounded, nothing went). Tied channels are scored as a set and whole
sets go, the widest layer keeping a multiple of round_to.

A group that runs through a concatenation keeps its share of the joined channels, but the ranking decides
which input loses them (CSPNet's two halves can lose 16 and 0 of 24 each): each member's rounding unit
becomes its whole width, so the share check judges only the model's total.
"""
from __future__ import annotations

import bisect
import math
import weakref

import torch
import torch.nn as nn
from torch_pruning import ops

from engine import tp_compat
from engine.preparation import kept_channels, least
from engine.families import Family, register_family
from engine.verify import out_size

LAYER_TYPES = {ops.OPTYPE.CONV, ops.OPTYPE.DEPTHWISE_CONV, ops.OPTYPE.LINEAR, ops.OPTYPE.BN}


def tie_scores(group, graph, imp: torch.Tensor, ties: weakref.WeakKeyDictionary) -> torch.Tensor:
    """Scores for a group whose channels are tied through a concatenation; the group's ties (set size,
    spread) go to `ties` for the rounding. When the root's own channels are tied, each tied set gets its
    mean score, with a tiny ramp so a set stays together in the ranking."""
    found = tied_sets(group, graph, len(imp))
    if found is None:
        return imp
    sets, spread = found
    ties[group] = (len(sets[0]), spread)
    if len(sets[0]) == 1:
        return imp
    tied = imp.clone()
    scale = float(imp.max() - imp.min()) or 1.0
    for rank, members in enumerate(sets):
        tied[members] = imp[members].mean() + rank * scale * 1e-6
    return tied


def tied_sets(group, graph, width: int) -> tuple[list[list[int]], int] | None:
    """(the root's channels that one cut removes together, as equal sets; the most channels one cut
    removes from any member), or None when every cut removes one channel everywhere. Only a group
    through a concatenation can tie channels."""

    def joins_itself(offsets, idxs) -> bool:  # the group reaches two inputs of this concatenation
        return len({bisect.bisect_right(offsets, i) for i in idxs}) > 1

    if width < 2 or not any((offsets := tp_compat.concat_offsets(dep.target.module)) is not None
                            and joins_itself(offsets, idxs) for dep, idxs in group):
        return None
    root, handler = group[0].dep.target.module, group[0].dep.handler

    def cut(i: int) -> tuple[list[int], int]:
        probe = graph.get_pruning_group(root, handler, [i])
        own = {j for dep, idxs in probe if dep.target.module is root and dep.handler == handler for j in idxs}
        widths = [len(idxs) for dep, idxs in probe  # layers' own channels (not a flatten's positions)
                  if dep.target.type in LAYER_TYPES and graph.is_out_channel_pruning_fn(dep.handler)]
        return sorted(own | {i}), max(widths, default=1)

    first = cut(0)
    if first == ([0], 1):
        return None
    sets, spreads, seen = [], set(), set()
    for i in range(width):
        if i not in seen:
            members, spread = first if i == 0 else cut(i)
            sets.append(members)
            spreads.add(spread)
            seen.update(members)
    if len({len(s) for s in sets}) != 1 or len(spreads) != 1 or len(seen) != width:
        return None  # uneven ties: leave the count to torch-pruning
    return sets, spreads.pop()


def free_concat_members(group, graph, units: dict) -> None:
    """Each member of a group through a concatenation gets its whole width as its rounding unit."""
    if not any(tp_compat.concat_offsets(dep.target.module) is not None for dep, _ in group):
        return
    root, handler = group[0].dep.target.module, group[0].dep.handler
    width = graph.get_out_channels(root) if graph.is_out_channel_pruning_fn(handler) else graph.get_in_channels(root)
    if width:  # every member, also those the ranking left untouched (they are not in `group`)
        group = graph.get_pruning_group(root, handler, list(range(width)))
    for dep, _ in group:
        module = dep.target.module
        size = out_size(module) if isinstance(module, nn.Module) else None
        if size and graph.is_out_channel_pruning_fn(dep.handler):
            units[module] = max(units.get(module, 0), size)


@register_family
class Concatenations(Family):
    name = "concatenations"
    order = 10  # its count wins over heads' and channel groups' (a tied group is counted in sets)

    def detect(self, model: nn.Module) -> bool:
        return True  # decided per group, once the graph shows the concatenations

    def _ties(self, prep) -> weakref.WeakKeyDictionary:
        return prep.state.setdefault(self.name, weakref.WeakKeyDictionary())  # group -> (set size, spread)

    def scores(self, pruner, prep, group, imp: torch.Tensor) -> torch.Tensor:
        return tie_scores(group, pruner.DG, imp, self._ties(prep))

    def pruned_count(self, pruner, prep, group, n_pruned, current_channels, round_to) -> int | None:
        ties = self._ties(prep).get(group) if group is not None else None
        if ties is None or tp_compat.channel_groups(pruner, group) > 1:
            return None
        # Whole tied sets go; the widest layer of the group (which loses `spread` channels per set)
        # keeps a multiple of round_to.
        size, spread = ties
        sets = current_channels // size
        step = round_to // math.gcd(round_to, spread)
        keep = kept_channels((current_channels - n_pruned) // size, sets, step,
                             -(-least(pruner, group, current_channels) // size))
        return max(current_channels - keep * size, 0)

    def before_cut(self, pruner, prep, group) -> None:
        free_concat_members(group, pruner.DG, prep.units)
