"""Norms that record their width in `normalized_shape` outside nn.LayerNorm (timm's RmsNorm, in Gemma4's
encoder): torch-pruning cuts their scale as a plain parameter and leaves the recorded shape as built
(`Expected weight to be of same shape as normalized_shape, but got weight of shape [537] and
normalized_shape = [768]`), and one without a scale (Gemma4's last) it does not cut at all. Their own
pruner cuts the scale and bias (each kept channel keeps its own) and records the width kept.
"""
from __future__ import annotations

import torch.nn as nn
import torch_pruning as tp

from engine import tp_compat

from engine.families import Family, register_family


def recorded_norms(model: nn.Module, scaled: bool = True) -> list[nn.Module]:
    """Modules other than nn.LayerNorm with a one-dimensional `normalized_shape` and a scale of that width
    (with `scaled` False: those with no scale at all)."""
    return [m for m in model.modules()
            if not isinstance(m, nn.LayerNorm) and isinstance(getattr(m, "normalized_shape", None), tuple)
            and len(m.normalized_shape) == 1
            and (isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() == 1 if scaled
                 else getattr(m, "weight", 0) is None and getattr(m, "bias", None) is None)]


class RecordedNormPruner(tp.BasePruningFunc):
    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        keep = [i for i in range(layer.normalized_shape[0]) if i not in set(idxs)]
        for name in ("weight", "bias"):
            if isinstance(getattr(layer, name, None), nn.Parameter):
                setattr(layer, name, tp_compat.select_parameter(self, getattr(layer, name), keep, 0))
        layer.normalized_shape = (len(keep),)
        return layer

    prune_in_channels = prune_out_channels  # a norm's input is its output

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.normalized_shape[0]

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.normalized_shape[0]


@register_family
class NormShapes(Family):
    name = "recorded norm shapes"

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return recorded_norms(model) + recorded_norms(model, scaled=False)

    def pruners(self, model: nn.Module) -> dict:
        return {type(m): RecordedNormPruner() for m in self.detect(model)}
