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

ResNeSt (timm's `SplitAttn`) runs its convolution's `radix` output splits side by side
(channel r·C + c is split r of channel c), sums them for the attention, and softmaxes the attention
across splits through a view and a transpose; torch-pruning's index lists through those reshapes are
wrong (channel 0 maps to 16 channels of fc2). Each split attention is pruned as a unit: output channel
c goes from every split of the convolution, its BatchNorm and fc2, and from fc1's input; the
convolution is grouped by split, so its input loses the same positions in every split (its
`in_channel_groups`). Only radix > 1 with cardinality 1 and a stride-1 convolution that keeps the
size (every timm ResNeSt but resnest50d_4s2x40d and resnest50d_1s4x24d) is a unit; with any other
split attention in the model, none is.

While a dependency graph is built, those blocks run a stand-in forward (same output shape; Swin's
blocks pass channels straight through, ShuffleNet's leave out the shuffle, ResNeSt's pass channels
through, padded or cropped to its output) so torch-pruning sees plain channels; the real forward is
back before anything else runs.
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


TIMM_SPLIT = "timm.layers.split_attn"


def split_attentions(model: nn.Module) -> list[nn.Module]:
    """timm's split attention layers (ResNeSt) pruned as units: all of them when each is of the kind
    `_plain_split` accepts, none otherwise (torch-pruning's customized pruners go by type)."""
    splits = [m for m in model.modules() if type(m).__module__ == TIMM_SPLIT and type(m).__name__ == "SplitAttn"]
    return splits if splits and all(_plain_split(m) for m in splits) else []


def _plain_split(m: nn.Module) -> bool:
    """radix > 1, cardinality 1 (RadixSoftmax's transpose then keeps channel c of split r at r·C + c),
    and a stride-1 convolution that keeps the size, so the stand-in's output has the real one's shape."""
    conv, radix = m.conv, m.radix
    return (radix > 1 and m.rsoftmax.cardinality == 1 and conv.groups == radix and m.fc1.groups == m.fc2.groups == 1
            and conv.out_channels % radix == 0 and conv.in_channels % radix == 0 and isinstance(conv.padding, tuple)
            and all(s == 1 for s in conv.stride)
            and all(2 * p == d * (k - 1) for p, d, k in zip(conv.padding, conv.dilation, conv.kernel_size))
            and isinstance(m.bn0, (nn.Identity, nn.modules.batchnorm._BatchNorm)))


def _split_stand_in(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    extra = module.conv.out_channels // module.radix - x.shape[1]
    if not extra:
        return x * 1.0  # one node, channels in == channels out, no reshapes
    return F.pad(x, (0, 0, 0, 0, 0, extra))  # a pruned unit's sides differ: pad or crop, channel i stays i


def split_chunks(model: nn.Module) -> dict[nn.Module, int]:
    """Split attention layer -> its radix: the input channel groups (its convolution is grouped by split)."""
    return {m: m.radix for m in split_attentions(model)}


def root_module_types(model: nn.Module) -> list[type] | None:
    """torch-pruning's group roots with the split attention unit added (its output channels are read only
    by the next convolution's input, so no group of the default roots prunes them); None when there is none."""
    splits = split_attentions(model)
    if not splits:
        return None
    from torch_pruning import ops

    return [ops.TORCH_CONV, ops.TORCH_LINEAR, ops.TORCH_LSTM, type(splits[0])]


@contextmanager
def tracing(model: nn.Module) -> Iterator[None]:
    """Swin's window blocks, ShuffleNet's blocks and ResNeSt's split attention units run their stand-in
    forward (instance attributes, so nothing outside the model changes)."""
    attentions, mergings = window_blocks(model)
    patched = [(m, "forward", _attention_stand_in) for m in attentions] + \
        [(m, "forward", _merging_stand_in) for m in mergings] + \
        [(m, "_attn", _timm_block_stand_in) for m in model.modules() if _is_timm(m, "SwinTransformerBlock")] + \
        [(m, "forward", _shuffle_stand_in) for m in shuffle_blocks(model)] + \
        [(m, "forward", _split_stand_in) for m in split_attentions(model)]
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


def _split_pruner():
    import torch_pruning as tp

    from engine.errors import UserError

    class SplitAttnPruner(tp.BasePruningFunc):
        """Unit channel c is channel c of every split: r·C + c in the convolution, its BatchNorm and fc2
        (RadixSoftmax with cardinality 1 orders fc2's output as (split, channel)), c in fc1's input."""

        def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
            width = self.get_out_channels(layer)
            rows = [r * width + c for r in range(layer.radix) for c in idxs]
            tp.prune_conv_out_channels(layer.conv, rows)
            if isinstance(layer.bn0, nn.modules.batchnorm._BatchNorm):
                tp.prune_batchnorm_out_channels(layer.bn0, rows)
            tp.prune_conv_in_channels(layer.fc1, idxs)
            tp.prune_conv_out_channels(layer.fc2, rows)
            return layer

        def prune_in_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
            # Each split's filters read one chunk of the input (groups = radix): a channel can go only
            # from the same position in every chunk, so the chunks keep one size.
            conv, radix = layer.conv, layer.radix
            chunk = conv.in_channels // radix
            local = sorted({i % chunk for i in idxs})
            if sorted(idxs) != [p + r * chunk for r in range(radix) for p in local]:
                raise UserError(f"a ResNeSt split attention layer reads its input in {radix} chunks of {chunk} "
                                "channels, which must lose the same positions in every chunk; prune its input "
                                "with a run of a method, not with hand-picked channels")
            gone = set(local)
            conv.weight = self._prune_parameter_and_grad(conv.weight, [p for p in range(chunk) if p not in gone], 1)
            conv.in_channels -= len(idxs)
            return layer

        def get_in_channels(self, layer: nn.Module) -> int:
            return layer.conv.in_channels

        def get_out_channels(self, layer: nn.Module) -> int:
            return layer.conv.out_channels // layer.radix

        def get_in_channel_groups(self, layer: nn.Module) -> int:
            return layer.radix  # torch-pruning records it as the unit's in_channel_groups itself, too

    return SplitAttnPruner()


def customized_pruners(model: nn.Module) -> dict:
    """torch-pruning's `customized_pruners` for this model (empty unless it is a Swin or a ResNeSt)."""
    attentions, mergings = window_blocks(model)
    splits = split_attentions(model)
    return {**(_pruners() if attentions or mergings else {}),
            **({type(splits[0]): _split_pruner()} if splits else {})}


def cuts_heads(group) -> bool:
    """Whether a torch-pruning group runs through a torchvision window attention, whose stream must lose
    the same positions in every head, or into a ResNeSt split attention's input, which must lose the same
    positions in every split (only the pruner's channel groups keep that; a cut of arbitrary channels
    would shift the head boundaries, or leave the splits' chunks unequal)."""
    attentions = _kinds()[0]
    return any(isinstance(dep.target.module, attentions) or _split_input(dep) for dep, _ in group)


def _split_input(dep) -> bool:
    module = dep.target.module
    return type(module).__module__ == TIMM_SPLIT and type(module).__name__ == "SplitAttn" and \
        getattr(dep.handler, "__name__", "") == "prune_in_channels"


def head_chunks(model: nn.Module) -> dict[nn.Module, int]:
    """Attention layer -> its head count: the channel groups that keep every head the same size
    (torchvision's, whose heads take their size from the stream)."""
    return {m: m.num_heads for m in window_blocks(model)[0] if type(m).__module__ != TIMM_SWIN}


def record_units(model: nn.Module, units: dict) -> None:
    """The rounding unit of each layer inside a pruned window block or split attention, from the unit's
    own (for the share check): qkv moves three units at a time, a split attention's convolution and fc2
    `radix`; the relative-position MLP of Swin v2 and a split attention's fc1 output are not pruned."""
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
    for split in split_attentions(model):  # fc1's output (the attention's own width) is not pruned
        units[split.fc1] = split.fc1.out_channels
        if split in units:  # the convolution and fc2 lose a unit channel from every split
            units[split.conv] = units[split.fc2] = split.radix * units[split]


def dependency_graph(model: nn.Module, example: torch.Tensor):
    """torch-pruning's dependency graph of `model`, with the stand-ins above."""
    import torch_pruning as tp

    with tracing(model):
        return tp.DependencyGraph().build_dependency(model, example_inputs=example,
                                                     customized_pruners=customized_pruners(model))
