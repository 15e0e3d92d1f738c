"""Attention whose head count and head size are recorded at construction and used in its reshapes, in
shapes torch-pruning cannot follow (timm's TinyViT, EfficientViT, XCiT, PVT-v2, EfficientFormer, LeViT,
EdgeNeXt): q, k and v split from one projection by recorded sizes, per-head biases or temperatures,
cascaded heads. torch-pruning indexed past the end (IndexError) or left a reshape that no longer fits.

Such an attention keeps its heads: every layer inside it keeps its output channels except its output
projection (`proj`), which writes to the residual stream, so the stream is pruned with the MLPs and
convolutions, and the attention's input layers lose the stream's channels from their inputs only
(LowFormer's depthwise convolution of the stream and its transposed-convolution projection, MobileNetV5's
strided depthwise convolutions before k and v and its output projection are on the stream's side too:
`STREAM_SIDE`). An
attention that reshapes with the width of its input (EdgeNeXt; PVT-v2's, XCiT's, CaiT's and
CrossViT's are pruned with the stream by engine.families.stream_attention) or splits its input between
heads (EfficientViT's cascaded heads) cannot follow a pruned stream: such a model is refused before any
work, naming the layer. Attentions the other families prune by heads (a fused qkv with a recorded
`num_heads` and `head_dim`, nn.MultiheadAttention, Swin's windows) are left to them. timm caches each
attention's bias table in eval mode (a tensor made from the parameters, which cannot be copied): the
caches are emptied after each step. LeViT subsamples its tokens by viewing them as an image and slicing
height and width, which torch-pruning reads as a slice of channels: while a graph is traced, that
subsampling runs a stand-in (a strided pooling of one pixel on channels-first, the same positions).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import UserError
from engine.families import Family, register_family
from engine.families.attention_heads import qkv_attentions
from engine.families.edgenext import split_transpose_blocks
from engine.families.rotary_attention import held_attentions
from engine.families.stream_attention import stream_attentions
from engine.families.swin import window_blocks

LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)
# (module, class) -> its layers besides `proj` on the residual stream's side: their stream channels go
STREAM_SIDE = {
    # LowFormer: a depthwise convolution of the stream before q, k, v, and the projection back (o_proj, or
    # the upsampling it is folded into) after
    ("timm.models.lowformer", "ConvAttention"): ("conv_proj", "o_proj", "upsampling"),
    # MobileNetV5's multi-query attention: strided depthwise convolutions of the stream before k and v
    ("timm.layers.attention2d", "MultiQueryAttention2d"): ("key.down_conv", "value.down_conv", "output.proj"),
}
# (module, class) -> why the attention cannot follow a pruned residual stream
STREAM_BOUND = {
    ("timm.models.pvt_v2", "Attention"): "reshapes its output with the width of its input",
    ("timm.models.xcit", "XCA"): "reshapes its output with the width of its input",
    ("timm.models.cait", "ClassAttn"): "reshapes its output with the width of its input",  # XCiT and CaiT
    ("timm.models.efficientvit_msra", "CascadedGroupAttention"): "splits its input channels between its heads",
}


def _heads(module: nn.Module) -> bool:
    return isinstance(getattr(module, "num_heads", None), int) and not isinstance(module, nn.MultiheadAttention)


def recorded_attentions(model: nn.Module) -> list[nn.Module]:
    """The innermost modules that record a head count (a block recording one around its attention is not
    one), less those another family prunes by heads."""
    handled = ({id(m) for m in qkv_attentions(model).values()} | {id(m) for m in window_blocks(model)[0]}
               | {id(m) for m in stream_attentions(model)} | {id(m) for m in held_attentions(model)}
               | {id(m.xca) for m in split_transpose_blocks(model)})
    found = []
    for module in model.modules():
        if not _heads(module) or id(module) in handled:
            continue
        if any(isinstance(getattr(inner, "num_heads", None), int) for inner in module.modules() if inner is not module):
            continue  # a block around an attention (torchvision's ViT records num_heads around its nn.MultiheadAttention)
        if any(isinstance(layer, LAYERS) for layer in module.modules()):
            found.append(module)
    return found


def _on_stream_side(attention: nn.Module, name: str) -> bool:
    """Whether `attention`'s layer `name` is `proj` or a `STREAM_SIDE` one (or inside one)."""
    return any(name == side or name.startswith(side + ".")
               for side in ("proj", *STREAM_SIDE.get((type(attention).__module__, type(attention).__name__), ())))


def _is_levit_downsample(module: nn.Module) -> bool:
    return type(module).__module__ == "timm.models.levit" and type(module).__name__ == "Downsample"


def _levit_downsample_stand_in(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    batch, _, channels = x.shape
    image = x.permute(0, 2, 1).reshape(batch, channels, *module.resolution)
    return F.max_pool2d(image, 1, module.stride).flatten(2).permute(0, 2, 1)


def empty_bias_caches(model: nn.Module) -> list[str]:
    """After a step: timm's eval-mode caches of attention biases are dropped (rebuilt on the next forward)."""
    for module in model.modules():
        if isinstance(getattr(module, "attention_bias_cache", None), dict):
            module.attention_bias_cache = {}
    return []


@register_family
class RecordedAttention(Family):
    name = "recorded attention"
    order = 35

    def detect(self, model: nn.Module) -> list[nn.Module]:
        return recorded_attentions(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        names = {m: n for n, m in model.named_modules()}
        for attention in found:
            why = STREAM_BOUND.get((type(attention).__module__, type(attention).__name__))
            if why:
                raise UserError(f"structured pruning cannot prune this model: its attention layer {names[attention]} "
                                f"({type(attention).__name__}) {why}, so its residual stream cannot lose channels; "
                                "unstructured pruning (e.g. --method magnitude-global) still works")
        held = [layer for attention in found for name, layer in attention.named_modules()
                if isinstance(layer, LAYERS) and not _on_stream_side(attention, name)]
        prep.held.extend(held)
        prep.state[self.name] = held
        kinds = sorted({type(a).__name__ for a in found})
        prep.notes.append(f"{len(found)} attention layer(s) ({', '.join(kinds)}) reshape with head sizes recorded "
                          f"when they were built: their heads keep their channels ({len(held)} layers held); the "
                          "residual stream, MLPs and convolutions are pruned")
        prep.fixes.append(empty_bias_caches)

    def after_graph(self, pruner, prep) -> None:
        # A layer whose channels are cut together with a held one keeps them too (torch-pruning skips the
        # whole group): it is held as well, so that the checks do not expect it pruned.
        held = set(prep.state[self.name])
        graph = pruner.DG
        for layer in list(graph.module2node):
            if not isinstance(layer, LAYERS) or layer in held or layer in pruner.ignored_layers:
                continue
            handler = graph.get_pruner_of_module(layer)
            width = handler.get_out_channels(layer) if handler is not None else None
            if not width:
                continue
            group = graph.get_pruning_group(layer, handler.prune_out_channels, list(range(width)))
            if any(dep.target.module in held and graph.is_out_channel_pruning_fn(dep.handler) for dep, _ in group):
                pruner.ignored_layers.append(layer)

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _levit_downsample_stand_in) for m in model.modules() if _is_levit_downsample(m)]
