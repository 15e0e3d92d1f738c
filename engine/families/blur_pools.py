"""Anti-aliasing blur pools with a filter per channel (timm's BlurPool2d built with `channels`, in TResNet):
the forward convolves each channel with its own row of the `filt` buffer, grouped by the recorded channel
count, and torch-pruning does not know the buffer (`Given groups=128, weight of size [128, 1, 3, 3],
expected input[1, 88, 18, 18] to have 128 channels`). Their own pruner cuts the filter's rows with the
channels and the recorded count; the blur is the same for every channel, so the kept ones are unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from engine.families import Family, register_family


def blur_pools(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__name__ == "BlurPool2d" and isinstance(getattr(m, "channels", None), int)
            and isinstance(getattr(m, "filt", None), torch.Tensor) and m.filt.shape[0] == m.channels]


class BlurPoolPruner(tp.BasePruningFunc):
    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        keep = [i for i in range(layer.channels) if i not in set(idxs)]
        layer.filt = layer.filt[keep].clone()  # a buffer, not a parameter
        layer.channels = len(keep)
        return layer

    prune_in_channels = prune_out_channels  # channel i in is channel i out

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.channels

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.channels


@register_family
class BlurPools(Family):
    name = "blur pools"

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return blur_pools(model)

    def pruners(self, model: nn.Module) -> dict:
        return {type(m): BlurPoolPruner() for m in blur_pools(model)}
