"""torchvision's ViT records `hidden_dim`, `mlp_dim` and each block's `num_heads`; pruning the residual
stream leaves them stale. Heads go whole (engine/families/attention_heads.py: one head = head_dim channels
of the stream) and the recorded sizes are updated after each step."""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family


def update_vit_sizes(model: nn.Module) -> list[str]:
    """torchvision's ViT reshapes with its recorded hidden_dim: copy the pruned sizes back."""
    before = model.hidden_dim
    model.hidden_dim = model.conv_proj.out_channels
    for block in model.encoder.layers:
        block.num_heads = block.self_attention.num_heads
    first = model.encoder.layers[0]
    model.mlp_dim = first.mlp[0].out_features
    if model.hidden_dim == before:
        return []
    return [f"ViT hidden size {before} → {model.hidden_dim} ({first.num_heads} heads of "
            f"{first.self_attention.head_dim}), MLP size {model.mlp_dim}"]


@register_family
class TorchvisionViT(Family):
    name = "torchvision ViT"
    order = 20

    def detect(self, model: nn.Module) -> bool:
        from torchvision.models.vision_transformer import VisionTransformer

        return isinstance(model, VisionTransformer)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        heads = model.encoder.layers[0].num_heads
        prep.notes.append(f"ViT: attention heads are pruned whole ({heads} heads of {model.hidden_dim // heads} "
                          "channels share the hidden size), and hidden_dim / num_heads are updated after each step")
        prep.fixes.append(update_vit_sizes)
