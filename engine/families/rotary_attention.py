"""timm's attention with rotary position embeddings (rope), the EVA family's: DINOv3 and EVA-02 (EvaAttention),
Qwen3's vision encoder and DeepSeek's (AttentionRope).

The rope rotates pairs of channels inside each head, concatenating the halves of every head, and prefix tokens
are concatenated back along the tokens: torch-pruning read both as channel concatenations (a TypeError while
grouping, or qkv cut by more than whole heads so its reshape failed). The rotation keeps each head's channels
where they are, so while a graph is traced the attention runs without it.

AttentionRope reshapes with its recorded head count and head size: with the rope out of the trace it is
timm's plain fused attention, pruned by whole heads (engine.families.attention_heads). EvaAttention builds
qkv's bias in the forward from q_bias, a zero k_bias buffer and v_bias, and reshapes its output with the width
of its input: a smaller head would misalign the rope's pairs, and fewer heads would not fit that reshape. So
its qkv (or q, k, v), gate and proj are held, with the residual stream proj writes to; the MLP widths are
pruned. While tracing, such an attention is proj alone (the stream straight into proj).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family
from engine.families.maxvit import record_held

ROPE_HEADS = ("timm.layers.attention", "AttentionRope")
HELD = ("timm.models.eva", "EvaAttention")


def _kind(module: nn.Module) -> tuple[str, str]:
    return type(module).__module__, type(module).__name__


def _readers(attn: nn.Module) -> list[nn.Linear]:
    """The layers reading the attention's input: qkv (or q, k and v) and the gate."""
    return [layer for name in ("qkv", "q_proj", "k_proj", "v_proj", "gate")
            if isinstance(layer := getattr(attn, name, None), nn.Linear)]


def held_attentions(model: nn.Module) -> list[nn.Module]:
    """The EvaAttentions whose proj maps the stream's width back to it (so proj alone can stand in)."""
    return [m for m in model.modules() if _kind(m) == HELD and isinstance(m.proj, nn.Linear)
            and m.proj.in_features == m.proj.out_features
            and all(layer.in_features == m.proj.out_features for layer in _readers(m))]


def _without_rope(module: nn.Module, x: torch.Tensor, rope=None, **kwargs) -> torch.Tensor:
    return type(module).forward(module, x, rope=None, **kwargs)


def _proj_only(module: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return module.proj(x * 1.0)


@register_family
class RotaryAttention(Family):
    name = "rotary attention"
    order = 25

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return held_attentions(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.held.extend(layer for attn in found for layer in (*_readers(attn), attn.proj))
        prep.notes.append(f"{len(found)} EVA attention layer(s) with rotary embeddings build their qkv bias in the "
                          "forward and reshape with their input's width: their qkv and proj are not pruned, nor the "
                          "residual stream proj writes to; the MLP widths are pruned")

    def after_graph(self, pruner, prep) -> None:
        record_held(pruner.DG, [(layer, attn.proj) for attn in prep.found[self.name] for layer in _readers(attn)],
                    prep.units)

    def stand_ins(self, model: nn.Module) -> list:
        held = held_attentions(model)
        return ([(m, "forward", _proj_only) for m in held]
                + [(m, "forward", _without_rope) for m in model.modules() if _kind(m) == ROPE_HEADS])
