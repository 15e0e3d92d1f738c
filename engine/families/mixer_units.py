"""Token mixers torch-pruning cannot walk through, pruned as units on the residual stream's side only:
- FocalNet's focal modulation (timm): one projection `f` split by sizes recorded at construction into q,
  the context and one gate per focal level, each gate a one-channel slice multiplied into the context;
  torch-pruning's dependency walk through those slices did not finish (the coverage run stopped at 600 s).
- iFormer's single-head modulation attention (timm's SHMA): its windows are cut out of the image by views
  and permutes that torch-pruning's index lists follow without end (over 600 s).
- Gemma4's attention: rotary embeddings split and concatenate each head's halves (the graph could not be
  built); its heads have a recorded size of their own.
- EfficientViT's (MIT) LiteMLA: its qkv and the multi-scale copies of it are reshaped by a width recorded at
  construction (torch-pruning's cut indexed past qkv: `index 792 is out of bounds ... size 192`).

Such a mixer loses the stream's channels from its input layers' inputs and its output layer's outputs (and
that layer's BatchNorm), each kept channel with its own weights; everything inside keeps its width (held),
so recorded splits and reshapes stay right. While a graph is traced the mixer runs a stand-in (channels
straight through).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from engine.families import Family, register_family

# (module, class) -> (its layers reading the stream, its layers writing it)
UNITS = {
    ("timm.models.focalnet", "FocalModulation"): (("f",), ("proj",)),
    ("timm.models.iformer", "SHMA"): (("q.c", "k.c", "v_gate.c"), ("proj.c", "proj.bn")),
    ("timm.models.gemma4_vit", "Gemma4Attention"): (("q_proj.linear", "k_proj.linear", "v_proj.linear"),
                                                    ("o_proj.linear",)),
    ("timm.models.efficientvit_mit", "LiteMLA"): (("qkv.conv",), ("proj.conv", "proj.norm")),
}


def _sides(module: nn.Module) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    return UNITS.get((type(module).__module__, type(module).__name__))


def mixers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if _sides(m)]


def _stand_in(module: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return x * 1.0  # one node, channels in == channels out


class MixerUnitPruner(tp.BasePruningFunc):
    def prune_in_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        for name in _sides(layer)[0]:
            part = layer.get_submodule(name)
            (tp.prune_linear_in_channels if isinstance(part, nn.Linear) else tp.prune_conv_in_channels)(part, idxs)
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        for name in _sides(layer)[1]:
            part = layer.get_submodule(name)
            if isinstance(part, nn.BatchNorm2d):
                tp.prune_batchnorm_out_channels(part, idxs)
            elif isinstance(part, nn.Linear):
                tp.prune_linear_out_channels(part, idxs)
            else:
                tp.prune_conv_out_channels(part, idxs)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        part = layer.get_submodule(_sides(layer)[0][0])
        return part.in_features if isinstance(part, nn.Linear) else part.in_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        part = layer.get_submodule(_sides(layer)[1][0])
        return part.out_features if isinstance(part, nn.Linear) else part.out_channels


@register_family
class MixerUnits(Family):
    name = "mixer units"
    order = 50

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return mixers(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        inner = [layer for m in found for name, layer in m.named_modules()
                 if isinstance(layer, (nn.Conv2d, nn.Linear)) and name not in _sides(m)[1]]
        prep.held.extend(inner)
        kinds = sorted({type(m).__name__ for m in found})
        prep.notes.append(f"{len(found)} token mixer(s) ({', '.join(kinds)}) are pruned as units on the residual "
                          f"stream's side (their inputs' inputs, their output); inside they keep their width "
                          f"({len(inner)} layers held)")
        prep.fixes.append(lambda m: self.record_units(m, prep.units) or [])

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _stand_in) for m in mixers(model)]

    def pruners(self, model: nn.Module) -> dict:
        return {type(m): MixerUnitPruner() for m in mixers(model)}

    def record_units(self, model: nn.Module, units: dict) -> None:
        for m in mixers(model):
            if m in units:
                units[m.get_submodule(_sides(m)[1][0])] = units[m]
