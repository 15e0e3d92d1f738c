"""A parameter of shape (1, C, H, W) added to a channels-first stream (timm's Visformer position embeddings).

torch-pruning prunes a parameter outside a layer along its last dimension larger than one unless told
otherwise: here that is the width, not the channels, so its groups could not be cut and the stream kept
every channel (Visformer failed the share check). Such parameters are handed to the pruner with their
channel dimension.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family


def channels_first_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of parameters outside torch's own layers shaped (1, C, H, W), H equal to W and
    unequal to C (a (1, H, W, C) tensor is left to torch-pruning, which prunes its last dimension)."""
    found = []
    for owner_name, owner in model.named_modules():
        if type(owner).__module__.startswith("torch.nn"):
            continue
        for name, param in owner.named_parameters(recurse=False):
            shape = param.shape
            if param.dim() == 4 and shape[0] == 1 and shape[1] > 1 and shape[2] == shape[3] != shape[1]:
                found.append((f"{owner_name}.{name}" if owner_name else name, param))
    return found


@register_family
class ChannelsFirstParameters(Family):
    name = "channels-first parameters"

    def detect(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        return channels_first_parameters(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.pruner_kwargs.setdefault("unwrapped_parameters", []).extend((param, 1) for _, param in found)
        names = ", ".join(name for name, _ in found[:3]) + (f" and {len(found) - 3} more" if len(found) > 3 else "")
        prep.notes.append(f"{len(found)} parameter(s) shaped (1, C, H, W) ({names}) are pruned along their channels")
