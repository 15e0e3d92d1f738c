"""timm's MambaOut (GatedConvBlock): fc1's output is split by sizes recorded at construction into a gate,
an identity part and a part through a depthwise convolution, and the gate multiplies the other two,
concatenated.

torch-pruning's cut of that hidden width indexed past the convolution (`index 27 is out of bounds for
dimension 0 with size 24`) and would leave `split_indices` as built. So fc1's outputs and the convolution
are held (the hidden width stays; their rounding unit is their whole width, so the share check expects
them unpruned), and the residual stream is pruned: fc1's inputs, fc2's outputs, the norms and the stems.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family


def gated_blocks(model: nn.Module) -> list[nn.Module]:
    """Blocks whose fc1 output is split by recorded sizes and gated (timm's GatedConvBlock)."""
    return [m for m in model.modules() if type(m).__module__ == "timm.models.mambaout"
            and type(m).__name__ == "GatedConvBlock" and len(getattr(m, "split_indices", ())) == 3]


def _held(block: nn.Module) -> list[nn.Module]:
    return [block.fc1, block.conv]


@register_family
class GatedConvolutions(Family):
    name = "gated convolutions"

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return gated_blocks(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.held.extend(layer for block in found for layer in _held(block))
        prep.notes.append(f"MambaOut: the hidden width of its {len(found)} gated block(s) is not pruned (fc1's "
                          "output is split by sizes recorded at construction, which torch-pruning cannot cut); "
                          "the residual stream is pruned")
        self.record_units(model, prep.units)

    def record_units(self, model: nn.Module, units: dict) -> None:
        for block in gated_blocks(model):
            units[block.fc1], units[block.conv] = block.fc1.out_features, block.conv.out_channels
