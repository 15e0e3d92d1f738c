"""timm's InceptionNeXt (InceptionDWConv2d): the stream is split by sizes recorded at construction
(`split_indexes`: an identity part, then three depthwise convolutions), the parts concatenated again.

torch-pruning left the recorded sizes as built (`split_with_sizes expects split_sizes to sum exactly to
32`), and it matched the split's outputs to its parts in the order its trace met them, which is reversed:
the stream's channel 10 (the first of `dwconv_hw`) cut `dwconv_h`'s first channel and the norm's channel 30.
So the token mixer is pruned as one unit (channel i in, channel i out), by its own pruner: a stream
channel leaves the part it falls in, that part's convolution loses that channel, and `split_indexes`
follows at once. Stream channels are ranked within each part, so each part keeps about the requested
share (as the share check expects) and never loses all of its channels. While a graph is traced the mixer
passes its channels straight through.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from engine.families import Family, register_family


def inception_mixers(model: nn.Module) -> list[nn.Module]:
    """Token mixers that split the stream by recorded sizes into an identity part and three convolutions."""
    return [m for m in model.modules() if type(m).__module__ == "timm.models.inception_next"
            and type(m).__name__ == "InceptionDWConv2d" and len(getattr(m, "split_indexes", ())) == 4]


def _convs(mixer: nn.Module) -> list[nn.Conv2d]:
    """The convolutions of the split's parts 1 to 3 (part 0 passes through)."""
    return [mixer.dwconv_hw, mixer.dwconv_w, mixer.dwconv_h]


def _stand_in(mixer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x * 1.0  # one node, channel i in, channel i out


class InceptionMixerPruner(tp.BasePruningFunc):
    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        sizes, start = list(layer.split_indexes), 0
        for part, size in enumerate(layer.split_indexes):
            local = sorted(i - start for i in idxs if start <= i < start + size)
            if local and part > 0:
                tp.prune_depthwise_conv_out_channels(_convs(layer)[part - 1], local)
            sizes[part] -= len(local)
            start += size
        layer.split_indexes = tuple(sizes)
        return layer

    prune_in_channels = prune_out_channels  # channel i in is channel i out

    def get_out_channels(self, layer: nn.Module) -> int:
        return sum(layer.split_indexes)

    get_in_channels = get_out_channels


def part_scores(imp: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Each channel's rank within its part as a fraction of the part (the lowest first), so the lowest n of
    the stream come from every part in proportion."""
    out = torch.empty(len(imp), dtype=torch.float64)
    start = 0
    for size in sizes:
        ranks = torch.empty(size, dtype=torch.float64)
        ranks[imp[start:start + size].argsort()] = torch.arange(size, dtype=torch.float64)
        out[start:start + size] = (ranks + 0.5) / size
        start += size
    return out.to(imp.dtype)


@register_family
class InceptionNeXt(Family):
    name = "InceptionNeXt"

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return inception_mixers(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.notes.append(f"InceptionNeXt: {len(found)} token mixer(s) split the stream by recorded sizes: they are "
                          "pruned as units (each part keeps its own channels, ranked within the part, and the sizes "
                          "follow)")

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _stand_in) for m in inception_mixers(model)]

    def pruners(self, model: nn.Module) -> dict:
        return {type(m): InceptionMixerPruner() for m in inception_mixers(model)}

    def scores(self, pruner, prep, group, imp: torch.Tensor) -> torch.Tensor:
        mixers = {id(m) for m in prep.found[self.name]}
        mixer = next((dep.target.module for dep, _ in group if id(dep.target.module) in mixers), None)
        if mixer is None or sum(mixer.split_indexes) != len(imp):
            return imp
        return part_scores(imp, list(mixer.split_indexes))
