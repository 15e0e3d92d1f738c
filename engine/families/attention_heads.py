"""Multi-head attention: `nn.MultiheadAttention` (torchvision's ViT) and timm's fused-qkv attention (ViT,
DeiT, MobileViT, ...: a fused `qkv` Linear, `num_heads`, `head_dim`, `proj`).

Heads go whole, so each head keeps its size (and timm's its `scale`) and the head count falls. timm's
attention reshapes with its recorded head count and size: torch-pruning is told the heads (its `num_heads`
option, as its own timm ViT example does), so it keeps q, k and v aligned, and `num_heads` is updated
after each step. Scores are one per head; the count a group keeps is whole heads.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from engine.preparation import counts_root, record_unit, rounded
from engine.families import Family, register_family


def qkv_attentions(model: nn.Module) -> dict[nn.Linear, nn.Module]:
    """qkv Linear -> its attention module, for every module that reshapes a fused qkv projection with a
    recorded head count and size (timm's Attention and its kind). A module with weights of its own (a
    per-head relative position table, as in Swin) is left out: torch-pruning would not prune it with
    the heads."""
    found = {}
    for module in model.modules():
        qkv, proj = getattr(module, "qkv", None), getattr(module, "proj", None)
        heads, head_dim = getattr(module, "num_heads", None), getattr(module, "head_dim", None)
        if not (isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear) and isinstance(heads, int)
                and isinstance(head_dim, int)) or isinstance(module, nn.MultiheadAttention):
            continue
        width = heads * head_dim
        if qkv.out_features == 3 * width and proj.in_features == width and \
                not any(True for _ in module.parameters(recurse=False)):
            found[qkv] = module
    return found


def heads_in(group, graph, owners: dict) -> tuple[int, int] | None:
    """(heads, head size) of the first attention whose heads this group prunes, if any: an
    nn.MultiheadAttention's embedding, or a timm-style attention's qkv output."""
    for dep, _ in group:
        module = dep.target.module
        if not graph.is_out_channel_pruning_fn(dep.handler):
            continue
        if isinstance(module, nn.MultiheadAttention):
            return module.num_heads, module.head_dim
        if module in owners:
            return owners[module].num_heads, owners[module].head_dim
    return None


def set_head_counts(group, graph) -> None:
    """Before the group is pruned: an attention layer losing whole heads keeps its head size, so its
    head count falls (torch-pruning would otherwise keep the count and shrink every head)."""
    for dep, idxs in group:
        module = dep.target.module
        if not isinstance(module, nn.MultiheadAttention) or not graph.is_out_channel_pruning_fn(dep.handler):
            continue
        heads = {i // module.head_dim for i in idxs}
        if idxs and len(idxs) == len(heads) * module.head_dim:
            module.num_heads -= len(heads)


def update_attention_sizes(attentions: list[nn.Module]):
    """After a step, for timm-style attention: the head count from the pruned proj."""

    def update(model: nn.Module) -> list[str]:
        notes, changed = [], []
        for attn in attentions:
            width = attn.proj.in_features
            if width % attn.head_dim or attn.qkv.out_features != 3 * width:  # the check will fail the run
                notes.append(f"an attention layer kept {width} channels, not whole heads of {attn.head_dim}")
                continue
            if width // attn.head_dim != attn.num_heads:
                changed.append(f"{attn.num_heads}→{width // attn.head_dim}")
                attn.num_heads = width // attn.head_dim
            if isinstance(getattr(attn, "attn_dim", None), int):
                attn.attn_dim = width  # timm's Attention reshapes its output with it
        if changed:
            notes.append(f"attention heads (of {attentions[0].head_dim} channels) per layer: "
                         f"{', '.join(dict.fromkeys(changed))}")
        return notes

    return update


@register_family
class AttentionHeads(Family):
    name = "attention heads"
    order = 30

    def detect(self, model: nn.Module) -> dict | bool:
        """timm-style attentions by their qkv (or True for nn.MultiheadAttention alone)."""
        return qkv_attentions(model) or any(isinstance(m, nn.MultiheadAttention) for m in model.modules())

    def prepare(self, model, found, prep, example: torch.Tensor, round_to) -> None:
        attentions = found if isinstance(found, dict) else {}
        prep.state[self.name] = attentions
        if not attentions:
            return
        prep.pruner_kwargs["num_heads"] = {qkv: attn.num_heads for qkv, attn in attentions.items()}
        sizes = sorted({(a.num_heads, a.head_dim) for a in attentions.values()})
        prep.notes.append(f"{len(attentions)} attention layer(s) with a fused qkv projection "
                          f"({', '.join(f'{h} heads of {d}' for h, d in sizes)}): heads are pruned whole, so each "
                          "head keeps its size and scale, and num_heads is updated after each step")
        prep.fixes.append(update_attention_sizes(list(attentions.values())))

    def after_graph(self, pruner, prep) -> None:
        # torch-pruning records the head count as qkv's channel groups, which would prune the same
        # dimensions of every head; heads go whole here instead (scores and pruned_count).
        for qkv in prep.state[self.name]:
            pruner.out_channel_groups.pop(qkv, None)

    def scores(self, pruner, prep, group, imp: torch.Tensor) -> torch.Tensor:
        found = heads_in(group, pruner.DG, prep.state[self.name])
        if found is None or len(imp) != found[0] * found[1]:
            return imp
        num_heads, head_dim = found
        # One score per head, so that ranking and rounding take whole heads; a tiny ramp breaks ties.
        heads = imp.view(num_heads, head_dim).mean(1)
        spread = float(heads.max() - heads.min()) or 1.0
        heads = heads + torch.arange(num_heads, device=heads.device) * spread * 1e-6
        return heads.repeat_interleave(head_dim)

    def pruned_count(self, pruner, prep, group, n_pruned, current_channels, round_to) -> int | None:
        if not counts_root(pruner, group, current_channels):
            return None
        heads = heads_in(group, pruner.DG, prep.state[self.name])
        if heads is None:
            return None
        head_dim = heads[1]  # whole heads: the unit is one head's channels
        record_unit(prep.units, group, pruner.DG, head_dim, width=current_channels)
        return rounded(pruner, group, n_pruned, current_channels, head_dim)

    def before_cut(self, pruner, prep, group) -> None:
        set_head_counts(group, pruner.DG)
