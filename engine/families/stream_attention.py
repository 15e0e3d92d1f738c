"""Attention whose heads take their size from the residual stream: q, k and v are projections of the
stream's width (fused or not) split in `num_heads` heads of width/num_heads each, and the output is
reshaped with the input's width. timm's BEiT and Swin v2 (the latter through engine.families.swin) build
their qkv bias in the forward from `q_bias`, a zero `k_bias` buffer and `v_bias` with F.linear on qkv's
weight, which torch-pruning's trace does not see as the qkv layer (the stream stayed whole, far above the
requested share); XCiT, CaiT, PVT-v2, Twins, DaViT, NesT, ConViT, VOLO, GC ViT, CrossViT and the
relative-position ViT reshape with the input's width, so a pruned stream broke them (they were refused). GC
ViT's q comes from a global query made of the stream's own channels, CrossViT's from the class token.

Such an attention is pruned as a unit: the stream is cut in `num_heads` equal chunks, the same positions
in each, and those positions leave the input of every projection reading the stream and each stream-wide
copy in its output (q, k and v alike, with their biases; PVT-v2's spatial reduction and its norm), and the
projection's input; the projection's output is the stream. Each head keeps its own channels with smaller
heads and the head count stays. A recorded score scale follows the new head size, as a fused attention's
does. While a graph is traced the attention runs a stand-in (channels straight through).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from engine import tp_compat
from engine.families import Family, register_family

FUSED = (("qkv", 3),)
SEPARATE = (("q", 1), ("k", 1), ("v", 1))
# (module, class) -> its layers reading the stream, each with how many stream-wide copies it outputs (0: an
# output of its own width; None: as many as it has)
READS = {
    ("timm.models.beit", "Attention"): FUSED,
    ("timm.models.swin_transformer_v2", "WindowAttention"): FUSED,  # pruned by engine.families.swin
    ("timm.models.swin_transformer_v2_cr", "WindowMultiHeadAttention"): FUSED,  # pruned by engine.families.swin
    ("timm.models.xcit", "XCA"): FUSED,
    ("timm.models.cait", "TalkingHeadAttn"): FUSED,
    ("timm.models.cait", "ClassAttn"): SEPARATE,  # CaiT's and XCiT's
    ("timm.models.pvt_v2", "Attention"): (("q", 1), ("kv", 2), ("sr", 1)),
    ("timm.models.twins", "GlobalSubSampleAttn"): (("q", 1), ("kv", 2), ("sr", 1)),
    ("timm.models.twins", "LocallyGroupedAttn"): FUSED,
    ("timm.models.davit", "WindowAttention"): FUSED,
    ("timm.models.davit", "ChannelAttention"): FUSED,
    ("timm.models.nest", "Attention"): FUSED,
    ("timm.models.vision_transformer_relpos", "RelPosAttention"): FUSED,
    ("timm.models.convit", "GPSA"): (("qk", 2), ("v", 1)),
    ("timm.models.convit", "MHSA"): FUSED,
    # VOLO's outlook attention: v is stream-wide, `attn` reads the stream into per-head kernel weights (0 copies)
    ("timm.models.volo", "OutlookAttention"): (("v", 1), ("attn", 0)),
    ("timm.models.volo", "Attention"): FUSED,
    # GC ViT: qkv (k and v alone where a global query from the stream's own channels takes q's place)
    ("timm.models.gcvit", "WindowAttentionGlobal"): (("qkv", None),),
    ("timm.models.crossvit", "CrossAttention"): (("wq", 1), ("wk", 1), ("wv", 1)),  # q from the class token
}
OWN = (("timm.models.swin_transformer_v2", "WindowAttention"),  # another family prunes these
       ("timm.models.swin_transformer_v2_cr", "WindowMultiHeadAttention"))


def _kind(module: nn.Module) -> tuple[str, str]:
    return type(module).__module__, type(module).__name__


def _reads(module: nn.Module) -> list[tuple[nn.Module, int]]:
    return [(layer, copies if copies is not None else layer.out_features // module.proj.in_features)
            for name, copies in READS.get(_kind(module), ()) if (layer := getattr(module, name, None)) is not None]


def _width(layer: nn.Module) -> int:
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def stream_wide(module: nn.Module) -> bool:
    """One such attention: projections of its input's width, heads that divide it, a proj back."""
    proj, heads, reads = getattr(module, "proj", None), getattr(module, "num_heads", None), _reads(module)
    if not (reads and isinstance(proj, nn.Linear) and isinstance(heads, int) and proj.in_features % heads == 0):
        return False
    width = proj.in_features
    return all(isinstance(layer, (nn.Linear, nn.Conv2d)) and _width(layer) == width
               and (copies == 0 or (layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels)
                    == copies * width)
               for layer, copies in reads)


def stream_attentions(model: nn.Module, own: bool = False) -> list[nn.Module]:
    """The stream-wide attentions of `model` (with `own`: less those another family prunes)."""
    return [m for m in model.modules() if _kind(m) in READS and stream_wide(m) and not (own and _kind(m) in OWN)]


def stand_in(module: nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    if type(module).__name__ == "ClassAttn":  # it answers for the class token only
        x = x[:, :1]
    query = args[0] if args else kwargs.get("q_global")
    if isinstance(query, torch.Tensor):  # GC ViT's global query (B, h, w, C): its channels are the stream's
        return x * 1.0 + query.mean(dim=(0, 1, 2))
    return x * 1.0  # one node, channels in == channels out, no reshapes


class StreamAttentionPruner(tp.BasePruningFunc):
    def prune_in_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        width = layer.proj.in_features
        keep = [i for i in range(width) if i not in set(idxs)]
        for part, copies in _reads(layer):
            copied = [i + k * width for k in range(copies) for i in idxs]  # q, k and v alike
            linear = isinstance(part, nn.Linear)
            (tp.prune_linear_in_channels if linear else tp.prune_conv_in_channels)(part, idxs)
            if copies:
                (tp.prune_linear_out_channels if linear else tp.prune_conv_out_channels)(part, copied)
        if isinstance(getattr(layer, "norm", None), nn.LayerNorm):  # PVT-v2's, after its spatial reduction
            tp.prune_layernorm_out_channels(layer.norm, idxs)
        tp.prune_linear_in_channels(layer.proj, idxs)
        for name in ("q_bias", "v_bias"):
            if isinstance(getattr(layer, name, None), nn.Parameter):
                setattr(layer, name, tp_compat.select_parameter(self, getattr(layer, name), keep, 0))
        if isinstance(getattr(layer, "k_bias", None), torch.Tensor):
            layer.k_bias = layer.k_bias[keep].clone()  # a buffer (zeros), not a parameter
        if isinstance(getattr(layer, "head_dim", None), int):
            layer.head_dim = len(keep) // layer.num_heads
        if isinstance(getattr(layer, "scale", None), float):
            layer.scale = (len(keep) // layer.num_heads) ** -0.5
        if isinstance(getattr(layer, "dim", None), int):
            layer.dim = len(keep)
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        tp.prune_linear_out_channels(layer.proj, idxs)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.proj.in_features

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.proj.out_features


def record_units(attentions: list[nn.Module], units: dict) -> None:
    """Each reading layer moves as many units at a time as it outputs copies, proj one; other layers inside
    keep their width."""
    for attn in attentions:
        if attn in units:
            units[attn.proj] = units[attn]
            for part, copies in _reads(attn):
                units[part] = copies * units[attn] or part.out_features
        reading = {id(part) for part, _ in _reads(attn)} | {id(attn.proj)}
        for layer in attn.modules():  # CaiT's talking heads mix heads: their width stays
            if isinstance(layer, nn.Linear) and id(layer) not in reading:
                units[layer] = layer.out_features


@register_family
class StreamAttention(Family):
    name = "stream-wide attention"
    order = 50

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return stream_attentions(model, own=True)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.add_kwargs("in_channel_groups", {m: m.num_heads for m in found})
        prep.add_kwargs("out_channel_groups", {m: m.num_heads for m in found})
        kinds = ", ".join(sorted({type(m).__name__ for m in found}))
        prep.notes.append(f"{len(found)} attention layer(s) ({kinds}) take their head size from the residual stream: "
                          "each is pruned as a unit, the stream losing the same positions in every head of q, k "
                          "and v, so the head count stays with smaller heads")
        prep.fixes.append(lambda m: self.record_units(m, prep.units) or [])

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", stand_in) for m in stream_attentions(model, own=True)]

    def pruners(self, model: nn.Module) -> dict:
        return {type(m): StreamAttentionPruner() for m in stream_attentions(model, own=True)}

    def cuts_evenly(self, group) -> bool:
        return any(_kind(dep.target.module) in READS for dep, _ in group)

    def record_units(self, model: nn.Module, units: dict) -> None:
        record_units(stream_attentions(model, own=True), units)
