"""timm's Hiera: its mask-unit attention and the residual stream are held back, the MLP widths are pruned.

The attention reshapes qkv into windows, heads and a query pooling by recorded sizes, and torch-pruning's
walk through it divided by zero while building the graph (the model could not be traced). So the attention
is left out of the trace (a stand-in of the right shape, not connected to its input) and its qkv and proj are
held, and with them every layer writing to the stream (the patch embedding, each stage's widening proj and
the MLPs' output layers), whose width they read and write; the MLPs' hidden widths are pruned.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family
from engine.families.maxvit import record_held


def _is(module: nn.Module, name: str) -> bool:
    return (type(module).__module__, type(module).__name__) == ("timm.models.hiera", name)


def stream_writers(model: nn.Module) -> list[tuple[nn.Module, list[nn.Module]]]:
    """Each Hiera block's attention with the layers writing to the stream, first the patch embedding's."""
    if not any(_is(m, "Hiera") for m in model.modules()):
        return []
    blocks = [m for m in model.modules() if _is(m, "HieraBlock")]
    embeds = [m.proj for m in model.modules() if _is(m, "PatchEmbed") and isinstance(m.proj, nn.Conv2d)]
    return [(block.attn, [*(embeds if i == 0 else []), block.attn.proj, block.mlp.fc2,
                          *([block.proj] if isinstance(block.proj, nn.Linear) else [])])
            for i, block in enumerate(blocks)]


def _outside_the_trace(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape[0], x.shape[1] // module.q_stride, module.dim_out)


@register_family
class Hiera(Family):
    name = "Hiera"
    order = 80

    def detect(self, model: nn.Module) -> list:
        return stream_writers(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.held.extend(layer for attn, writers in found for layer in (attn.qkv, *writers))
        prep.notes.append(f"Hiera: its {len(found)} mask-unit attention layers (windows, heads and query pooling "
                          "by recorded sizes) and the residual stream they read and write are not pruned; the MLP "
                          "widths are pruned")

    def after_graph(self, pruner, prep) -> None:
        record_held(pruner.DG, [(attn.qkv, layer) for attn, writers in prep.found[self.name] for layer in writers],
                    prep.units)

    def stand_ins(self, model: nn.Module) -> list:
        return [(attn, "forward", _outside_the_trace) for attn, _ in stream_writers(model)]
