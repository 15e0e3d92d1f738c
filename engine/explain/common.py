"""Helpers shared by the explain modules: finding a layer, a method, a config, recording a pruner's picks."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn as nn

from engine.checks import check_walkable
from engine.config import PruneConfig, only_target
from engine.errors import UserError
from engine.layers import PRUNABLE, prunable_layers
from engine.methods import STRUCTURED, Method, all_methods, get_method


def layer_module(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules or not isinstance(modules[layer], PRUNABLE):
        names = [n for n, _ in prunable_layers(model)]
        shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "")
        raise UserError(f"{layer!r} is not a convolution or linear layer of this model; pick one of {shown}")
    check_walkable(model, "the teaching views")
    return modules[layer]


def structured_method(name: str) -> Method:
    method = get_method(name)
    if not method.structured:
        names = ", ".join(m.name for m in all_methods(STRUCTURED))
        raise UserError(f"{name} is unstructured (it zeroes single weights, not channels), so it has no channel "
                        f"scores; pick a structured method: {names}")
    return method


def run_config(base: PruneConfig | None, method: str, ratio: float | None) -> PruneConfig:
    """The run's options as one step at a fixed ratio: what a single step of that run would cut."""
    cfg = replace(base or PruneConfig(), method=method, steps=1, finetune_epochs=0.0, finetune_batches=None)
    if ratio is not None:
        cfg = replace(cfg, **only_target("pruning_ratio", ratio))
    if cfg.latency_targeted:  # its ratio comes from timing pruned copies, which a view does not do
        raise UserError("the teaching views cut one step at a fixed ratio, and a target latency's ratio is found by "
                        "timing pruned copies during a run; set a pruning ratio (or a MACs speed-up) to see a cut "
                        "here")
    if cfg.target_speedup is not None and cfg.scope == "global":
        raise UserError("the teaching views need a pruning ratio under global scope; set a ratio instead of a "
                        "speed-up target")
    cfg.validate()
    return cfg


class Recorder:
    """Wraps an importance so each group's scores are kept exactly as the pruner computed them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[tuple[Any, torch.Tensor | None]] = []

    def __call__(self, group: Any) -> torch.Tensor | None:
        imp = self.inner(group)
        self.seen.append((group, imp))
        return imp

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def indices_of(group: Any, module: nn.Module, graph: Any) -> list[int] | None:
    for dep, idxs in group:
        if dep.target.module is module and graph.is_out_channel_pruning_fn(dep.handler):
            return [int(i) for i in idxs]
    return None


def how_combined(importance: Any, root: str, layer: str) -> str:
    """How the method turns the group into one score per channel, in words."""
    reduction = getattr(importance, "group_reduction", None)
    targets = getattr(importance, "target_types", None)
    if targets and all(issubclass(t, nn.modules.batchnorm._BatchNorm) for t in targets):
        return "scores come from the BatchNorm layers of the group"
    if reduction == "first":
        return (f"only the group's first layer ({root}) is scored; the others lose the same channels"
                if root != layer else "only this layer's own weights are scored")
    if reduction in ("mean", "sum"):
        return ("every layer of the group (convolutions, BatchNorm, the next layers' inputs) is scored, and the "
                "scores are averaged per channel")
    return ""
