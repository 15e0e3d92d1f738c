"""timm's CoaT (co-scale conv-attentional transformer): everything but the MLPs' hidden widths is held back.

Its factorized attention splits v between depthwise convolutions by channel counts recorded when it was built
(head groups of a recorded head width), its convolutional position encoding slices the class token off and
concatenates it back, and its parallel blocks resize and add the streams of three stages to each other:
torch-pruning indexed past a stage's stream (an IndexError), and past a few blocks its width inference gave up
(its recursion limit) so a token concatenation had no width (a TypeError: the model could not be traced). So
every layer but the MLPs' hidden ones is held, each MLP's hidden width is pruned, and while a graph is traced
the position encodings pass their input through, the attention is its proj, and a resized stream is its mean
over the tokens (the channels meet as in the model, without slices and concatenations).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family
from engine.verify import out_size


def held_layers(model: nn.Module) -> list[nn.Module]:
    """Every convolution and Linear of a CoaT model but the MLPs' first layers and the classifier."""
    if not any((type(m).__module__, type(m).__name__) == ("timm.models.coat", "CoaT") for m in model.modules()):
        return []
    hidden = {id(m.fc1) for m in model.modules() if type(m).__name__ == "Mlp" and isinstance(m.fc1, nn.Linear)}
    head = getattr(model, "head", None)
    return [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))
            and id(m) not in hidden and m is not head]


def _kind(module: nn.Module) -> str:
    return type(module).__name__ if type(module).__module__ == "timm.models.coat" else ""


def _through(module: nn.Module, x: torch.Tensor, size) -> torch.Tensor:
    return x * 1.0


def _proj_only(module: nn.Module, x: torch.Tensor, size) -> torch.Tensor:
    return module.proj(x * 1.0)


def _resized(module: nn.Module, x: torch.Tensor, scale_factor: float, size) -> torch.Tensor:
    return x.mean(1, keepdim=True)  # any token count: each channel meets its own


STAND_INS = {"ConvPosEnc": ("forward", _through), "FactorAttnConvRelPosEnc": ("forward", _proj_only),
             "ParallelBlock": ("interpolate", _resized)}


@register_family
class CoaT(Family):
    name = "CoaT"
    order = 80

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return held_layers(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.held.extend(found)
        prep.notes.append("CoaT: its attention (v split between convolutions by recorded sizes), position encodings "
                          "and the streams its parallel blocks mix are not pruned; the MLP widths are pruned")

    def after_graph(self, pruner, prep) -> None:
        for layer in prep.found[self.name]:  # the share check expects them whole
            prep.units[layer] = out_size(layer)

    def stand_ins(self, model: nn.Module) -> list:
        if not held_layers(model):
            return []
        return [(m, *STAND_INS[_kind(m)]) for m in model.modules() if _kind(m) in STAND_INS]
