"""torchvision's MaxViT: its attention layers are held back, the MBConv and MLP widths are pruned.

torch-pruning's walk from an attention's `to_qkv` through the window partition never ends (10 GiB after
4 minutes). So `to_qkv` and `merge` are left alone, and with them the residual stream `merge` writes to.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family
from engine.verify import out_size


def held_attention(model: nn.Module) -> list[tuple[nn.Linear, nn.Linear]]:
    """(to_qkv, merge) of each torchvision MaxViT attention layer."""
    from torchvision.models.maxvit import RelativePositionalMultiHeadAttention

    return [(m.to_qkv, m.merge) for m in model.modules() if isinstance(m, RelativePositionalMultiHeadAttention)]


def record_held(graph, held: list[tuple[nn.Linear, nn.Linear]], units: dict) -> None:
    """Every layer that cannot move because it shares channels with a held layer gets its whole width
    as its rounding unit, so the share check expects it unpruned."""
    outputs = {merge for _, merge in held}
    for qkv, merge in held:
        units[qkv], units[merge] = out_size(qkv), out_size(merge)
    for group in graph.get_all_groups(ignored_layers=[qkv for qkv, _ in held]):  # qkv: the walk that never ends
        pruned = [dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)]
        if any(m in outputs for m in pruned):
            for module in pruned:
                size = out_size(module) if isinstance(module, nn.Module) else None
                if size:
                    units[module] = size


@register_family
class MaxViT(Family):
    name = "MaxViT"
    order = 80

    def detect(self, model: nn.Module) -> list[tuple[nn.Linear, nn.Linear]]:
        return held_attention(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.held.extend(m for pair in found for m in pair)
        prep.notes.append(f"MaxViT: its {len(found)} window/grid attention layers and the residual stream they write "
                          "to are not pruned (torch-pruning's dependency walk through their window partition does not "
                          "end in bounded memory); the MBConv and MLP widths are pruned")

    def after_graph(self, pruner, prep) -> None:
        record_held(pruner.DG, prep.found[self.name], prep.units)
