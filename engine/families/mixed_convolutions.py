"""timm's mixed convolutions (MixNet, and MixedConv2d anywhere): the input is split by recorded sizes
(`splits`), each part goes through its own convolution (a kernel size each), the outputs are concatenated.

torch-pruning (1.6.1) maps a split's outputs to its parts in the order it met them while tracing (here
the last part first) and never updates its split offsets after a cut, so parts lost channels of their
neighbours, and the recorded split sizes stayed as built: the pruned copy's forward failed
(`split_with_sizes expects split_sizes to sum exactly to ...`). While a graph is traced, the input is
cut into its parts by slices instead (torch-pruning keeps a slice's bounds as it prunes); after each step
the split sizes (and the recorded channel counts) are read back from the part convolutions.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family


def mixed_convolutions(model: nn.Module) -> list[nn.Module]:
    """Modules that split their input by a recorded `splits` list between their own convolutions."""
    found = []
    for module in model.modules():
        splits = getattr(module, "splits", None)
        parts = list(module.children())
        if isinstance(splits, list) and len(splits) == len(parts) and parts \
                and all(isinstance(p, nn.Conv2d) for p in parts) and all(isinstance(s, int) for s in splits):
            found.append(module)
    return found


def _sliced_stand_in(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    parts, start = [], 0
    for size, conv in zip(module.splits, module.children()):
        parts.append(conv(x[:, start:start + size]))
        start += size
    return torch.cat(parts, 1)


def update_splits(modules: list[nn.Module]):
    """After a step: each split size is its convolution's input channels again."""

    def update(model: nn.Module) -> list[str]:
        for module in modules:
            parts = list(module.children())
            empty = [i for i, p in enumerate(parts) if p.in_channels == 0 or p.out_channels == 0]
            if empty:  # the checks fail the run; say which
                return [f"a mixed convolution lost every channel of its part {empty[0]}"]
            module.splits = [p.in_channels for p in parts]
            if isinstance(getattr(module, "in_channels", None), int):
                module.in_channels = sum(module.splits)
            if isinstance(getattr(module, "out_channels", None), int):
                module.out_channels = sum(p.out_channels for p in parts)
        return []

    return update


@register_family
class MixedConvolutions(Family):
    name = "mixed convolutions"

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return mixed_convolutions(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.notes.append(f"{len(found)} mixed convolution(s) split their input by recorded sizes between "
                          "convolutions of several kernel sizes: each part keeps its own channels, and the sizes "
                          "are updated after each step")
        prep.fixes.append(update_splits(found))

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _sliced_stand_in) for m in mixed_convolutions(model)]

    def after_cut(self, pruner, prep, group) -> None:
        # torch-pruning moves a slice's bounds only when the cut reaches inside it, so a part's slice kept
        # its start after channels before it went: the bounds are read back from the part convolutions.
        for module in prep.found[self.name]:
            start = 0
            for conv in module.children():
                node = pruner.DG.module2node.get(conv)
                for source in node.inputs if node is not None else ():
                    if isinstance(getattr(source.module, "start", None), int) and hasattr(source.module, "end"):
                        source.module.start, source.module.end = start, start + conv.in_channels
                start += conv.in_channels
