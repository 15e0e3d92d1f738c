"""How PruneLab builds torch-pruning's dependency graph for blocks it cannot trace as they are.

torch-pruning (1.6.1) traces channels through every tensor operation. Two families defeat it:

Swin (torchvision v1 and v2, timm) works on channels-last tensors (batch, height, width, channels)
and slices and reshapes them to form windows and to merge patches; torch-pruning reads a slice of
dimension 1 of a 4-D tensor as a slice of channels, and its index lists through the window reshapes
grow without bound (a MemoryError at 10 GiB on swin_t). So those blocks are pruned as units:
- torchvision's `ShiftedWindowAttention(V2)`: its input channels (the residual stream) are also
  removed from q, k, v and the projection's input, because the attention reshapes its qkv output with
  the width of its input. The stream is cut in `num_heads` equal chunks, the same positions in each
  chunk, so every head keeps the same size (the head count stays). The score scale 1/sqrt(head size)
  follows the new size in v1; v2's cosine attention has no such scale. timm's `WindowAttention` has
  its own width: only its stream side moves.
- `PatchMerging(V2)`: its four concatenated 2×2 neighbours each lose the same input channels; its
  reduction's output channels are the next stage's stream.

ShuffleNet v2 interleaves the two halves of every block's output (a channel shuffle: a reshape that
torch-pruning's rule divides by zero on). No index rule follows a permutation through the pass-through
halves, so the stream between blocks is held (`held_layers`) and each branch's inner width, which
the shuffle never touches, is pruned.

While a dependency graph is built, those blocks run a stand-in forward (same output shape; Swin's
blocks pass channels straight through, ShuffleNet's leave out the shuffle) so torch-pruning sees plain
channels; the real forward is back before anything else runs.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F


def _kinds() -> tuple[tuple[type, ...], tuple[type, ...]]:
    from torchvision.models.swin_transformer import (PatchMerging, PatchMergingV2, ShiftedWindowAttention,
                                                     ShiftedWindowAttentionV2)

    return (ShiftedWindowAttention, ShiftedWindowAttentionV2), (PatchMerging, PatchMergingV2)


TIMM_SWIN = "timm.models.swin_transformer"


def _is_timm(module: nn.Module, name: str) -> bool:
    return type(module).__module__ == TIMM_SWIN and type(module).__name__ == name


def window_blocks(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(attention layers, patch-merging layers) of a torchvision or timm Swin model; empty otherwise."""
    attentions, mergings = _kinds()
    return ([m for m in model.modules() if isinstance(m, attentions) or _is_timm(m, "WindowAttention")],
            [m for m in model.modules() if isinstance(m, mergings) or _is_timm(m, "PatchMerging")])


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


def shuffle_blocks(model: nn.Module) -> list[nn.Module]:
    """torchvision ShuffleNet v2's blocks (empty for other models)."""
    return [m for m in model.modules()
            if type(m).__name__ == "InvertedResidual" and type(m).__module__ == "torchvision.models.shufflenetv2"]


def held_layers(model: nn.Module) -> list[nn.Module]:
    """The layers that write ShuffleNet's stream (the first convolution, each downsampling branch and
    each block's last convolution), which pruning leaves whole."""
    blocks = shuffle_blocks(model)
    if not blocks:
        return []
    held = [model.conv1[0]] if isinstance(getattr(model, "conv1", None), nn.Sequential) else []
    for block in blocks:
        if len(block.branch1):
            held += [block.branch1[0], block.branch1[2]]  # depthwise on the stream, then its projection
        held.append(block.branch2[5])
    return held


def _shuffle_stand_in(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if block.stride == 1:
        x1, x2 = x.chunk(2, dim=1)
        return torch.cat((x1, block.branch2(x2)), dim=1)
    return torch.cat((block.branch1(x), block.branch2(x)), dim=1)


@contextmanager
def tracing(model: nn.Module) -> Iterator[None]:
    """Swin's window blocks and ShuffleNet's blocks run their stand-in forward (instance attributes, so
    nothing outside the model changes)."""
    attentions, mergings = window_blocks(model)
    patched = [(m, "forward", _attention_stand_in) for m in attentions] + \
        [(m, "forward", _merging_stand_in) for m in mergings] + \
        [(m, "_attn", _timm_block_stand_in) for m in model.modules() if _is_timm(m, "SwinTransformerBlock")] + \
        [(m, "forward", _shuffle_stand_in) for m in shuffle_blocks(model)]
    saved = [(module, method, module.__dict__.get(method)) for module, method, _ in patched]
    try:
        for module, method, stand_in in patched:
            setattr(module, method, stand_in.__get__(module))
        yield
    finally:
        for module, method, before in saved:  # an instance attribute the model had is put back
            if before is None:
                module.__dict__.pop(method, None)
            else:
                module.__dict__[method] = before


def _pruners() -> dict:
    import torch_pruning as tp

    attentions, mergings = _kinds()
    merging_v2 = mergings[1]

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

    class PatchMergingPruner(tp.BasePruningFunc):
        def prune_in_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
            neighbours = [i + k * layer.dim for k in range(4) for i in idxs]  # the 2×2 patches concatenated
            tp.prune_linear_in_channels(layer.reduction, neighbours)
            if not isinstance(layer, merging_v2):  # v1 normalises the concatenation, v2 the reduction's output
                tp.prune_layernorm_out_channels(layer.norm, neighbours)
            layer.dim -= len(idxs)
            return layer

        def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
            tp.prune_linear_out_channels(layer.reduction, idxs)
            if isinstance(layer, merging_v2):
                tp.prune_layernorm_out_channels(layer.norm, idxs)
            return layer

        def get_in_channels(self, layer: nn.Module) -> int:
            return layer.dim

        def get_out_channels(self, layer: nn.Module) -> int:
            return layer.reduction.out_features

    class TimmWindowAttentionPruner(WindowAttentionPruner):
        """timm's attention has its own width (q, k and v reshape to heads of any size): only the
        stream's side of it moves."""

        def prune_in_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
            tp.prune_linear_in_channels(layer.qkv, idxs)
            return layer

    attention, merging = WindowAttentionPruner(), PatchMergingPruner()
    kinds = {**{kind: attention for kind in attentions}, **{kind: merging for kind in mergings}}
    if TIMM_SWIN in sys.modules:
        timm_swin = sys.modules[TIMM_SWIN]
        kinds.update({timm_swin.WindowAttention: TimmWindowAttentionPruner(), timm_swin.PatchMerging: merging})
    return kinds


def customized_pruners(model: nn.Module) -> dict:
    """torch-pruning's `customized_pruners` for this model (empty unless it is a Swin)."""
    attentions, mergings = window_blocks(model)
    return _pruners() if attentions or mergings else {}


def cuts_heads(group) -> bool:
    """Whether a torch-pruning group runs through a torchvision window attention, whose stream must lose
    the same positions in every head (only the pruner's channel groups keep that; a cut of arbitrary
    channels would shift the head boundaries)."""
    attentions = _kinds()[0]
    return any(isinstance(dep.target.module, attentions) for dep, _ in group)


def head_chunks(model: nn.Module) -> dict[nn.Module, int]:
    """Attention layer -> its head count: the channel groups that keep every head the same size
    (torchvision's, whose heads take their size from the stream)."""
    return {m: m.num_heads for m in window_blocks(model)[0] if type(m).__module__ != TIMM_SWIN}


def record_units(model: nn.Module, units: dict) -> None:
    """The rounding unit of each Linear inside a pruned window block, from the block's own unit (for
    the share check): qkv moves three units at a time; the relative-position MLP of v2 is not pruned."""
    attentions, mergings = window_blocks(model)
    for attn in attentions:
        if type(attn).__module__ == TIMM_SWIN:
            units[attn.qkv] = attn.qkv.out_features  # its own width stays
            if attn in units:
                units[attn.proj] = units[attn]
        elif attn in units:
            units[attn.qkv], units[attn.proj] = 3 * units[attn], units[attn]
        for layer in getattr(attn, "cpb_mlp", nn.Sequential()).modules():
            if isinstance(layer, nn.Linear):
                units[layer] = layer.out_features
    for merging in mergings:
        if merging in units:
            units[merging.reduction] = units[merging]


def dependency_graph(model: nn.Module, example: torch.Tensor):
    """torch-pruning's dependency graph of `model`, with the stand-ins above."""
    import torch_pruning as tp

    with tracing(model):
        return tp.DependencyGraph().build_dependency(model, example_inputs=example,
                                                     customized_pruners=customized_pruners(model))
