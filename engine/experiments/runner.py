"""Running a plan: its events, claims in the store, the memory budget per run, and resuming."""
from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from engine import versions
from engine.budget import guarded, parse_limit, rss_bytes
from engine.checks import check_run
from engine.data.common import EVAL_SAMPLING
from engine.events import CancelToken, Progress
from engine.experiments.claims import ClaimStatus
from engine.experiments.executors import (Outcome, PlannedRun, Started, device_text, make_executor,
                                          timed_threads)
from engine.experiments.plans import Plan
from engine.experiments.ranking import Ranking, rank
from engine.experiments.store import ClaimOwner, ResultStore, RunKind, RunResult, run_label
from engine.methods import get_method
from engine.timing import architecture_signature, iter_comparison_round
from engine.config import PruneConfig

POLL_S = 1.0  # how often a sweep that waits for another's runs looks at the store

# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class PlanStarted:
    """The plan's runs are known and the original model is measured: `keys`/`labels` in run order."""

    name: str
    keys: tuple[str, ...]
    labels: tuple[str, ...]
    baseline: "RunResult"
    skipped: int
    criteria: tuple


@dataclass(frozen=True)
class PlanProgress:
    """Run `index` (1-based) of `total` starts; `skipped` runs were already in the store."""

    index: int
    total: int
    key: str
    label: str
    skipped: int = 0
    message: str = ""


@dataclass(frozen=True)
class PlanWaiting(PlanProgress):
    """Runs (or the baseline, or the scan) this plan needs are being computed by another process sharing
    the store; the plan waits for them. `holders` names those processes, `keys` the runs."""

    holders: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanRunStarted(PlanProgress):
    """A submitted run began on a Ray worker (`node`, process `pid`; `attempt` > 1: retried after its
    worker died). `running` lists the labels of every run in flight now."""

    node: str = ""
    pid: int = 0
    attempt: int = 1
    running: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanRunDone:
    """A run finished and is stored (or was found in the store when `skipped`)."""

    index: int
    total: int
    result: RunResult
    skipped: bool = False
    rss_bytes: int = 0  # resident memory after the run's memory was freed
    shared: bool = False  # computed by another process sharing the store while this plan ran


@dataclass(frozen=True)
class PlanDone:
    """The plan is complete: every result, the baseline, the ranking, and where they are stored."""

    results: tuple[RunResult, ...]
    baseline: RunResult
    ranking: "Ranking"
    store: str
    seconds: float
    ran: int
    skipped: int
    shared: int = 0  # runs another process sharing the store computed while this plan ran
    failed: tuple[str, ...] = ()  # "label: reason" of runs stopped by the memory budget (not stored)
    latency_source: str = ""  # where the latency and speed-up figures come from (latency_source_text)


@dataclass(frozen=True)
class PlanRunFailed:
    """A run was stopped (by the memory budget) and not stored; the plan goes on, a re-run retries it."""

    index: int
    total: int
    key: str
    label: str
    message: str


# ----------------------------------------------------------------------------- runner


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


# Options added after stores were written, each with the value that gives the runs made before it: left out of
# the key at that value, so a store's existing runs keep their keys (a resumed sweep does not run them again).
KEY_SKIPS = {"target_latency_speedup": None, "finetune_augment": True}
# Distillation's temperature before its default became 2: what runs that distil nothing keep in their key, since
# the temperature changes nothing in them.
UNDISTILLED_TEMPERATURE = 4.0


def run_key(plan: Plan, cfg: PruneConfig, identity: dict | None = None) -> str:
    """Deterministic key of one run: model (with file digest) + dataset + the full PruneConfig (+ the sampling of
    a limited evaluation, see EVAL_SAMPLING)."""
    config = {k: v for k, v in cfg.to_json().items() if not (k in KEY_SKIPS and v == KEY_SKIPS[k])}
    if not cfg.recovers_by_training:
        config.pop("finetune_augment", None)  # nothing is fine-tuned, so nothing augmented: the run made before it
    if not cfg.distill:
        config["distill_temperature"] = UNDISTILLED_TEMPERATURE
    key = {"model": identity or plan.model_identity(), "data": plan.data, "config": config}
    return _digest(dict(key, sample=EVAL_SAMPLING) if cfg.eval_limit else key)


def baseline_key(plan: Plan, cfg: PruneConfig, identity: dict | None = None) -> str:
    """Key of the original model's evaluation under the plan's evaluation settings."""
    settings = {k: getattr(cfg, k) for k in ("device", "batch_size", "eval_limit", "measure_speed",
                                             "latency_repeats", "threads")}
    key = {"model": identity or plan.model_identity(), "data": plan.data, "eval": settings}
    return "baseline-" + _digest(dict(key, sample=EVAL_SAMPLING) if cfg.eval_limit else key)


def load_inputs(plan: Plan):
    """Load the plan's dataset and model once and make them fit (shared by every run)."""
    from engine.inputs import load_inputs

    inputs = load_inputs(plan.model, plan.data, weights=plan.weights, model_code=plan.model_code,
                         model_kwargs=plan.model_kwargs, trust=plan.trust, input_shape=plan.input_shape,
                         seed=plan.seed, mean=plan.mean, std=plan.std)
    return inputs.bundle, inputs.data


def plan_runs(plan: Plan, bundle=None, scan=None) -> list[PlannedRun]:
    """Every run of the plan; sensitivity-guided runs need the plan's scan (`scan`, a SensitivityDone) and
    the model to count MACs."""
    identity = plan.model_identity()
    runs = []
    for cfg, rec in plan.configs():
        label = run_label(cfg, rec.name if len(plan.recoveries) > 1 else "")
        runs.append(PlannedRun(run_key(plan, cfg, identity), label, cfg, rec))
    if plan.sensitivity_guided:
        if scan is None or bundle is None:
            raise ValueError("sensitivity-guided runs need the scan and the model")
        from engine.sensitivity import propose_layer_ratios

        proposals: dict[float, dict] = {}
        for cfg, rec in plan.configs():
            if cfg.pruning_ratio is None or not get_method(cfg.method).structured:
                continue
            if cfg.pruning_ratio not in proposals:
                proposals[cfg.pruning_ratio] = propose_layer_ratios(
                    scan, cfg.pruning_ratio, bundle, round_to=cfg.round_to, max_layer_ratio=cfg.max_layer_ratio,
                    keep_head=cfg.keep_head).layer_ratios
            g = replace(cfg, layer_ratios=dict(proposals[cfg.pruning_ratio]))
            label = run_label(g, rec.name if len(plan.recoveries) > 1 else "", guided=True)
            runs.append(PlannedRun(run_key(plan, g, identity), label, g, rec, guided=True))
    return runs


def _pause(seconds: float, cancel: CancelToken) -> None:
    """Sleep, looking at the cancel flag ten times a second."""
    end = time.monotonic() + seconds
    while True:
        cancel.check()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(0.1, left))


def _acquire(store: ResultStore, key: str, owner: ClaimOwner, cancel: CancelToken, what: str,
             table: str = "runs", total: int = 0, skipped: int = 0) -> Iterator:
    """Claim `key`, waiting (with PlanWaiting events) while another live process holds it.

    Returns True when this owner now holds the claim, False when the result is already stored.
    """
    shown = ""
    while True:
        cancel.check()
        status, holder = store.claim(key, owner, table)
        if status is not ClaimStatus.BUSY:
            return status is ClaimStatus.CLAIMED
        who = holder.owner.describe()
        if who != shown:
            shown = who
            yield PlanWaiting(0, total, key, what, skipped, f"waiting for {what}: {who} is computing it",
                              (who,), (key,))
        _pause(POLL_S, cancel)


def _stamp(result: RunResult, owner: ClaimOwner) -> RunResult:
    """Record which process computed a row (sweeps sharing a store can tell their work apart)."""
    result.extra.update(pid=owner.pid, host=owner.host)
    return result


def sensitivity_for_plan(plan: Plan, bundle, data, store: ResultStore | None,
                         cancel: CancelToken | None, owner: ClaimOwner | None = None) -> Iterator:
    """The plan's sensitivity scan as events ending with SensitivityDone: taken from the store when this
    exact scan is there, else computed (yielding its Progress) and stored. With an `owner`, the scan is
    claimed first, so a second sweep on the same store waits for it instead of computing it again."""
    from engine.sensitivity import SensitivityDone, scan, scan_key

    cancel = cancel or CancelToken()
    opts = dict(plan.sensitivity)
    key = scan_key(plan.model_identity(), plan.data, opts)
    found = store.sensitivity(key) if store is not None else []
    if not found and store is not None and owner is not None:
        mine = yield from _acquire(store, key, owner, cancel, "the sensitivity scan", table="sensitivity")
        if not mine:
            found = store.sensitivity(key)
    if found:
        yield SensitivityDone.from_json(found[0])
        return
    try:
        done = None
        for ev in scan(bundle, data, cancel=cancel, **opts):
            done = ev
            yield ev
        if store is not None:
            store.put_sensitivity(key, dict(done.to_json(), key=key, plan=plan.name), owner)
    except BaseException:
        if store is not None and owner is not None:
            store.release(owner, key)
        raise


def run_plan(plan: Plan, store: ResultStore, cancel: CancelToken | None = None, bundle=None,
             data=None, memory_limit: int | None = None) -> Iterator:
    """Run every pending configuration of a plan, storing each run the moment it finishes.

    Yields PlanProgress before each run, the engine's events of that run, PlanRunDone after it
    (also for runs found in the store), and PlanDone with the ranking at the end. Dataset and model
    are loaded once and the original model is evaluated once (or taken from the store).

    Sweeps may share a store (two terminals, or machines on a shared disk): each run is claimed in the
    store before it starts and released when it is stored, fails or is cancelled, so no run is computed
    twice. Runs another live process holds are left to it; once this sweep has nothing else to do it
    waits for them (PlanWaiting events, a look every POLL_S seconds) and ranks them with its own, so every
    sweep ends with the whole plan, which is what a user who started two of them wants. When their owner
    dies (same host: its pid is gone) or stops renewing its lease, this sweep takes them over, so nothing
    is lost. Cancelling while waiting loses nothing either: the other process stores its runs and a re-run
    includes them. The baseline and the sensitivity scan are claimed the same way (the other sweeps wait
    for them, since every run needs them), so they too are computed once.

    Each run is held to the memory budget (`memory_limit`, else the plan's, else the default share of
    the machine): a run that reaches it ends as PlanRunFailed and the plan goes on with the next.

    The plan's executor ([plan] executor, `sweep --executor`) decides where the runs execute: here, one
    at a time, or on a Ray cluster, several at once (PlanRunStarted says where each began). This process
    keeps the store either way and writes each result the moment it arrives.
    """
    cancel = cancel or CancelToken()
    owner = ClaimOwner.here()
    limit = memory_limit or plan.memory_limit or parse_limit(None)
    executor = make_executor(plan, limit, memory_limit or plan.memory_limit)
    try:
        with store.leases(owner):
            yield from _run_plan(plan, store, cancel, bundle, data, owner, limit, executor)
    finally:
        executor.close()


def _run_plan(plan: Plan, store: ResultStore, cancel: CancelToken, bundle, data, owner: ClaimOwner,
              limit: int, executor) -> Iterator:
    start = time.perf_counter()
    bundle, data, scan = yield from _prepare(plan, store, cancel, bundle, data, owner, limit)
    runs = plan_runs(plan, bundle, scan)
    total = len(runs)
    b_key = baseline_key(plan, runs[0].cfg, plan.model_identity())
    record = dict(plan.to_json(), keys=[r.key for r in runs], baseline=b_key)
    earlier = _earlier_round(store, plan.name, record["keys"])
    store.put_plan(plan.name, dict(record, final_round=earlier) if earlier else record)
    done_keys = store.keys("run")
    skipped = sum(1 for r in runs if r.key in done_keys)
    baseline = yield from _baseline(plan, store, cancel, bundle, data, owner, limit, b_key, runs[0].cfg, total,
                                    skipped)
    executor.open(plan, bundle, data, baseline, plan.models_dir(store.path) if plan.save_models else None)
    share = ArchShare(baseline, architecture_signature(bundle.model), {r.key: i for i, r in enumerate(runs, 1)})
    yield PlanStarted(plan.name, tuple(r.key for r in runs), tuple(r.label for r in runs), baseline, skipped,
                      tuple(plan.criteria))
    counts = {"ran": 0, "shared": 0}
    failed: list[str] = []
    pending = list(enumerate(runs, 1))
    held, holders = [], []  # runs another live process computes: looked at again once this one is idle
    shown = ""
    while pending or held or executor.running:
        pending = yield from _submit(pending, executor, store, owner, cancel, done_keys, counts, held, holders,
                                     total, skipped, share)
        if executor.running:
            yield from _collect(executor, store, owner, cancel, skipped, counts, failed, share)
            continue
        if held:
            who = sorted(set(holders))
            text = (f"{len(held)} run{'s are' if len(held) > 1 else ' is'} being computed by "
                    f"{', '.join(who)}; waiting to include {'them' if len(held) > 1 else 'it'} "
                    "(cancel to stop: they are stored anyway, and a re-run includes them)")
            if text != shown:
                shown = text
                yield PlanWaiting(0, total, "", "waiting", skipped, text, tuple(who),
                                  tuple(run.key for _, run in held))
            _pause(POLL_S, cancel)
            pending, held, holders = held, [], []
    ran, shared = counts["ran"], counts["shared"]
    keys = [r.key for r in runs]
    final = None
    if runs[0].cfg.measure_speed:
        final = yield from final_round(plan.name, keys, store, bundle, share.original_arch, executor.models,
                                       runs[0].cfg, bundle.input_shape or data.input_shape, cancel)
        if earlier and (final is None or not final["archs"]):
            final = earlier  # the same runs, timed together by an earlier sweep: still their comparison
    results, baseline = apply_final_round(store.results(keys), baseline, final)
    yield PlanDone(tuple(results), baseline, rank(results, plan.criteria, baseline, model=plan.model),
                   str(store.path), time.perf_counter() - start, ran, skipped, shared, tuple(failed),
                   latency_source_text(final, results))


def _prepare(plan: Plan, store: ResultStore, cancel: CancelToken, bundle, data, owner: ClaimOwner,
             limit: int) -> Iterator:
    """Load the inputs, check every run before any work, and scan sensitivity when the plan is guided;
    returns (bundle, data, scan or None)."""
    from engine.pruning import run_pruning  # noqa: F401  (the core loads before any work starts)

    if bundle is None or data is None:
        yield Progress("plan", 0, 1, "loading model and dataset")
        bundle, data = load_inputs(plan)
    bundle.require_prunable()
    plan.check_outputs(store.path)
    probed = set()  # one memory probe per batch size and device, however many runs share them
    for cfg, _ in plan.configs():  # layer names, memory: before the scan and the baseline, not at run 17
        check_run(cfg, bundle, memory=(cfg.batch_size, cfg.device) not in probed)
        probed.add((cfg.batch_size, cfg.device))
    scan = None
    if plan.sensitivity_guided:
        for ev in guarded(sensitivity_for_plan(plan, bundle, data, store, cancel, owner), limit):
            scan = ev
            yield ev
    return bundle, data, scan


def untrained_extra(plan: Plan, bundle) -> dict:
    """The original's row says when the model has random weights (`untrained`: the note), so the store, the
    ranking's recommendation, the report and the GUI all say it."""
    if not bundle.meta.get("untrained"):
        return {}
    from engine.inputs import random_weights_note

    return {"untrained": random_weights_note(plan.model, plan.seed, "[model] weights", "set [model] weights to "
                                             "your trained model's file before comparing methods on it")}


def _baseline(plan: Plan, store: ResultStore, cancel: CancelToken, bundle, data, owner: ClaimOwner, limit: int,
              b_key: str, first_cfg: PruneConfig, total: int, skipped: int) -> Iterator:
    """The original model's row: from the store, from another sweep that claimed it, or evaluated once here
    (with the first run's settings) and stored; returns it."""
    from engine.metrics import evaluate

    baseline = store.get(b_key)
    if baseline is None and not (yield from _acquire(store, b_key, owner, cancel, "the original model's "
                                                     "evaluation", total=total, skipped=skipped)):
        baseline = store.get(b_key)  # another sweep evaluated it while this one waited
    if baseline is not None:
        return baseline
    yield PlanProgress(0, total, b_key, "original model", skipped, "evaluating the original model once")
    try:
        sink = []
        t0 = time.perf_counter()
        for ev in guarded(evaluate(bundle.model, data, device=first_cfg.device, batch_size=first_cfg.batch_size,
                                   limit=first_cfg.eval_limit, speed=first_cfg.measure_speed,
                                   threads=first_cfg.threads, repeats=first_cfg.latency_repeats, cancel=cancel),
                          limit):
            if isinstance(ev, Progress):
                yield Progress("baseline", ev.done, ev.total, ev.message, ev.eta_s)
            else:
                sink.append(ev.metrics)
        baseline = _stamp(RunResult(
            key=b_key, kind=RunKind.BASELINE, label="original", method="none", ratio=0.0, target_speedup=None,
            guided=False, config={}, metrics=sink[0], steps=[], seconds=time.perf_counter() - t0,
            device=device_text(first_cfg.device), versions=versions(), files={"model": plan.model},
            model=plan.model, dataset=plan.data, created=time.strftime("%Y-%m-%dT%H:%M:%S"),
            extra=untrained_extra(plan, bundle), node=owner.host, threads=timed_threads(sink[0], first_cfg.device)),
            owner)
        store.put(baseline, owner)
    except BaseException:
        store.release(owner, b_key)
        raise
    return baseline


def _submit(pending: list, executor, store: ResultStore, owner: ClaimOwner, cancel: CancelToken, done_keys: set,
            counts: dict, held: list, holders: list, total: int, skipped: int, share: "ArchShare") -> Iterator:
    """Claim and submit pending runs while the executor has room; a run already stored is passed on as
    PlanRunDone, one another live sweep holds goes to `held`. Returns the runs left for later."""
    later = []
    for index, run in pending:
        cancel.check()
        key = run.key
        if executor.running >= executor.capacity:
            later.append((index, run))
            continue
        status, holder = (ClaimStatus.STORED, None) if key in done_keys else store.claim(key, owner)
        if status is ClaimStatus.STORED:
            stored = store.get(key)
            if stored is not None:  # (a stored row is never deleted; the check only guards the type)
                by_other = key not in done_keys
                counts["shared"] += by_other
                share.see(stored)
                yield PlanRunDone(index, total, stored, skipped=True, shared=by_other)
                continue
            done_keys.discard(key)  # deleted by hand since the plan started: claim it next time round
        if status is not ClaimStatus.CLAIMED:
            held.append((index, run))
            if holder is not None:
                holders.append(holder.owner.describe())
            continue
        sent = "" if executor.name == "local" else " (submitted to the Ray cluster)"
        yield PlanProgress(index, total, key, run.label, skipped, f"run {index}/{total}: {run.label}{sent}")
        executor.submit(run.job(index, total))
    return later


def _collect(executor, store: ResultStore, owner: ClaimOwner, cancel: CancelToken, skipped: int, counts: dict,
             failed: list, share: "ArchShare") -> Iterator:
    """Pass on the events of the runs in flight and store each result the moment it arrives."""
    try:
        for ev in executor.events(cancel):
            if isinstance(ev, Started):
                j = ev.job
                again = f", attempt {ev.attempt} (its worker died)" if ev.attempt > 1 else ""
                yield PlanRunStarted(j.index, j.total, j.key, j.label, skipped,
                                     f"run {j.index}/{j.total}: {j.label} running on {ev.node}{again}",
                                     ev.node, ev.pid, ev.attempt, executor.in_flight())
            elif isinstance(ev, Outcome):
                j = ev.job
                if ev.result is None:
                    store.release(owner, j.key)  # another sweep, or a re-run, may take it
                    failed.append(f"{j.label}: {ev.failed}")
                    yield PlanRunFailed(j.index, j.total, j.key, j.label, ev.failed)
                    continue
                result = share.apply(_stamp(ev.result, owner))
                store.put(result, owner)  # the moment the run finishes: a later crash cannot lose it
                counts["ran"] += 1
                yield PlanRunDone(j.index, j.total, result, rss_bytes=rss_bytes())
            else:
                yield ev
    except BaseException:
        for key in executor.keys():
            store.release(owner, key)  # failed or cancelled: another sweep may take them
        raise


# ----------------------------------------------------------------------------- shared figures and the final round

# Metrics fields a run of the same architecture shares: timed on the machine, so between equal shapes they
# differ by noise only (a forward pass's peak memory too: 8.4 and 10.7 MB for one resnet18 shape)
TIMED_FIELDS = ("latency_ms", "throughput_ips", "peak_memory_bytes")


class ArchShare:
    """Runs of one plan with the same architecture signature (engine.timing.architecture_signature) share
    one latency figure: the first stored one's (or the original's, for unstructured runs, whose shapes do
    not change). Their own figures differ from it only by the machine's noise; they are kept in
    extra["own_latency"], and extra["same_arch_as"] names the run whose figure is shown."""

    def __init__(self, baseline: RunResult, original_arch: str, index: dict[str, int]) -> None:
        self.baseline, self.original_arch, self.index = baseline, original_arch, index
        self.first: dict[str, RunResult] = {}

    def see(self, result: RunResult) -> None:
        """Remember a stored run as the holder of its architecture's figure, if it is the first."""
        arch = result.extra.get("arch")
        if arch and arch != self.original_arch and arch not in self.first and not result.extra.get("same_arch_as"):
            self.first[arch] = result

    def apply(self, result: RunResult) -> RunResult:
        """Give a new run the figure of the first run (or the original) of its architecture; returns it."""
        arch = result.extra.get("arch")
        if not arch or not result.metrics.latency_ms:
            return result
        source = self.baseline if arch == self.original_arch else self.first.get(arch)
        if source is None or not source.metrics.latency_ms:
            self.see(result)
            return result
        m = result.metrics
        result.extra["own_latency"] = {**{name: getattr(m, name) for name in TIMED_FIELDS},
                                       "latency_speedup": result.extra.get("latency_speedup")}
        for name in TIMED_FIELDS:
            setattr(m, name, copy.deepcopy(getattr(source.metrics, name)))
        is_original = source is self.baseline
        # the original against itself: 1× by definition, not a noisy measurement of it
        result.extra["latency_speedup"] = None if is_original else copy.deepcopy(source.extra.get("latency_speedup"))
        result.extra["same_arch_as"] = {"key": source.key, "label": source.label,
                                        "index": 0 if is_original else self.index.get(source.key, 0)}
        return result


def same_arch_text(result: RunResult) -> str:
    """'same architecture as #2 (l1 @ 0.5)', 'same architecture as the original', or ''."""
    same = result.extra.get("same_arch_as")
    if not same:
        return ""
    if not same.get("index"):
        return "same architecture as the original"
    return f"same architecture as #{same['index']} ({same.get('label', '')})"


def _rebuilt(bundle, result: RunResult):
    """A stored run's pruned model, rebuilt from its saved weights.safetensors and model.json (no code from
    the files runs), or None when they were not saved."""
    from engine.deploy import rebuild

    for path in result.files.values():
        folder = Path(path).parent
        if (folder / "model.json").is_file() and (folder / "weights.safetensors").is_file():
            try:
                return rebuild(copy.deepcopy(bundle.model).cpu(), folder)
            except (KeyError, ValueError, RuntimeError, OSError):
                return None
    return None


def _earlier_round(store: ResultStore, name: str, keys: list[str]) -> dict | None:
    """The final round an earlier sweep of this plan stored, when it timed exactly these runs (a plan with
    other runs gets none: its round would leave some out, so it is dropped until a new one completes)."""
    old = next((p for p in store.plans() if p["name"] == name), None)
    final = (old or {}).get("final_round")
    return final if final and final.get("keys") == keys else None


def final_round(name: str, keys: list[str], store: ResultStore, bundle, original_arch: str, models: dict,
                cfg: PruneConfig, shape, cancel: CancelToken) -> Iterator:
    """Time every distinct pruned architecture of a plan and the original together, round-robin in this
    process (same threads, same batch), and store the figures with the plan; returns the stored record
    (None when the plan has no pruned architecture; {"archs": {}, "left_out": labels}, not stored, when no
    pruned model could be had).

    The record is written in one transaction once the round is complete, so an interrupted round leaves
    the per-run figures, which latency_source_text labels as such. Models come from this process (the
    local executor keeps one per architecture) or are rebuilt from saved files (runs of earlier sweeps,
    Ray runs with save_models); the others are left out, by name."""
    groups: dict[str, list[RunResult]] = {}
    for r in store.results(keys):
        if r.metrics.latency_ms:
            groups.setdefault(r.extra.get("arch") or f"key:{r.key}", []).append(r)
    timed, left_out = [("original", bundle.model)], []
    archs: list[str] = []
    for arch, members in groups.items():
        if arch == original_arch:
            continue
        model = models.get(arch)
        if model is None:
            model = next((m for m in (_rebuilt(bundle, r) for r in members) if m is not None), None)
        if model is None:
            left_out.extend(r.label for r in members)
            continue
        timed.append((members[0].label, model))
        archs.append(arch)
    if not archs:  # nothing to compare (not stored: the runs keep and label their own figures)
        return {"archs": {}, "left_out": left_out} if left_out else None
    yield Progress("final-round", 0, 1, f"final round: timing {len(archs)} architecture"
                   f"{'s' if len(archs) > 1 else ''} and the original together")
    from engine.training import resolve_device

    dev, _ = resolve_device(cfg.device)
    if dev.type != "cpu":  # copies on the device: the loaded original stays where it is
        timed = [(label, copy.deepcopy(m).to(dev)) for label, m in timed]
    done = None
    for ev in iter_comparison_round(timed, shape, cfg.batch_size, str(dev),
                                    threads=cfg.threads, runs_per_round=max(3, cfg.latency_repeats // 10),
                                    cancel=cancel):
        if isinstance(ev, Progress):
            yield ev
        else:
            done = ev
    record = {"keys": list(keys), "batch": done.batch, "rounds": done.rounds, "threads": done.threads,
              "device": done.device, "note": done.note, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "original": {"arch": original_arch, "latency": done.latency_json(0)},
              "archs": {arch: {"keys": [r.key for r in groups[arch]], "label": timed[i + 1][0],
                               "latency": done.latency_json(i + 1), "speedup": done.paired_json(i + 1)}
                        for i, arch in enumerate(archs)},
              "left_out": left_out}
    store.put_final_round(name, record)
    return record


def apply_final_round(results, baseline: RunResult | None, final: dict | None):
    """(results, baseline) with each run's latency and speed-up taken from the plan's final round: copies,
    marked extra["latency_source"] = "final round" (or "per run" for runs the round did not time)."""
    if not final or not final.get("archs"):
        return list(results), baseline
    batch = str(final["batch"])
    by_key = {k: a for a in final["archs"].values() for k in a["keys"]}
    original = final["original"]["latency"]

    def with_figures(r: RunResult, latency: dict | None, speedup: dict | None, source: str) -> RunResult:
        r = copy.deepcopy(r)
        r.extra["latency_source"] = source
        if latency is not None:
            r.metrics.latency_ms = {**r.metrics.latency_ms, batch: dict(latency)}
            r.metrics.throughput_ips = round(int(batch) / (latency["median"] / 1000.0), 2) if latency["median"] else 0.0
            r.extra["latency_speedup"] = speedup
        return r

    out = []
    for r in results:
        a = by_key.get(r.key)
        if a is not None:
            out.append(with_figures(r, a["latency"], a["speedup"], "final round"))
        elif r.extra.get("arch") == final["original"].get("arch"):
            out.append(with_figures(r, original, None, "final round"))
        else:
            out.append(with_figures(r, None, None, "per run"))
    base = with_figures(baseline, original, None, "final round") if baseline is not None else None
    return out, base


def latency_source_text(final: dict | None, results=()) -> str:
    """One line saying where the latency and speed-up figures shown come from."""
    timed = [r for r in results if r.metrics.latency_ms]
    if not timed:
        return ""
    if not final:
        return ("latency and speed-up: per-run figures, each run timed on its own against the original (no final "
                "comparison round stored: it was interrupted, or could not time the models)")
    if not final["archs"]:
        return ("latency and speed-up: per-run figures, each run timed on its own against the original; the final "
                f"comparison round could not time {', '.join(final['left_out'])}: their models were neither kept in "
                "this process nor saved (on Ray, set save_models = true)")
    n = len(final["archs"])
    text = (f"latency and speed-up: from the final comparison round ({n} pruned architecture{'s' if n != 1 else ''} "
            f"and the original timed round-robin, {final['rounds']} rounds, batch {final['batch']}, "
            f"{final['threads'] or final['device']} thread{'s' if final['threads'] != 1 else ''}; 95 % intervals)")
    if final.get("left_out"):
        text += f"; per-run figures for {', '.join(final['left_out'])} (model not kept or saved)"
    if final.get("note"):
        text += f" — {final['note']}"
    return text
