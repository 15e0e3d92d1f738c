"""Normalisations with a scale but no bias (timm's MetaFormer: GroupNorm1NoBias, LayerNorm2dNoBias): the
model sets `bias = None` after an affine norm's construction, and torch-pruning's group and batch norm
pruners cut `bias` whenever `affine` holds, so every group through one failed ('NoneType' object has no
attribute 'device').

Their own pruner lends the norm a zero bias for the cut and takes it back: torch-pruning's own code cuts
the scale (and a batch norm's statistics), so each kept channel keeps its scale, and the model keeps its
parameter count and forward.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from engine.families import Family, register_family

# the norms whose torch-pruning pruner cuts `bias` unguarded, by kind
_BASES = ((nn.GroupNorm, tp.pruner.function.GroupNormPruner),
          (nn.modules.batchnorm._BatchNorm, tp.pruner.function.BatchnormPruner),
          (nn.modules.instancenorm._InstanceNorm, tp.pruner.function.InstanceNormPruner))


def _base(module: nn.Module) -> type | None:
    return next((pruner for kind, pruner in _BASES if isinstance(module, kind)), None)


def bias_free(module: nn.Module) -> bool:
    """An affine norm of those kinds with a scale and no bias."""
    return (_base(module) is not None and getattr(module, "affine", False)
            and isinstance(getattr(module, "weight", None), nn.Parameter) and module.bias is None)


def _pruner(base: type) -> tp.BasePruningFunc:
    class BiasFreeNormPruner(base):
        def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
            layer.bias = nn.Parameter(torch.zeros_like(layer.weight))
            try:
                return super().prune_out_channels(layer, idxs)
            finally:
                layer.bias = None

        prune_in_channels = prune_out_channels  # a norm's input is its output (torch-pruning couples them so)

    return BiasFreeNormPruner()


@register_family
class BiasFreeNorms(Family):
    name = "bias-free norms"

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return [m for m in model.modules() if bias_free(m)]

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.notes.append(f"{len(found)} norm(s) with a scale and no bias (MetaFormer): each kept channel keeps its "
                          "scale, and no bias is added")

    def pruners(self, model: nn.Module) -> dict:
        return {type(m): _pruner(_base(m)) for m in model.modules() if bias_free(m)}
