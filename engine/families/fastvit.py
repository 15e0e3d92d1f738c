"""timm's FastViT: each stage's downsampling (and the final convolution) begins with depthwise convolutions
of two outputs per input channel (C → 2C, groups = C), which torch-pruning cuts as plain convolutions (it
was refused, engine.families.depthwise_multipliers).

Those convolutions are held, and with them every layer sharing channels with their inputs (each stage's
residual stream, which meets such a convolution at the stage's end) or their outputs (their rounding unit is
their whole width, so the share check expects them unpruned). The MLPs' hidden widths (and the attention of the last
stage, by its heads) are pruned.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from engine.families import Family, register_family
from engine.families.depthwise_multipliers import depthwise_multipliers
from engine.verify import out_size


def fastvit_multipliers(model: nn.Module) -> list[nn.Conv2d]:
    """The depthwise convolutions of several outputs per input in a FastViT model."""
    if not any(type(m).__module__ == "timm.models.fastvit" and type(m).__name__ == "FastVit" for m in model.modules()):
        return []
    return [conv for _, conv in depthwise_multipliers(model)]


@register_family
class FastViT(Family):
    name = "FastViT"
    order = 1  # before engine.families.depthwise_multipliers, which leaves held convolutions alone

    def detect(self, model: nn.Module) -> list[nn.Conv2d]:
        return fastvit_multipliers(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.hold(found)
        prep.notes.append(f"FastViT: its {len(found)} depthwise convolutions of two outputs per input channel and "
                          "the residual streams they read are not pruned (torch-pruning cuts such a convolution as a "
                          "plain one); the MLP widths are pruned")

    def after_graph(self, pruner, prep) -> None:
        graph = pruner.DG
        for conv in prep.found[self.name]:  # the layers sharing its input channels, then its outputs'
            groups = (graph.get_pruning_group(conv, tp.prune_conv_in_channels, list(range(conv.in_channels))),
                      graph.get_pruning_group(conv, tp.prune_conv_out_channels, list(range(conv.out_channels))))
            for dep, _ in (item for group in groups for item in group):
                module = dep.target.module
                if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(module, nn.Module):
                    pruner.ignored_layers.append(module)  # a group with an ignored layer is not cut
                    if out_size(module):
                        prep.units[module] = out_size(module)
