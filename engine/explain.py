"""The facts behind the teaching views: why each channel goes, per criterion, and what it is tied to.

Scores are never recomputed by hand: each method's own torch-pruning pruner (built by
engine.pruners, with the method's calibration) takes one interactive step on a copy of the model,
and the importance it computes and the channels it picks are recorded as they happen. So the
channels shown as cut are exactly the ones a one-step run at that ratio removes.

Results are plain dataclasses with numpy arrays; no module ever leaves this file.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any, Generator

import numpy as np
import torch
import torch.nn as nn

from engine.config import PruneConfig
from engine.data import Dataset, Shape
from engine.errors import UserError
from engine.events import CancelToken, Progress
from engine.layers import PRUNABLE, prunable_layers
from engine.methods import STRUCTURED, Method, all_methods, get_method

# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Coupled:
    """One layer that must lose the same channels as the selected one, and why."""

    layer: str
    kind: str  # "batchnorm", "residual", "concat", "next-input", "depthwise", "output", "other"
    reason: str  # plain words for a student
    side: str  # "output" (loses output channels) or "input" (loses input channels)


@dataclass(frozen=True)
class ChannelScores:
    """The scores one method gave the channels of one layer, and which of them the ratio removes."""

    layer: str
    method: str
    ratio: float
    scores: np.ndarray  # per output channel of `layer` (NaN where the method has no score)
    cut: np.ndarray  # bool per channel: removed at `ratio`
    order: np.ndarray  # channel indices, first to go first (the cut ones, then by score)
    ranks: np.ndarray  # per channel: its position in `order` (0 = first to go)
    root: str  # the layer the method's group is rooted at (its scores are the group's)
    tied: tuple[str, ...]  # the other layers that lose the same channels
    pruned: bool  # False when the pruner leaves this layer alone (the head, an ignored layer)
    notes: tuple[str, ...] = ()

    @property
    def n_cut(self) -> int:
        """How many channels go."""
        return int(self.cut.sum())

    def to_json(self) -> dict:
        """Scores, ranks and the cut set as plain lists (NaN as null)."""
        return {"scores": [None if np.isnan(s) else float(s) for s in self.scores],
                "ranks": [int(r) for r in self.ranks], "cut": [int(i) for i in np.flatnonzero(self.cut)],
                "root": self.root, "pruned": self.pruned, "notes": list(self.notes)}


@dataclass(frozen=True)
class Criteria:
    """One layer scored by several criteria, with the overlap of their cut sets."""

    layer: str
    methods: tuple[str, ...]
    scores: dict  # method name -> ChannelScores
    jaccard: np.ndarray  # methods × methods: |A ∩ B| / |A ∪ B| of the cut sets (1 when both are empty)


@dataclass(frozen=True)
class Explanation:
    """What the Teach tab shows for one layer: the method's scores, every criterion, the couplings."""

    layer: str
    method: str
    chosen: ChannelScores | None  # None for an unstructured method
    criteria: Criteria
    coupling: tuple[Coupled, ...]

    def to_json(self) -> dict:
        """The `explain --json` object: layer, group, methods, jaccard."""
        return {"layer": self.layer, "group": [{"layer": c.layer, "reason": c.reason} for c in self.coupling],
                "methods": {m: s.to_json() for m, s in self.criteria.scores.items()},
                "jaccard": {"methods": list(self.criteria.methods), "matrix": self.criteria.jaccard.tolist()}}


@dataclass(frozen=True)
class Prediction:
    """One class and its softmax probability."""

    index: int
    name: str
    probability: float


@dataclass(frozen=True)
class FeatureMaps:
    """The output of one layer for one image: a map per channel."""

    layer: str
    maps: np.ndarray  # channels × height × width (a Linear layer: channels × 1 × 1)
    mean: np.ndarray  # per channel
    peak: np.ndarray  # per channel: the largest absolute activation


@dataclass(frozen=True)
class ImageExplanation:
    """One test image through the original and the pruned model."""

    index: int
    label: int
    label_name: str
    picture: np.ndarray  # height × width (× 3), in [0, 1], for display
    maps: FeatureMaps  # of the original model
    cut: np.ndarray  # bool per channel of the layer
    original: tuple[Prediction, ...]
    pruned: tuple[Prediction, ...]  # right after pruning, before any recovery
    recovered: tuple[Prediction, ...] = ()  # after re-estimating BatchNorm, when the config asks for it


# ----------------------------------------------------------------------------- helpers


def result_of(events: Generator) -> Any:
    """Run an explain generator to its end and return its result (for scripts and tests)."""
    while True:
        try:
            next(events)
        except StopIteration as stop:
            return stop.value


def _module(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules or not isinstance(modules[layer], PRUNABLE):
        names = [n for n, _ in prunable_layers(model)]
        shown = ", ".join(names[:6]) + (", …" if len(names) > 6 else "")
        raise UserError(f"{layer!r} is not a convolution or linear layer of this model; pick one of {shown}")
    return modules[layer]


def _structured(name: str) -> Method:
    method = get_method(name)
    if not method.structured:
        names = ", ".join(m.name for m in all_methods(STRUCTURED))
        raise UserError(f"{name} is unstructured (it zeroes single weights, not channels), so it has no channel "
                        f"scores; pick a structured method: {names}")
    return method


def _config(base: PruneConfig | None, method: str, ratio: float | None) -> PruneConfig:
    """The run's options as one step at a fixed ratio: what a single step of that run would cut."""
    cfg = replace(base or PruneConfig(), method=method, steps=1, finetune_epochs=0.0, finetune_batches=None)
    if ratio is not None:
        cfg = replace(cfg, pruning_ratio=ratio, target_speedup=None)
    if cfg.target_speedup is not None and cfg.scope == "global":
        raise UserError("the teaching views need a pruning ratio under global scope; set a ratio instead of a "
                        "speed-up target")
    cfg.validate()
    return cfg


class _Recorder:
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


def _idxs_of(group: Any, module: nn.Module, graph: Any) -> list[int] | None:
    for dep, idxs in group:
        if dep.target.module is module and graph.is_out_channel_pruning_fn(dep.handler):
            return [int(i) for i in idxs]
    return None


def _how_combined(importance: Any, root: str, layer: str) -> str:
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


# ----------------------------------------------------------------------------- coupling


def _via(node: Any, parent: dict, root: Any) -> list[str]:
    """The operations between the root and `node` along the group's own path ("add", "concat", ...)."""
    import torch_pruning as tp

    kinds, seen = [], set()
    while node is not root and node in parent and node not in seen:
        seen.add(node)
        node = parent[node].source
        name = type(node.grad_fn).__name__ if node.grad_fn is not None else ""
        if node.type == tp.ops.OPTYPE.ELEMENTWISE and ("Add" in name or "Sub" in name):
            kinds.append("add")
        elif node.type == tp.ops.OPTYPE.CONCAT:
            kinds.append("concat")
        elif node.type in (tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.UNBIND, tp.ops.OPTYPE.SLICE):
            kinds.append("split")
        elif node.type in (tp.ops.OPTYPE.RESHAPE, tp.ops.OPTYPE.EXPAND):
            kinds.append("reshape")
    return kinds


def _reason(module: nn.Module, side: str, via: list[str], before: str | None, layer: str) -> tuple[str, str]:
    """(kind, plain words) for one coupled module."""
    through = " (through the residual add)" if "add" in via else ""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        after = f" after {before}" if before else ""
        return "batchnorm", (f"BatchNorm{after}: its scale γ, shift β and running statistics are kept per channel, "
                             f"so they go with the channel{through}")
    if isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels:
        return "depthwise", ("depthwise convolution: it has one filter per input channel, so a channel that goes "
                             "takes its filter and its output with it")
    if side == "input":
        if "concat" in via:
            return "concat", ("concatenation: this layer reads the channel as part of a concatenated input, so "
                              "it loses the matching input channel (at the channel's offset)")
        flat = " (after flattening)" if "reshape" in via else ""
        return "next-input", f"the next layer: it reads these channels as its input channels{through}{flat}"
    if "add" in via:
        return "residual", (f"residual add: its output is added to {layer}'s, so both must keep the same "
                            "channels")
    if "concat" in via:
        return "concat", "concatenation: its output channels are joined with this layer's and cut together"
    if isinstance(module, PRUNABLE):
        return "output", "shares the output channels with this layer"
    return "other", f"{type(module).__name__} keeps per-channel parameters, so it loses the channel too"


# the order a student reads them in: what shares the output first, then what reads it
KIND_ORDER = ("residual", "concat", "depthwise", "output", "batchnorm", "other", "next-input")


def _couplings(graph: Any, model: nn.Module, module: nn.Module, layer: str) -> tuple[Coupled, ...]:
    """Every named module in the dependency group of `module`'s output channels, with a reason."""
    names = {m: n for n, m in model.named_modules()}
    out_fn = graph.get_pruner_of_module(module).prune_out_channels
    n = int(graph.get_out_channels(module) or 0)
    group = graph.get_pruning_group(module, out_fn, list(range(n)))
    root = graph.module2node[module]
    parent: dict = {}
    for dep, _ in group:
        if dep.target is not dep.source:
            parent.setdefault(dep.target, dep)
    found: dict[tuple[str, str], Coupled] = {}
    for dep, _ in group:
        target = dep.target.module
        name = names.get(target)
        if not name or target is module:
            continue
        side = "output" if graph.is_out_channel_pruning_fn(dep.handler) else "input"
        if (name, side) in found:
            continue
        before = None
        if isinstance(target, nn.modules.batchnorm._BatchNorm):
            feeding = [names.get(i.module) for i in dep.target.inputs if isinstance(i.module, PRUNABLE)]
            before = next((f for f in feeding if f), None)
        kind, words = _reason(target, side, _via(dep.target, parent, root), before, layer)
        found[(name, side)] = Coupled(name, kind, words, side)
    return tuple(sorted(found.values(), key=lambda c: KIND_ORDER.index(c.kind)))


def coupling(model: nn.Module, input_shape: Shape, layer: str) -> tuple[Coupled, ...]:
    """Every layer coupled to `layer`'s output channels, with the reason (residual add, BatchNorm, ...)."""
    import torch_pruning as tp

    module = _module(model, layer)
    device = next(model.parameters()).device
    graph = tp.DependencyGraph().build_dependency(model.eval(), example_inputs=torch.zeros(1, *input_shape,
                                                                                           device=device))
    return _couplings(graph, model, module, layer)


# ----------------------------------------------------------------------------- scores


class _Session:
    """A copy of the model and one pruner built with the run's options, shared by every criterion.

    Building the dependency graph costs forward passes; the criteria differ only in the importance,
    which is swapped in before each interactive step (everything else is the run's own pruner)."""

    def __init__(self, model: nn.Module, input_shape: Shape, cfg: PruneConfig, num_classes: int | None,
                 cancel: CancelToken) -> None:
        from engine.pruners import make_pruner
        from engine.training import resolve_device

        device, _ = resolve_device(cfg.device)
        self.work = copy.deepcopy(model).to(device).eval()
        self.example = torch.zeros(1, *input_shape, device=device)
        self.cfg, self.cancel = cfg, cancel
        self.pruner = make_pruner(self.work, _structured(cfg.method), cfg, self.example, num_classes, 1, cancel)
        self.tp, self.graph = self.pruner.pruner, self.pruner.pruner.DG
        self.names = {m: n for n, m in self.work.named_modules()}

    def step(self, module: nn.Module, method: Method, data: Dataset | None, apply: bool
             ) -> Generator[Progress, None, tuple[_Recorder, list[int]]]:
        """One interactive step with `method`'s importance: the recorded scores and `module`'s cut."""
        if method.calibration is not None and data is None:
            raise UserError(f"{method.name} scores channels from training images ({method.calibration.words}); "
                            "load a dataset first")
        torch.manual_seed(self.cfg.seed)  # the random criterion draws the same channels each time it is shown
        importance = method.factory()
        if method.calibration is not None:
            yield from method.calibration.run(self.work, importance, data, self.example.device,
                                              self.cfg.calibration_batches, self.cfg.seed, self.cancel)
        recorder = _Recorder(importance)
        self.tp.importance, self.tp.current_step = recorder, 0
        cut: list[int] = []
        for group in self.tp.step(interactive=True):
            self.cancel.check()
            cut = _idxs_of(group, module, self.graph) or cut
            if apply:
                group.prune()
        if apply:
            self.pruner.prep.after_step(self.work)
        self.work.zero_grad(set_to_none=True)
        return recorder, cut


def _score(session: _Session, layer: str, method: Method, data: Dataset | None, apply: bool = False
           ) -> Generator[Progress, None, ChannelScores]:
    """`layer`'s scores and cut under `method` (with `apply`, the session's copy is pruned too)."""
    module = _module(session.work, layer)
    graph, names = session.graph, session.names
    n = int(module.weight.shape[0])  # before any pruning
    recorder, cut_idxs = yield from session.step(module, method, data, apply)
    notes: list[str] = []
    match = next(((g, imp) for g, imp in recorder.seen if _idxs_of(g, module, graph) is not None), None)
    pruned = match is not None and match[1] is not None
    if match is None:  # the pruner leaves this layer alone: show what the method would have said
        group = graph.get_pruning_group(module, graph.get_pruner_of_module(module).prune_out_channels,
                                        list(range(n)))
        match = (group, recorder.inner(group))
        notes.append("this layer is left alone (the classifier head, an ignored layer, or at the maximum layer "
                     "ratio): nothing is cut; the scores are what the method would have used")
    group, imp = match
    root = names.get(group[0].dep.target.module, layer)
    scores = np.full(n, np.nan)
    if imp is None:
        notes.append(f"{method.title} cannot score this layer: {method.measures} does not exist here")
    else:
        values = imp.detach().float().cpu()
        groups = session.tp._get_channel_groups(group)
        if groups > 1:  # grouped layers: the pruner ranks the average over the groups
            values = values.view(groups, -1).mean(0).repeat(groups)
        idxs = _idxs_of(group, module, graph) or []
        if len(idxs) == len(values):
            scores[np.asarray(idxs)] = values.numpy()
        elif len(values) == n:
            scores[:] = values.numpy()
        else:
            notes.append(f"the group's scores ({len(values)}) do not map one to one onto this layer's {n} channels")
    how = _how_combined(recorder.inner, root, layer)
    if how:
        notes.append(how)
    cut = np.zeros(n, dtype=bool)
    cut[np.asarray(cut_idxs, dtype=int)] = True
    order = np.lexsort((np.nan_to_num(scores, nan=np.inf), ~cut))
    ranks = np.empty(n, dtype=int)
    ranks[order] = np.arange(n)
    tied = () if apply else tuple(dict.fromkeys(c.layer for c in _couplings(graph, session.work, module, layer)))
    return ChannelScores(layer, method.name, float(session.cfg.pruning_ratio or 0.0), scores, cut, order, ranks,
                         root, tied, pruned, tuple(notes))


def iter_channel_scores(model: nn.Module, layer: str, method: str, data: Dataset | None, input_shape: Shape,
                        num_classes: int | None, cfg: PruneConfig | None = None, ratio: float | None = None,
                        cancel: CancelToken | None = None) -> Generator[Progress, None, ChannelScores]:
    """Yield calibration progress; return the scores `method` gives `layer`'s channels and its cut set.

    `cfg` carries the run's options (round_to, scope, ignored layers, calibration batches, seed);
    `ratio` overrides its pruning ratio. The model itself is never changed."""
    cfg = _config(cfg, method, ratio)
    _module(model, layer)
    session = _Session(model, input_shape, cfg, num_classes, cancel or CancelToken())
    return (yield from _score(session, layer, _structured(method), data))


def channel_scores(model: nn.Module, layer: str, method: str, data: Dataset | None, input_shape: Shape,
                   num_classes: int | None, cfg: PruneConfig | None = None, ratio: float | None = None
                   ) -> ChannelScores:
    """The scores `method` gives `layer`'s channels, sorted, with the channels the ratio removes."""
    return result_of(iter_channel_scores(model, layer, method, data, input_shape, num_classes, cfg, ratio))


def jaccard(cuts: list[np.ndarray]) -> np.ndarray:
    """Pairwise |A ∩ B| / |A ∪ B| of boolean cut masks (1 when both are empty)."""
    k = len(cuts)
    out = np.ones((k, k))
    for i in range(k):
        for j in range(k):
            union = np.logical_or(cuts[i], cuts[j]).sum()
            out[i, j] = np.logical_and(cuts[i], cuts[j]).sum() / union if union else 1.0
    return out


def iter_criteria(model: nn.Module, layer: str, data: Dataset | None, input_shape: Shape, num_classes: int | None,
                  cfg: PruneConfig | None = None, ratio: float | None = None, methods: list[str] | None = None,
                  cancel: CancelToken | None = None) -> Generator[Progress, None, Criteria]:
    """Score `layer` with every structured criterion of the registry (or `methods`); return them all."""
    cancel = cancel or CancelToken()
    names = methods or [m.name for m in all_methods(STRUCTURED)
                        if m.calibration is None or data is not None]  # data-aware ones need data
    if not names:
        raise UserError("no criteria to compare: give at least one structured method")
    base = _config(cfg, names[0], ratio)
    _module(model, layer)
    yield Progress("explain", 0, len(names) + 1, "tracing the dependency graph")
    session = _Session(model, input_shape, base, num_classes, cancel)
    scores: dict[str, ChannelScores] = {}
    for i, name in enumerate(names):
        yield Progress("explain", i + 1, len(names) + 1, f"scoring {layer} with {name}")
        scores[name] = yield from _score(session, layer, _structured(name), data)
    yield Progress("explain", len(names) + 1, len(names) + 1, "criteria compared")
    return Criteria(layer, tuple(names), scores, jaccard([scores[n].cut for n in names]))


def criteria_side_by_side(model: nn.Module, layer: str, data: Dataset | None, input_shape: Shape,
                          num_classes: int | None, cfg: PruneConfig | None = None, ratio: float | None = None,
                          methods: list[str] | None = None) -> Criteria:
    """`layer` scored by every structured criterion, which channels each cuts, and their Jaccard matrix."""
    return result_of(iter_criteria(model, layer, data, input_shape, num_classes, cfg, ratio, methods))


def explain_layer(model: nn.Module, layer: str, cfg: PruneConfig, data: Dataset | None, input_shape: Shape,
                  num_classes: int | None, cancel: CancelToken | None = None
                  ) -> Generator[Progress, None, Explanation]:
    """Everything the Teach tab shows for `layer` under `cfg` (its method, every criterion, the couplings)."""
    criteria = yield from iter_criteria(model, layer, data, input_shape, num_classes, cfg, cfg.pruning_ratio,
                                        cancel=cancel)
    chosen = criteria.scores.get(cfg.method)
    if chosen is None and get_method(cfg.method).structured:
        chosen = yield from iter_channel_scores(model, layer, cfg.method, data, input_shape, num_classes, cfg,
                                                cancel=cancel)
    return Explanation(layer, cfg.method, chosen, criteria, coupling(copy.deepcopy(model).cpu(), input_shape, layer))


# ----------------------------------------------------------------------------- images


def test_image(data: Dataset, index: int) -> tuple[torch.Tensor, int, np.ndarray]:
    """Test image `index`: (normalised 1×C×H×W tensor, label, displayable picture in [0, 1])."""
    total = data.split_size("test")
    if not 0 <= index < total:
        raise UserError(f"image {index} does not exist: the test split has images 0 to {total - 1}")
    for x, y in data.loader("test", batch_size=1, limit=index + 1):
        image, label = x, int(y[0])
    mean = torch.tensor(data.norm.mean).view(-1, 1, 1)
    std = torch.tensor(data.norm.std).view(-1, 1, 1)
    picture = (image[0] * std + mean).clamp(0, 1).numpy()
    picture = picture[0] if picture.shape[0] == 1 else picture[:3].transpose(1, 2, 0)
    return image, label, picture


@torch.no_grad()
def feature_maps(model: nn.Module, layer: str, image: torch.Tensor) -> FeatureMaps:
    """The activation map of every output channel of `layer` for one image."""
    module = _module(model, layer)
    seen: list[torch.Tensor] = []
    hook = module.register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        model(image.reshape(1, *image.shape[-3:]).to(device))
    finally:
        hook.remove()
        model.train(was_training)
    out = seen[0][0].float().cpu()
    maps = out.reshape(out.shape[0], 1, 1) if out.dim() == 1 else out.reshape(out.shape[0], *out.shape[-2:])
    flat = maps.reshape(maps.shape[0], -1)
    return FeatureMaps(layer, maps.numpy(), flat.mean(1).numpy(), flat.abs().amax(1).numpy())


@torch.no_grad()
def top_predictions(model: nn.Module, image: torch.Tensor, class_names: tuple[str, ...], k: int = 5
                    ) -> tuple[Prediction, ...]:
    """The model's `k` most probable classes for one image."""
    model.eval()
    device = next(model.parameters()).device
    probs = torch.softmax(model(image.reshape(1, *image.shape[-3:]).to(device)).float(), dim=1)[0].cpu()
    top = torch.topk(probs, min(k, probs.numel()))
    return tuple(Prediction(int(i), class_names[int(i)] if int(i) < len(class_names) else str(int(i)), float(p))
                 for p, i in zip(top.values, top.indices))


def explain_image(model: nn.Module, layer: str, cfg: PruneConfig, data: Dataset, index: int, input_shape: Shape,
                  num_classes: int | None, cancel: CancelToken | None = None
                  ) -> Generator[Progress, None, ImageExplanation]:
    """Test image `index` through `layer` (a map per channel, the cut ones marked) and the top-5 of the
    original, of the copy pruned by `cfg`'s method at its ratio, and (when the config re-estimates
    BatchNorm) of that copy after the re-estimation."""
    from engine.pruning import recalibrate_batchnorm

    cancel = cancel or CancelToken()
    cfg = _config(cfg, cfg.method, cfg.pruning_ratio)
    image, label, picture = test_image(data, index)
    yield Progress("explain", 0, 2, f"pruning a copy with {cfg.method}")
    session = _Session(model, input_shape, cfg, num_classes, cancel)
    work = session.work
    maps = feature_maps(work, layer, image)
    original = top_predictions(work, image, data.class_names)
    scores = yield from _score(session, layer, _structured(cfg.method), data, apply=True)
    pruned = top_predictions(work, image, data.class_names)
    recovered: tuple[Prediction, ...] = ()
    if cfg.bn_recalibrate:
        yield Progress("explain", 1, 2, "re-estimating BatchNorm on the pruned copy")
        yield from recalibrate_batchnorm(work, data, cfg.bn_batches, session.example.device, cancel)
        recovered = top_predictions(work, image, data.class_names)
    yield Progress("explain", 2, 2, "done")
    name = data.class_names[label] if label < len(data.class_names) else str(label)
    return ImageExplanation(index, label, name, picture, maps, scores.cut, original, pruned, recovered)


def activation_stats(maps: FeatureMaps, cut: np.ndarray) -> list[dict]:
    """Per channel: mean and peak activation and whether it is cut (for the JSON mirror)."""
    return [{"channel": i, "mean": float(m), "peak": float(p), "cut": bool(c)}
            for i, (m, p, c) in enumerate(zip(maps.mean, maps.peak, cut))]
