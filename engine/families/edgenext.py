"""timm's EdgeNeXt: its split-transpose blocks are held back with the residual stream of their stages; the
convolution blocks' and MLPs' widths are pruned.

A split-transpose block cuts the stream in chunks of a width recorded when it was built (the last one
shorter when they do not divide it), adds each chunk to the previous one's convolution, and its cross-
covariance attention reshapes its output with its input's width (torch-pruning indexed past the stream's end,
and a pruned stream could not follow: it was refused). So its depthwise convolutions, the attention's qkv and
proj and the position encoding's projection are left alone, and with them the stream they read and write.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family
from engine.families.maxvit import record_held


def split_transpose_blocks(model: nn.Module) -> list[nn.Module]:
    """EdgeNeXt's SplitTransposeBlocks."""
    return [m for m in model.modules()
            if (type(m).__module__, type(m).__name__) == ("timm.models.edgenext", "SplitTransposeBlock")]


def _held(block: nn.Module) -> list[nn.Module]:
    """Every layer of the block besides its MLP: its convolutions, the attention's and the position encoding's."""
    return [m for name, m in block.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
            and not name.startswith("mlp.")]


@register_family
class EdgeNeXt(Family):
    name = "EdgeNeXt"
    order = 80

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return split_transpose_blocks(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.held.extend(layer for block in found for layer in _held(block))
        prep.notes.append(f"EdgeNeXt: its {len(found)} split-transpose block(s) (chunks of a recorded width, an "
                          "attention reshaped with its input's width) and the residual stream of their stages are "
                          "not pruned; the convolution blocks' and MLP widths are pruned")

    def after_graph(self, pruner, prep) -> None:
        # qkv's output stays inside the attention; every other held layer writes to the stream
        record_held(pruner.DG, [(block.xca.qkv, layer) for block in prep.found[self.name] for layer in _held(block)
                                if layer is not block.xca.qkv], prep.units)
