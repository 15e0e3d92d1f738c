"""Swin (torchvision v1 and v2, timm): window attention and patch merging pruned as units.

Swin works on channels-last tensors (batch, height, width, channels) and slices and reshapes them to form
windows and to merge patches; torch-pruning reads a slice of dimension 1 of a 4-D tensor as a slice of
channels, and its index lists through the window reshapes grow without bound (a MemoryError at 10 GiB on
swin_t). So those blocks are pruned as units:
- torchvision's `ShiftedWindowAttention(V2)`: its input channels (the residual stream) are also removed
  from q, k, v and the projection's input, because the attention reshapes its qkv output with the width
  of its input. The stream is cut in `num_heads` equal chunks, the same positions in each chunk, so every
  head keeps the same size (the head count stays). The score scale 1/sqrt(head size) follows the new
  size in v1; v2's cosine attention has no such scale. timm's v1 `WindowAttention` has its own width: only
  its stream side moves; timm's v2 one (and its "cr" kind's) is cut as torchvision's, its q and v biases
  with q and v (engine.families.stream_attention).
- `PatchMerging(V2)`: its four concatenated 2×2 neighbours each lose the same input channels; its
  reduction's output channels are the next stage's stream.
While a graph is traced the blocks run stand-ins (attention: channels straight through; merging: a 2×2
max pool padded to the reduction's width; timm's block: its attention without the window partition).
"""
from __future__ import annotations

import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp
from torchvision.models.swin_transformer import (PatchMerging, PatchMergingV2, ShiftedWindowAttention,
                                                 ShiftedWindowAttentionV2)

from engine.families import Family, register_family
from engine.families.stream_attention import StreamAttentionPruner

ATTENTIONS, MERGINGS = (ShiftedWindowAttention, ShiftedWindowAttentionV2), (PatchMerging, PatchMergingV2)
TIMM_SWIN, TIMM_SWIN_V2 = "timm.models.swin_transformer", "timm.models.swin_transformer_v2"
TIMM_SWIN_CR = "timm.models.swin_transformer_v2_cr"  # Swin v2 "continuous relative" (its norm before merging)


def _is_timm(module: nn.Module, name: str, version: str = TIMM_SWIN) -> bool:
    return type(module).__module__ == version and type(module).__name__ == name


def _is_timm_v2(module: nn.Module, name: str) -> bool:
    """timm's Swin v2 (or its "cr" kind) `name`: heads sized by the stream."""
    return _is_timm(module, name, TIMM_SWIN_V2) or _is_timm(module, {"WindowAttention": "WindowMultiHeadAttention"}
                                                             .get(name, name), TIMM_SWIN_CR)


def window_blocks(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(attention layers, patch-merging layers) of a torchvision or timm Swin model; empty otherwise."""
    return ([m for m in model.modules() if isinstance(m, ATTENTIONS) or _is_timm(m, "WindowAttention")
             or _is_timm_v2(m, "WindowAttention")],
            [m for m in model.modules() if isinstance(m, MERGINGS) or _is_timm(m, "PatchMerging")
             or _is_timm_v2(m, "PatchMerging")])


def head_chunks(model: nn.Module) -> dict[nn.Module, int]:
    """Attention layer -> its head count: the channel groups that keep every head the same size
    (torchvision's and timm's v2, whose heads take their size from the stream)."""
    return {m: m.num_heads for m in window_blocks(model)[0] if type(m).__module__ != TIMM_SWIN}


def _attention_stand_in(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x * 1.0  # one node, channels in == channels out, no reshapes


def _timm_block_stand_in(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return block.attn(x)  # timm partitions windows in the block, around its attention


def _merging_stand_in(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # Halve height and width without slicing them (a 2×2 max pool on channels-first), then pad (or, after
    # pruning, crop) to the reduction's output size, keeping channel i in position i: once stages are
    # rounded separately the output need not be a multiple of the input.
    y = F.max_pool2d(x.permute(0, 3, 1, 2), 2, ceil_mode=True).permute(0, 2, 3, 1)
    return F.pad(y, (0, module.reduction.out_features - y.shape[-1]))


class WindowAttentionPruner(tp.BasePruningFunc):
    def prune_in_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        width = layer.qkv.in_features
        tp.prune_linear_in_channels(layer.qkv, idxs)
        tp.prune_linear_out_channels(layer.qkv, [i + k * width for k in range(3) for i in idxs])  # q, k and v alike
        tp.prune_linear_in_channels(layer.proj, idxs)
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        tp.prune_linear_out_channels(layer.proj, idxs)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.qkv.in_features

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.proj.out_features


class TimmWindowAttentionPruner(WindowAttentionPruner):
    """timm's attention has its own width (q, k and v reshape to heads of any size): only the stream's
    side of it moves."""

    def prune_in_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        tp.prune_linear_in_channels(layer.qkv, idxs)
        return layer


def _norms_output(merging: nn.Module) -> bool:
    return isinstance(merging, PatchMergingV2) or _is_timm(merging, "PatchMerging", TIMM_SWIN_V2)


class PatchMergingPruner(tp.BasePruningFunc):
    def prune_in_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        dim = layer.reduction.in_features // 4  # timm's "cr" kind records no `dim`
        neighbours = [i + k * dim for k in range(4) for i in idxs]  # the 2×2 patches concatenated
        tp.prune_linear_in_channels(layer.reduction, neighbours)
        if not _norms_output(layer):  # v1 normalises the concatenation, v2 the reduction's output
            tp.prune_layernorm_out_channels(layer.norm, neighbours)
        if isinstance(getattr(layer, "dim", None), int):
            layer.dim -= len(idxs)
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        tp.prune_linear_out_channels(layer.reduction, idxs)
        if _norms_output(layer):
            tp.prune_layernorm_out_channels(layer.norm, idxs)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.reduction.in_features // 4

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.reduction.out_features


@register_family
class Swin(Family):
    name = "Swin"
    order = 50

    def detect(self, model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]] | None:
        attentions, mergings = window_blocks(model)
        return (attentions, mergings) if attentions else None

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        attentions, mergings = found
        chunks = head_chunks(model)
        prep.pruner_kwargs["in_channel_groups"] = dict(chunks)
        prep.pruner_kwargs["out_channel_groups"] = dict(chunks)
        prep.notes.append(f"Swin: {len(attentions)} window attention and {len(mergings)} patch-merging layer(s) are "
                          "pruned as units; the residual stream keeps the same channels in q, k and v, removed "
                          "equally from every head, so each stage keeps its head count with smaller heads")
        prep.fixes.append(lambda m: self.record_units(m, prep.units) or [])

    def stand_ins(self, model: nn.Module) -> list:
        attentions, mergings = window_blocks(model)
        return ([(m, "forward", _attention_stand_in) for m in attentions]
                + [(m, "forward", _merging_stand_in) for m in mergings]
                + [(m, "_attn", _timm_block_stand_in) for m in model.modules()
                   if _is_timm(m, "SwinTransformerBlock") or _is_timm_v2(m, "SwinTransformerV2Block")]
                + [(m, "_shifted_window_attn", _timm_block_stand_in) for m in model.modules()
                   if _is_timm(m, "SwinTransformerV2CrBlock", TIMM_SWIN_CR)])

    def pruners(self, model: nn.Module) -> dict:
        attentions, mergings = window_blocks(model)
        if not (attentions or mergings):
            return {}
        attention, merging = WindowAttentionPruner(), PatchMergingPruner()
        kinds = {**{kind: attention for kind in ATTENTIONS}, **{kind: merging for kind in MERGINGS}}
        if TIMM_SWIN in sys.modules:
            timm_swin = sys.modules[TIMM_SWIN]
            kinds.update({timm_swin.WindowAttention: TimmWindowAttentionPruner(), timm_swin.PatchMerging: merging})
        if TIMM_SWIN_V2 in sys.modules:  # its heads take their size from the stream, and its qkv has q and v biases
            timm_v2 = sys.modules[TIMM_SWIN_V2]
            kinds.update({timm_v2.WindowAttention: StreamAttentionPruner(), timm_v2.PatchMerging: merging})
        if TIMM_SWIN_CR in sys.modules:
            timm_cr = sys.modules[TIMM_SWIN_CR]
            kinds.update({timm_cr.WindowMultiHeadAttention: StreamAttentionPruner(), timm_cr.PatchMerging: merging})
        return kinds

    def cuts_evenly(self, group) -> bool:
        return any(isinstance(dep.target.module, ATTENTIONS) or _is_timm_v2(dep.target.module, "WindowAttention")
                   for dep, _ in group)

    def record_units(self, model: nn.Module, units: dict) -> None:
        """qkv moves three units at a time; the relative-position MLP of Swin v2 is not pruned."""
        attentions, mergings = window_blocks(model)
        for attn in attentions:
            if type(attn).__module__ == TIMM_SWIN:
                units[attn.qkv] = attn.qkv.out_features  # its own width stays
                if attn in units:
                    units[attn.proj] = units[attn]
            elif attn in units:
                units[attn.qkv], units[attn.proj] = 3 * units[attn], units[attn]
            for layer in attn.modules():  # Swin v2's relative-position MLPs
                if isinstance(layer, nn.Linear) and layer is not attn.qkv and layer is not attn.proj:
                    units[layer] = layer.out_features
        for merging in mergings:
            if merging in units:
                units[merging.reduction] = units[merging]
