"""timm's CSATv2 blocks weight the stream by a spatial attention computed from the channels' mean and maximum
(one map for every channel, from a 2 → 1 convolution and a one-channel transformer).

torch-pruning read the mean and the maximum over the channels as operations on each channel, tied the
stream to the attention's one-channel layers, and cut nothing of the stream (every block's stream layers
stayed whole). While a graph is traced, the attention map is computed outside the graph (it depends on the
stream's values, not on its channels: any channel may go), so the stream is pruned; the attention's own
layers keep their few channels.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family


def spatial_attentions(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__module__ == "timm.models.csatv2"
            and type(m).__name__ == "SpatialAttention"]


def _stand_in(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return type(module).forward(module, x.detach())


@register_family
class SpatialAttention(Family):
    name = "spatial attention"

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return spatial_attentions(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.notes.append(f"CSATv2: {len(found)} spatial attention(s) weight every channel of the stream by one map "
                          "of the channels' mean and maximum: the stream is pruned, the attentions keep their few "
                          "channels")

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _stand_in) for m in spatial_attentions(model)]
