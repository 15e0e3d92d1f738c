"""The Pareto front, the ranking by criteria and the recommendation in plain words."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from engine.experiments.criteria import DEFAULT_CRITERIA, METRICS, Criterion, metric_value
from engine.experiments.store import RunResult

# ----------------------------------------------------------------------------- Pareto front and ranking


def pareto_front(points: Sequence[tuple[float, float]], directions: tuple[str, str] = ("min", "max")) -> list[int]:
    """Indices of the points no other point beats on both axes, sorted along the first axis.

    `directions` says per axis whether lower ('min') or higher ('max') is better; the default suits
    (latency, accuracy) and (size, accuracy).
    """
    sign = [1.0 if d == "min" else -1.0 for d in directions]
    pts = [(sign[0] * x, sign[1] * y) for x, y in points]  # now lower is better on both axes
    front = []
    for i, (x, y) in enumerate(pts):
        dominated = any((x2 <= x and y2 <= y) and (x2 < x or y2 < y) for j, (x2, y2) in enumerate(pts) if j != i)
        if not dominated and not any(pts[j] == (x, y) for j in front):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


@dataclass(frozen=True)
class RankedRun:
    """A run's place in the ranking: its score in [0, 1], values per criterion and broken constraints."""

    result: RunResult
    score: float
    values: dict  # criterion name -> value in display units (None: not measured)
    violations: tuple[str, ...]
    rank: int
    noise: tuple[str, ...] = ()  # constraints whose verdict the evaluation's noise could turn (Criterion.noise)

    @property
    def feasible(self) -> bool:
        """True when the run meets every constraint."""
        return not self.violations

    @property
    def noise_text(self) -> str:
        """' (within the noise: …)' after a constraint verdict the evaluation images cannot settle, else ''."""
        return f" (within the noise: {'; '.join(self.noise)})" if self.noise else ""


@dataclass(frozen=True)
class Ranking:
    """Runs ordered best first (those meeting every constraint ahead of the others), and the verdict."""

    criteria: tuple[Criterion, ...]
    baseline_values: dict
    entries: tuple[RankedRun, ...]
    best: RankedRun | None
    recommendation: str
    tied: tuple[RankedRun, ...] = ()  # the leader and the runs it beats only within the evaluation's noise
    baseline: RunResult | None = None  # the original the runs are compared with (its figures: baseline_values)

    def is_tied(self, entry: RankedRun) -> bool:
        """True when `entry` is the leader or tied with it (see _tied_with_leader)."""
        return len(self.tied) > 1 and entry in self.tied

    def rank_text(self, entry: RankedRun) -> str:
        """'2=' for a run tied with the first within the evaluation's noise, '2' otherwise (every table's '#')."""
        return f"{entry.rank}=" if self.is_tied(entry) else str(entry.rank)

    def entry(self, key: str) -> RankedRun | None:
        """The ranked entry of a run key."""
        return next((e for e in self.entries if e.result.key == key), None)


def _fmt_pt(delta: float) -> str:
    return f"{'−' if delta < 0 else '+'}{abs(delta):.1f} pt"


# Figures that depend on the timer and the machine's load, not on the model alone.
TIMED_METRICS = frozenset({"latency_ms", "latency_b1_ms", "throughput_ips", "peak_memory_bytes"})


def _pool_timed(results: Sequence[RunResult], table: list[dict], criteria: Sequence[Criterion]) -> list[dict]:
    """Rows in which each timed figure is replaced by the median over runs of the same shape.

    Runs with the same MACs and parameters have the same dense layers (e.g. l1 and l2 at one ratio), so
    their latencies differ only by measurement noise; scoring the measured values would let that noise,
    not accuracy, decide between them.
    """
    shapes: dict[tuple, list[int]] = {}
    for i, r in enumerate(results):
        # same layer shapes, measured the same way (machine, device, batch sizes, threads)
        how = tuple(sorted((bs, v.get("threads")) for bs, v in r.metrics.latency_ms.items()))
        shapes.setdefault((r.metrics.macs, r.metrics.params, r.node, r.device, how), []).append(i)
    pooled = [dict(row) for row in table]
    for c in criteria:
        if c.metric not in TIMED_METRICS:
            continue
        for members in shapes.values():
            vals = sorted(table[i][c.name] for i in members if table[i][c.name] is not None)
            if len(vals) < 2:
                continue
            mid = len(vals) // 2
            median = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
            for i in members:
                if pooled[i][c.name] is not None:
                    pooled[i][c.name] = median
    return pooled


def rank(results: Sequence[RunResult], criteria: Sequence[Criterion] = DEFAULT_CRITERIA,
         baseline: RunResult | None = None, model: str = "this model") -> Ranking:
    """Score every run and name the best one that meets every constraint.

    Each weighted criterion is scaled to [0, 1] across the compared runs (1 = the best of them) and
    the score is the weighted mean; criteria with weight 0 are shown, not scored. Runs that break a
    constraint are ranked after all runs that meet them, the least far past the limits first. Timed
    figures of runs with the same shape are scored by their shared median (see _pool_timed), while
    constraints judge the measured figures the table shows; equal scores go to the run with fewer
    MACs, a figure without noise.
    """
    criteria = tuple(criteria)
    base_vals = {c.name: metric_value(baseline, c.metric) if baseline else None for c in criteria}
    measured = [{c.name: metric_value(r, c.metric) for c in criteria} for r in results]
    table = _pool_timed(results, measured, criteria)
    scores = _scores(table, criteria)
    # Constraints judge what was measured (and shown); pooling only keeps noise out of the score.
    viol = [tuple(v for c in criteria for v in c.violations(row[c.name], base_vals[c.name])) for row in measured]
    # Runs meeting every constraint first, by score; then the others, closest to the constraints first.
    excess = [sum(c.excess(row[c.name], base_vals[c.name]) for c in criteria) for row in measured]
    order = sorted(range(len(results)), key=lambda i: (bool(viol[i]), round(excess[i], 9), -round(scores[i], 9),
                                                       results[i].metrics.macs, results[i].label))
    entries = tuple(RankedRun(results[i], round(scores[i], 4), measured[i], viol[i], n + 1,
                              tuple(t for c in criteria for t in c.noise(results[i], baseline)))
                    for n, i in enumerate(order))
    best = entries[0] if entries and entries[0].feasible else None
    if best:
        tied = _tied_with_leader(results, table, criteria, order, viol)
    else:  # no run meets the constraints: which comes closest can be noise too
        tied = _tied_closest(results, measured, criteria, base_vals, order) if entries else set()
    tied_entries = tuple(e for e in entries if e.result.key in tied)
    return Ranking(criteria, base_vals, entries, best,
                   recommendation(entries, criteria, baseline, model, tied_entries), tied_entries, baseline)


def _scores(table: list[dict], criteria: Sequence[Criterion]) -> list[float]:
    """Each row's weighted mean of its criteria, each scaled to [0, 1] across the rows (1 = the best)."""
    scores = [0.0] * len(table)
    weight_sum = 0.0
    for c in criteria:
        vals = [row[c.name] for row in table if row[c.name] is not None]
        if c.weight <= 0 or not vals:
            continue
        weight_sum += c.weight
        lo, hi = min(vals), max(vals)
        for i, row in enumerate(table):
            v = row[c.name]
            if v is None:
                continue
            norm = 1.0 if hi == lo else (v - lo) / (hi - lo)
            scores[i] += c.weight * (norm if c.direction == "max" else 1.0 - norm)
    return [s / weight_sum for s in scores] if weight_sum else scores


def _tied_with_leader(results: Sequence[RunResult], table: list[dict], criteria: Sequence[Criterion],
                      order: list[int], viol: list[tuple]) -> set[str]:
    """Keys of the leader and of every run meeting the constraints that would score at least as well had each
    accuracy figure (top-1, top-5, F1) been at the other end of its 95 % interval: the leader's at its low
    end, the other's at its high end. Between those the ranking is decided by the noise of the evaluation
    images, not by the models."""
    lead = order[0]
    tied = {results[lead].key}
    noisy = [c for c in criteria if c.metric in results[lead].metrics.INTERVALS and c.weight > 0]
    if not noisy:
        return tied
    for i in order[1:]:
        shifted = None if viol[i] else _shifted(results, table, criteria, lead, i)
        if shifted is None:
            continue
        scores = _scores(shifted, criteria)
        if scores[i] >= scores[lead] - 1e-9:
            tied.add(results[i].key)
    return tied


def _shifted(results: Sequence[RunResult], table: list[dict], criteria: Sequence[Criterion], lead: int,
             other: int) -> list[dict] | None:
    """`table` with each accuracy figure of the leader at the low end of its 95 % interval and the other run's
    at the high end (None when neither has an interval to shift)."""
    shifted, moved = [dict(row) for row in table], False
    for c in criteria:
        if c.metric not in results[lead].metrics.INTERVALS:
            continue
        low, high = results[lead].metrics.interval(c.metric), results[other].metrics.interval(c.metric)
        if low is None or high is None or table[lead][c.name] is None or table[other][c.name] is None:
            continue
        scale = METRICS[c.metric].scale
        shifted[lead][c.name], shifted[other][c.name] = low[0] * scale, high[1] * scale
        moved = True
    return shifted if moved else None


def _tied_closest(results: Sequence[RunResult], measured: list[dict], criteria: Sequence[Criterion],
                  base_vals: dict, order: list[int]) -> set[str]:
    """When every run breaks a constraint: keys of the closest run and of every run that would be as close
    (or closer) had the accuracies been at the other ends of their intervals, as in _tied_with_leader."""
    lead = order[0]
    tied = {results[lead].key}
    for i in order[1:]:
        shifted = _shifted(results, measured, criteria, lead, i)
        if shifted is None:
            continue
        excess = [sum(c.excess(shifted[k][c.name], base_vals[c.name]) for c in criteria) for k in (lead, i)]
        if excess[1] <= excess[0] + 1e-9:
            tied.add(results[i].key)
    return tied


def tie_words(tied: Sequence[RankedRun]) -> str:
    """'l1 @ 0.5 and l2 @ 0.5 are tied within the noise of 60 images' ('' when the leader stands alone)."""
    if len(tied) < 2:
        return ""
    names = [e.result.label for e in tied]
    listed = ", ".join(names[:-1]) + " and " + names[-1]
    n = min(e.result.metrics.samples for e in tied)
    return f"{listed} are tied within the noise of {n:,} images"



def _target_text(r: RunResult) -> str:
    if r.ratio is not None:
        return f"ratio {r.ratio:g}"
    if r.target_speedup:
        return f"target speed-up {r.target_speedup:g}×"
    config = r.config or {}
    runtime = config.get("runtime", "torch")
    if config.get("target_latency") is not None:
        return f"target latency {config['target_latency']:g} ms on {runtime}"
    if config.get("target_latency_speedup") is not None:
        return f"target latency {config['target_latency_speedup']:g}× lower on {runtime}"
    return ""


def describe_gain(r: RunResult, baseline: RunResult | None) -> str:
    """'3.2× faster, 2.9× smaller, −0.9 pt top-1 (91.2 % vs 92.1 %)' from the measured figures."""
    if baseline is None:
        return f"top-1 {r.metrics.top1 * 100:.2f} %"
    b, a = baseline.metrics, r.metrics
    parts = []
    speed = r.latency_speedup(baseline)
    if speed:
        parts.append(f"{speed:.1f}× faster")
    elif a.macs and b.macs:
        parts.append(f"{b.macs / a.macs:.1f}× fewer MACs (latency not measured)")
    if a.size_bytes and b.size_bytes and b.size_bytes / a.size_bytes > 1.05:
        parts.append(f"{b.size_bytes / a.size_bytes:.1f}× smaller")
    elif a.compressed_bytes and b.compressed_bytes and b.compressed_bytes / a.compressed_bytes > 1.05:
        parts.append(f"{b.compressed_bytes / a.compressed_bytes:.1f}× smaller compressed")
    parts.append(f"{_fmt_pt((a.top1 - b.top1) * 100)} top-1 ({a.top1 * 100:.2f} % vs {b.top1 * 100:.2f} %)")
    return ", ".join(parts)


def recommendation(entries: Sequence[RankedRun], criteria: Sequence[Criterion], baseline: RunResult | None,
                   model: str = "this model", tied: Sequence[RankedRun] = ()) -> str:
    """The plain-words verdict, built from the table's own numbers; on a model with random weights it
    starts by saying so (no verdict on such a model goes without that sentence)."""
    if not entries:
        return "No runs yet: run the plan to get a recommendation."
    untrained = (baseline.extra.get("untrained") if baseline else None) or ""
    verdict = _verdict(entries, criteria, baseline, model, tied)
    return f"Careful: {untrained}. {verdict}" if untrained else verdict


def _verdict(entries: Sequence[RankedRun], criteria: Sequence[Criterion], baseline: RunResult | None,
             model: str, tied: Sequence[RankedRun] = ()) -> str:
    """The verdict; leaders within each other's noise are named as tied, not one declared the winner."""
    constraints = "; ".join(t for t in (c.constraint_text() for c in criteria) if t) or "no constraints"
    weights = ", ".join(f"{c.name} {c.weight:g}" for c in criteria if c.weight > 0)
    first = entries[0]
    r = first.result
    name = f"`{r.method}` at {_target_text(r).replace('ratio ', '')}"
    if r.guided:
        name += " with sensitivity-guided layer ratios"
    if r.recovery and r.recovery != "none":
        name += f" ({r.extra.get('recovery_summary', r.recovery)})"
    # a verdict on a constraint the evaluation cannot settle says so (the verdict judges the measured figure)
    noise = (f" Whether it {'meets' if first.feasible else 'breaks'} the constraints is within the noise: "
             f"{'; '.join(first.noise)} (evaluate on more images to settle it).") if first.noise else ""
    if first.feasible and len(tied) > 1:
        return (f"For {model}, under these constraints ({constraints}; weights: {weights}), {tie_words(tied)}: "
                f"their 95 % intervals overlap, so this evaluation cannot tell them apart (evaluate on more images "
                f"to separate them). Ranked first by a margin within that noise, {name}: "
                f"{describe_gain(r, baseline)}.{noise}")
    if first.feasible:
        return (f"For {model}, under these constraints ({constraints}; weights: {weights}), {name} is best: "
                f"{describe_gain(r, baseline)}.{noise}")
    closest = f" Which run comes closest is noise: {tie_words(tied)}." if len(tied) > 1 else ""
    return (f"For {model}, no run meets the constraints ({constraints}). The closest is {name}: "
            f"{describe_gain(r, baseline)}, but {', '.join(first.violations)}.{closest} Relax the constraints or "
            f"prune less.{noise}")
