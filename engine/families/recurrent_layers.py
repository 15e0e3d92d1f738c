"""LSTMs (timm's Sequencer2d: a bidirectional LSTM along each image axis, their outputs concatenated).

torch-pruning's LSTM pruner cuts the hidden width along the wrong dimensions (the recurrent weights only
along their rows, the input weights' four gates along their columns), so a cut of an LSTM's outputs indexed
past its weights (`index 384 is out of bounds for dimension 0 with size 384`). An LSTM's hidden width is
held; its inputs follow the layer that feeds it (that cut is right: every direction's input weights lose
the same columns), so the stream around it is pruned. An LSTM has no output channels the share check counts.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family


def lstms(model: nn.Module) -> list[nn.LSTM]:
    return [m for m in model.modules() if isinstance(m, nn.LSTM)]


@register_family
class RecurrentLayers(Family):
    name = "recurrent layers"

    def detect(self, model: nn.Module) -> list[nn.LSTM]:
        return lstms(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.held.extend(found)
        prep.notes.append(f"{len(found)} LSTM(s): their hidden width is not pruned (torch-pruning's LSTM pruner cuts "
                          "it along the wrong dimensions); their inputs lose the channels of the layer feeding them")
