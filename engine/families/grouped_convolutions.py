"""Grouped convolutions (ResNeXt, RegNet, ...) and every layer torch-pruning cuts in equal channel groups
(Swin's heads, ResNeSt's splits; any model, decided per group).

torch-pruning rounds a group's kept channels *per convolution group* with the whole layer's channel count,
so round_to=8 on a group width of 8 or 16 prunes all of each group (the layer is skipped) or half of it.
Each channel group's kept width is rounded instead, to a multiple of max(1, round_to // groups).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine import tp_compat
from engine.preparation import counts_root, kept_channels, least, record_unit
from engine.families import Family, register_family


def grouped_convolutions(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    """(name, layer) of each convolution with groups of more than one channel (depthwise ones are not)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.out_channels]


@register_family
class GroupedConvolutions(Family):
    name = "grouped convolutions"
    order = 40  # after whole heads, which are rounded as heads

    def detect(self, model: nn.Module) -> bool:
        return True  # channel groups also come from other families' units: decided per group

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        grouped = grouped_convolutions(model)
        if grouped and round_to and round_to > 1:
            widths = sorted({m.out_channels // m.groups for _, m in grouped})
            prep.notes.append(
                f"{len(grouped)} grouped convolution(s) (group widths {', '.join(map(str, widths))}): channels are "
                f"kept per group, rounded to a multiple of max(1, {round_to} // groups) each, so such a layer moves "
                f"in steps of about max({round_to}, groups) channels; a group width under {round_to} cannot keep "
                f"multiples of {round_to}")

    def pruned_count(self, pruner, prep, group, n_pruned, current_channels, round_to) -> int | None:
        if not counts_root(pruner, group, current_channels):
            return None
        groups = tp_compat.channel_groups(pruner, group)
        if groups <= 1:
            return None
        # n_pruned counts channels of one convolution group; round that group's kept width.
        width = current_channels // groups
        unit = max(1, round_to // groups)
        record_unit(prep.units, group, pruner.DG, unit * groups)
        floor = -(-least(pruner, group, current_channels) // groups)
        return max(width - kept_channels(width - n_pruned, width, unit, floor), 0)
