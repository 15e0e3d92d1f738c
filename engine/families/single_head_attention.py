"""timm's SHViT (SHSA, single-head attention on part of the stream): the stream is split at a width recorded
at construction (`pdim`); the first part goes through a norm and a single-head attention reshaped with
`pdim`, the rest passes by, and `proj` reads both, concatenated.

torch-pruning could not trace the attention's reshapes (ZeroDivisionError). While a graph is traced the
attention passes its channels straight through, and it is pruned as a unit by its own pruner: its input
loses stream channels from `proj`'s columns of the part passed by (and `dim` follows), its output from
`proj`'s outputs. The first `pdim` stream channels, which the attention reads, are held (scored above every
other channel, so a cut never reaches them); the rest of the stream loses the requested share.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch_pruning as tp

from engine.families import Family, register_family


def single_head_attentions(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if type(m).__module__ == "timm.models.shvit" and type(m).__name__ == "SHSA"
            and isinstance(getattr(m, "pdim", None), int) and isinstance(getattr(m, "dim", None), int)]


def _stand_in(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x * 1.0  # one node, the stream's channels in and out


class SingleHeadAttentionPruner(tp.BasePruningFunc):
    def prune_in_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        if any(i < layer.pdim for i in idxs):  # the scores keep them: reaching here is a bug
            raise RuntimeError(f"SHSA: a cut of its attention's input channels (the first {layer.pdim})")
        tp.prune_conv_in_channels(layer.proj[1].c, sorted(idxs))
        layer.dim -= len(idxs)
        return layer

    def manual_refusal(self, layer: nn.Module, handler: str, idxs: list) -> str | None:
        """Why ticked channels cannot go (engine.pruners.ManualPruner asks before the baseline), or None."""
        if handler == "prune_in_channels" and any(i < layer.pdim for i in idxs):
            return f"the first {layer.pdim} stream channels, which SHViT's single-head attention reads"
        return None

    def prune_out_channels(self, layer: nn.Module, idxs: list) -> nn.Module:
        tp.prune_conv_out_channels(layer.proj[1].c, idxs)
        tp.prune_batchnorm_out_channels(layer.proj[1].bn, idxs)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.dim

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.proj[1].c.out_channels


@register_family
class SingleHeadAttention(Family):
    name = "single-head attention"

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return single_head_attentions(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.hold(m.qkv.c for m in found)
        prep.notes.append(f"SHViT: {len(found)} single-head attention(s) read the first channels of the stream "
                          "(a width recorded at construction): those channels and the attention are not pruned, the "
                          "rest of the stream is")

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _stand_in) for m in single_head_attentions(model)]

    def pruners(self, model: nn.Module) -> dict:
        return {type(m): SingleHeadAttentionPruner() for m in single_head_attentions(model)}

    def scores(self, pruner, prep, group, imp: torch.Tensor) -> torch.Tensor:
        found = {id(m): m for m in prep.found[self.name]}
        attn = next((found[id(dep.target.module)] for dep, _ in group if id(dep.target.module) in found), None)
        if attn is None or len(imp) != attn.dim:
            return imp
        imp = imp.clone()
        imp[:attn.pdim] = float("inf")
        return imp
