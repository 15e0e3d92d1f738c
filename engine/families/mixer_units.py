"""FocalNet's focal modulation (timm): one projection `f` split by sizes recorded at construction into
q, the context and one gate per focal level, each gate a one-channel slice multiplied into the context.
torch-pruning's dependency walk through those slices did not finish (a tiny FocalNet ran for minutes;
the coverage run stopped at its 600 s).

The modulation is pruned as a unit on the residual stream's side only: the stream's channels leave `f`'s
input and the output projection `proj`'s output, each kept channel with its own weights; q, the context,
the gates and `h` keep their width (held), so the recorded split stays right. While a graph is traced the
modulation runs a stand-in (channels straight through).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from engine.families import Family, register_family

KIND = ("timm.models.focalnet", "FocalModulation")


def modulations(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if (type(m).__module__, type(m).__name__) == KIND]


def _stand_in(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x * 1.0  # one node, channels in == channels out


class FocalModulationPruner(tp.BasePruningFunc):
    def prune_in_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        tp.prune_conv_in_channels(layer.f, idxs)
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        tp.prune_conv_out_channels(layer.proj, idxs)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.f.in_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.proj.out_channels


@register_family
class FocalModulation(Family):
    name = "focal modulation"
    order = 50

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return modulations(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.add_kwargs("customized_pruners", self.pruners(model))
        inner = [layer for m in found for name, layer in m.named_modules()
                 if isinstance(layer, nn.Conv2d) and name != "proj"]
        prep.held.extend(inner)
        prep.notes.append(f"FocalNet: {len(found)} focal modulation(s) are pruned as units on the residual stream's "
                          "side (f's input, proj's output); q, the context and the gates keep their width "
                          f"({len(inner)} layers held)")
        prep.fixes.append(lambda m: self.record_units(m, prep.units) or [])

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _stand_in) for m in modulations(model)]

    def pruners(self, model: nn.Module) -> dict:
        found = modulations(model)
        return {type(found[0]): FocalModulationPruner()} if found else {}

    def record_units(self, model: nn.Module, units: dict) -> None:
        for m in modulations(model):
            if m in units:
                units[m.proj] = units[m]
