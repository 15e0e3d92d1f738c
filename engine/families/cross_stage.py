"""timm's CSPNet stages (CrossStage, CrossStage3): conv_exp's output is split in two halves by a recorded
width (`x.split(expand_chs // 2)`), one half goes through the stage's blocks, and the halves are joined.

torch-pruning cut the halves unevenly and mapped the split's parts in the order it met them (IndexError
at conv_exp), and `expand_chs` stayed as built. Here conv_exp's output is cut in two equal channel groups
(the same positions in both halves, one cut reaching both), while a graph is traced the halves are slices,
and `expand_chs` follows after each step.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family

KINDS = {"CrossStage", "CrossStage3"}


def cross_stages(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__module__ == "timm.models.cspnet" and type(m).__name__ in KINDS
            and isinstance(getattr(m, "expand_chs", None), int)
            and isinstance(getattr(getattr(m, "conv_exp", None), "conv", None), nn.Conv2d)
            and m.conv_exp.conv.out_channels == m.expand_chs and m.expand_chs % 2 == 0]


def _sliced_forward(stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CrossStage(3)'s forward with slices for its split (the same computation)."""
    x = stage.conv_exp(stage.conv_down(x))
    half = stage.expand_chs // 2
    first, second = x[:, :half], x[:, half:2 * half]
    if type(stage).__name__ == "CrossStage":
        second = stage.conv_transition_b(stage.blocks(second)).contiguous()
    else:
        first = stage.blocks(first)
    return stage.conv_transition(torch.cat([first, second], dim=1))


def update_expand_chs(stages: list[nn.Module]):
    def update(model: nn.Module) -> list[str]:
        for stage in stages:
            stage.expand_chs = stage.conv_exp.conv.out_channels
        return []

    return update


@register_family
class CrossStages(Family):
    name = "cross stages"

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return cross_stages(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.add_kwargs("out_channel_groups", {stage.conv_exp.conv: 2 for stage in found})
        prep.notes.append(f"CSPNet: {len(found)} stage(s) split conv_exp's output in two halves: both lose the same "
                          "channels, and the split width is updated after each step")
        prep.fixes.append(update_expand_chs(found))

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _sliced_forward) for m in cross_stages(model)]
