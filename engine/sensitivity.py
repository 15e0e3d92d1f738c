"""Per-layer sensitivity: prune each dependency group alone at several ratios and record the accuracy drop.

The curves say which layers tolerate pruning; `propose_layer_ratios` turns them into per-layer ratios
(sensitive groups pruned less) whose MACs match the uniform configuration's, counted on the real
pruned model. Pruning goes through torch-pruning's DependencyGraph, so coupled layers (residual
partners, the next layer's inputs) lose the same channels as in a real run.
"""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn as nn

from engine.preparation import kept_channels, ratio_keeping
from engine.checks import check_walkable
from engine.data import Dataset
from engine.data.common import EVAL_SAMPLING
from engine.errors import UserError
from engine.events import CancelToken, Eta, Progress
from engine.layers import ignored_modules, walk_groups
from engine.methods import get_method
from engine.metrics import count_macs
from engine.models import ModelBundle
from engine.tracing import cuts_heads, dependency_graph
from engine.training import quick_top1

DEFAULT_RATIOS = (0.1, 0.3, 0.5, 0.7, 0.9)
DEFAULT_LIMIT = 1000  # validation images per evaluation: ±1 pt noise, seconds per point on the demo


@dataclass(frozen=True)
class GroupSensitivity:
    """One dependency group (named by its root layer): accuracy and MACs when pruned alone at each ratio."""

    name: str
    layers: tuple[str, ...]  # every conv/linear whose output channels are removed with the group
    channels: int
    top1: np.ndarray  # fraction, per ratio
    drops: np.ndarray  # accuracy drop in points, per ratio (positive = worse)
    macs: np.ndarray  # MACs of the whole model with this group pruned, per ratio

    @property
    def score(self) -> float:
        """Mean drop over the scanned ratios (points): one number for colouring."""
        return float(np.mean(self.drops)) if len(self.drops) else 0.0


@dataclass(frozen=True)
class SensitivityDone:
    """The finished scan: ratios, the baseline accuracy on the same images, one curve per group."""

    model: str
    dataset: str
    method: str
    ratios: np.ndarray
    baseline_top1: float
    base_macs: int
    groups: tuple[GroupSensitivity, ...]
    seconds: float
    limit: int | None
    split: str
    bn_recalibrate: bool

    @property
    def drops(self) -> np.ndarray:
        """Drops in points, shape (groups, ratios)."""
        return np.stack([g.drops for g in self.groups]) if self.groups else np.zeros((0, len(self.ratios)))

    def layer_scores(self) -> dict[str, float]:
        """Layer name -> its group's mean drop (points), for colouring tables and graphs."""
        return {layer: g.score for g in self.groups for layer in g.layers}

    def group_of(self, layer: str) -> GroupSensitivity | None:
        """The group a layer is pruned with."""
        return next((g for g in self.groups if layer in g.layers), None)

    def to_json(self) -> dict:
        """Plain dict (the `sensitivity --json` file and the result store)."""
        return {"model": self.model, "dataset": self.dataset, "method": self.method,
                "ratios": [float(r) for r in self.ratios], "baseline_top1": self.baseline_top1,
                "base_macs": self.base_macs, "seconds": round(self.seconds, 2), "limit": self.limit,
                "split": self.split, "bn_recalibrate": self.bn_recalibrate,
                "groups": [{"name": g.name, "layers": list(g.layers), "channels": g.channels,
                            "top1": [float(v) for v in g.top1], "drops": [round(float(v), 3) for v in g.drops],
                            "macs": [int(v) for v in g.macs], "score": round(g.score, 3)} for g in self.groups]}

    @classmethod
    def from_json(cls, d: dict) -> "SensitivityDone":
        """Inverse of to_json."""
        groups = tuple(GroupSensitivity(g["name"], tuple(g["layers"]), g["channels"], np.asarray(g["top1"]),
                                        np.asarray(g["drops"]), np.asarray(g["macs"], dtype=np.int64))
                       for g in d["groups"])
        return cls(d["model"], d["dataset"], d["method"], np.asarray(d["ratios"]), d["baseline_top1"],
                   d["base_macs"], groups, d.get("seconds", 0.0), d.get("limit"), d.get("split", "val"),
                   d.get("bn_recalibrate", False))


def scan_key(identity: dict, dataset: str, options: dict) -> str:
    """Deterministic key of a scan (model identity, dataset and the scan's options with defaults)."""
    opts = {"ratios": [float(r) for r in options.get("ratios", DEFAULT_RATIOS)],
            "limit": options.get("limit", DEFAULT_LIMIT), "method": options.get("method", "l2"),
            "bn_recalibrate": bool(options.get("bn_recalibrate", True))}
    key = {"model": identity, "data": dataset, "scan": opts}
    raw = json.dumps(dict(key, sample=EVAL_SAMPLING) if opts["limit"] else key, sort_keys=True, default=str)
    return "scan-" + hashlib.sha256(raw.encode()).hexdigest()[:20]


def layer_groups(model: nn.Module, input_shape, num_classes: int | None = None,
                 keep_head: bool = True) -> list[tuple[str, tuple[str, ...], int]]:
    """(root layer, member layers, channels) of every prunable dependency group, in model order."""
    example = torch.zeros(1, *input_shape, device=next(model.parameters()).device)
    return [(g.root, g.members, g.channels)
            for g in walk_groups(model, example, ignored_modules(model, (), keep_head, num_classes))
            if g.root and g.channels > 1 and not cuts_heads(g.group)]  # Swin's stream: only a run cuts it evenly


def _importance(model: nn.Module, method_name: str, data: Dataset, input_shape, num_classes, keep_head: bool,
                device: torch.device, cancel: CancelToken) -> dict[str, np.ndarray]:
    """Channel scores of every group's root under the chosen method (computed once, on the original)."""
    method = get_method(method_name)
    if not method.structured:
        raise UserError(f"sensitivity scans remove channels; {method.name} is unstructured — use a structured "
                        "method such as l2")
    if method.calibration is not None and method.calibration.per_image:
        raise UserError(f"{method.name} needs {method.calibration.words}, too slow for a scan; use l2, taylor or "
                        "fpgm")
    imp = method.factory()
    if method.calibration is not None:
        for _ in method.calibration.run(model, imp, data, device, batches=4, seed=0, cancel=cancel):
            pass  # a few seconds; the scan's own progress follows
    example = torch.zeros(1, *input_shape, device=device)
    scores = {}
    for g in walk_groups(model, example, ignored_modules(model, (), keep_head, num_classes)):
        with torch.no_grad():
            s = imp(g.group)
        if g.root is None or s is None:
            continue
        s = s.detach().float().cpu().numpy()
        if g.channels and len(s) != g.channels and len(s) % g.channels == 0:
            s = s.reshape(-1, g.channels).mean(0)
        scores[g.root] = s
    model.zero_grad(set_to_none=True)
    return scores


def _prune_group(model: nn.Module, root: str, idxs: list[int], example: torch.Tensor) -> None:
    """Remove output channels `idxs` of `root` and everything coupled to it, in place."""
    module = dict(model.named_modules())[root]
    graph = dependency_graph(model, example)
    fn = graph.get_pruner_of_module(module).prune_out_channels
    graph.get_pruning_group(module, fn, idxs).prune()


def scan(bundle: ModelBundle, data: Dataset, ratios: Sequence[float] = DEFAULT_RATIOS, method: str = "l2",
         limit: int | None = DEFAULT_LIMIT, cancel: CancelToken | None = None, bn_recalibrate: bool = True,
         bn_batches: int = 10, split: str = "val", keep_head: bool = True, device: str = "cpu") -> Iterator:
    """Prune each group alone at each ratio on a copy, evaluate on `limit` images of `split`;
    yields Progress, then SensitivityDone. The original model is never modified.

    BatchNorm statistics are re-estimated after each cut by default: without it the curves mostly
    measure the shifted statistics, which recovery repairs anyway, and proposals built on them lost
    to uniform ratios on the demo (benchmarks/sensitivity_guided.py)."""
    from engine.pruning import recalibrate_batchnorm
    from engine.training import resolve_device

    cancel = cancel or CancelToken()
    ratios = tuple(float(r) for r in ratios)
    if not ratios or any(not 0.0 < r < 1.0 for r in ratios):
        raise UserError(f"sensitivity ratios must be between 0 and 1 (exclusive), got {list(ratios)}")
    ratios = tuple(sorted(set(ratios)))
    bundle.require_prunable()
    check_walkable(bundle.model, "the sensitivity scan")
    dev, _ = resolve_device(device)
    start = time.perf_counter()
    shape = tuple(bundle.input_shape or data.input_shape)
    original = copy.deepcopy(bundle.model).to(dev).eval()
    example = torch.zeros(1, *shape, device=dev)
    groups = layer_groups(original, shape, bundle.num_classes, keep_head)
    if not groups:
        raise UserError("the model has no prunable layer groups (convolutions or linear layers)")
    yield Progress("sensitivity", 0, len(groups) * len(ratios), "importance scores and baseline accuracy")
    scores = _importance(copy.deepcopy(original), method, data, shape, bundle.num_classes, keep_head, dev, cancel)
    base_top1 = quick_top1(original, data, split, dev, limit=limit, cancel=cancel)
    base_macs = count_macs(original, shape, dev.type)
    total = len(groups) * len(ratios)
    eta, done = Eta(total), 0
    results = []
    for root, members, channels in groups:
        order = np.argsort(scores.get(root, np.arange(channels, dtype=np.float64)), kind="stable")
        top1, macs = [], []
        for r in ratios:
            cancel.check()
            n = int(min(channels - 1, max(1, round(r * channels))))
            model = copy.deepcopy(original)
            _prune_group(model, root, sorted(int(i) for i in order[:n]), example)
            if bn_recalibrate:
                for _ in recalibrate_batchnorm(model, data, bn_batches, dev, cancel):
                    pass
            acc = quick_top1(model, data, split, dev, limit=limit, cancel=cancel)
            top1.append(acc)
            macs.append(count_macs(model, shape, dev.type))
            del model
            done += 1
            yield Progress("sensitivity", done, total,
                           f"{root} at {r:.0%}: {100 * (base_top1 - acc):+.1f} pt drop", eta(done))
        t = np.asarray(top1)
        results.append(GroupSensitivity(root, members, channels, t, np.round(100 * (base_top1 - t), 3),
                                        np.asarray(macs, dtype=np.int64)))
    yield SensitivityDone(bundle.source, data.name, method, np.asarray(ratios), base_top1, base_macs, tuple(results),
                          time.perf_counter() - start, limit, split, bn_recalibrate)


# ----------------------------------------------------------------------------- per-layer ratios


@dataclass(frozen=True)
class Proposal:
    """Per-layer ratios from a scan, with the MACs they give next to the uniform configuration's."""

    layer_ratios: dict  # layer name -> ratio, for every member of every scanned group
    group_ratios: dict  # root layer -> ratio
    macs: int
    uniform_macs: int
    base_macs: int
    estimated_drop: float  # sum of the groups' single-group drops at their ratios (points): what was minimised
    target_ratio: float


def pruned_macs(bundle: ModelBundle, default_ratio: float, layer_ratios: dict | None = None,
                round_to: int | None = 8, max_layer_ratio: float = 0.9, keep_head: bool = True) -> int:
    """MACs of the model pruned as engine.pruning would prune it (layer scope), counted on a real copy."""
    from engine.config import PruneConfig
    from engine.pruners import macs_at_ratio

    cfg = PruneConfig(pruning_ratio=default_ratio, layer_ratios=dict(layer_ratios or {}), round_to=round_to,
                      max_layer_ratio=max_layer_ratio, keep_head=keep_head)
    return macs_at_ratio(bundle.model, cfg, default_ratio, torch.zeros(1, *bundle.input_shape), bundle.num_classes)


def drop_at(ratios: np.ndarray, drops: np.ndarray, ratio: float) -> float:
    """A group's expected drop (points) at any ratio: the monotone envelope of its curve, interpolated
    (0 at ratio 0, extrapolated flat beyond the last scanned ratio)."""
    r = np.concatenate([[0.0], np.asarray(ratios, dtype=np.float64)])
    d = np.maximum.accumulate(np.concatenate([[0.0], np.maximum(np.asarray(drops, dtype=np.float64), 0.0)]))
    return float(np.interp(ratio, r, d))


def _uniform_kept(channels: int, ratio: float, unit: int) -> int:
    """Channels a run keeps at a ratio: int(C·(1 − r)), rounded as engine.preparation.kept_channels does."""
    return kept_channels(int(channels * (1.0 - ratio)), channels, unit)


GRID_LIMIT = 500_000  # configurations searched exhaustively; larger models fall back to the greedy search


def _probe_offsets(k0: int, unit: int, channels: int) -> list[int]:
    return [d for d in (unit, -unit, 2 * unit, -2 * unit) if 1 <= k0 + d <= channels][:2]


def _quadratic_macs(groups: list[GroupSensitivity], k0: dict, units: dict, macs_of) -> tuple[float, np.ndarray,
                                                                                           np.ndarray, np.ndarray]:
    """MACs as an exact quadratic in the kept channels (every conv/linear costs in × out), fitted from
    1 + 2n + n(n−1)/2 real counts around the uniform configuration `k0`.

    Returns (f0, a, c, b) with MACs(k0 + x) = f0 + a·x + c·x² + Σ_{g<h} b_gh x_g x_h.
    """
    n = len(groups)
    names = [g.name for g in groups]
    f0 = float(macs_of(k0))
    a, c, b = np.zeros(n), np.zeros(n), np.zeros((n, n))
    first = {}
    for i, g in enumerate(groups):
        ds = _probe_offsets(k0[g.name], units[g.name], g.channels)
        f = [float(macs_of(dict(k0, **{g.name: k0[g.name] + d}))) - f0 for d in ds]
        if len(ds) == 2:  # f(d) = a d + c d²
            d1, d2 = ds
            c[i] = (f[0] / d1 - f[1] / d2) / (d1 - d2)
            a[i] = f[0] / d1 - c[i] * d1
        elif len(ds) == 1:
            a[i] = f[0] / ds[0]
        if ds:
            first[i] = ds[0]
    for i in range(n):
        for j in range(i + 1, n):
            if i not in first or j not in first:
                continue
            di, dj = first[i], first[j]
            both = float(macs_of(dict(k0, **{names[i]: k0[names[i]] + di, names[j]: k0[names[j]] + dj}))) - f0
            b[i, j] = (both - a[i] * di - c[i] * di * di - a[j] * dj - c[j] * dj * dj) / (di * dj)
    return f0, a, c, b


def _grid_search(groups: list[GroupSensitivity], k0: dict, floor: dict, ceiling: dict, units: dict, cost,
                 macs_of, budget: int) -> dict | None:
    """The configuration with the least summed drop within the MACs budget, searched over every
    combination of kept-channel levels (uniform ± whole units); None when there are too many."""
    levels = []
    for g in groups:
        k, u = k0[g.name], units[g.name]
        below = (k - floor[g.name]) // u if k >= floor[g.name] else 0
        above = (ceiling[g.name] - k) // u if ceiling[g.name] >= k else 0
        levels.append(k + u * np.arange(-below, above + 1))
    shape = tuple(len(lv) for lv in levels)
    if int(np.prod(shape, dtype=np.float64)) > GRID_LIMIT:
        return None
    # groups pinned to one level (e.g. by max_shift) stay at k0 and need no probing
    free = [i for i, lv in enumerate(levels) if len(lv) > 1]
    if not free:
        return None
    f0, a, c, b = _quadratic_macs([groups[i] for i in free], k0, units, macs_of)
    index = np.indices(tuple(shape[i] for i in free)).reshape(len(free), -1)  # one column per configuration
    x = np.stack([levels[i][index[j]] - k0[groups[i].name] for j, i in enumerate(free)]).astype(np.float64)
    macs = f0 + a @ x + c @ (x * x) + np.einsum("ij,ik,jk->k", b, x, x)
    drop = sum(np.array([cost(groups[i], int(k)) for k in levels[i]])[index[j]] for j, i in enumerate(free))
    ok = np.flatnonzero(macs <= budget + 0.5)
    if not len(ok):
        return None
    # least drop; among equal drops the one using the most of the budget
    best = ok[np.lexsort((-macs[ok], np.round(drop[ok], 6)))[0]]
    choice = dict(k0)
    for j, i in enumerate(free):
        choice[groups[i].name] = int(levels[i][index[j, best]])
    return choice if macs_of(choice) <= budget else None  # the real count has the last word


def _greedy_search(groups: list[GroupSensitivity], kept: dict, floor: dict, ceiling: dict, units: dict, cost, macs_of,
                   uniform: int, max_moves: int) -> tuple[dict, int]:
    """Move one unit of channels at a time to the group whose drop it lowers most (from a group that loses
    less, or from the MACs slack), keeping real MACs within `uniform`; returns the kept counts and their MACs."""
    macs = macs_of(kept)
    for _ in range(max_moves):
        moves = []
        for a in groups:  # give group a one unit more channels ...
            up = min(ceiling[a.name], kept[a.name] + units[a.name])
            if up == kept[a.name]:
                continue
            gain = cost(a, kept[a.name]) - cost(a, up)
            for b in [None, *groups]:  # ... taking one unit from group b (or from the MACs slack)
                if b is a:
                    continue
                loss = 0.0
                if b is not None:
                    down = kept[b.name] - units[b.name]
                    if down < floor[b.name]:
                        continue
                    loss = cost(b, down) - cost(b, kept[b.name])
                if gain - loss > 1e-6:
                    moves.append((gain - loss, a.name, up, b.name if b else None,
                                  kept[b.name] - units[b.name] if b else None))
        moved = False
        for _, a, up, b, down in sorted(moves, key=lambda m: -m[0]):
            trial = dict(kept, **{a: up})
            if b is not None:
                trial[b] = down
            m = macs_of(trial)
            if m <= uniform:
                kept, macs, moved = trial, m, True
                break
        if not moved:
            break
    return kept, macs


def propose_layer_ratios(result: SensitivityDone, target_ratio: float, bundle: ModelBundle,
                         round_to: int | None = 8, max_layer_ratio: float = 0.9, keep_head: bool = True,
                         max_moves: int = 400, max_shift: float | None = None) -> Proposal:
    """Per-layer ratios giving sensitive groups less pruning, with MACs at most the uniform `target_ratio`'s.

    Minimises the summed single-group drops (each group's curve, interpolated) over kept-channel
    counts in whole round_to units around the uniform configuration, subject to MACs ≤ uniform's.
    For models with few groups every combination is tried, with MACs from an exact quadratic fitted
    to real counts (and the winner counted for real); otherwise a greedy search moves one unit at a
    time from groups that lose little to groups that lose much, checking real MACs at each move.
    With `max_shift`, no group's ratio moves further than that from the target (up to one rounding
    unit): single-group drops do not add up exactly, and the bound keeps a wrong prediction from
    costing much.
    """
    if not 0.0 < target_ratio < 1.0:
        raise UserError(f"target ratio must be between 0 and 1, got {target_ratio}")
    uniform = pruned_macs(bundle, target_ratio, None, round_to, max_layer_ratio, keep_head)
    groups = list(result.groups)
    units = {g.name: (round_to if round_to and round_to > 1 else max(1, g.channels // 16)) for g in groups}
    floor = {g.name: max(units[g.name], int(np.ceil(g.channels * (1.0 - max_layer_ratio)))) for g in groups}
    ceiling = {g.name: g.channels for g in groups}
    if max_shift is not None:
        unit = round_to or 1
        for g in groups:
            fewest = _uniform_kept(g.channels, min(max_layer_ratio, target_ratio + max_shift), unit)
            floor[g.name] = max(floor[g.name], fewest)
            ceiling[g.name] = max(floor[g.name], _uniform_kept(g.channels, max(0.0, target_ratio - max_shift), unit))
    kept = {g.name: _uniform_kept(g.channels, target_ratio, round_to or 1) for g in groups}
    cache: dict[tuple, int] = {}

    def layers_of(k: dict) -> dict:
        return {layer: ratio_keeping(g.channels, k[g.name]) for g in groups for layer in g.layers}

    def macs_of(k: dict) -> int:
        key = tuple(k[g.name] for g in groups)
        if key not in cache:
            cache[key] = pruned_macs(bundle, target_ratio, layers_of(k), round_to, max_layer_ratio, keep_head)
        return cache[key]

    def cost(g: GroupSensitivity, k: int) -> float:
        return drop_at(result.ratios, g.drops, 1.0 - k / g.channels)

    found = _grid_search(groups, kept, floor, ceiling, units, cost, macs_of, uniform)
    if found is not None:
        kept, max_moves = found, 0
    kept, macs = _greedy_search(groups, kept, floor, ceiling, units, cost, macs_of, uniform, max_moves)
    group_ratios = {g.name: ratio_keeping(g.channels, kept[g.name]) for g in groups}
    estimated = sum(cost(g, kept[g.name]) for g in groups)
    return Proposal(layers_of(kept), group_ratios, int(macs), int(uniform), int(result.base_macs),
                    round(estimated, 3), target_ratio)
