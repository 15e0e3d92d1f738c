"""timm's PiT (pooling-based vision transformer): its residual streams are held back, its attention heads
and MLP widths are pruned.

Each stage widens the stream with a depthwise convolution of several outputs per input channel (C → 2C,
groups = C) and a Linear for the class token, which torch-pruning cuts as plain layers (it was refused,
engine.families.depthwise_multipliers). Every stream meets such a convolution, so the layers writing to the
streams (the patch embedding, the poolings, each block's attention proj and MLP output) are held; each
attention loses whole heads (engine.families.attention_heads) and each MLP hidden units.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family
from engine.families.maxvit import record_held


def _is(module: nn.Module, name: str) -> bool:
    return (type(module).__module__, type(module).__name__) == ("timm.models.pit", name)


def stream_writers(model: nn.Module) -> list[nn.Module]:
    """The layers of a PiT model writing to its streams (the poolings' first)."""
    if not any(_is(m, "PoolingVisionTransformer") for m in model.modules()):
        return []
    pools = [layer for m in model.modules() if _is(m, "Pooling") for layer in (m.conv, m.fc)]
    embeds = [m.conv for m in model.modules() if _is(m, "ConvEmbedding")]
    blocks = [layer for m in model.modules() if _is(m, "Transformer") for block in m.blocks
              for layer in (block.attn.proj, block.mlp.fc2)]
    return pools + embeds + blocks


@register_family
class PiT(Family):
    name = "PiT"
    order = 1  # before engine.families.depthwise_multipliers, which leaves held convolutions alone

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return stream_writers(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.held.extend(found)
        prep.notes.append("PiT: its residual streams are not pruned (each stage widens them with a depthwise "
                          "convolution of two outputs per input, which torch-pruning cannot cut); attention heads "
                          "and MLP widths are pruned")

    def after_graph(self, pruner, prep) -> None:
        found = prep.found[self.name]
        record_held(pruner.DG, [(found[0], layer) for layer in found], prep.units)
