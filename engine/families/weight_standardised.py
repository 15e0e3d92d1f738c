"""Weight-standardised convolutions with a gain per output channel (timm's ScaledStdConv2d, in NFNet,
NF-RegNet and NF-ResNet): the forward standardises each output row of the weight and multiplies it by
`gain[o]`, a parameter of shape (out, 1, 1, 1) that torch-pruning does not know, so a pruned layer had
fewer rows than gains ("weight should contain 32 elements not 40").

The gain is cut with the rows, right before torch-pruning cuts a group: a removed output channel takes
its gain with it and every kept channel keeps its own (its standardisation is per row, so its output is
unchanged). `scale` (1/sqrt of the fan-in at construction) stays: removing input channels changes the
fan-in, but the kept weights keep the scale the model was trained with.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine import tp_compat
from engine.families import Family, register_family


def has_gain(module: nn.Module) -> bool:
    """A convolution with one gain per output channel (ScaledStdConv2d and its 'same'-padding kind)."""
    gain = getattr(module, "gain", None)
    return (isinstance(module, nn.Conv2d) and isinstance(gain, nn.Parameter) and gain.dim() == 4
            and gain.shape[0] == module.out_channels)


def cut_gains(group, graph) -> None:
    """Before `group` is cut: each gained convolution losing output channels loses their gains. A depthwise
    convolution loses its outputs with its inputs, whatever the handler is called."""
    done: set[int] = set()
    for dep, idxs in group:
        module = dep.target.module
        depthwise = isinstance(module, nn.Conv2d) and module.groups == module.in_channels == module.out_channels
        if id(module) in done or not has_gain(module) or not (depthwise or graph.is_out_channel_pruning_fn(dep.handler)):
            continue
        done.add(id(module))
        drop = set(int(i) for i in idxs)
        keep = [i for i in range(module.gain.shape[0]) if i not in drop]
        module.gain = tp_compat.select_parameter(dep.handler.__self__, module.gain, keep, 0)


@register_family
class WeightStandardised(Family):
    name = "weight-standardised convolutions"
    order = 60

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in model.modules() if has_gain(m)]

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.notes.append(f"{len(found)} weight-standardised convolution(s) with a gain per output channel (NFNet): "
                          "each removed channel takes its gain with it")

    def before_cut(self, pruner, prep, group) -> None:
        cut_gains(group, pruner.DG)
