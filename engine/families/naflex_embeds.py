"""timm's NaFlexViT patch embedding: the position embeddings (learned, or factorized in rows and columns) are
added in place to the patch projection's output.

With an identity norm after the projection, that output is a view of the projection's result, and an in-place
add to a view rewrites its autograd history: torch-pruning's trace no longer reached the projection, so the
position embeddings kept the stream's width while the stream was cut (the pruned copy's forward failed). While
a graph is traced, the norm after the projection returns a copy, so the add lands on a tensor of its own; the
embeddings are then cut along their last dimension, the stream's channels, with the stream.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family


def in_place_embeds(model: nn.Module) -> list[nn.Module]:
    """NaFlexViT's patch embeddings that add a position embedding in place."""
    return [m for m in model.modules() if (type(m).__module__, type(m).__name__) == ("timm.models.naflexvit",
                                                                                     "NaFlexEmbeds")
            and getattr(m, "pos_embed_type", None) in ("learned", "factorized")]


def _copying_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return type(norm).forward(norm, x) * 1.0


@register_family
class NaFlexEmbeds(Family):
    name = "NaFlexViT embeddings"

    def stand_ins(self, model: nn.Module) -> list:
        return [(m.norm, "forward", _copying_norm) for m in in_place_embeds(model)]
