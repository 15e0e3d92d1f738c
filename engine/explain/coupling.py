"""Which layers lose the same channels as a selected one, and why (residual, concatenation, BatchNorm, ...)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from engine.data import Shape
from engine.explain.common import layer_module
from engine.layers import PRUNABLE


@dataclass(frozen=True)
class Coupled:
    """One layer that must lose the same channels as the selected one, and why."""

    layer: str
    kind: str  # "batchnorm", "residual", "concat", "next-input", "depthwise", "output", "other"
    reason: str  # plain words for a student
    side: str  # "output" (loses output channels) or "input" (loses input channels)


def _via(node: Any, parent: dict, root: Any) -> list[str]:
    """The operations between the root and `node` along the group's own path ("add", "concat", ...)."""
    import torch_pruning as tp

    kinds, seen = [], set()
    while node is not root and node in parent and node not in seen:
        seen.add(node)
        node = parent[node].source
        name = type(node.grad_fn).__name__ if node.grad_fn is not None else ""
        if node.type == tp.ops.OPTYPE.ELEMENTWISE and ("Add" in name or "Sub" in name):
            kinds.append("add")
        elif node.type == tp.ops.OPTYPE.CONCAT:
            kinds.append("concat")
        elif node.type in (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.UNBIND, tp.ops.OPTYPE.SLICE):
            kinds.append("split")
        elif node.type in (tp.ops.OPTYPE.RESHAPE, tp.ops.OPTYPE.EXPAND):
            kinds.append("reshape")
    return kinds


def _reason(module: nn.Module, side: str, via: list[str], before: str | None, layer: str) -> tuple[str, str]:
    """(kind, plain words) for one coupled module."""
    from engine.families.swin import window_blocks

    through = " (through the residual add)" if "add" in via else ""
    attentions, mergings = window_blocks(module)
    if attentions and side == "input":
        return "next-input", (f"window attention, pruned as one unit: its q, k, v and projection read these "
                              f"channels, and each head gives up the same number of them{through}")
    if mergings and side == "input":
        return "next-input", (f"patch merging, pruned as one unit: each of its four 2×2 neighbours loses these "
                              f"channels{through}")
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        after = f" after {before}" if before else ""
        return "batchnorm", (f"BatchNorm{after}: its scale γ, shift β and running statistics are kept per channel, "
                             f"so they go with the channel{through}")
    if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
        return "depthwise", ("depthwise convolution: it has one filter per input channel, so a channel that goes "
                             "takes its filter and its output with it")
    if side == "input":
        if "concat" in via:
            return "concat", ("concatenation: this layer reads the channel as part of a concatenated input, so "
                              "it loses the matching input channel (at the channel's offset)")
        flat = " (after flattening)" if "reshape" in via else ""
        return "next-input", f"the next layer: it reads these channels as its input channels{through}{flat}"
    if "add" in via:
        return "residual", (f"residual add: its output is added to {layer}'s, so both must keep the same "
                            "channels")
    if "concat" in via:
        return "concat", "concatenation: its output channels are joined with this layer's and cut together"
    if isinstance(module, PRUNABLE):
        return "output", "shares the output channels with this layer"
    return "other", f"{type(module).__name__} keeps per-channel parameters, so it loses the channel too"


# the order a student reads them in: what shares the output first, then what reads it
KIND_ORDER = ("residual", "concat", "depthwise", "output", "batchnorm", "other", "next-input")


def couplings_in(graph: Any, model: nn.Module, module: nn.Module, layer: str) -> tuple[Coupled, ...]:
    """Every named module in the dependency group of `module`'s output channels, with a reason."""
    names = {m: n for n, m in model.named_modules()}
    out_fn = graph.get_pruner_of_module(module).prune_out_channels
    n = int(graph.get_out_channels(module) or 0)
    group = graph.get_pruning_group(module, out_fn, list(range(n)))
    root = graph.module2node[module]
    parent: dict = {}
    for dep, _ in group:
        if dep.target is not dep.source:
            parent.setdefault(dep.target, dep)
    found: dict[tuple[str, str], Coupled] = {}
    for dep, _ in group:
        target = dep.target.module
        name = names.get(target)
        if not name or target is module:
            continue
        side = "output" if graph.is_out_channel_pruning_fn(dep.handler) else "input"
        if (name, side) in found:
            continue
        before = None
        if isinstance(target, nn.modules.batchnorm._BatchNorm):
            feeding = [names.get(i.module) for i in dep.target.inputs if isinstance(i.module, PRUNABLE)]
            before = next((f for f in feeding if f), None)
        kind, words = _reason(target, side, _via(dep.target, parent, root), before, layer)
        found[(name, side)] = Coupled(name, kind, words, side)
    return tuple(sorted(found.values(), key=lambda c: KIND_ORDER.index(c.kind)))


def coupling(model: nn.Module, input_shape: Shape, layer: str) -> tuple[Coupled, ...]:
    """Every layer coupled to `layer`'s output channels, with the reason (residual add, BatchNorm, ...)."""
    from engine.tracing import dependency_graph

    module = layer_module(model, layer)
    device = next(model.parameters()).device
    graph = dependency_graph(model.eval(), torch.zeros(1, *input_shape, device=device))
    return couplings_in(graph, model, module, layer)
