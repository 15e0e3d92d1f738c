"""The scores each method uses for a layer's channels, the cut it makes, and criteria side by side."""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Generator

import numpy as np
import torch
import torch.nn as nn

from engine.config import PruneConfig
from engine.data import Dataset, Shape
from engine.errors import UserError
from engine.events import CancelToken, Progress, result_of
from engine.methods import STRUCTURED, Method, all_methods, get_method
from engine.explain.common import Recorder, how_combined, indices_of, layer_module, run_config, structured_method
from engine.explain.coupling import Coupled, coupling, couplings_in


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


class Session:
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
        self.pruner = make_pruner(self.work, structured_method(cfg.method), cfg, self.example, num_classes, 1, cancel)
        self.tp, self.graph = self.pruner.pruner, self.pruner.pruner.DG
        self.names = {m: n for n, m in self.work.named_modules()}
        self.groups: dict[nn.Module, list] = {}  # module -> [the pruner's group holding its output channels]
        self.calibrated: dict = {}  # calibration key -> Calibrated (gradients reused for the same data)
        self.pending: tuple | None = None  # a calibration not yet scored with (kept once it has been)

    def _own_group(self, module: nn.Module) -> list:
        """The group the pruner itself forms for `module`'s output channels (its root is the pruner's, which
        decides what "first" means), or [] when the pruner leaves the module alone; found once per module."""
        if module not in self.groups:
            tp = self.tp
            found = (g for g in self.graph.get_all_groups(ignored_layers=tp.ignored_layers,
                                                          root_module_types=tp.root_module_types)
                     if indices_of(g, module, self.graph) is not None)
            self.groups[module] = [g for g in found][:1]
        return self.groups[module]

    def _needed(self, module: nn.Module) -> set[nn.Parameter]:
        """The parameters whose gradients a group-wise importance reads for `module`'s group."""
        groups = list(self._own_group(module))
        out_fn = self.graph.get_pruner_of_module(module).prune_out_channels
        n = int(module.weight.shape[0])
        groups.append(self.graph.get_pruning_group(module, out_fn, list(range(n))))
        return {p for g in groups for dep, _ in g for p in dep.target.module.parameters(recurse=False)}

    def calibrate(self, method: Method, data: Dataset, module: nn.Module | None
                  ) -> Generator[Progress, None, object]:
        """`method`'s importance after its calibration; for one layer (`module`) only the gradients of that
        layer's group are computed (the same values: backward simply stops there), and they are kept, so
        explaining the layer again or another criterion of the same kind reuses them."""
        cal = method.calibration
        key = (cal, id(data), self.cfg.calibration_batches, self.cfg.seed)
        params = dict(self.work.named_parameters())
        everything = set(params.values())
        needed = everything if module is None else self._needed(module)
        kept = self.calibrated.get(key)
        if kept is not None and kept.data is data and needed <= kept.params:
            kept.restore()
            return kept.importance
        if kept is not None and kept.data is data:
            needed = needed | kept.params  # a new group: compute it together with what is kept
        importance, self.pending = method.factory(), None
        flags = {p: p.requires_grad for p in everything}
        try:
            for p in everything:
                p.requires_grad_(p in needed and flags[p])
            yield from cal.run(self.work, importance, data, self.example.device, self.cfg.calibration_batches,
                               self.cfg.seed, self.cancel)
        finally:
            for p, flag in flags.items():
                p.requires_grad_(flag)
        self.pending = (key, Calibrated(data, importance, needed, {}))
        return importance

    def settle(self) -> None:
        """Keep the gradients of a calibration just scored with, as the importance left them (Hessian turns its
        squared per-image gradients into `.grad` on its first call), for the next call to reuse."""
        if self.pending is not None:
            key, kept = self.pending
            kept.grads = {p: p.grad.detach().clone() for p in kept.params if p.grad is not None}
            self.calibrated[key], self.pending = kept, None

    def step(self, module: nn.Module, method: Method, data: Dataset | None, apply: bool
             ) -> Generator[Progress, None, tuple[Recorder, list[int]]]:
        """One interactive step with `method`'s importance: the recorded scores and `module`'s cut."""
        if method.calibration is not None and data is None:
            raise UserError(f"{method.name} scores channels from training images ({method.calibration.words}); "
                            "load a dataset first")
        torch.manual_seed(self.cfg.seed)  # the random criterion draws the same channels each time it is shown
        # Under layer scope each group is cut on its own, so only the layer's group needs scoring (a
        # 512-channel layer of ResNet-18 took seconds when every group was scored).
        alone = not apply and self.cfg.scope == "layer"
        if method.calibration is not None:
            importance = yield from self.calibrate(method, data, module if alone else None)
        else:
            importance = method.factory()
        from engine import tp_compat

        recorder = Recorder(importance)
        tp_compat.restart(self.tp, recorder)
        cut: list[int] = []
        with tp_compat.only_groups(self.graph, self._own_group(module)) if alone else contextlib.nullcontext():
            for group in self.tp.step(interactive=True):
                self.cancel.check()
                cut = indices_of(group, module, self.graph) or cut
                if apply:
                    group.prune()
        if apply:
            self.pruner.prep.after_step(self.work)
        return recorder, cut


@dataclass
class Calibrated:
    """A calibrated importance and the gradients it reads, for the parameters they were computed for."""

    data: Dataset
    importance: object
    params: set
    grads: dict

    def restore(self) -> None:
        """Put the kept gradients back (scoring reads them from `.grad`)."""
        for p, g in self.grads.items():
            p.grad = g.clone()


def score_layer(session: Session, layer: str, method: Method, data: Dataset | None, apply: bool = False
           ) -> Generator[Progress, None, ChannelScores]:
    """`layer`'s scores and cut under `method` (with `apply`, the session's copy is pruned too)."""
    module = layer_module(session.work, layer)
    graph, names = session.graph, session.names
    n = int(module.weight.shape[0])  # before any pruning
    recorder, cut_idxs = yield from session.step(module, method, data, apply)
    notes: list[str] = []
    match = next(((g, imp) for g, imp in recorder.seen if indices_of(g, module, graph) is not None), None)
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
        from engine import tp_compat

        groups = tp_compat.channel_groups(session.tp, group)
        if groups > 1:  # grouped layers: the pruner ranks the average over the groups
            values = values.view(groups, -1).mean(0).repeat(groups)
        idxs = indices_of(group, module, graph) or []
        if len(idxs) == len(values):
            scores[np.asarray(idxs)] = values.numpy()
        elif len(values) == n:
            scores[:] = values.numpy()
        else:
            notes.append(f"the group's scores ({len(values)}) do not map one to one onto this layer's {n} channels")
    how = how_combined(recorder.inner, root, layer)
    if how:
        notes.append(how)
    cut = np.zeros(n, dtype=bool)
    cut[np.asarray(cut_idxs, dtype=int)] = True
    order = np.lexsort((np.nan_to_num(scores, nan=np.inf), ~cut))
    ranks = np.empty(n, dtype=int)
    ranks[order] = np.arange(n)
    session.settle()
    session.work.zero_grad(set_to_none=True)  # after the scores: a layer left alone is scored from them above
    tied = () if apply else tuple(dict.fromkeys(c.layer for c in couplings_in(graph, session.work, module, layer)))
    return ChannelScores(layer, method.name, float(session.cfg.pruning_ratio or 0.0), scores, cut, order, ranks,
                         root, tied, pruned, tuple(notes))


def iter_channel_scores(model: nn.Module, layer: str, method: str, data: Dataset | None, input_shape: Shape,
                        num_classes: int | None, cfg: PruneConfig | None = None, ratio: float | None = None,
                        cancel: CancelToken | None = None) -> Generator[Progress, None, ChannelScores]:
    """Yield calibration progress; return the scores `method` gives `layer`'s channels and its cut set.

    `cfg` carries the run's options (round_to, scope, ignored layers, calibration batches, seed);
    `ratio` overrides its pruning ratio. The model itself is never changed."""
    cfg = run_config(cfg, method, ratio)
    layer_module(model, layer)
    session = _session(model, input_shape, cfg, num_classes, cancel or CancelToken())
    return (yield from score_layer(session, layer, structured_method(method), data))


_LAST: list = []  # (weak reference to the model, key, Session): the Teach tab explains layer after layer


def _session(model: nn.Module, input_shape: Shape, cfg: PruneConfig, num_classes: int | None,
             cancel: CancelToken) -> Session:
    """The traced copy of the last call when model, shape and options are the same (nothing applies cuts to
    it, so it stays the unpruned model); copying and tracing again cost most of a call."""
    import json
    import weakref

    # the criteria share the session (only the importance is swapped in), so the method is no part of the key
    # unless it picks another torch-pruning pruner class
    method = structured_method(cfg.method)
    options = dict(cfg.to_json(), method=method.tp_pruner(cfg)[0] if method.tp_pruner else "MetaPruner")
    key = (tuple(input_shape), num_classes, json.dumps(options, sort_keys=True, default=str))
    if _LAST and _LAST[0][0]() is model and _LAST[0][1] == key:
        session = _LAST[0][2]
        session.cancel = cancel
        return session
    session = Session(model, input_shape, cfg, num_classes, cancel)
    _LAST[:] = [(weakref.ref(model), key, session)]
    return session


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


def _start(model: nn.Module, layer: str, data: Dataset | None, input_shape: Shape, num_classes: int | None,
           cfg: PruneConfig | None, ratio: float | None, methods: list[str] | None, cancel: CancelToken
           ) -> Generator[Progress, None, tuple[list[str], Session]]:
    """The criteria to score (the registry's structured ones, or `methods`) and the traced session."""
    names = methods or [m.name for m in all_methods(STRUCTURED)
                        if m.calibration is None or data is not None]  # data-aware ones need data
    if not names:
        raise UserError("no criteria to compare: give at least one structured method")
    base = run_config(cfg, names[0], ratio)
    layer_module(model, layer)
    yield Progress("explain", 0, len(names) + 1, "tracing the dependency graph")
    return names, _session(model, input_shape, base, num_classes, cancel)


def iter_criteria(model: nn.Module, layer: str, data: Dataset | None, input_shape: Shape, num_classes: int | None,
                  cfg: PruneConfig | None = None, ratio: float | None = None, methods: list[str] | None = None,
                  cancel: CancelToken | None = None) -> Generator[Progress, None, Criteria]:
    """Score `layer` with every structured criterion of the registry (or `methods`); return them all."""
    cancel = cancel or CancelToken()
    names, session = yield from _start(model, layer, data, input_shape, num_classes, cfg, ratio, methods, cancel)
    scores: dict[str, ChannelScores] = {}
    for i, name in enumerate(names):
        yield Progress("explain", i + 1, len(names) + 1, f"scoring {layer} with {name}")
        scores[name] = yield from score_layer(session, layer, structured_method(name), data)
    yield Progress("explain", len(names) + 1, len(names) + 1, "criteria compared")
    return _criteria(layer, names, scores)


def criteria_side_by_side(model: nn.Module, layer: str, data: Dataset | None, input_shape: Shape,
                          num_classes: int | None, cfg: PruneConfig | None = None, ratio: float | None = None,
                          methods: list[str] | None = None) -> Criteria:
    """`layer` scored by every structured criterion, which channels each cuts, and their Jaccard matrix."""
    return result_of(iter_criteria(model, layer, data, input_shape, num_classes, cfg, ratio, methods))


@dataclass(frozen=True)
class ChosenScores:
    """Yielded by `explain_layer` as soon as the chosen method has scored the layer, before the other criteria
    (Taylor's and Hessian's calibration can take most of a minute), so the first views need not wait."""

    layer: str
    method: str
    scores: ChannelScores | None  # None for an unstructured method
    coupling: tuple[Coupled, ...]


@dataclass(frozen=True)
class CriteriaSoFar:
    """Yielded by `explain_layer` after each further criterion: those scored so far (in the registry's order,
    with their Jaccard matrix) and those still to come, in the order they will be scored."""

    criteria: Criteria
    pending: tuple[str, ...]


def _criteria(layer: str, names: list[str], scores: dict[str, ChannelScores]) -> Criteria:
    """The criteria of `names` already in `scores`, in the order of `names` (the registry's)."""
    done = [n for n in names if n in scores]
    return Criteria(layer, tuple(done), {n: scores[n] for n in done}, jaccard([scores[n].cut for n in done]))


def explain_layer(model: nn.Module, layer: str, cfg: PruneConfig, data: Dataset | None, input_shape: Shape,
                  num_classes: int | None, cancel: CancelToken | None = None
                  ) -> Generator[Progress | ChosenScores | CriteriaSoFar, None, Explanation]:
    """Everything the Teach tab shows for `layer` under `cfg` (its method, every criterion, the couplings).

    The chosen method is scored first and yielded as ChosenScores with the couplings; then the other
    criteria, data-free ones first, each followed by CriteriaSoFar. The result is what scoring them in the
    registry's order gives (each step reseeds and starts from the unpruned copy)."""
    cancel = cancel or CancelToken()
    names, session = yield from _start(model, layer, data, input_shape, num_classes, cfg, cfg.pruning_ratio, None,
                                       cancel)  # the session iter_criteria would build
    total = len(names) + 1
    scores: dict[str, ChannelScores] = {}
    if cfg.method in names:
        yield Progress("explain", 1, total, f"scoring {layer} with {cfg.method}")
        scores[cfg.method] = yield from score_layer(session, layer, structured_method(cfg.method), data)
        chosen = scores[cfg.method]
    elif get_method(cfg.method).structured:
        chosen = yield from iter_channel_scores(model, layer, cfg.method, data, input_shape, num_classes, cfg,
                                                cancel=cancel)
    else:
        chosen = None
    group = coupling(copy.deepcopy(model).cpu(), input_shape, layer)
    yield ChosenScores(layer, cfg.method, chosen, group)
    # cheapest first: the data-free criteria take under a second, Taylor and Hessian calibrate on images
    rest = sorted((n for n in names if n not in scores), key=lambda n: get_method(n).calibration is not None)
    for i, name in enumerate(rest):
        cancel.check()
        calibrated = " (calibration on training images)" if get_method(name).calibration is not None else ""
        yield Progress("explain", len(scores) + 1, total, f"scoring {layer} with {name}{calibrated}")
        scores[name] = yield from score_layer(session, layer, structured_method(name), data)
        yield CriteriaSoFar(_criteria(layer, names, scores), tuple(rest[i + 1:]))
    yield Progress("explain", total, total, "criteria compared")
    return Explanation(layer, cfg.method, chosen, _criteria(layer, names, scores), group)
