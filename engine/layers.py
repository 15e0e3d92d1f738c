"""Per-layer facts for tables and plots: shapes, parameters, MACs, dependency groups, weight histograms."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from engine.data import Shape

PRUNABLE = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerInfo:
    """One prunable layer as the layer table shows it."""

    name: str
    kind: str
    out_shape: tuple[int, ...]
    params: int
    macs: int
    in_channels: int
    out_channels: int
    group: int  # dependency group index; -1 when the layer is not prunable (e.g. the classifier head)


@dataclass(frozen=True)
class LayerStat:
    """A layer before and after pruning (channels counted on the output side)."""

    name: str
    kind: str
    channels_before: int
    channels_after: int
    params_before: int
    params_after: int
    nonzero_after: int

    @property
    def pruned_share(self) -> float:
        """Share of the layer's weights that are gone or zero."""
        return 1.0 - self.nonzero_after / self.params_before if self.params_before else 0.0


@dataclass(frozen=True)
class WeightHistogram:
    """Weight distribution of one layer before and after, on the same bins."""

    layer: str
    edges: np.ndarray
    before: np.ndarray
    after: np.ndarray
    zeros_before: int
    zeros_after: int
    channel_norms: np.ndarray  # L1 norm of each original output channel
    kept: np.ndarray  # bool per original output channel: still present after structured pruning


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Convolutions and linear layers, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)]


def classifier_head(model: nn.Module, num_classes: int | None) -> str | None:
    """Name of the last layer producing the class scores (left alone by default)."""
    layers = prunable_layers(model)
    for name, m in reversed(layers):
        out = m.out_features if isinstance(m, nn.Linear) else m.out_channels
        if num_classes is None or out == num_classes:
            return name
    return layers[-1][0] if layers else None


def channels(m: nn.Module) -> tuple[int, int]:
    """(input, output) channels or features."""
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    return m.in_channels, m.out_channels


def layer_macs(m: nn.Module, out: torch.Tensor) -> int:
    """MACs of one Conv2d/Linear call, from its output size."""
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1]
        return int(out[0].numel() * (m.in_channels // m.groups) * k)
    return int(out[0].numel() * m.in_features)


def describe_layers(model: nn.Module, input_shape: Shape, ignored: tuple[str, ...] = ()) -> list[LayerInfo]:
    """Every Conv2d/Linear with output shape, parameters, MACs and its dependency group."""
    layers = prunable_layers(model)
    outs: dict[str, tuple[tuple[int, ...], int]] = {}
    hooks = []
    for name, m in layers:
        def hook(mod, _inp, out, name=name):
            outs[name] = (tuple(out.shape[1:]), layer_macs(mod, out))
        hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    groups = dependency_groups(model, input_shape, ignored)
    info = []
    for name, m in layers:
        cin, cout = channels(m)
        shape, macs = outs.get(name, ((), 0))
        info.append(LayerInfo(name, type(m).__name__, shape, sum(p.numel() for p in m.parameters()), macs,
                              cin, cout, groups.get(name, -1)))
    return info


@dataclass(frozen=True)
class Group:
    """One torch-pruning dependency group: layers that lose the same channels together."""

    index: int
    root: str | None  # the layer the group is rooted at (None: an unnamed module)
    members: tuple[str, ...]  # prunable layers whose output channels go with the root's
    channels: int
    group: object  # the torch-pruning Group, for importance scores and pruning


def ignored_modules(model: nn.Module, names=(), keep_head: bool = True,
                    num_classes: int | None = None) -> list[nn.Module]:
    """The modules pruning leaves alone: the named layers and, with keep_head, the classifier head."""
    modules = dict(model.named_modules())
    chosen = [n for n in names if n in modules]
    head = classifier_head(model, num_classes) if keep_head else None
    if head and head not in chosen:
        chosen.append(head)
    return [modules[n] for n in chosen]


def walk_groups(model: nn.Module, example: torch.Tensor, ignored: list[nn.Module] | None = None) -> list[Group]:
    """Every dependency group rooted at a prunable layer, in model order."""
    from engine.tracing import dependency_graph

    names = {m: n for n, m in model.named_modules()}
    graph = dependency_graph(model, example)
    out = []
    for index, group in enumerate(graph.get_all_groups(ignored_layers=ignored or [], root_module_types=PRUNABLE)):
        members: list[str] = []
        for dep, _ in group:
            m = dep.target.module
            if isinstance(m, PRUNABLE) and graph.is_out_channel_pruning_fn(dep.handler) and names.get(m) \
                    and names[m] not in members:
                members.append(names[m])
        root = group[0].dep.target.module
        out.append(Group(index, names.get(root), tuple(members), int(graph.get_out_channels(root) or 0), group))
    return out


def dependency_groups(model: nn.Module, input_shape: Shape, ignored: tuple[str, ...] = ()) -> dict[str, int]:
    """Layer name -> index of the torch-pruning group it is pruned with (layers coupled by residuals
    or concatenation share an index). Ignored layers get no group; a model whose walk would not end has none."""
    from engine.families import endless_walk

    if endless_walk(model):
        return {}
    example = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    result: dict[str, int] = {}
    for g in walk_groups(model, example, ignored_modules(model, ignored, keep_head=False)):
        for name in g.members:
            result.setdefault(name, g.index)
    return result


@dataclass(frozen=True)
class WeightSummary:
    """What the before/after views need of a layer's original weights, so that no copy of them is kept
    through the run (vit_h_14's copy was 2.4 GB)."""

    shape: tuple[int, ...]
    size: int
    edges: np.ndarray  # histogram bins, shared with the pruned weights
    counts: np.ndarray
    zeros: int
    norms: np.ndarray  # L1 norm per output channel


HISTOGRAM_BINS = 61  # odd: exact zeros fall in one bin


def weight_snapshot(model: nn.Module) -> dict[str, WeightSummary]:
    """Every prunable layer's original weights (as the forward pass sees them), summarised one layer
    at a time."""
    snap = {}
    for name, m in prunable_layers(model):
        w = m.weight.detach().float().cpu().numpy()
        limit = float(np.abs(w).max()) if w.size else 0.0
        edges = np.linspace(-(limit or 1.0), limit or 1.0, HISTOGRAM_BINS + 1)
        counts, _ = np.histogram(np.clip(w, edges[0], edges[-1]), edges)
        snap[name] = WeightSummary(tuple(w.shape), int(w.size), edges, counts, int((w == 0).sum()),
                                   np.abs(w.reshape(w.shape[0], -1)).sum(1))
    return snap


def histograms(before: dict[str, WeightSummary], model: nn.Module,
               kept: dict[str, np.ndarray]) -> dict[str, WeightHistogram]:
    """Weight histograms before/after on shared bins."""
    out = {}
    current = dict(prunable_layers(model))
    for name, w0 in before.items():
        if name not in current:
            continue
        w1 = current[name].weight.detach().float().cpu().numpy()
        h1, _ = np.histogram(np.clip(w1, w0.edges[0], w0.edges[-1]), w0.edges)
        keep = kept.get(name, np.ones(w0.shape[0], dtype=bool))
        out[name] = WeightHistogram(name, w0.edges, w0.counts, h1, w0.zeros, int((w1 == 0).sum()), w0.norms, keep)
    return out


def layer_stats(before: dict[str, WeightSummary], model: nn.Module) -> tuple[LayerStat, ...]:
    """Channels and parameters of each prunable layer, before and now."""
    stats = []
    for name, m in prunable_layers(model):
        w0 = before.get(name)
        if w0 is None:
            continue
        w1 = m.weight.detach()
        stats.append(LayerStat(name, type(m).__name__, int(w0.shape[0]), int(w1.shape[0]), int(w0.size),
                               int(w1.numel()), int(torch.count_nonzero(w1))))
    return tuple(stats)
