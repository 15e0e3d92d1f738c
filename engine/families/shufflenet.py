"""torchvision's ShuffleNet v2: the stream between blocks is held, each branch's inner width is pruned.

Every block interleaves the two halves of its output (a channel shuffle: a reshape that torch-pruning's
rule divides by zero on). No index rule follows a permutation through the pass-through halves, so the
layers that write the stream are held and each branch's inner width, which the shuffle never touches, is
pruned. While a graph is traced the blocks leave out the shuffle.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family
from engine.verify import out_size


def shuffle_blocks(model: nn.Module) -> list[nn.Module]:
    """torchvision ShuffleNet v2's blocks (empty for other models)."""
    return [m for m in model.modules()
            if type(m).__name__ == "InvertedResidual" and type(m).__module__ == "torchvision.models.shufflenetv2"]


def held_layers(model: nn.Module) -> list[nn.Module]:
    """The layers that write ShuffleNet's stream (the first convolution, each downsampling branch and
    each block's last convolution), which pruning leaves whole."""
    blocks = shuffle_blocks(model)
    if not blocks:
        return []
    held = [model.conv1[0]] if isinstance(getattr(model, "conv1", None), nn.Sequential) else []
    for block in blocks:
        if len(block.branch1):
            held += [block.branch1[0], block.branch1[2]]  # depthwise on the stream, then its projection
        held.append(block.branch2[5])
    return held


def _shuffle_stand_in(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if block.stride == 1:
        x1, x2 = x.chunk(2, dim=1)
        return torch.cat((x1, block.branch2(x2)), dim=1)
    return torch.cat((block.branch1(x), block.branch2(x)), dim=1)


@register_family
class ShuffleNet(Family):
    name = "ShuffleNet"
    order = 70

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return held_layers(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.held.extend(found)
        prep.units.update({m: out_size(m) for m in found})  # whole: the share check expects them unpruned
        prep.notes.append(f"ShuffleNet: the {len(found)} layers that write the stream between blocks are not pruned "
                          "(its channel shuffle is a permutation torch-pruning cannot follow); each branch's inner "
                          "width is pruned")

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _shuffle_stand_in) for m in shuffle_blocks(model)]
