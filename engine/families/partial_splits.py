"""Blocks that split their input by recorded sizes, run some parts through convolutions and pass the others
through, then concatenate (timm's FasterNet `Partial_conv3`: one convolved part and an untouched one).

torch-pruning mapped the split's parts in the order it met them and never moved its offsets, and the
recorded sizes stayed as built (`split_with_sizes expects split_sizes to sum exactly to ...`, or an
IndexError). While a graph is traced the parts are slices; torch-pruning does not keep their bounds (a
part's start stays behind when a part before it loses channels), so after each cut they are set again:
a convolved part is as wide as its convolution's input, the part passed through is what the layer after
the block reads beyond the convolutions' outputs; after each step the recorded sizes are those widths.
"""
from __future__ import annotations

import weakref

import torch
import torch.nn as nn

from engine.families import Family, register_family

# (module, class) -> (how its forward splits: the sizes' attribute names, in order), its part convolutions
# by part index (the other parts pass through)
# (InceptionNeXt's InceptionDWConv2d has engine/families/inception_next.py: torch-pruning mismatched its parts)
KINDS = {
    ("timm.models.fasternet", "Partial_conv3"): (("dim_conv3", "dim_untouched"), {0: "partial_conv3"}),
}


def _kind(module: nn.Module):
    return KINDS.get((type(module).__module__, type(module).__name__))


def _sizes(module: nn.Module) -> list[int]:
    names, _ = _kind(module)
    return list(getattr(module, names[0])) if len(names) == 1 else [getattr(module, n) for n in names]


def _set_sizes(module: nn.Module, sizes: list[int]) -> None:
    names, _ = _kind(module)
    if len(names) == 1:
        setattr(module, names[0], tuple(sizes))
    else:
        for name, size in zip(names, sizes):
            setattr(module, name, size)


def partial_splits(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if _kind(m) is not None]


@register_family
class PartialSplits(Family):
    name = "partial splits"

    def __init__(self) -> None:
        self._traced: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> its slices' grad_fns

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return partial_splits(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        kinds = sorted({type(m).__name__ for m in found})
        prep.notes.append(f"{len(found)} block(s) ({', '.join(kinds)}) split their input by recorded sizes and "
                          "convolve some parts: each part keeps its own channels, and the sizes follow after each "
                          "step")
        prep.fixes.append(self._fix(prep))

    def stand_ins(self, model: nn.Module) -> list:
        traced = self._traced

        def sliced(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
            _, convs = _kind(module)
            parts, slices, start = [], [], 0
            for index, size in enumerate(_sizes(module)):
                part = x[:, start:start + size]
                slices.append(part.grad_fn)
                parts.append(getattr(module, convs[index])(part) if index in convs else part)
                start += size
            out = torch.cat(parts, 1)
            traced[module] = (slices, out.grad_fn)
            return out

        return [(m, "forward", sliced) for m in partial_splits(model)]

    def after_graph(self, pruner, prep) -> None:
        # each block's slice operations and the layer reading its concatenation (its width is the block's)
        nodes = {node.grad_fn: node for node in pruner.DG.module2node.values() if node.grad_fn is not None}
        layers = {id(m) for m in pruner.model.modules()}
        state = {}
        for module in prep.found[self.name]:
            slices, cat = self._traced.get(module, ([], None))
            ops = [nodes[g].module if g in nodes else None for g in slices]
            reader = _next_layer(nodes.get(cat), layers)
            if ops and None not in ops and reader is not None:
                state[module] = (ops, reader)
        prep.state[self.name] = state

    def after_cut(self, pruner, prep, group) -> None:
        for module, (ops, reader) in prep.state[self.name].items():
            start = 0
            for op, width in zip(ops, _widths(module, pruner.DG.get_in_channels(reader))):
                op.start, op.end = start, start + width
                start += width

    def _fix(self, prep):
        def fix(model: nn.Module) -> list[str]:
            for module, (ops, _) in prep.state.get(self.name, {}).items():
                _set_sizes(module, [op.end - op.start for op in ops])
            return []

        return fix


def _widths(module: nn.Module, total: int) -> list[int]:
    """Each part's width now: a convolved part its convolution's input, the part passed through what the
    layer after the block (`total` inputs) reads beyond the convolutions' outputs."""
    _, convs = _kind(module)
    sizes = _sizes(module)
    widths = [getattr(module, convs[i]).in_channels if i in convs else None for i in range(len(sizes))]
    rest = total - sum(getattr(module, convs[i]).out_channels for i in convs)
    return [rest if w is None else w for w in widths]


def _next_layer(node, layers: set[int]):
    """The first layer of the model reading `node`'s output (through operations torch-pruning traced)."""
    todo, seen = [node] if node is not None else [], set()
    while todo:
        current = todo.pop(0)
        for out in current.outputs:
            if id(out) in seen:
                continue
            seen.add(id(out))
            if id(out.module) in layers:
                return out.module
            todo.append(out)
    return None
