"""Prune → recover → evaluate, as a generator of events; always on a copy of the model.

Structured methods go through torch-pruning (DepGraph), so channels are physically removed and
coupled layers stay consistent; unstructured methods use torch.nn.utils.prune and are made
permanent at the end. Cancellation is checked between batches and between pruning groups.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Iterator

import torch
import torch.nn as nn

from engine import versions
from engine.families.auxiliary_heads import drop_aux_heads
from engine.checks import check_run
from engine.data import Dataset
from engine.config import PruneConfig
from engine.errors import UserError
from engine.events import CancelToken, EpochDone, Phase, PhaseDone, Progress, StepGate, TrainDone, relay
from engine.layers import LayerStat, histograms, layer_stats, weight_snapshot
from engine.metrics import Metrics, count_macs, evaluate
from engine.timing import architecture_signature, iter_paired_speedup, speedup_text
from engine.latency_target import check_latency_target, iter_onnxruntime_speedup, plan_latency_target
from engine.deploy import original_identity, save_outputs
from engine.models import ModelBundle
from engine.pruners import check_manual_channels, make_pruner
from engine.training import TrainConfig, one_cache_per_run, quick_top1, resolve_device, seed_everything, train

class BrokenModel(RuntimeError):
    """Pruning produced a model that does not run or train: a failed run, with the reason."""


QUICK_CHECK_IMAGES = 2000  # validation images for the top-1 seen before and after recovery
PAIRED_ROUNDS = 9  # rounds of the interleaved original/pruned timing: enough for a 95 % interval of the median


@dataclass(frozen=True)
class StepDone:
    """One step finished (step 0 is the unpruned model): metrics, per-layer figures, histograms."""

    step: int
    steps: int
    ratio: float  # the target ratio of this step (channels or weights)
    metrics: Metrics
    layers: tuple[LayerStat, ...]
    histograms: dict  # layer name -> WeightHistogram
    prune_seconds: float = 0.0
    recover_seconds: float = 0.0
    top1_after_prune: float | None = None  # before any recovery
    top1_after_bn: float | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunDone:
    """The run finished: before/after metrics, every step, saved files, notes for the user."""

    method: str
    config: dict
    before: Metrics
    after: Metrics
    steps: tuple[StepDone, ...]
    files: dict
    seconds: float
    prune_seconds: float
    notes: tuple[str, ...] = ()
    paired: dict | None = None  # PairedSpeedup.to_json() of original vs pruned, timed interleaved at the end
    arch: str = ""  # architecture_signature of the result: runs with the same one share a latency figure
    original_arch: str = ""  # ... and of the model it started from
    onnxruntime: dict | None = None  # the same paired timing in onnxruntime on both ONNX exports (None: not measured)
    latency_target: dict | None = None  # a target latency: the plan, the measured figure with its interval, met

    def speedups(self) -> dict[str, float]:
        """How many times smaller/faster the result is than the original (latency: the paired median
        when the run timed both models interleaved, else the ratio of the separate measurements)."""
        b, a = self.before, self.after
        out = {"macs": b.macs / a.macs if a.macs else 0.0, "params": b.params / a.params if a.params else 0.0,
               "compressed": b.compressed_bytes / a.compressed_bytes if a.compressed_bytes else 0.0}
        if self.paired:
            out["latency"] = float(self.paired["median"])
        elif b.latency_ms and a.latency_ms:
            out["latency"] = b.latency() / a.latency() if a.latency() else 0.0
        if "latency" in out:
            out["latency_efficiency"] = out["latency"] / out["macs"] if out["macs"] else 0.0
        return out

    def speedup_text(self) -> str:
        """The latency speed-up for a summary line, with its interval and any noisy-machine note
        ('' when latency was not measured)."""
        if self.paired:
            return speedup_text(self.paired)
        latency = self.speedups().get("latency")
        return f"latency {latency:.2f}x lower (timed separately, not paired)" if latency else ""

    def to_json(self) -> dict:
        """The `prune --json` object."""
        return {"method": self.method, "config": self.config, "before": self.before.to_json(),
                "after": self.after.to_json(), "steps": [s.metrics.to_json(detail=False) for s in self.steps[1:]],
                "files": self.files, "speedups": self.speedups(), "seconds": round(self.seconds, 2),
                "prune_seconds": round(self.prune_seconds, 3), "notes": list(self.notes),
                "latency_speedup": self.paired, "onnxruntime_speedup": self.onnxruntime,
                "latency_target": self.latency_target}


@dataclass(frozen=True)
class Pruned:
    """What `run_pruning` returns: the last event and the pruned model (on the CPU), with its metadata."""

    run: RunDone
    bundle: ModelBundle


BFLOAT16_NOTE = ("fine-tuning computed in bfloat16, which this processor does natively (faster: the ResNet demo's "
                 "default recovery took 0.65× its float32 time on a 2-core AVX-512 BF16 machine at the same top-1; "
                 "the weights stay float32); --precision fp32 computes in float32 throughout")


@dataclass(frozen=True)
class RecoveryChecks:
    """The quick top-1 looks of one step's recovery (None: not measured)."""

    top1_after_prune: float | None = None
    top1_after_bn: float | None = None
    computed_in: str | None = None  # what fine-tuning's forward passes computed in (None: no fine-tuning)


# ----------------------------------------------------------------------------- recovery

@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data: Dataset, batches: int, device: torch.device,
                          cancel: CancelToken, batch_size: int = 128) -> Iterator[Progress]:
    """Re-estimate BatchNorm running statistics on training batches (weights stay as they are)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    model.train()
    loader = data.loader("train", batch_size, shuffle=True, augment=False, seed=1234)
    total = min(batches, len(loader))
    try:
        for i, (x, _) in enumerate(loader):
            if i >= total:
                break
            cancel.check()
            model(x.to(device))
            if (i + 1) % 5 == 0 or i + 1 == total:
                yield Progress(Phase.BN_RECALIBRATE, i + 1, total, "re-estimating BatchNorm statistics")
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom
        model.eval()


# ----------------------------------------------------------------------------- the pipeline

def _measure(model: nn.Module, data: Dataset, cfg: PruneConfig, device: str, cancel: CancelToken,
             phase: str) -> Iterator:
    """Evaluate as the run's options say; returns the Metrics."""
    done = yield from relay(evaluate(model, data, device=device, batch_size=cfg.batch_size, limit=cfg.eval_limit,
                                     speed=cfg.measure_speed, threads=cfg.threads, repeats=cfg.latency_repeats,
                                     cancel=cancel), phase)
    return done.metrics


class _Phases:
    """Says when each phase of a step is done (PhaseDone) and, with a gate, waits there for the user.

    Stepping through, every phase gets a quick top-1, so the drop after pruning and each recovery's
    jump are seen on their own; the time spent waiting is kept out of the run's timings."""

    def __init__(self, model: nn.Module, data: Dataset, cfg: PruneConfig, dev: torch.device,
                 gate: StepGate | None, cancel: CancelToken) -> None:
        self.model, self.data, self.dev, self.gate, self.cancel = model, data, dev, gate, cancel
        self.quick = min(QUICK_CHECK_IMAGES, cfg.eval_limit or QUICK_CHECK_IMAGES)
        self.waited = 0.0

    @property
    def stepping(self) -> bool:
        """True when the run pauses after each phase."""
        return self.gate is not None and not self.gate.is_open

    def top1(self) -> float:
        """Top-1 on a stratified sample of validation images (the quick look before and after recovery)."""
        return quick_top1(self.model, self.data, "val", self.dev, limit=self.quick, cancel=self.cancel)

    def done(self, step: int, phase: str, top1: float | None, next_phase: str | None) -> Iterator:
        """Yield the PhaseDone; stepping through, wait for the gate before `next_phase` starts."""
        if top1 is None and self.stepping:
            top1 = self.top1()
        params = sum(p.numel() for p in self.model.parameters())
        waits = self.stepping and next_phase is not None
        yield PhaseDone(step, phase, top1, params, next_phase if waits else None)
        if waits:
            t0 = time.perf_counter()
            self.gate.wait(self.cancel)
            self.waited += time.perf_counter() - t0


def _after_prune(cfg: PruneConfig) -> Phase:
    if cfg.bn_recalibrate:
        return Phase.BN_RECALIBRATE
    return Phase.FINETUNE if cfg.recovers_by_training else Phase.EVALUATE


@one_cache_per_run  # a folder is decoded once for all the steps' fine-tuning, and the cache removed at the end
def run_pruning(bundle: ModelBundle, data: Dataset, cfg: PruneConfig, cancel: CancelToken | None = None,
                out_dir: str | Path | None = None, baseline: Metrics | None = None,
                gate: StepGate | None = None, recover_only: bool = False,
                teacher: ModelBundle | None = None) -> Generator[Any, None, Pruned]:
    """Prune a copy of `bundle.model`; yields Progress, PhaseDone after each phase, StepDone (step 0 =
    original), then RunDone, and *returns* `Pruned` (the RunDone and the pruned ModelBundle).

    `baseline` reuses metrics of the unpruned model measured earlier (plans share it). Events never
    carry the model: take it from the return value (`pruned = yield from run_pruning(...)`, or
    `engine.events.result_of`). With `gate`, the run waits after each phase (prune, BatchNorm re-estimation,
    fine-tuning, evaluation) until the gate is released: step-through for teaching. `recover_only` cuts nothing: the recovery phases and the
    evaluation run on a copy of `bundle` (a pruned model trained further). Distillation learns from `teacher`
    (default: `bundle`), e.g. the original a pruned model came from.
    """
    method = cfg.validate()
    if recover_only and not (cfg.bn_recalibrate or cfg.recovers_by_training):
        raise UserError("recovering only needs a recovery: set fine-tuning epochs (--finetune-epochs) or "
                        "BatchNorm re-estimation (--bn-recalibrate)")
    bundle.require_prunable()
    check_run(cfg, bundle, cut=not recover_only)  # before the baseline: bad layer names, a batch too big
    if method.manual and not recover_only:
        check_manual_channels(bundle.model, cfg, bundle.num_classes)
    cancel = cancel or CancelToken()
    dev, note = resolve_device(cfg.device)
    device = dev.type
    notes: list[str] = [note] if note else []
    start = time.perf_counter()
    seed_everything(cfg.seed)
    shape = bundle.input_shape or data.input_shape

    work = bundle.copy()  # the loaded original is never modified
    work.norm, work.class_names = data.norm, work.class_names or data.class_names  # as evaluated: saved with it
    model = work.model.to(dev).eval()
    drop_aux_heads(model, notes)  # before the baseline, so it does not count weights evaluation never uses
    t_setup = time.perf_counter()  # building the dependency graph is part of pruning's cost
    # The pruner is built before the baseline is measured, so a model torch-pruning cannot trace is refused
    # before any work; it is said first, so a memory stop while tracing names the right phase.
    yield Progress(Phase.PRUNE, 0, 1, "tracing the dependency graph and trying the cut on a copy")
    base_macs = 1  # only a speed-up target needs the original's MACs
    if cfg.target_speedup is not None and not recover_only:
        base_macs = baseline.macs if baseline is not None else count_macs(model, shape, device)
    latency_plan = None  # a target latency becomes ratios found by timing pruned copies (engine.latency_target)
    if cfg.latency_targeted and not recover_only:
        latency_plan = yield from relay(plan_latency_target(model, cfg, shape, device, work.num_classes, notes, cancel))
    pruner = make_pruner(model, method, latency_plan.cfg if latency_plan else cfg, torch.zeros(1, *shape, device=dev),
                         work.num_classes, base_macs or 1, cancel, recover_only, reuse_preflight=True)
    notes.extend(pruner.notes)
    if cfg.sparsity_reg > 0 and "sparsity_reg" not in method.options:
        notes.append(f"the sparsity penalty applies to methods that read it; {method.name} does not, so it was "
                     "not used")
    setup_seconds = time.perf_counter() - t_setup
    if baseline is None:
        baseline = yield from _measure(model, data, cfg, device, cancel, "baseline")
    before_w = weight_snapshot(model)
    step0 = StepDone(0, cfg.steps, 0.0, baseline, layer_stats(before_w, model), histograms(before_w, model, {}))
    yield step0
    teacher_model = _teacher(teacher or bundle, dev) if cfg.distill else None
    prune_seconds = 0.0
    steps: list[StepDone] = []
    current = baseline
    phases = _Phases(model, data, cfg, dev, gate, cancel)
    for step in range(1, cfg.steps + 1):
        t0 = time.perf_counter()
        yield from pruner.calibrate(data, dev, cancel)
        yield from pruner.step(step, cancel)
        model = work.model = phases.model = pruner.model  # the preflight's pruned copy, when it was the cut
        step_time = time.perf_counter() - t0 + (setup_seconds if step == 1 else 0.0)
        prune_seconds += step_time
        yield Progress(Phase.PRUNE, 1, 1, f"step {step}/{cfg.steps}: pruned in {step_time:.2f} s")

        t1, waited = time.perf_counter(), phases.waited
        checks = yield from _recover(model, data, cfg, dev, step, teacher_model, pruner.regularizer(), cancel, phases)
        recover_seconds = time.perf_counter() - t1 - (phases.waited - waited)
        model.eval()
        current = yield from _measure(model, data, cfg, device, cancel, Phase.EVALUATE)
        done = StepDone(step=step, steps=cfg.steps, ratio=pruner.ratio, metrics=current,
                        layers=layer_stats(before_w, model), histograms=histograms(before_w, model,
                                                                                   pruner.kept(before_w)),
                        prune_seconds=step_time, recover_seconds=recover_seconds,
                        top1_after_prune=checks.top1_after_prune, top1_after_bn=checks.top1_after_bn,
                        notes=tuple(pruner.step_notes))
        steps.append(done)
        notes.extend(pruner.step_notes)
        if checks.computed_in == "bfloat16" and BFLOAT16_NOTE not in notes:
            notes.append(BFLOAT16_NOTE)
        yield done
        last = pruner.done or step == cfg.steps
        yield from phases.done(step, Phase.EVALUATE, current.top1, None if last else Phase.PRUNE)
        if last:
            break

    _finish(pruner, shape, dev, notes)
    paired = onnxruntime = None
    if cfg.measure_speed:
        original = (teacher_model if teacher_model is not None and teacher is None
                    else copy.deepcopy(bundle.model).to(dev).eval())  # timed against the model it started from
        paired = yield from _paired_speedup(original, model, shape, cfg, device, cancel)
        onnxruntime = yield from relay(iter_onnxruntime_speedup(
            original, model, shape, paired_sizes(cfg), device, cfg.threads, PAIRED_ROUNDS,
            max(3, cfg.latency_repeats // 6), notes, cancel))
        del original
    latency_target = None if latency_plan is None else (yield from relay(check_latency_target(
        latency_plan, bundle.model, model, shape, device, cfg.threads,
        onnxruntime if latency_plan.runtime == "onnxruntime" else paired, notes, cancel)))
    work.meta = {
        "method": method.name, "config": cfg.to_json(), "parent": bundle.source, "parent_arch": bundle.arch,
        "metrics": current.to_json(detail=False), "baseline": baseline.to_json(detail=False),
        "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "evaluation": {"dataset": data.name, "split": "test", "images": current.samples, "device": current.device},
        "latency_speedup": paired, "onnxruntime_speedup": onnxruntime, "original": original_identity(bundle),
        "latency_target": latency_target,
        **({"recover_only": True} if recover_only else {}),
    }
    files = (yield from _save(work, data, cfg, method.structured, Path(out_dir), notes)) if out_dir is not None else {}
    model.cpu()
    run = RunDone(method=method.name, config=cfg.to_json(), before=baseline, after=current, steps=(step0, *steps),
                  files=files, seconds=time.perf_counter() - start, prune_seconds=prune_seconds, notes=tuple(notes),
                  paired=paired, arch=architecture_signature(model), original_arch=architecture_signature(bundle.model),
                  onnxruntime=onnxruntime, latency_target=latency_target)
    yield run
    return Pruned(run, work)


def _save(work: ModelBundle, data: Dataset, cfg: PruneConfig, structured: bool, out_dir: Path,
          notes: list[str]) -> Iterator:
    """save_outputs with progress; returns the paths written."""
    yield Progress("save", 0, 1, "saving the model, its exports and model card")
    files = save_outputs(work, out_dir, structured=structured,
                         check_batches=data.loader("test", min(256, cfg.batch_size), limit=1024),
                         notes=notes)  # the user's batch size: 256 large images would need gigabytes
    yield Progress("save", 1, 1, "saved")
    return files


def _teacher(bundle: ModelBundle, dev: torch.device) -> nn.Module:
    """A frozen copy of the unpruned model, for distillation (and later the paired timing)."""
    teacher = copy.deepcopy(bundle.model).to(dev).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _finish(pruner, shape, dev: torch.device, notes: list[str]) -> None:
    """Check the pruned model (a broken one fails the run with the reason), then make it a plain model."""
    problems = pruner.check(torch.zeros(1, *shape, device=dev))
    if problems:
        raise BrokenModel("the pruned model is broken, so the run failed: " + "; ".join(problems)
                          + ". Unstructured pruning (e.g. --method magnitude-global) keeps every shape")
    pruner.finish()
    notes.extend(n for n in pruner.notes if n not in notes)


def _recover(model: nn.Module, data: Dataset, cfg: PruneConfig, dev: torch.device, step: int,
             teacher: nn.Module | None, regularizer, cancel: CancelToken,
             phases: _Phases) -> Generator[Any, None, RecoveryChecks]:
    """BatchNorm re-estimation and/or fine-tuning after a step, each phase ending in a PhaseDone; returns the
    top-1 right after pruning and after the BatchNorm re-estimation."""
    top1_pruned = top1_bn = computed_in = None
    # The before/after-recovery check is a quick look on validation images, capped like evaluation.
    if cfg.bn_recalibrate or cfg.recovers_by_training:
        top1_pruned = phases.top1()
    yield from phases.done(step, Phase.PRUNE, top1_pruned, _after_prune(cfg))
    if cfg.bn_recalibrate:
        yield from recalibrate_batchnorm(model, data, cfg.bn_batches, dev, cancel)
        top1_bn = phases.top1()
        yield from phases.done(step, Phase.BN_RECALIBRATE, top1_bn,
                               Phase.FINETUNE if cfg.recovers_by_training else Phase.EVALUATE)
    if cfg.recovers_by_training:
        tcfg = TrainConfig(epochs=cfg.finetune_epochs or 1, lr=cfg.finetune_lr, optimizer=cfg.optimizer,
                           schedule=cfg.finetune_schedule, warmup=cfg.warmup, label_smoothing=cfg.label_smoothing,
                           max_batches=cfg.finetune_batches, seed=cfg.seed + step,
                           device=dev.type, distill_temperature=cfg.distill_temperature,
                           distill_weight=cfg.distill_weight, validate=False, weight_decay=5e-4,
                           precision=cfg.training_precision, augment=cfg.finetune_augment)
        for ev in train(model, data, tcfg, cancel, teacher=teacher, regularizer=regularizer, phase=Phase.FINETUNE):
            if isinstance(ev, Progress):  # the step number joins the message, so not relay()
                yield Progress(Phase.FINETUNE, ev.done, ev.total, f"step {step}/{cfg.steps}, {ev.message}", ev.eta_s)
            elif isinstance(ev, EpochDone):
                yield ev
            elif isinstance(ev, TrainDone):
                computed_in = ev.computed_in
        yield from phases.done(step, Phase.FINETUNE, None, Phase.EVALUATE)
    return RecoveryChecks(top1_pruned, top1_bn, computed_in)


def paired_sizes(cfg: PruneConfig) -> tuple[int, ...]:
    """The batch sizes the end of a run times the original and the pruned model at: 1 and the run's own."""
    return (1,) if cfg.batch_size == 1 else (1, cfg.batch_size)


def _paired_speedup(original: nn.Module, model: nn.Module, shape, cfg: PruneConfig, device: str,
                    cancel: CancelToken) -> Iterator:
    """The original and the pruned model timed interleaved; returns the pairs' JSON.

    The before and after figures were timed minutes apart, and load that comes and goes in between
    lands on one of them only; timed interleaved now, both see the same machine."""
    done = yield from relay(iter_paired_speedup(original, model, shape, paired_sizes(cfg), device, rounds=PAIRED_ROUNDS,
                                                runs_per_round=max(3, cfg.latency_repeats // 6),
                                                threads=cfg.threads, names=("original", "pruned"), cancel=cancel))
    return done.to_json()
