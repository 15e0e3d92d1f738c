"""Pruners: one small interface over torch-pruning (structured) and torch.nn.utils.prune (unstructured).

The run pipeline only calls the interface (`calibrate`, `step`, `kept`, `finish`, `regularizer`), so it
has no branches on a method's family; a method's family picks its pruner class from `PRUNERS`.
"""
from __future__ import annotations

import copy
import math
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

from engine.architectures import prepare
from engine.budget import release_freed_memory
from engine.config import PruneConfig, rounding_words
from engine.data import Dataset
from engine.errors import UserError, first_line, resource_error
from engine.events import CancelToken, Progress
from engine.layers import WeightSummary, ignored_modules, prunable_layers
from engine.methods import STRUCTURED, UNSTRUCTURED, Method, UnstructuredStrategy
from engine.metrics import count_macs
from engine.preparation import most_zeroed
from engine.tracing import cuts_heads, dependency_graph, traced_inputs
from engine.verify import check_pruned, layer_sizes, out_size, share_problems


def _ignored(model: nn.Module, cfg: PruneConfig, num_classes: int | None) -> list[nn.Module]:
    return ignored_modules(model, cfg.ignored_layers, cfg.keep_head, num_classes)


class Pruner:
    """What the run pipeline needs from a pruner. Subclasses prune `model` in place, or make `self.model` the
    pruned copy their preflight cut when nothing changed since (the run takes `model` after each step)."""

    def __init__(self, model: nn.Module, method: Method, cfg: PruneConfig, example: torch.Tensor,
                 num_classes: int | None, base_macs: int, cancel: CancelToken):
        self.model, self.method, self.cfg = model, method, cfg
        self.notes: list[str] = []  # said once in the run's notes
        self.ratio = 0.0  # what the last step reached, in the method's own ratio
        self.step_notes: list[str] = []  # what the last step could not do

    def calibrate(self, data: Dataset, device: torch.device, cancel: CancelToken) -> Iterator[Progress]:
        """Gather what the importance needs from training images (before every step)."""
        return iter(())

    def step(self, step: int, cancel: CancelToken) -> Iterator[Progress]:
        """Prune to step `step` of cfg.steps; sets `ratio` and `step_notes`."""
        raise NotImplementedError

    def regularizer(self) -> Callable[[nn.Module], None] | None:
        """A penalty added while fine-tuning (Network Slimming's L1 on γ), or None."""
        return None

    @property
    def done(self) -> bool:
        """True when no further step can prune (a speed-up target met the maximum layer ratio)."""
        return False

    def kept(self, before: dict[str, WeightSummary]) -> dict[str, np.ndarray]:
        """Per layer, a bool per original output channel: still present (empty: channels never go)."""
        return {}

    def finish(self) -> None:
        """Make the result a plain model (masks folded in); add what the user should know to `notes`."""

    def check(self, example: torch.Tensor) -> list[str]:
        """What is wrong with the pruned model (empty when it runs, trains and exports as it should);
        a share of parameters off the requested ratio goes to `notes`."""
        return []


# ----------------------------------------------------------------------------- structured

_EMPTY_COPIES = (dict, OrderedDict, set)  # containers whose deep copy, when empty, is a fresh empty one


def _shared_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of `model` whose parameters share the original's memory (buffers, small, are copied).
    Pruning never writes a weight in place, it selects the kept rows into new tensors, so the original
    stays as it is, and the copy costs only its pruned weights (a full copy of vit_h_14 took a run past
    16 GiB)."""
    memo = {id(p): nn.Parameter(p.detach(), requires_grad=p.requires_grad) for p in model.parameters()}
    # every module holds a dozen hook dicts, nearly always empty: made here, deepcopy skips its generic
    # reconstruction of each (the copy took 40 % less time on the demo; the result is the same)
    memo.update((id(v), type(v)()) for m in model.modules() for v in vars(m).values()
                if type(v) in _EMPTY_COPIES and not v)
    return copy.deepcopy(model, memo).to(device).eval()


def trial_prune(model: nn.Module, cfg: PruneConfig, ratio: float, example: torch.Tensor,
                num_classes: int | None, cancel: CancelToken | None = None) -> nn.Module:
    """A copy of `model` (see _shared_copy) pruned at a layer-scope ratio (plus cfg's per-layer ratios).
    Under layer scope the kept channel counts do not depend on the ranking, so plain magnitude stands in
    for the user's method. A failure inside torch-pruning is a UserError naming the layer whose group it
    was pruning."""
    import torch_pruning as tp

    trial = _shared_copy(model, example.device)
    prep = prepare(trial, example, cfg.round_to)
    modules = dict(trial.named_modules())
    ratio_dict = {modules[n]: float(r) for n, r in cfg.layer_ratios.items()}
    pruner = _build(prep.pruner_class(tp.pruner.MetaPruner), trial, example,
                    importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
                    pruning_ratio_dict=ratio_dict or None, max_pruning_ratio=cfg.max_layer_ratio, global_pruning=False,
                    ignored_layers=_ignored(trial, cfg, num_classes), round_to=cfg.round_to, **prep.pruner_kwargs)
    _cut(pruner, prep, {m: n for n, m in modules.items()}, cancel)
    prep.after_step(trial)
    return trial


def _cut(pruner, prep, names: dict, cancel: CancelToken | None, seen: Callable | None = None) -> None:
    """One torch-pruning step, group by group (`seen` sees each group before its cut; cancellation is checked
    between groups). A failure inside torch-pruning is a UserError naming the layer whose group it was pruning."""
    from engine import tp_compat

    try:
        for group in pruner.step(interactive=True):  # prep.current: the group being scored or pruned
            if cancel is not None:
                cancel.check()
            if seen is not None:
                seen(group)
            group.prune()
    except tp_compat.TRACING_ERRORS as exc:
        if resource_error(exc):
            raise  # out of memory is said as such by the caller, not blamed on the model
        root = prep.current[0].dep.target.module if prep.current else None
        where = f" at layer {names[root]}" if root in names else ""
        if tp_compat.failure_is_prunelabs(exc):
            raise UserError(f"structured pruning fails on this model{where} in PruneLab's own handling of it "
                            f"({first_line(exc, with_type=True, limit=160)}): a PruneLab bug, please report it with "
                            "the model's architecture; unstructured pruning (e.g. --method magnitude-global) still "
                            "works") from exc
        raise UserError(f"structured pruning fails on this model{where}: torch-pruning cannot follow "
                        f"{tp_compat.failed_operation(exc)} ({first_line(exc, with_type=True, limit=160)}); "
                        "unstructured pruning (e.g. --method magnitude-global) still works") from exc


@contextmanager
def unused_layers(model: nn.Module) -> Iterator[list[str]]:
    """Inside, `model`'s forward passes are watched; on leaving, the list holds its leaf layers with weights
    that none of them called. torch-pruning traces in eval mode, so it leaves such a layer as it is; if train
    mode uses it, fine-tuning fails (said in the notes: unused_note). The pruned copy's run records them,
    so the check costs no forward pass of its own (pruning changes widths, not which layers run)."""
    seen: set[int] = set()
    leaves = [(n, m) for n, m in model.named_modules()
              if not list(m.children()) and any(True for _ in m.parameters(recurse=False))
              and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)]  # attention reads it
    hooks = [m.register_forward_hook(lambda mod, *_: seen.add(id(mod))) for _, m in leaves]
    unused: list[str] = []
    try:
        yield unused
    finally:
        for h in hooks:
            h.remove()
    unused.extend(n for n, m in leaves if id(m) not in seen)


def unused_modules(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of leaf layers with weights that one eval-mode forward pass of `model` never calls: for the
    pruners that run no pruned copy (a speed-up target, hand-picked channels)."""
    was_training = model.training
    try:
        with unused_layers(model.eval()) as unused, torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
    return unused


def unused_note(unused: list[str]) -> list[str]:
    """The note on layers an eval-mode forward pass never calls (none when every layer runs)."""
    if not unused:
        return []
    return [f"{len(unused)} layer(s) with weights are not used in eval mode and are left as they are "
            f"(e.g. {', '.join(unused[:3])}); if train mode uses them, fine-tuning will fail"]


def run_once(trial: nn.Module, example: torch.Tensor) -> list[str]:
    """Run a pruned copy (eval mode) once: a copy that fails its forward pass is a UserError (an operation
    torch-pruning cannot follow), said before the baseline is measured. Returns the layers with weights that
    the pass never called (see unused_layers): one forward pass serves both checks."""
    try:
        with unused_layers(trial) as unused, torch.no_grad():
            trial(example)
    except Exception as exc:  # noqa: BLE001 - any failure of the pruned copy is the finding
        if resource_error(exc):
            raise
        raise UserError(f"structured pruning breaks this model: the pruned copy fails in its forward pass "
                        f"({first_line(exc, with_type=True, limit=160)}), an operation torch-pruning cannot follow; unstructured pruning "
                        "(e.g. --method magnitude-global) still works") from exc
    return unused


def preflight(model: nn.Module, cfg: PruneConfig, example: torch.Tensor, num_classes: int | None,
              cancel: CancelToken | None = None) -> list[str]:
    """Prune a copy at the run's ratio and run it once, so that a model torch-pruning cannot prune is
    refused before the baseline is measured, with the layer or operation that blocks it; returns the
    layers that run never called (run_once)."""
    trial = trial_prune(model, cfg, cfg.pruning_ratio, example, num_classes, cancel)
    try:
        return run_once(trial, example)
    finally:
        # torch-pruning's graph holds the copy in reference cycles, and the GUI pauses the cycle collector
        # while a job runs: without a collection the copy would stay for the whole run (twice the weights).
        del trial
        release_freed_memory()  # and glibc keeps the freed pages unless told: the copy's memory stays counted


def macs_at_ratio(model: nn.Module, cfg: PruneConfig, ratio: float, example: torch.Tensor,
                  num_classes: int | None) -> int:
    """MACs of `model` pruned at a layer-scope ratio, counted on a copy (see trial_prune)."""
    return count_macs(trial_prune(model, cfg, ratio, example, num_classes), tuple(example.shape[1:]),
                      example.device.type)


def _build(cls: type, model: nn.Module, example: torch.Tensor, **kwargs):
    """The torch-pruning pruner; a dependency graph it cannot build is a UserError before any measurement."""
    from engine import tp_compat

    try:
        return cls(model, traced_inputs(example), **kwargs)
    except tp_compat.TRACING_ERRORS as exc:
        if resource_error(exc):
            raise
        raise UserError(f"structured pruning cannot trace this model: torch-pruning's dependency graph cannot "
                        f"follow {tp_compat.failed_operation(exc)} ({first_line(exc, with_type=True, limit=160)}); unstructured pruning (e.g. --method "
                        "magnitude-global) still works") from exc


def ratio_for_speedup(model: nn.Module, cfg: PruneConfig, example: torch.Tensor, num_classes: int | None,
                      base_macs: int, cancel: CancelToken) -> tuple[float, int, int]:
    """The smallest uniform layer ratio whose pruned model has `cfg.target_speedup`× fewer MACs (or the
    maximum layer ratio when none does), found by bisection on copies; returns (ratio, its MACs, the
    MACs of the nearest configuration that falls short).

    Searching the ratio, rather than pruning in small steps until the target is passed, keeps the
    overshoot to one rounding unit: with round_to=8 every layer jumps by 8 channels at once, and the
    step-wise search overshot a 4× target to 8.3× on the demo.
    """
    goal = float(cfg.target_speedup)
    high = cfg.max_layer_ratio
    macs_high = macs_at_ratio(model, cfg, high, example, num_classes)
    if base_macs / max(1, macs_high) < goal:
        return high, macs_high, macs_high
    low, macs_low = 0.0, base_macs
    for _ in range(14):  # 0.9 / 2**14: finer than one channel of a 10 000-channel layer
        cancel.check()
        mid = (low + high) / 2
        macs = macs_at_ratio(model, cfg, mid, example, num_classes)
        if base_macs / max(1, macs) >= goal:
            high, macs_high = mid, macs
        else:
            low, macs_low = mid, macs
    return high, macs_high, macs_low  # not rounded: a rounded ratio could fall short of the target


class StructuredPruner(Pruner):
    """Channels removed through torch-pruning; records which original channels survive, for the histograms.

    A ratio target prunes in cfg.steps equal steps. A speed-up target under layer scope becomes the
    uniform ratio that reaches it (found on copies first); under global scope each step prunes small
    increments until its share of the target is met.
    """

    def __init__(self, model: nn.Module, method: Method, cfg: PruneConfig, example: torch.Tensor,
                 num_classes: int | None, base_macs: int, cancel: CancelToken, reuse_preflight: bool = False):
        super().__init__(model, method, cfg, example, num_classes, base_macs, cancel)
        self.shape, self.device, self.base_macs = tuple(example.shape[1:]), example.device.type, base_macs
        self.example, self.num_classes = example, num_classes
        self.reuse_preflight = reuse_preflight
        self.importance = method.factory()
        self.run_cfg = cfg  # what the pruner runs; self.cfg stays what the user asked for
        self.reusable: tuple | None = None  # (what it was cut from, the pruned copy, its notes): see _preflight_cut
        if self._cuts_like_the_preflight(cfg):
            unused = self._preflight_cut(cancel)
            self.notes.extend(self.prep.notes + unused_note(unused))
            return
        self._prepare(model)
        # a ratio target's preflight runs a pruned copy, which finds the unused layers too; a speed-up target's
        # trials only count MACs, so the model runs once for them
        unused = preflight(model, cfg, example, num_classes, cancel) if cfg.target_speedup is None \
            else unused_modules(model, example)
        self.notes.extend(self.prep.notes + unused_note(unused))
        if cfg.target_speedup is not None and cfg.scope == "layer":
            self.run_cfg = cfg = self._plan_speedup(example, num_classes, cancel)  # its trials are the preflight
        self._build(model)

    def _cuts_like_the_preflight(self, cfg: PruneConfig) -> bool:
        """Whether the run's one step can be taken on the preflight's copy before the baseline: a ratio target
        in one step, ranked from the weights alone (a calibrated importance needs the training images first).
        Only a run asks for it: other users of the pruner (Explain) read its graph and step it on `model`."""
        return self.reuse_preflight and cfg.target_speedup is None and cfg.steps == 1 and self.method.calibration is None

    def _prepare(self, model: nn.Module) -> None:
        """The families' preparation of `model` (engine/architectures.py, engine/families/) and its sizes before."""
        self.prep = prepare(model, self.example, self.cfg.round_to)
        self.params_before = sum(p.numel() for p in model.parameters())
        self.sizes_before = layer_sizes(model)

    def _build(self, model: nn.Module) -> None:
        """The method's torch-pruning pruner on `model`: its one dependency graph."""
        import torch_pruning as tp

        cfg, speedup = self.run_cfg, self.run_cfg.target_speedup is not None
        self.total_steps = 100 if speedup else cfg.steps
        modules = dict(model.named_modules())
        ratio_dict = {modules[n]: float(r) for n, r in cfg.layer_ratios.items()}
        kwargs = dict(importance=self.importance, global_pruning=cfg.scope == "global",
                      pruning_ratio=cfg.max_layer_ratio if speedup else cfg.pruning_ratio,
                      pruning_ratio_dict=ratio_dict or None, max_pruning_ratio=cfg.max_layer_ratio,
                      iterative_steps=self.total_steps, ignored_layers=_ignored(model, cfg, self.num_classes),
                      round_to=cfg.round_to)
        name, extra = self.method.tp_pruner(cfg) if self.method.tp_pruner else ("MetaPruner", {})
        base = getattr(tp.pruner, name)
        self.pruner = _build(self.prep.pruner_class(base), model, self.example, **kwargs, **extra,
                             **self.prep.pruner_kwargs)
        self.names = {m: n for n, m in model.named_modules()}
        self.alive = {n: np.arange(m.weight.shape[0]) for n, m in prunable_layers(model)}

    def _fingerprint(self) -> tuple:
        """What the step's result depends on: the run's configuration and the model's weights as they are now
        (a tensor's version counter moves with every in-place write)."""
        tensors = [*self.model.parameters(), *self.model.buffers()]
        return (self.run_cfg.to_json(), tuple((id(t), t.data_ptr(), t._version) for t in tensors))

    def _preflight_cut(self, cancel: CancelToken) -> list[str]:
        """The preflight with the run's own pruner: its step taken on a copy (see _shared_copy) and the copy run
        once, before the baseline. The copy is the step's result when nothing changed in between (`step`), so
        the run builds one dependency graph and cuts once, instead of tracing and cutting the model again.
        Returns the layers the copy's run never called (run_once)."""
        trial = _shared_copy(self.model, self.example.device)
        self._prepare(trial)
        self._build(trial)
        self._prune_once(cancel, trial)
        unused = run_once(trial, self.example)
        self.reusable = (self._fingerprint(), trial, self.step_notes)
        self.step_notes = []
        return unused

    def _adopt(self) -> bool:
        """Take the preflight's pruned copy as the step's result when the configuration and the weights are as
        they were; a stale copy is dropped, and the model itself is prepared and traced instead."""
        fingerprint, trial, notes = self.reusable
        self.reusable = None
        if fingerprint == self._fingerprint():
            self.model, self.step_notes = trial, list(notes)
            return True
        del trial, notes
        self.pruner = self.prep = self.names = None  # they hold the copy (the graph in reference cycles)
        release_freed_memory()
        self._prepare(self.model)
        self._build(self.model)
        return False

    def _plan_speedup(self, example: torch.Tensor, num_classes: int | None, cancel: CancelToken) -> PruneConfig:
        from dataclasses import replace

        cfg, base = self.cfg, self.base_macs
        ratio, macs, macs_below = ratio_for_speedup(self.model, cfg, example, num_classes, base, cancel)
        reached, below = base / max(1, macs), base / max(1, macs_below)
        text = f"target {cfg.target_speedup:g}× fewer MACs: uniform ratio {ratio:.3f} gives {reached:.2f}×"
        if reached < cfg.target_speedup:
            text += " (every layer at the maximum layer ratio; the target is out of reach)"
        elif reached > 1.1 * cfg.target_speedup:
            text += ("; no uniform ratio lands closer" + (f" (just below: {below:.2f}×)" if below > 1.0 else "")
                     + f", because channel counts move in steps of {cfg.round_to or 1}. Smaller channel rounding "
                     "(round_to) or global scope gets nearer")
        self.notes.append(text)
        return replace(cfg, pruning_ratio=ratio, target_speedup=None)

    @property
    def done(self) -> bool:
        from engine import tp_compat

        return self.run_cfg.target_speedup is not None and tp_compat.steps_taken(self.pruner) >= self.total_steps

    def regularizer(self) -> Callable[[nn.Module], None] | None:
        import torch_pruning as tp

        if type(self.pruner).regularize is tp.pruner.BasePruner.regularize:
            return None  # the base pruner's is a no-op: no penalty to add
        return lambda model: self.pruner.regularize(model)

    def calibrate(self, data: Dataset, device: torch.device, cancel: CancelToken) -> Iterator[Progress]:
        if self.method.calibration is None:
            return iter(())
        return self.method.calibration.run(self.model, self.importance, data, device, self.cfg.calibration_batches,
                                           self.cfg.seed, cancel)

    def step(self, step: int, cancel: CancelToken) -> Iterator[Progress]:
        self.step_notes = []
        if self.run_cfg.target_speedup is None:
            if self.reusable is None or not self._adopt():
                self._prune_once(cancel)
            self.ratio = float(self.run_cfg.pruning_ratio * step / self.cfg.steps)
            return
        goal = self.run_cfg.target_speedup ** (step / self.cfg.steps)
        base = self.base_macs
        macs = count_macs(self.model, self.shape, self.device)
        while base / max(1, macs) < goal and not self.done:
            self._prune_once(cancel)
            macs = count_macs(self.model, self.shape, self.device)
            yield Progress("prune", min(99, int(100 * math.log(base / macs) / math.log(goal))), 100,
                           f"{base / macs:.2f}× of {goal:.2f}× fewer MACs")
        if base / max(1, macs) < goal:
            self.step_notes.append(f"reached only {base / macs:.2f}× fewer MACs (target {goal:.2f}×): "
                                   "every layer hit the maximum layer ratio")
        from engine import tp_compat

        per_step = getattr(self.pruner, "per_step_pruning_ratio", None)
        self.ratio = float(per_step[tp_compat.steps_taken(self.pruner)]) if per_step else 0.0

    def _prune_once(self, cancel: CancelToken, model: nn.Module | None = None) -> None:
        """One torch-pruning step on `model` (default: the run's); cancellation is checked between groups (a
        cancelled step leaves a half-pruned copy, which is discarded)."""
        model = self.model if model is None else model

        def seen(group) -> None:
            for dep, idxs in group:
                if self.pruner.DG.is_out_channel_pruning_fn(dep.handler):
                    name = self.names.get(dep.target.module)
                    if name in self.alive:
                        self.alive[name] = np.delete(self.alive[name], list(idxs))

        _cut(self.pruner, self.prep, self.names, cancel, seen)
        model.zero_grad(set_to_none=True)
        self.step_notes.extend(n for n in self.prep.after_step(model) if n not in self.step_notes)

    def check(self, example: torch.Tensor) -> list[str]:
        # ONNX is left to saving (a failed export is a note there, and the model itself is fine)
        problems = check_pruned(self.model, example, self.params_before, 0, None, onnx=False)
        cfg = self.run_cfg
        ignored = {n for n, m in self.model.named_modules() if m in self.pruner.ignored_layers}
        if cfg.target_speedup is None and not cfg.layer_ratios:
            sizes = {n: (size, out_size(m)) for n, m in self.model.named_modules()
                     if n in self.sizes_before and n not in ignored and (size := self.sizes_before[n][0])}
            off = share_off(cfg.pruning_ratio, sum(b for b, _ in sizes.values()), sum(a for _, a in sizes.values()),
                            cfg, "of the pruned layers' channels")
            if off:
                self.notes.append(off)
        if cfg.scope == "layer" and not cfg.layer_ratios and cfg.target_speedup is None:
            after = sum(p.numel() for p in self.model.parameters())
            ratio = min(cfg.pruning_ratio, cfg.max_layer_ratio)  # no layer loses more than the maximum
            off = share_problems(self.params_before, after, ratio, self.sizes_before, self.model,
                                 cfg.round_to, self.prep.units, ignored)
            if len(off) > 4:
                off = off[:3] + [f"and {len(off) - 3} more layers off the requested ratio"]
            self.notes.extend(off)
        return problems

    def kept(self, before: dict[str, WeightSummary]) -> dict[str, np.ndarray]:
        out = {}
        for name, alive in self.alive.items():
            mask = np.zeros(before[name].shape[0], dtype=bool)
            mask[alive] = True
            out[name] = mask
        return out


SHARE_SLACK = 0.05  # a removed share further than this from the request is said, in one line


def share_off(requested: float, before: int, after: int, cfg: PruneConfig, what: str = "of its channels") -> str:
    """One line when `after` of `before` channels is more than 5 points from the `requested` share
    (rounding, or the maximum layer ratio, made it so), else ''."""
    if not before:
        return ""
    removed = 1.0 - after / before
    if abs(removed - requested) <= SHARE_SLACK:
        return ""
    why = (f"no layer loses more than the maximum layer ratio {cfg.max_layer_ratio:g}"
           if requested > cfg.max_layer_ratio + SHARE_SLACK else rounding_words(cfg.round_to))
    return f"removed {removed:.1%} {what} ({before} → {after}), not the {requested:.0%} asked for: {why}"


# ----------------------------------------------------------------------------- manual

def check_manual_channels(model: nn.Module, cfg: PruneConfig, num_classes: int | None) -> None:
    """Every ticked layer exists, may be pruned, and keeps at least one channel; every index is in range."""
    layers = dict(prunable_layers(model))
    left_alone = {id(m) for m in _ignored(model, cfg, num_classes)}
    for name, idxs in cfg.manual_channels.items():
        if name not in layers:
            shown = ", ".join(list(layers)[:6]) + (", …" if len(layers) > 6 else "")
            raise UserError(f"manual channels: {name!r} is not a convolution or linear layer of this model; "
                            f"pick one of {shown}")
        if id(layers[name]) in left_alone:
            raise UserError(f"manual channels: {name} is left alone (the classifier head or an ignored layer); "
                            "tick channels of another layer")
        n = int(layers[name].weight.shape[0])
        bad = sorted(i for i in set(idxs) if i >= n)
        if bad:
            raise UserError(f"manual channels: {name} has channels 0 to {n - 1}, so {bad[0]} does not exist")
        if len(set(idxs)) >= n:
            raise UserError(f"manual channels: {name} would lose all its {n} channels; leave at least one")


class ManualPruner(Pruner):
    """Removes exactly the channels in cfg.manual_channels, each with its dependency group (DepGraph).

    Ticked indices are original channel numbers: as coupled layers shrink, `alive` maps them to the
    current positions, so ticking channels of two coupled layers removes both sets."""

    def __init__(self, model: nn.Module, method: Method, cfg: PruneConfig, example: torch.Tensor,
                 num_classes: int | None, base_macs: int, cancel: CancelToken):
        super().__init__(model, method, cfg, example, num_classes, base_macs, cancel)
        check_manual_channels(model, cfg, num_classes)
        self.prep = prepare(model, example, cfg.round_to)
        self.notes.extend(self.prep.notes + unused_note(unused_modules(model, example)))
        self.params_before = sum(p.numel() for p in model.parameters())
        self.graph = dependency_graph(model, example)
        modules = dict(model.named_modules())
        self.names = {m: n for n, m in modules.items()}
        for name in cfg.manual_channels:  # before the baseline: Swin's stream can only be cut evenly by a run
            layer = modules[name]
            if layer not in self.graph.module2node:  # inside a block its family prunes as one unit
                raise UserError(f"manual channels: {name} is inside a block this model's family prunes as one "
                                "unit (see the run's notes); tick channels of another layer, or prune it with a "
                                "method")
            idxs = sorted(set(cfg.manual_channels[name]))
            group = self.graph.get_pruning_group(layer, self.graph.get_pruner_of_module(layer).prune_out_channels,
                                                 idxs)
            if cuts_heads(group):
                raise UserError(f"manual channels: {name} must lose the same channels in every attention head "
                                "(Swin's residual stream) or split (ResNeSt's split attention); tick channels of "
                                "another layer, or prune it with a method")
            self._refuse_held(name, group, idxs)
        self.alive = {n: np.arange(m.weight.shape[0]) for n, m in prunable_layers(model)}
        self.pruned_once = False
        if cfg.steps > 1:
            self.notes.append("the manual method removes your channels in one step; the later steps were skipped")

    def _refuse_held(self, name: str, group, idxs: list[int]) -> None:
        """Ticked channels `idxs` whose group reaches what the model's families keep whole (a layer held at full
        width, or channels a family's own pruner must not lose) are refused before the baseline: a method's
        run never cuts them, and the cut would break the model."""
        held = set(self.prep.held)
        for dep, group_idxs in group:
            target = dep.target.module
            if target in held and self.graph.is_out_channel_pruning_fn(dep.handler):
                why = f"{self.names.get(target, type(target).__name__)}, which this model keeps whole"
            else:
                refusal = getattr(getattr(dep.handler, "__self__", None), "manual_refusal", None)
                why = refusal(target, dep.handler.__name__, list(group_idxs)) if refusal else None
            if why:
                shown = ", ".join(map(str, idxs[:6])) + (", …" if len(idxs) > 6 else "")
                raise UserError(f"manual channels: {name}'s channels {shown} reach {why} (see the run's notes); "
                                "tick channels of another layer, or prune it with a method")

    @property
    def done(self) -> bool:
        return self.pruned_once

    def step(self, step: int, cancel: CancelToken) -> Iterator[Progress]:
        self.step_notes = []
        modules = dict(self.model.named_modules())
        ticked = total = 0
        for name, idxs in self.cfg.manual_channels.items():
            cancel.check()
            module = modules[name]
            total += len(self.alive[name])
            positions = [int(p) for p in np.flatnonzero(np.isin(self.alive[name], sorted(set(idxs))))]
            ticked += len(set(idxs))
            if not positions:  # already removed with a coupled layer's channels
                continue
            group = self.graph.get_pruning_group(module, self.graph.get_pruner_of_module(module).prune_out_channels,
                                                 positions)
            for dep, group_idxs in group:
                if self.graph.is_out_channel_pruning_fn(dep.handler):
                    target = self.names.get(dep.target.module)
                    if target in self.alive:
                        if len(set(group_idxs)) >= len(self.alive[target]):
                            raise UserError(f"manual channels: {target} (tied to {name}) would lose all its "
                                            "channels; untick some")
                        self.alive[target] = np.delete(self.alive[target], list(group_idxs))
            group.prune()
        self.model.zero_grad(set_to_none=True)
        self.step_notes.extend(n for n in self.prep.after_step(self.model) if n not in self.step_notes)
        self.ratio = ticked / max(1, total)  # share of the ticked layers' channels
        self.pruned_once = True
        return iter(())

    def check(self, example: torch.Tensor) -> list[str]:
        return check_pruned(self.model, example, self.params_before, 0, None, onnx=False)

    def kept(self, before: dict[str, WeightSummary]) -> dict[str, np.ndarray]:
        return StructuredPruner.kept(self, before)


# ----------------------------------------------------------------------------- unstructured

class UnstructuredPruner(Pruner):
    """torch.nn.utils.prune with cumulative targets per step; masks are made permanent at the end."""

    def __init__(self, model: nn.Module, method: Method, cfg: PruneConfig, example: torch.Tensor,
                 num_classes: int | None, base_macs: int, cancel: CancelToken):
        super().__init__(model, method, cfg, example, num_classes, base_macs, cancel)
        self.strategy: UnstructuredStrategy = method.factory()
        ignored = {id(m) for m in _ignored(model, cfg, num_classes)}
        self.targets = [(n, m) for n, m in prunable_layers(model) if id(m) not in ignored]
        if not self.targets:
            raise UserError("no layers are left to prune: every layer is ignored")

    def _layer_target(self, name: str, step: int) -> float:
        final = self.cfg.layer_ratios.get(name, self.cfg.pruning_ratio)
        return min(final, self.cfg.max_layer_ratio) * step / self.cfg.steps

    def step(self, step: int, cancel: CancelToken) -> Iterator[Progress]:
        """Prune to the cumulative ratio of step `step` (exact counts: torch rounds per tensor)."""
        self.step_notes = []
        self.ratio = (self.cfg.pruning_ratio or 0) * step / self.cfg.steps
        # Without no_grad the masked weight carries autograd history, and a layer the model calls through a
        # function (Swin's attention: F.linear(x, self.qkv.weight)) never recomputes it, so copying the
        # model fails ("only tensors created explicitly by the user support the deepcopy protocol").
        with torch.no_grad():
            self._mask(step, cancel)
        return iter(())

    def _mask(self, step: int, cancel: CancelToken) -> None:
        if self.strategy.scope == "global" and not self.cfg.layer_ratios:
            self._mask_global(min(self.cfg.pruning_ratio, 1.0) * step / self.cfg.steps, cancel)
            return
        for name, m in self.targets:
            cancel.check()
            want = int(round(self._layer_target(name, step) * m.weight.numel()))
            have = int((m.weight_mask == 0).sum()) if hasattr(m, "weight_mask") else 0
            prune = torch_prune.random_unstructured if self.strategy.criterion == "random" \
                else torch_prune.l1_unstructured
            prune(m, "weight", amount=max(0, want - have))

    def _mask_global(self, target: float, cancel: CancelToken) -> None:
        """The smallest weights of the whole network, `target` of them, with no layer losing more than the
        maximum layer ratio (torch's global_unstructured has no such cap: a layer could lose everything).
        Only a layer's smallest max-ratio share can go, so the global pick is made among those."""
        candidates, owners = [], []
        for _, m in self.targets:
            cancel.check()
            score = m.weight.detach().abs().flatten().float()
            if hasattr(m, "weight_mask"):
                score[m.weight_mask.flatten() == 0] = -1.0  # pruned before: stays pruned, within the cap
            cap = most_zeroed(score.numel(), self.cfg.max_layer_ratio)
            values, idx = torch.topk(score, cap, largest=False)
            candidates.append(values)
            owners.append(idx)
        values = torch.cat(candidates)
        total = sum(m.weight.numel() for _, m in self.targets)
        chosen = torch.topk(values, min(len(values), int(round(target * total))), largest=False).indices
        picked = torch.zeros(len(values), dtype=torch.bool)
        picked[chosen] = True
        start = 0
        for (_, m), idx in zip(self.targets, owners):
            mask = torch.ones(m.weight.numel(), dtype=m.weight.dtype, device=m.weight.device)
            mask[idx[picked[start:start + len(idx)].to(idx.device)]] = 0
            start += len(idx)
            if torch_prune.is_pruned(m):
                torch_prune.remove(m, "weight")  # the new mask holds the old one; masks do not stack
            torch_prune.custom_from_mask(m, "weight", mask.view_as(m.weight))

    def finish(self) -> None:
        for _, m in self.targets:
            if torch_prune.is_pruned(m) and hasattr(m, "weight_mask"):
                torch_prune.remove(m, "weight")
        self.notes.append("Unstructured pruning zeroes weights but keeps every tensor dense: the compressed file "
                          "shrinks, dense latency and MACs do not change.")


class NoCut(Pruner):
    """Recover only: one step that removes nothing, so a run can fine-tune, distil or re-estimate BatchNorm
    on a pruned model further. Weights already zero stay zero while training (an unstructured run's sparsity
    would otherwise grow back), through masks folded in at the end."""

    def __init__(self, model: nn.Module, method: Method, cfg: PruneConfig, example: torch.Tensor,
                 num_classes: int | None, base_macs: int, cancel: CancelToken):
        super().__init__(model, method, cfg, example, num_classes, base_macs, cancel)
        self.masked: list[nn.Module] = []

    @property
    def done(self) -> bool:
        return True

    def step(self, step: int, cancel: CancelToken) -> Iterator[Progress]:
        with torch.no_grad():
            for _, m in prunable_layers(self.model):
                if bool((m.weight == 0).any()):
                    torch_prune.custom_from_mask(m, "weight", (m.weight != 0).to(m.weight.dtype))
                    self.masked.append(m)
        return iter(())

    def finish(self) -> None:
        for m in self.masked:
            torch_prune.remove(m, "weight")
        self.notes.append("Recover only: nothing was cut; the run recovered a copy of the model it started from "
                          "(weights that were zero stayed zero).")


PRUNERS: dict[str, type[Pruner]] = {STRUCTURED: StructuredPruner, UNSTRUCTURED: UnstructuredPruner}


def make_pruner(model: nn.Module, method: Method, cfg: PruneConfig, example: torch.Tensor,
                num_classes: int | None, base_macs: int, cancel: CancelToken, recover_only: bool = False,
                reuse_preflight: bool = False) -> Pruner:
    """The pruner of `method`'s family (or the manual one; NoCut to recover only), set up on `model`; with
    `reuse_preflight` a structured one-step run may take its preflight's pruned copy as the step's result."""
    kind = NoCut if recover_only else ManualPruner if method.manual else PRUNERS[method.family]
    extra = {"reuse_preflight": True} if reuse_preflight and issubclass(kind, StructuredPruner) else {}
    return kind(model, method, cfg, example, num_classes, base_macs, cancel, **extra)
