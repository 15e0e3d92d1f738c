"""What some architectures need before and after structured pruning, and the checks that a pruned
model is correct (not just smaller).

torch-pruning (1.6.1) prunes most classifiers as they are; a few kinds go wrong quietly:
- auxiliary heads (GoogLeNet, Inception v3) run only in train mode, so tracing in eval mode never
  sees them: they keep their old widths and fine-tuning crashes. They are dropped before pruning,
  as torchvision itself does for models built without them.
- rounding: torch-pruning rounds the kept channels *down* to a multiple of round_to (from a count
  it has already floored), so a ratio a hair above 0.5 took 32 channels to 8, and a layer below
  round_to lost everything (and was skipped). `kept_channels` rounds to the nearest allowed count
  instead, never below one unit nor below what the maximum layer ratio leaves, in every scope.
- grouped convolutions: torch-pruning rounds a group's kept channels *per convolution group* with
  the whole layer's channel count, so round_to=8 on a group width of 8 or 16 prunes all of each
  group (the layer is skipped) or half of it. `_ArchitecturePruner` rounds per group instead.
- torchvision's ViT records `hidden_dim` and each block's `num_heads`; pruning the residual stream
  leaves them stale. Heads go whole (one head = head_dim channels of the stream) and the recorded
  sizes are updated after each step.
- timm's attention (ViT, DeiT, MobileViT, ...: a fused `qkv` Linear, `num_heads`, `head_dim`, `proj`)
  reshapes with its recorded head count and size. torch-pruning is told the heads (its `num_heads`
  option, as its own timm ViT example does), so it keeps q, k and v aligned; heads go whole, so
  `head_dim` and `scale` stay as trained, and `num_heads` is updated after each step.
- Swin (torchvision, timm): window attention and patch merging are pruned as units; ShuffleNet v2:
  the stream around its channel shuffle is held (engine/tracing.py).
- torchvision's MaxViT: torch-pruning's walk from an attention's `to_qkv` through the window
  partition never ends (10 GiB after 4 minutes). Its attention layers are held back (`to_qkv`,
  `merge`, and so the residual stream `merge` writes to); the MBConv and MLP widths are pruned.

`prepare` is called on the working copy before the pruner is built; `engine.verify.check_pruned`
after pruning.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from engine import tracing
from engine.verify import out_size as _out_size

AUX_HEADS = ("aux1", "aux2", "AuxLogits")  # torchvision's GoogLeNet and Inception3 (timm's Inception v3 too)


@dataclass
class Preparation:
    """What the pruning pipeline does differently for this model."""

    notes: list[str] = field(default_factory=list)  # said in the run's notes
    pruner_kwargs: dict = field(default_factory=dict)  # extra keyword arguments for the torch-pruning pruner
    pruner_class: Callable[[type], type] = lambda base: base  # wraps the pipeline's pruner class
    after_step: Callable[[nn.Module], list[str]] = lambda model: []  # fixes recorded sizes; returns notes
    dropped_params: int = 0  # parameters removed by prepare itself (auxiliary heads)
    units: dict = field(default_factory=dict)  # module -> channels per rounding step, filled while pruning


def prepare(model: nn.Module, example: torch.Tensor, round_to: int | None) -> Preparation:
    """Adapt `model` (the working copy, changed in place) and say how the pruner must be built."""
    prep = Preparation()
    prep.dropped_params = drop_aux_heads(model, prep.notes)
    unused = _unused_modules(model, example)
    if unused:
        prep.notes.append(f"{len(unused)} layer(s) with weights are not used in eval mode and are left as they are "
                          f"(e.g. {', '.join(unused[:3])}); if train mode uses them, fine-tuning will fail")
    grouped = [(n, m) for n, m in model.named_modules()
               if isinstance(m, nn.Conv2d) and 1 < m.groups < m.out_channels]
    if grouped and round_to and round_to > 1:
        widths = sorted({m.out_channels // m.groups for _, m in grouped})
        prep.notes.append(
            f"{len(grouped)} grouped convolution(s) (group widths {', '.join(map(str, widths))}): channels are kept "
            f"per group, rounded to a multiple of max(1, {round_to} // groups) each, so such a layer moves in steps "
            f"of about max({round_to}, groups) channels; a group width under {round_to} cannot keep multiples of "
            f"{round_to}")
    if _is_torchvision_vit(model):
        heads = model.encoder.layers[0].num_heads
        prep.notes.append(f"ViT: attention heads are pruned whole ({heads} heads of {model.hidden_dim // heads} "
                          "channels share the hidden size), and hidden_dim / num_heads are updated after each step")
        prep.after_step = _update_vit_sizes
    attentions = qkv_attentions(model)
    if attentions:
        prep.pruner_kwargs["num_heads"] = {qkv: attn.num_heads for qkv, attn in attentions.items()}
        sizes = sorted({(a.num_heads, a.head_dim) for a in attentions.values()})
        prep.notes.append(f"{len(attentions)} attention layer(s) with a fused qkv projection "
                          f"({', '.join(f'{h} heads of {d}' for h, d in sizes)}): heads are pruned whole, so each "
                          "head keeps its size and scale, and num_heads is updated after each step")
        prep.after_step = _update_attention_sizes(list(attentions.values()), prep.after_step)
    swin_attentions, mergings = tracing.window_blocks(model)
    if swin_attentions:
        chunks = tracing.head_chunks(model)
        prep.pruner_kwargs["customized_pruners"] = tracing.customized_pruners(model)
        prep.pruner_kwargs["in_channel_groups"] = dict(chunks)
        prep.pruner_kwargs["out_channel_groups"] = dict(chunks)
        prep.notes.append(f"Swin: {len(swin_attentions)} window attention and {len(mergings)} patch-merging layer(s) are "
                          "pruned as units; the residual stream keeps the same channels in q, k and v, removed "
                          "equally from every head, so each stage keeps its head count with smaller heads")
        prep.after_step = _record_unit_members(prep.units, prep.after_step)
    splits = tracing.split_attentions(model)
    if splits:
        prep.pruner_kwargs.setdefault("customized_pruners", {}).update(tracing.customized_pruners(model))
        prep.pruner_kwargs.setdefault("in_channel_groups", {}).update(tracing.split_chunks(model))
        prep.pruner_kwargs["root_module_types"] = tracing.root_module_types(model)
        prep.units.update(dict.fromkeys(splits, round_to or 1))  # the unit's own rounding; record_units spreads it
        prep.notes.append(f"ResNeSt: {len(splits)} split attention layer(s) are pruned as units: a channel goes from all "
                          f"{splits[0].radix} splits of the convolution, its BatchNorm and fc2 at once, and the input "
                          "loses the same channels in every split (the convolution is grouped by split); the "
                          "attention's own width (fc1's output) stays")
        prep.after_step = _record_unit_members(prep.units, prep.after_step)
    whole = tracing.held_layers(model)
    if whole:
        prep.notes.append(f"ShuffleNet: the {len(whole)} layers that write the stream between blocks are not pruned (its "
                          "channel shuffle is a permutation torch-pruning cannot follow); each branch's inner width is pruned")
    held = held_attention(model)
    if held:
        prep.notes.append(f"MaxViT: its {len(held)} window/grid attention layers and the residual stream they write to "
                          "are not pruned (torch-pruning's dependency walk through their window partition does not end "
                          "in bounded memory); the MBConv and MLP widths are pruned")
    if any(_recorded_shape(m) for m in model.modules()):
        prep.after_step = _fixing_recorded_shapes(prep.after_step)
    prep.pruner_class = lambda base: _architecture_pruner(base, prep.units, attentions, held, whole)
    return prep


def _recorded_shape(module: nn.Module) -> tuple[int, ...] | None:
    """The `shape` a module views its one vector parameter to (timm MetaFormer's Scale: `scale.view(shape)`),
    when it has one."""
    shape = getattr(module, "shape", None)
    params = list(module.parameters(recurse=False))
    if not (isinstance(shape, tuple) and shape and all(isinstance(s, int) for s in shape)) or len(params) != 1:
        return None
    return shape if params[0].dim() == 1 and sum(s != 1 for s in shape) == 1 else None


def _fixing_recorded_shapes(before: Callable[[nn.Module], list[str]]) -> Callable[[nn.Module], list[str]]:
    """After a step: torch-pruning shortens the vector, the recorded shape must follow."""
    def update(model: nn.Module) -> list[str]:
        for module in model.modules():
            shape = _recorded_shape(module)
            if shape is not None:
                size = next(module.parameters(recurse=False)).numel()
                module.shape = tuple(size if s != 1 else 1 for s in shape)
        return before(model)

    return update


# ----------------------------------------------------------------------------- auxiliary heads

def drop_aux_heads(model: nn.Module, notes: list[str]) -> int:
    """Drop GoogLeNet/Inception auxiliary classifiers; returns the parameters they held."""
    if not isinstance(getattr(model, "aux_logits", None), bool):
        return 0
    heads = [(name, getattr(model, name)) for name in AUX_HEADS if isinstance(getattr(model, name, None), nn.Module)]
    if not heads:
        return 0
    dropped = sum(p.numel() for _, m in heads for p in m.parameters())
    for name, _ in heads:
        setattr(model, name, None)
    model.aux_logits = False
    notes.append(f"dropped {type(model).__name__}'s auxiliary heads ({', '.join(n for n, _ in heads)}, "
                 f"{dropped:,} parameters): they only help training, are unused in evaluation, and tracing in eval "
                 "mode cannot prune them with the layers they read from")
    return dropped


def _unused_modules(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of leaf layers with weights that one eval-mode forward pass never calls."""
    seen: set[int] = set()
    leaves = [(n, m) for n, m in model.named_modules()
              if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    hooks = [m.register_forward_hook(lambda mod, *_: seen.add(id(mod))) for _, m in leaves]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return [n for n, m in leaves if id(m) not in seen and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)]


# ----------------------------------------------------------------------------- rounding

def kept_channels(keep: int, channels: int, unit: int, least: int = 0) -> int:
    """The channels a layer of `channels` keeps when the ratio asks for `keep`: the nearest allowed
    count (a multiple of `unit`, or the whole layer; half a unit rounds up, keeping more), never
    below one unit (a layer never disappears) nor below `least` (what the maximum layer ratio
    leaves, rounded up to a unit)."""
    unit = max(1, int(unit))
    if keep >= channels:
        return channels
    down = max(0, keep) // unit * unit
    up = min(down + unit, channels)
    kept = up if up - keep <= keep - down else down
    floor = min(channels, max(unit, -(-least // unit) * unit))
    return max(kept, floor)


def least_kept(channels: int, max_ratio: float) -> int:
    """The fewest of `channels` a layer may keep when it loses at most `max_ratio` of them."""
    return math.ceil(channels * (1.0 - max_ratio) - 1e-9)


# ----------------------------------------------------------------------------- the pruner

def _architecture_pruner(base: type, units: dict, attentions: dict | None = None,
                         held: list[tuple[nn.Linear, nn.Linear]] = (), whole: list[nn.Module] = ()) -> type:
    """`base` (a torch-pruning pruner) with rounding per convolution group and whole attention heads.
    `attentions` maps each fused qkv Linear to its timm-style attention module; `held` are (qkv, output)
    pairs of attention layers that must not be pruned; `whole` are single layers that must not be."""
    owners = attentions or {}

    class ArchitecturePruner(base):
        def __init__(self, *args, **kwargs):
            # torch-pruning 1.6.1 fills these dicts in place and their defaults are shared between
            # instances: every pruned model would stay referenced by the next one. Fresh ones per pruner.
            kwargs.setdefault("in_channel_groups", {})
            kwargs.setdefault("out_channel_groups", {})
            if held or whole:
                kwargs["ignored_layers"] = [*(kwargs.get("ignored_layers") or []), *(m for pair in held for m in pair),
                                            *whole]
                units.update({m: _out_size(m) for m in whole})
            with tracing.tracing(args[0] if args else kwargs["model"]):
                super().__init__(*args, **kwargs)
            if held:
                _record_held(self.DG, held, units)
            self._round_group = None
            self._owners = owners
            # torch-pruning records the head count as qkv's channel groups, which would prune the same
            # dimensions of every head; heads go whole here instead (see estimate_importance, _round_to).
            for qkv in owners:
                self.out_channel_groups.pop(qkv, None)
            if not self.round_to:
                self.round_to = 1  # torch-pruning rounds only when round_to is set; heads and ties need the hook

        # torch-pruning 1.6.1 calls this for each group right before rounding its count; remember the group.
        def _is_atten_group(self, group):
            self._round_group = group
            return super()._is_atten_group(group)

        # torch-pruning 1.6.1's private hook for the count a group keeps: the one place PruneLab's
        # rounding (kept_channels) replaces its own. Global scope has no per-layer target to round
        # beforehand, so the count can only be rounded here, after the ranking chose it.
        def _round_to(self, n_pruned, current_channels, round_to):
            group = self._round_group
            ties = getattr(group, "ties", None)
            if ties is None or self._get_channel_groups(group) > 1:
                return self._round_units(n_pruned, current_channels, round_to)
            # Whole tied sets go; the widest layer of the group (which loses `spread` channels per
            # set) keeps a multiple of round_to.
            size, spread = ties
            sets = current_channels // size
            step = round_to // math.gcd(round_to, spread)
            keep = kept_channels((current_channels - n_pruned) // size, sets, step,
                                 -(-self._least(current_channels) // size))
            return max(current_channels - keep * size, 0)

        def _least(self, channels: int) -> int:
            """The fewest of `channels` (the root's count, or one convolution group's) the maximum layer
            ratio lets the current group keep, measured against the layer's width before pruning."""
            group = self._round_group
            if group is None:
                return 0
            dep = group[0].dep
            out = self.DG.is_out_channel_pruning_fn(dep.handler)
            module = dep.target.module
            first = (self.layer_init_out_ch if out else self.layer_init_in_ch).get(module)
            now = self.DG.get_out_channels(module) if out else self.DG.get_in_channels(module)
            if not first or not now:
                return 0
            return least_kept(first, self.max_pruning_ratio) * channels // now

        def _round_units(self, n_pruned, current_channels, round_to):
            group = self._round_group
            least = self._least(current_channels)
            if group is None or self.DG.get_out_channels(group[0].dep.target.module) != current_channels and \
                    self.DG.get_in_channels(group[0].dep.target.module) != current_channels:
                return current_channels - kept_channels(current_channels - n_pruned, current_channels, round_to, least)
            heads = _heads_in(group, self.DG, self._owners)
            if heads is not None:  # whole heads: the unit is one head's channels
                head_dim = heads[1]
                _record(units, group, self.DG, head_dim, width=current_channels)
                return current_channels - kept_channels(current_channels - n_pruned, current_channels, head_dim, least)
            groups = self._get_channel_groups(group)
            if groups <= 1:
                return current_channels - kept_channels(current_channels - n_pruned, current_channels, round_to, least)
            # n_pruned counts channels of one convolution group; round that group's kept width.
            width = current_channels // groups
            unit = max(1, round_to // groups)
            _record(units, group, self.DG, unit * groups)
            return max(width - kept_channels(width - n_pruned, width, unit, -(-least // groups)), 0)

        def estimate_importance(self, group):
            imp = super().estimate_importance(group)
            if imp is not None:
                imp = _tie_scores(group, self.DG, imp)
            found = _heads_in(group, self.DG, self._owners)
            if imp is None or found is None or len(imp) != found[0] * found[1]:
                return imp
            num_heads, head_dim = found
            # One score per head, so that ranking and rounding take whole heads; a tiny ramp breaks ties.
            heads = imp.view(num_heads, head_dim).mean(1)
            spread = float(heads.max() - heads.min()) or 1.0
            heads = heads + torch.arange(num_heads, device=heads.device) * spread * 1e-6
            return heads.repeat_interleave(head_dim)

        def _prune(self):
            for group in super()._prune():
                _set_head_counts(group, self.DG)
                _free_concat_members(group, self.DG, units)
                yield group

    ArchitecturePruner.__name__ = f"Architecture{base.__name__}"
    return ArchitecturePruner


def _tie_scores(group, graph, imp: torch.Tensor) -> torch.Tensor:
    """Scores for a group whose channels are tied through a concatenation. GhostNet concatenates a
    layer with its own depthwise copy and adds the result to the stream, so one cut removes stream
    channels i and i + w together; torch-pruning counts and rounds the root's channels as if each went
    alone (0.3 became 0.6, or, rounded, nothing went). The group is marked with its ties for
    `_round_to`; when the root's own channels are tied, each tied set gets its mean score, with a
    tiny ramp so a set stays together in the ranking."""
    found = _tied_sets(group, graph, len(imp))
    if found is None:
        return imp
    sets, spread = found
    group.ties = (len(sets[0]), spread)
    if len(sets[0]) == 1:
        return imp
    tied = imp.clone()
    scale = float(imp.max() - imp.min()) or 1.0
    for rank, members in enumerate(sets):
        tied[members] = imp[members].mean() + rank * scale * 1e-6
    return tied


def _tied_sets(group, graph, width: int) -> tuple[list[list[int]], int] | None:
    """(the root's channels that one cut removes together, as equal sets; the most channels one cut
    removes from any member), or None when every cut removes one channel everywhere. Only a group
    through a concatenation can tie channels."""
    from torch_pruning import ops

    def joins_itself(op, idxs) -> bool:  # the group reaches two inputs of this concatenation
        offsets = op.offsets or []
        return len({bisect.bisect_right(offsets, i) for i in idxs}) > 1

    if width < 2 or not any(isinstance(dep.target.module, ops._ConcatOp) and joins_itself(dep.target.module, idxs)
                            for dep, idxs in group):
        return None
    layer_types = {ops.OPTYPE.CONV, ops.OPTYPE.DEPTHWISE_CONV, ops.OPTYPE.LINEAR, ops.OPTYPE.BN}
    root, handler = group[0].dep.target.module, group[0].dep.handler

    def cut(i: int) -> tuple[list[int], int]:
        probe = graph.get_pruning_group(root, handler, [i])
        own = {j for dep, idxs in probe if dep.target.module is root and dep.handler == handler for j in idxs}
        widths = [len(idxs) for dep, idxs in probe  # layers' own channels (not a flatten's positions)
                  if dep.target.type in layer_types and graph.is_out_channel_pruning_fn(dep.handler)]
        return sorted(own | {i}), max(widths, default=1)

    first = cut(0)
    if first == ([0], 1):
        return None
    sets, spreads, seen = [], set(), set()
    for i in range(width):
        if i not in seen:
            members, spread = first if i == 0 else cut(i)
            sets.append(members)
            spreads.add(spread)
            seen.update(members)
    if len({len(s) for s in sets}) != 1 or len(spreads) != 1 or len(seen) != width:
        return None  # uneven ties: leave the count to torch-pruning
    return sets, spreads.pop()


def _heads_in(group, graph, owners: dict) -> tuple[int, int] | None:
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


def _record(units: dict, group, graph, unit: int, width: int | None = None) -> None:
    """Remember each pruned layer's rounding unit; with `width` (the group's channels), a layer with k
    times as many outputs (a fused qkv) moves k units at a time."""
    for dep, _ in group:
        module = dep.target.module
        if graph.is_out_channel_pruning_fn(dep.handler) and isinstance(module, nn.Module):
            size = _out_size(module) if width else None
            units[module] = unit * (size // width if size and size % width == 0 else 1)


def _free_concat_members(group, graph, units: dict) -> None:
    """A group that runs through a concatenation keeps its share of the joined channels, but the ranking
    decides which input loses them (CSPNet's two halves can lose 16 and 0 of 24 each): each member's
    unit becomes its whole width, so the share check judges only the model's total."""
    from torch_pruning import ops

    if not any(isinstance(dep.target.module, ops._ConcatOp) for dep, _ in group):
        return
    root, handler = group[0].dep.target.module, group[0].dep.handler
    width = graph.get_out_channels(root) if graph.is_out_channel_pruning_fn(handler) else graph.get_in_channels(root)
    if width:  # every member, also those the ranking left untouched (they are not in `group`)
        group = graph.get_pruning_group(root, handler, list(range(width)))
    for dep, _ in group:
        module = dep.target.module
        size = _out_size(module) if isinstance(module, nn.Module) else None
        if size and graph.is_out_channel_pruning_fn(dep.handler):
            units[module] = max(units.get(module, 0), size)


def _set_head_counts(group, graph) -> None:
    """Before the group is pruned: an attention layer losing whole heads keeps its head size, so its
    head count falls (torch-pruning would otherwise keep the count and shrink every head)."""
    for dep, idxs in group:
        module = dep.target.module
        if not isinstance(module, nn.MultiheadAttention) or not graph.is_out_channel_pruning_fn(dep.handler):
            continue
        heads = {i // module.head_dim for i in idxs}
        if idxs and len(idxs) == len(heads) * module.head_dim:
            module.num_heads -= len(heads)


# ----------------------------------------------------------------------------- ViT

def _is_torchvision_vit(model: nn.Module) -> bool:
    from torchvision.models.vision_transformer import VisionTransformer

    return isinstance(model, VisionTransformer)


def _update_vit_sizes(model: nn.Module) -> list[str]:
    """torchvision's ViT reshapes with its recorded hidden_dim: copy the pruned sizes back."""
    before = model.hidden_dim
    model.hidden_dim = model.conv_proj.out_channels
    for block in model.encoder.layers:
        block.num_heads = block.self_attention.num_heads
    first = model.encoder.layers[0]
    model.mlp_dim = first.mlp[0].out_features
    if model.hidden_dim == before:
        return []
    return [f"ViT hidden size {before} → {model.hidden_dim} ({first.num_heads} heads of "
            f"{first.self_attention.head_dim}), MLP size {model.mlp_dim}"]


# ----------------------------------------------------------------------------- timm-style attention

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


def _update_attention_sizes(attentions: list[nn.Module], before: Callable[[nn.Module], list[str]]
                            ) -> Callable[[nn.Module], list[str]]:
    """after_step for timm-style attention (run after `before`): the head count from the pruned proj."""

    def update(model: nn.Module) -> list[str]:
        notes = before(model)
        changed = []
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


def _record_unit_members(units: dict, before: Callable[[nn.Module], list[str]]) -> Callable[[nn.Module], list[str]]:
    def update(model: nn.Module) -> list[str]:
        notes = before(model)
        tracing.record_units(model, units)
        return notes

    return update


# ----------------------------------------------------------------------------- MaxViT

def held_attention(model: nn.Module) -> list[tuple[nn.Linear, nn.Linear]]:
    """(to_qkv, merge) of each torchvision MaxViT attention layer."""
    from torchvision.models.maxvit import RelativePositionalMultiHeadAttention

    return [(m.to_qkv, m.merge) for m in model.modules() if isinstance(m, RelativePositionalMultiHeadAttention)]


def _record_held(graph, held: list[tuple[nn.Linear, nn.Linear]], units: dict) -> None:
    """Every layer that cannot move because it shares channels with a held layer gets its whole width
    as its rounding unit, so the share check expects it unpruned."""
    outputs = {merge for _, merge in held}
    for qkv, merge in held:
        units[qkv], units[merge] = qkv.out_features, merge.out_features
    for group in graph.get_all_groups(ignored_layers=[qkv for qkv, _ in held]):  # qkv: the walk that never ends
        pruned = [dep.target.module for dep, _ in group if graph.is_out_channel_pruning_fn(dep.handler)]
        if any(m in outputs for m in pruned):
            for module in pruned:
                size = _out_size(module) if isinstance(module, nn.Module) else None
                if size:
                    units[module] = size
