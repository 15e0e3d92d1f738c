"""ResNeSt (timm's `SplitAttn`): each split attention pruned as one unit.

The unit runs its convolution's `radix` output splits side by side (channel r·C + c is split r of channel
c), sums them for the attention, and softmaxes the attention across splits through a view and a
transpose; torch-pruning's index lists through those reshapes are wrong (channel 0 maps to 16 channels of
fc2). Output channel c goes from every split of the convolution, its BatchNorm and fc2, and from fc1's
input; the convolution is grouped by split, so its input loses the same positions in every split (its
`in_channel_groups`). The unit is added to torch-pruning's group roots (`root_module_types`): its output
channels are read only by the next convolution's input, so no group of the default roots prunes them.
Only radix > 1 with cardinality 1 and a stride-1 convolution that keeps the size (every timm ResNeSt but
resnest50d_4s2x40d and resnest50d_1s4x24d) is a unit; with any other split attention in the model, none
is. While a graph is traced the unit passes channels through, padded or cropped to its output.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp
from torch_pruning import ops

from engine import tp_compat
from engine.errors import UserError
from engine.families import Family, register_family

TIMM_SPLIT = "timm.layers.split_attn"


def _is_split(module) -> bool:
    return type(module).__module__ == TIMM_SPLIT and type(module).__name__ == "SplitAttn"


def split_attentions(model: nn.Module) -> list[nn.Module]:
    """timm's split attention layers (ResNeSt) pruned as units: all of them when each is of the kind
    `_plain_split` accepts, none otherwise (torch-pruning's customized pruners go by type)."""
    splits = [m for m in model.modules() if _is_split(m)]
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
    """torch-pruning's group roots with the split attention unit added; None when there is none."""
    splits = split_attentions(model)
    if not splits:
        return None
    return [ops.TORCH_CONV, ops.TORCH_LINEAR, ops.TORCH_LSTM, type(splits[0])]


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
        conv.weight = tp_compat.select_parameter(self, conv.weight, [p for p in range(chunk) if p not in gone], 1)
        conv.in_channels -= len(idxs)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.conv.in_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.conv.out_channels // layer.radix

    def get_in_channel_groups(self, layer: nn.Module) -> int:
        return layer.radix  # torch-pruning records it as the unit's in_channel_groups itself, too


@register_family
class ResNeSt(Family):
    name = "ResNeSt"
    order = 60

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return split_attentions(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.add_kwargs("in_channel_groups", split_chunks(model))
        prep.pruner_kwargs["root_module_types"] = root_module_types(model)
        prep.units.update(dict.fromkeys(found, round_to or 1))  # the unit's own rounding; record_units spreads it
        prep.notes.append(f"ResNeSt: {len(found)} split attention layer(s) are pruned as units: a channel goes from "
                          f"all {found[0].radix} splits of the convolution, its BatchNorm and fc2 at once, and the "
                          "input loses the same channels in every split (the convolution is grouped by split); the "
                          "attention's own width (fc1's output) stays")
        prep.fixes.append(lambda m: self.record_units(m, prep.units) or [])

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _split_stand_in) for m in split_attentions(model)]

    def pruners(self, model: nn.Module) -> dict:
        splits = split_attentions(model)
        return {type(splits[0]): SplitAttnPruner()} if splits else {}

    def cuts_evenly(self, group) -> bool:
        """A group into a split attention's input must lose the same positions in every split."""
        return any(_is_split(dep.target.module) and getattr(dep.handler, "__name__", "") == "prune_in_channels"
                   for dep, _ in group)

    def record_units(self, model: nn.Module, units: dict) -> None:
        """The convolution and fc2 move `radix` unit channels at a time; fc1's output is not pruned."""
        for split in split_attentions(model):
            units[split.fc1] = split.fc1.out_channels
            if split in units:
                units[split.conv] = units[split.fc2] = split.radix * units[split]
