"""GoogLeNet and Inception v3 (torchvision's, and timm's Inception v3): auxiliary classifiers.

They run only in train mode, so tracing in eval mode never sees them: they would keep their old widths and
fine-tuning would crash. They are dropped before pruning, as torchvision itself does for models built
without them.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family

AUX_HEADS = ("aux1", "aux2", "AuxLogits")


def aux_heads(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(attribute, head) of each auxiliary classifier `model` holds."""
    if not isinstance(getattr(model, "aux_logits", None), bool):
        return []
    return [(name, getattr(model, name)) for name in AUX_HEADS if isinstance(getattr(model, name, None), nn.Module)]


def drop_aux_heads(model: nn.Module, notes: list[str]) -> int:
    """Drop GoogLeNet/Inception auxiliary classifiers; returns the parameters they held."""
    heads = aux_heads(model)
    if not heads:
        return 0
    dropped = sum(p.numel() for _, m in heads for p in m.parameters())
    for name, _ in heads:
        setattr(model, name, None)
    model.aux_logits = False
    notes.append(f"dropped {type(model).__name__}'s auxiliary heads ({', '.join(n for n, _ in heads)}, "
                 f"{dropped:,} parameters): they only help training, are unused in evaluation, and tracing in eval "
                 "mode cannot prune them with the layers they read from")
    return dropped


@register_family
class AuxiliaryHeads(Family):
    name = "auxiliary heads"
    order = 0  # before anything traces the model

    def detect(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        return aux_heads(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.dropped_params = drop_aux_heads(model, prep.notes)
