"""timm's TNT (Transformer in Transformer): the inner (pixel) stream is held back, the outer (patch) stream,
its attention's inputs and every MLP's width are pruned.

Each block folds its pixels' channels into the patch's with a reshape, pixel by pixel (channel c of the inner
stream is every inner-width-th input of `proj`, which torch-pruning's reshape mapping does not follow), so the
layers writing to the inner stream (the pixel embedding, the inner attention's and MLP's outputs) are held,
and with them that stream. Each block also puts the class token back with a slice and a concatenation along
the tokens, which torch-pruning takes for channels: past eight blocks its width inference gave up (its
recursion limit) and the concatenation had no width (a TypeError: the model could not be traced). So while a
graph is traced a block adds the patches' update to every token instead (the channels meet as in the block).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.families import Family, register_family
from engine.families.maxvit import record_held


def _is(module: nn.Module, name: str) -> bool:
    return (type(module).__module__, type(module).__name__) == ("timm.models.tnt", name)


def inner_writers(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(a layer inside the attention it feeds, a layer writing to the inner stream) of a TNT model."""
    if not any(_is(m, "TNT") for m in model.modules()):
        return []
    blocks = [m for m in model.modules() if _is(m, "Block")]
    embeds = [m.proj for m in model.modules() if _is(m, "PixelEmbed")]
    return [(blocks[0].attn_in.qk, layer) for layer in embeds] + \
        [(block.attn_in.qk, layer) for block in blocks for layer in (block.attn_in.proj, block.mlp_in.fc2)]


def _block_stand_in(block: nn.Module, pixel_embed: torch.Tensor, patch_embed: torch.Tensor):
    pixel_embed = pixel_embed + block.attn_in(block.norm_in(pixel_embed))
    pixel_embed = pixel_embed + block.mlp_in(block.norm_mlp_in(pixel_embed))
    batch, tokens, _ = patch_embed.shape
    if block.norm2_proj is None:
        update = block.proj(block.norm1_proj(pixel_embed).reshape(batch, tokens - 1, -1))
    else:
        update = block.norm2_proj(block.proj(block.norm1_proj(pixel_embed.reshape(batch, tokens - 1, -1))))
    patch_embed = patch_embed + update.mean(1, keepdim=True)
    patch_embed = patch_embed + block.attn_out(block.norm_out(patch_embed))
    return pixel_embed, patch_embed + block.mlp(block.norm_mlp(patch_embed))


@register_family
class TNT(Family):
    name = "TNT"
    order = 80

    def detect(self, model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
        return inner_writers(model)

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        prep.held.extend(layer for _, layer in found)
        prep.notes.append("TNT: the inner (pixel) stream is not pruned (each block folds it into the patches pixel by "
                          "pixel, which torch-pruning cannot map); the patch stream and every MLP width are pruned")

    def after_graph(self, pruner, prep) -> None:
        record_held(pruner.DG, prep.found[self.name], prep.units)

    def stand_ins(self, model: nn.Module) -> list:
        return [(m, "forward", _block_stand_in) for m in model.modules() if _is(m, "Block")] \
            if inner_writers(model) else []
