"""timm's Res2Net (Bottle2neck): conv1's output is split into `scale` chunks of a recorded `width`; chunk i
(plus the previous scale's output, outside a stage's first block) goes through conv i, and the outputs
and the last chunk are concatenated.

torch-pruning cut conv1's chunks unevenly and left `width` as built, so the pruned copy's split no longer
matched its convolutions (`expected input ... to have 17 channels, but got 26`). Here conv1's output is
cut in `scale` equal channel groups (the same positions in every chunk, as torch-pruning does for its
`out_channel_groups`, so one cut reaches every chunk), while a graph is traced the chunks are slices
(torch-pruning moves a slice's bounds as it cuts; it could not follow the split; the concatenation's sizes
it cannot infer through a slice come from engine.tracing), and `width` follows after each step. In Res2NeXt
(grouped convolutions inside the chunks) the chunks and the convolutions' groups would both have to lose the
same positions, which no count torch-pruning keeps: its conv1 and chunk convolutions are held (their rounding
unit is their whole width, so the share check expects them unpruned) and the stream around them is pruned.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family


def res2_blocks(model: nn.Module) -> list[nn.Module]:
    """Blocks that split conv1's output in `scale` chunks of `width` (timm's Bottle2neck)."""
    return [m for m in model.modules() if type(m).__module__ == "timm.models.res2net" and
            type(m).__name__ == "Bottle2neck" and isinstance(getattr(m, "width", None), int) and m.scale > 1
            and m.conv1.out_channels == m.width * m.scale]


def _sliced_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Bottle2neck's forward with slices for its split (the same computation)."""
    shortcut = x
    out = block.relu(block.bn1(block.conv1(x)))
    width = block.width
    chunks = [out[:, i * width:(i + 1) * width] for i in range(block.scale)]
    outs, sp = [], chunks[0]
    for i, (conv, bn) in enumerate(zip(block.convs, block.bns)):
        sp = chunks[i] if i == 0 or block.is_first else sp + chunks[i]
        sp = block.relu(bn(conv(sp)))
        outs.append(sp)
    outs.append(block.pool(chunks[-1]) if block.pool is not None else chunks[-1])
    out = block.bn3(block.conv3(torch.cat(outs, 1)))
    if block.se is not None:
        out = block.se(out)
    if block.downsample is not None:
        shortcut = block.downsample(x)
    return block.relu(out + shortcut)


def update_widths(blocks: list[nn.Module]):
    def update(model: nn.Module) -> list[str]:
        for block in blocks:
            block.width = block.conv1.out_channels // block.scale
        return []

    return update


@register_family
class Res2Net(Family):
    name = "Res2Net"
    order = 55

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return res2_blocks(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        grouped = [block for block in found if any(conv.groups > 1 for conv in block.convs)]
        prep.hold(layer for block in grouped for layer in (block.conv1, *block.convs))
        even = [block for block in found if block not in grouped]
        prep.add_kwargs("out_channel_groups", {block.conv1: block.scale for block in even})
        prep.notes.append(f"Res2Net: {len(found)} block(s) split conv1's output in {found[0].scale} chunks: each "
                          "chunk loses the same channels, and the chunk width is updated after each step"
                          + (f"; the chunks of {len(grouped)} Res2NeXt block(s) go through grouped convolutions "
                             "(the chunks and the groups cannot both keep equal sizes), so their conv1 and chunk "
                             "convolutions are held and only the stream around them is pruned" if grouped else ""))
        prep.fixes.append(update_widths(found))

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _sliced_forward) for m in res2_blocks(model)]
