"""Attention whose heads take their size from the residual stream (timm's BEiT; timm's Swin v2 window
attention, through engine.families.swin): q, k and v are one projection of the stream's width split in
`num_heads` heads of width/num_heads each, the output is reshaped with the input's width, and the qkv bias
is built in the forward from `q_bias`, a zero `k_bias` buffer and `v_bias` (with F.linear on qkv's
weight, which torch-pruning's trace does not see as the qkv layer: the stream stayed whole, far above the
requested share, or a reshape broke).

Such an attention is pruned as a unit: the stream is cut in `num_heads` equal chunks, the same positions
in each, and those positions leave qkv's input, q, k and v alike (with their biases), and the projection's
input; the projection's output is the stream. Each head keeps its own channels with smaller heads and the
head count stays. BEiT's score scale follows the new head size, as its fused attention's does. While a
graph is traced the attention runs a stand-in (channels straight through).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from engine import tp_compat
from engine.families import Family, register_family

BEIT = ("timm.models.beit", "Attention")
SWIN_V2 = ("timm.models.swin_transformer_v2", "WindowAttention")


def _kind(module: nn.Module) -> tuple[str, str]:
    return type(module).__module__, type(module).__name__


def stream_wide(module: nn.Module) -> bool:
    """One such attention: a fused qkv of three times its input's width, heads that divide it, a proj back."""
    qkv, proj, heads = getattr(module, "qkv", None), getattr(module, "proj", None), getattr(module, "num_heads", None)
    return (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and isinstance(heads, int)
            and qkv.out_features == 3 * qkv.in_features == 3 * proj.in_features
            and qkv.in_features % heads == 0)


def beit_attentions(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if _kind(m) == BEIT and stream_wide(m)]


def stand_in(module: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    return x * 1.0  # one node, channels in == channels out, no reshapes


class StreamAttentionPruner(tp.BasePruningFunc):
    def prune_in_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        width = layer.qkv.in_features
        keep = [i for i in range(width) if i not in set(idxs)]
        tp.prune_linear_in_channels(layer.qkv, idxs)
        tp.prune_linear_out_channels(layer.qkv, [i + k * width for k in range(3) for i in idxs])  # q, k and v alike
        tp.prune_linear_in_channels(layer.proj, idxs)
        for name in ("q_bias", "v_bias"):
            if isinstance(getattr(layer, name, None), nn.Parameter):
                setattr(layer, name, tp_compat.select_parameter(self, getattr(layer, name), keep, 0))
        if isinstance(getattr(layer, "k_bias", None), torch.Tensor):
            layer.k_bias = layer.k_bias[keep].clone()  # a buffer (zeros), not a parameter
        if isinstance(getattr(layer, "scale", None), float):
            layer.scale = (len(keep) // layer.num_heads) ** -0.5
        if isinstance(getattr(layer, "dim", None), int):
            layer.dim = len(keep)
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        tp.prune_linear_out_channels(layer.proj, idxs)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.qkv.in_features

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.proj.out_features


def record_units(attentions: list[nn.Module], units: dict) -> None:
    """qkv moves three units at a time, proj one."""
    for attn in attentions:
        if attn in units:
            units[attn.qkv], units[attn.proj] = 3 * units[attn], units[attn]


@register_family
class StreamAttention(Family):
    name = "stream-wide attention"
    order = 50

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return beit_attentions(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.add_kwargs("customized_pruners", self.pruners(model))
        prep.add_kwargs("in_channel_groups", {m: m.num_heads for m in found})
        prep.add_kwargs("out_channel_groups", {m: m.num_heads for m in found})
        prep.notes.append(f"{len(found)} attention layer(s) (BEiT) take their head size from the residual stream: "
                          "each is pruned as a unit, the stream losing the same positions in every head of q, k "
                          "and v, so the head count stays with smaller heads")
        prep.fixes.append(lambda m: self.record_units(m, prep.units) or [])

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", stand_in) for m in beit_attentions(model)]

    def pruners(self, model: nn.Module) -> dict:
        return {type(m): StreamAttentionPruner() for m in beit_attentions(model)}

    def cuts_evenly(self, group) -> bool:
        return any(_kind(dep.target.module) == BEIT for dep, _ in group)

    def record_units(self, model: nn.Module, units: dict) -> None:
        record_units(beit_attentions(model), units)
