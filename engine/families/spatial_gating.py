"""timm's gMLP (SpatialGatingUnit): the hidden channels are chunked in two halves u and v, v is normalised
and mixed across tokens (a Linear over the sequence, through a transpose), and u * v is the output.

torch-pruning read the token mixing as a channel layer and cut the halves unevenly, so the pruned copy's
norm no longer fitted its half (`Given normalized_shape=[384], expected input with shape [*, 384]`). Here
the layer before the unit (GatedMlp's fc1) is cut in two equal channel groups (channel i of u goes with
channel i of v), and while a graph is traced the unit runs without its token mixing (the same channels;
its Linear keeps the sequence length it must).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family


def _is_gating(module: nn.Module) -> bool:
    return type(module).__module__ == "timm.models.mlp_mixer" and type(module).__name__ == "SpatialGatingUnit"


def gated_mlps(model: nn.Module) -> list[nn.Module]:
    """MLPs (fc1, a spatial gating unit as `gate`) whose fc1 output is chunked in two by the unit."""
    return [m for m in model.modules() if _is_gating(getattr(m, "gate", None))
            and isinstance(getattr(m, "fc1", None), nn.Linear) and m.fc1.out_features % 2 == 0]


def _channels_only(unit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return x[..., :half] * unit.norm(x[..., half:2 * half])


@register_family
class SpatialGating(Family):
    name = "spatial gating"

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return gated_mlps(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.add_kwargs("out_channel_groups", {mlp.fc1: 2 for mlp in found})
        prep.held.extend(mlp.gate.proj for mlp in found)  # mixes tokens: its size is the sequence length
        prep.notes.append(f"gMLP: {len(found)} spatial gating unit(s) multiply two halves of their MLP's hidden "
                          "channels: both halves lose the same channels; the token mixing keeps its size")

    def stand_ins(self, model: nn.Module) -> list:
        return [(mlp.gate, "forward", _channels_only) for mlp in gated_mlps(model)]
