"""Selective-kernel convolutions (timm's SelectiveKernel, in SKResNet): the input is split by a recorded
width between the paths' convolutions, their outputs are stacked and weighted by an attention whose last
layer gives one weight per path and channel. The pruned copy failed (`expected input[1, 32, 16, 16] to have
24 channels`): torch-pruning cut the split's parts unevenly and left the recorded widths.

Such a convolution is pruned as a unit: an input channel leaves its own path's convolution (the parts
stay equal: the input is cut in `num_paths` chunks), an output channel leaves every path's convolution and
norm, the attention's first layer's input and its last layer's output in every path. The attention's own
width stays. While a graph is traced the unit runs a stand-in (a 1×1 convolution of its widths and stride).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp
from torch_pruning import ops

from engine.families import Family, register_family


def selective_kernels(model: nn.Module) -> list[nn.Module]:
    """timm's SelectiveKernel layers whose paths are plain convolutions (one group) with a norm."""
    return [m for m in model.modules() if type(m).__name__ == "SelectiveKernel"
            and type(m).__module__ == "timm.layers.selective_kernel"
            and all(isinstance(getattr(p, "conv", None), nn.Conv2d) and p.conv.groups == 1
                    and isinstance(getattr(p, "bn", None), nn.BatchNorm2d) for p in m.paths)]


def _stand_in(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    weight = torch.zeros(module.out_channels, module.in_channels, 1, 1, dtype=x.dtype, device=x.device)
    return F.conv2d(x, weight, stride=module.paths[0].conv.stride)


class SelectiveKernelPruner(tp.BasePruningFunc):
    def prune_in_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        if layer.split_input:
            part = layer.in_channels // layer.num_paths
            for p, path in enumerate(layer.paths):
                tp.prune_conv_in_channels(path.conv, [i - p * part for i in idxs if p * part <= i < (p + 1) * part])
        else:
            for path in layer.paths:
                tp.prune_conv_in_channels(path.conv, idxs)
        layer.in_channels -= len(idxs)
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        for path in layer.paths:
            tp.prune_conv_out_channels(path.conv, idxs)
            tp.prune_batchnorm_out_channels(path.bn, idxs)
        tp.prune_conv_in_channels(layer.attn.fc_reduce, idxs)
        tp.prune_conv_out_channels(layer.attn.fc_select,
                                   [i + p * layer.out_channels for p in range(layer.num_paths) for i in idxs])
        layer.out_channels -= len(idxs)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.in_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.out_channels


@register_family
class SelectiveKernels(Family):
    name = "selective kernels"

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return selective_kernels(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.add_kwargs("in_channel_groups", {m: m.num_paths for m in found if m.split_input})
        roots = prep.pruner_kwargs.get("root_module_types") or [ops.TORCH_CONV, ops.TORCH_LINEAR, ops.TORCH_LSTM]
        prep.pruner_kwargs["root_module_types"] = [*roots, type(found[0])]  # its outputs start groups too
        inner = [layer for m in found for layer in (m.attn.fc_reduce, m.attn.fc_select)]
        prep.held.extend(inner)
        prep.notes.append(f"{len(found)} selective-kernel convolution(s) (SKResNet) are pruned as units: an input "
                          "channel leaves its own path, an output channel every path and the attention's weights "
                          "for it; the attention keeps its width")
        prep.fixes.append(lambda m: self.record_units(m, prep.units) or [])

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _stand_in) for m in selective_kernels(model)]

    def pruners(self, model: nn.Module) -> dict:
        return {type(m): SelectiveKernelPruner() for m in selective_kernels(model)}

    def cuts_evenly(self, group) -> bool:
        return any(type(dep.target.module).__name__ == "SelectiveKernel" and dep.target.module.split_input
                   and getattr(dep.handler, "__name__", "") == "prune_in_channels" for dep, _ in group)

    def record_units(self, model: nn.Module, units: dict) -> None:
        for m in selective_kernels(model):
            if m in units:
                for path in m.paths:
                    units[path.conv] = units[m]
