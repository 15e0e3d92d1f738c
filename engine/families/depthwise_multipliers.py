"""Depthwise convolutions with several outputs per input channel (C → k·C, groups = C: FastViT's
downsampling and head, PiT's pooling). torch-pruning scores and cuts them as plain convolutions: a cut of
the channels they read indexed past their one-channel input (IndexError, reported at some layer of the
stream), and output channel o belongs to input o // k, which it does not keep together. Such a model is
refused before any work, naming the layer; a convolution reading the image itself (whose channels never
go), or one another family holds whole with the streams it reads and writes (PiT's), is no obstacle.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.errors import UserError
from engine.families import Family, register_family


def depthwise_multipliers(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """(name, layer) of each depthwise convolution with k > 1 outputs per input, past the image's channels."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 3
            and m.out_channels != m.in_channels]


@register_family
class DepthwiseMultipliers(Family):
    name = "depthwise multipliers"
    order = 2  # refused before the other families do any work

    def detect(self, model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
        return depthwise_multipliers(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        found = [(name, conv) for name, conv in found if conv not in prep.held]  # held whole by another family
        if not found:
            return
        name, conv = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise UserError(f"structured pruning cannot prune this model: layer {name}{more} is a depthwise convolution "
                        f"with {conv.out_channels // conv.in_channels} outputs per input channel ({conv.in_channels} → "
                        f"{conv.out_channels}, groups={conv.groups}), which torch-pruning cuts as a plain convolution; "
                        "unstructured pruning (e.g. --method magnitude-global) still works")
