"""Speed and memory: latency, the paired interleaved speed-up, how busy the machine is, peak memory."""
from __future__ import annotations

import ctypes
import functools
import math
import os
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from engine.data import Shape
from engine.events import CancelToken, Progress, drain



# ----------------------------------------------------------------------------- speed and memory

# The floors of every timing: how long a machine-load sample watches, the least time a latency figure spends
# per batch size, and the least time one round of a paired timing gives each model. They buy precision, not
# correctness; module-level so a caller that checks what is measured rather than how precisely (the test
# suite) shortens them all in one place. Read at call time.
LOAD_WINDOW_S = 0.2
LATENCY_MIN_SECONDS = 0.5
ROUND_SECONDS = 0.02


@contextmanager
def fixed_threads(threads: int | None):
    """Pin torch's intra-op thread count for a measurement, then restore it."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _warm_up(model: nn.Module, x: torch.Tensor, dev: torch.device, runs: int) -> None:
    steady_heap()  # the warm-up settles the heap the timed passes then reuse
    for _ in range(runs):
        model(x)
    _sync(dev)


def _timed_runs(model: nn.Module, x: torch.Tensor, dev: torch.device, runs: int, min_seconds: float = 0.0,
                max_seconds: float = math.inf, cancel: CancelToken | None = None) -> list[float]:
    """Forward-pass times in ms: at least `runs` passes and `min_seconds`, stopping at `max_seconds`.
    The one timing loop behind every latency figure."""
    steady_heap()
    times: list[float] = []
    start = time.perf_counter()
    while True:
        if cancel:
            cancel.check()
        t0 = time.perf_counter()
        model(x)
        _sync(dev)
        times.append((time.perf_counter() - t0) * 1000.0)
        spent = time.perf_counter() - start
        if (len(times) >= runs and spent >= min_seconds) or spent >= max_seconds:
            return times


# ----------------------------------------------------------------------------- how busy the machine is

@dataclass(frozen=True)
class MachineLoad:
    """How busy the CPUs are, around a measurement."""

    cores: int  # cores this process may run on
    other_busy: float  # cores kept busy by other processes, sampled over a short window
    load_avg: float | None  # 1-minute load average (None where the OS has none); counts this process too

    def to_json(self) -> dict:
        """Plain dict for JSON."""
        return {"cores": self.cores, "other_busy": round(self.other_busy, 2),
                "load_avg_1m": None if self.load_avg is None else round(self.load_avg, 2)}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _load_avg() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def machine_load(window_s: float | None = None) -> MachineLoad:
    """Sample how many of our cores other processes keep busy: their CPU time over a short sleep
    (all CPU time on our cores minus this process's own) of `window_s` (LOAD_WINDOW_S when None)."""
    window_s = LOAD_WINDOW_S if window_s is None else window_s
    cores, load_avg = usable_cores(), _load_avg()
    try:
        import psutil

        proc = psutil.Process()
        try:
            ids = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            ids = None

        def sample() -> tuple[float, float, float]:
            per_cpu = psutil.cpu_times(percpu=True)
            mine = [per_cpu[i] for i in ids if i < len(per_cpu)] if ids else per_cpu
            # guest time is already inside user time; steal is time another guest took from us
            busy = sum(t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0)
                       + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0) for t in mine)
            own = proc.cpu_times()
            return time.perf_counter(), busy, own.user + own.system

        t0, busy0, own0 = sample()
        time.sleep(window_s)
        t1, busy1, own1 = sample()
        other = max(0.0, (busy1 - busy0) - (own1 - own0)) / max(1e-6, t1 - t0)
    except Exception:  # no psutil or no per-CPU counters: the load average is all there is
        other = max(0.0, load_avg or 0.0)
    return MachineLoad(cores, min(float(cores), other), load_avg)


def free_threads(cores: int, other_busy: float, torch_threads: int) -> int:
    """Threads left by other work: cores minus the busy ones, at least 1, never more than torch's own
    setting (the GUI keeps a core for itself)."""
    return max(1, min(torch_threads, cores - int(round(other_busy))))


def default_threads(load: MachineLoad | None = None) -> int:
    """Thread count for a CPU latency measurement when none is given: what other work leaves free.

    Threads beyond the free cores make torch's workers wait on each other at every barrier while the
    OS runs the other job: a busy machine then showed 412 ms instead of 1.3 ms for one image.
    """
    load = load or machine_load()
    return free_threads(load.cores, load.other_busy, torch.get_num_threads())


SPREAD_LIMIT = 0.25  # interquartile range over median of the rounds above which a figure is noisy
BUSY_SHARE = 0.5  # other work on at least this share of the cores makes a machine noisy


def relative_spread(values) -> float:
    """Interquartile range over the median (0 for fewer than two values): how much the rounds disagree."""
    if len(values) < 2:
        return 0.0
    q1, q2, q3 = np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])
    return float((q3 - q1) / q2) if q2 > 0 else 0.0


def noise_note(spreads: dict[str, float], cores: int, other_busy: float, load_avg: float | None,
               threads: int) -> str:
    """'' on a quiet machine, else one line 'noisy machine: <reasons>'; given numbers in, verdict out.

    `spreads` maps a label ("original at batch 64") to relative_spread of its rounds; the load average
    counts our own `threads` too, so only what exceeds them is other work.
    """
    reasons = []
    if other_busy >= BUSY_SHARE * cores:
        reasons.append(f"other work keeps {other_busy:.1f} of {cores} cores busy")
    elif load_avg is not None and load_avg - threads >= BUSY_SHARE * cores:
        reasons.append(f"load average {load_avg:.1f} on {cores} cores")
    noisy = [f"{label} {spread:.0%}" for label, spread in spreads.items() if spread > SPREAD_LIMIT]
    if noisy:
        reasons.append("rounds spread (IQR/median) " + ", ".join(noisy))
    return "noisy machine: " + "; ".join(reasons) if reasons else ""


# ----------------------------------------------------------------------------- latency

def measure_latency(model: nn.Module, input_shape: Shape, batch_sizes: tuple[int, ...] = (1, 64),
                    device: str = "cpu", warmup: int = 5, repeats: int = 30, min_seconds: float | None = None,
                    max_seconds: float = 10.0, threads: int | None = None,
                    cancel: CancelToken | None = None) -> dict[str, dict[str, float]]:
    """Median, p5 and p95 forward latency in ms per batch size (p5–p95: the band the GUI draws): warm-up,
    then timed runs until both `repeats` runs and `min_seconds` (LATENCY_MIN_SECONDS when None) are reached
    (capped by `max_seconds`). On CPU without `threads`, the threads other work leaves free (default_threads);
    the count used is recorded."""
    dev = torch.device(device)
    min_seconds = LATENCY_MIN_SECONDS if min_seconds is None else min_seconds
    if dev.type == "cpu" and not threads:
        threads = default_threads()
    model.eval()
    out: dict[str, dict[str, float]] = {}
    with fixed_threads(threads), torch.inference_mode():
        for bs in batch_sizes:
            x = torch.randn(bs, *input_shape, device=dev)
            _warm_up(model, x, dev, warmup)
            times = sorted(_timed_runs(model, x, dev, repeats, min_seconds, max_seconds, cancel))
            p5, p95 = (times[min(len(times) - 1, int(round(q * (len(times) - 1))))] for q in (0.05, 0.95))
            out[str(bs)] = {"median": round(statistics.median(times), 4), "p5": round(p5, 4), "p95": round(p95, 4),
                            "runs": len(times), "threads": torch.get_num_threads() if dev.type == "cpu" else 0}
    return out


# ----------------------------------------------------------------------------- paired speed-up

def median_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(low, high, coverage): the distribution-free order-statistic interval of the median.

    [x_(k), x_(n+1-k)] covers the true median with probability 1 - 2 P(Binomial(n, 1/2) < k); k is the
    largest with coverage >= `confidence`. Below 6 values no such k exists and the interval is the
    whole range, with its (lower) coverage returned.
    """
    x = sorted(float(v) for v in values)
    n = len(x)
    if n == 0:
        return 0.0, 0.0, 0.0
    tail = (1.0 - confidence) / 2.0

    def below(k: int) -> float:  # P(Binomial(n, 1/2) <= k - 1)
        return sum(math.comb(n, j) for j in range(k)) / 2 ** n

    k = 1
    while k + 1 <= (n + 1) // 2 and below(k + 1) <= tail:
        k += 1
    return x[k - 1], x[n - k], max(0.0, 1.0 - 2.0 * below(k))


@dataclass(frozen=True)
class PairedRatio:
    """The paired speed-up at one batch size: per round, A's time over B's; their median and interval."""

    batch: int
    median: float
    low: float
    high: float
    coverage: float  # probability that [low, high] holds the true median ratio (>= 0.95 from 6 rounds on)
    rounds: int
    a_ms: float  # median of A's round times
    b_ms: float
    a_spread: float  # relative_spread of A's round times
    b_spread: float
    ratios: tuple[float, ...]
    a_low: float = 0.0  # median_interval of A's round times (a latency with its interval: the latency target)
    a_high: float = 0.0
    b_low: float = 0.0
    b_high: float = 0.0

    def to_json(self) -> dict:
        """Plain dict for JSON."""
        return {"batch": self.batch, "median": round(self.median, 4), "low": round(self.low, 4),
                "high": round(self.high, 4), "coverage": round(self.coverage, 4), "rounds": self.rounds,
                "a_ms": round(self.a_ms, 4), "b_ms": round(self.b_ms, 4), "a_spread": round(self.a_spread, 4),
                "b_spread": round(self.b_spread, 4), "ratios": [round(r, 4) for r in self.ratios],
                "a_low": round(self.a_low, 4), "a_high": round(self.a_high, 4), "b_low": round(self.b_low, 4),
                "b_high": round(self.b_high, 4)}


@dataclass(frozen=True)
class PairedSpeedup:
    """How many times faster B is than A, timed interleaved in the same process (see iter_paired_speedup)."""

    batches: tuple[PairedRatio, ...]
    threads: int  # CPU threads used (0 on a GPU)
    device: str
    load_start: MachineLoad
    load_end: MachineLoad
    noisy: bool
    note: str  # one line when noisy, else ''
    names: tuple[str, str] = ("A", "B")

    INTERVAL = "order-statistic"  # how low/high are found: median_interval

    @property
    def headline(self) -> PairedRatio:
        """The figure at the largest batch size (the one speed-ups are quoted at)."""
        return max(self.batches, key=lambda b: b.batch)

    def to_json(self) -> dict:
        """The headline figures at the top level, each batch size under 'per_batch'."""
        h = self.headline
        return {"batch": h.batch, "median": round(h.median, 4), "low": round(h.low, 4), "high": round(h.high, 4),
                "coverage": round(h.coverage, 4), "rounds": h.rounds, "threads": self.threads, "noisy": self.noisy,
                "note": self.note, "device": self.device, "interval": self.INTERVAL, "names": list(self.names),
                "load_start": self.load_start.to_json(), "load_end": self.load_end.to_json(),
                "per_batch": {str(b.batch): b.to_json() for b in self.batches}}


MIN_ROUNDS = 5  # a time budget never cuts the rounds below this


def iter_paired_speedup(model_a: nn.Module, model_b: nn.Module, input_shape: Shape,
                        batch_sizes: tuple[int, ...] = (1, 64), device: str = "cpu", rounds: int = 9,
                        runs_per_round: int = 5, round_seconds: float | None = None, warmup: int = 5,
                        threads: int | None = None, max_seconds: float = 30.0, names: tuple[str, str] = ("A", "B"),
                        cancel: CancelToken | None = None) -> Iterator:
    """Time A and B interleaved in rounds on the same input; yields Progress per round, then PairedSpeedup.

    Each round times each model for at least `runs_per_round` passes and `round_seconds` (ROUND_SECONDS when
    None), A first in even rounds and B first in odd ones, so drifting load and order effects hit both alike;
    the round's ratio is A's time over B's. A model's round time is its fastest pass: when other work shares
    the cores, the scheduler interrupts a pass the more often the longer it runs, each time for a slice or
    more whatever the model, so typical passes inflate the costlier model's time most (l2 at 0.5 on the demo,
    one image, a busy process on each of 2 cores: 13.5x with the median pass, 2.4x with the fastest, as on
    the machine without them). Per batch size, rounds stop early (never below MIN_ROUNDS) once `max_seconds`
    is spent. The interval is median_interval's order-statistic one.
    """
    if rounds < 1 or runs_per_round < 1:
        raise ValueError("rounds and runs_per_round must be at least 1")
    round_seconds = ROUND_SECONDS if round_seconds is None else round_seconds
    dev = torch.device(device)
    model_a.eval()
    model_b.eval()
    load_start = machine_load()
    if dev.type == "cpu" and not threads:
        threads = default_threads(load_start)
    results: list[PairedRatio] = []
    spreads: dict[str, float] = {}
    total = rounds * len(batch_sizes)
    with fixed_threads(threads if dev.type == "cpu" else None), torch.inference_mode():
        used = torch.get_num_threads() if dev.type == "cpu" else 0
        for i, bs in enumerate(batch_sizes):
            x = torch.randn(bs, *input_shape, device=dev)
            _warm_up(model_a, x, dev, warmup)
            _warm_up(model_b, x, dev, warmup)
            a_ms: list[float] = []
            b_ms: list[float] = []
            start = time.perf_counter()
            for r in range(rounds):
                order = ((model_a, a_ms), (model_b, b_ms))
                for model, sink in (order if r % 2 == 0 else order[::-1]):
                    sink.append(min(_timed_runs(model, x, dev, runs_per_round, round_seconds, cancel=cancel)))
                yield Progress("speed-up", i * rounds + r + 1, total,
                               f"{names[0]} and {names[1]} interleaved, batch {bs}: round {r + 1}/{rounds}")
                if r + 1 >= MIN_ROUNDS and time.perf_counter() - start > max_seconds:
                    break
            ratios = [a / b if b > 0 else 0.0 for a, b in zip(a_ms, b_ms)]
            low, high, coverage = median_interval(ratios)
            results.append(PairedRatio(bs, statistics.median(ratios), low, high, coverage, len(ratios),
                                       statistics.median(a_ms), statistics.median(b_ms), relative_spread(a_ms),
                                       relative_spread(b_ms), tuple(ratios), *median_interval(a_ms)[:2],
                                       *median_interval(b_ms)[:2]))
            spreads[f"{names[0]} at batch {bs}"] = relative_spread(a_ms)
            spreads[f"{names[1]} at batch {bs}"] = relative_spread(b_ms)
            spreads[f"ratio at batch {bs}"] = relative_spread(ratios)
    load_end = machine_load()
    busiest = max((load_start, load_end), key=lambda ld: ld.other_busy)
    note = noise_note(spreads, busiest.cores, busiest.other_busy, load_start.load_avg, used) if dev.type == "cpu" \
        else noise_note(spreads, 1, 0.0, None, 0)
    yield PairedSpeedup(tuple(results), used, str(dev), load_start, load_end, bool(note), note, tuple(names))


def measure_paired_speedup(model_a: nn.Module, model_b: nn.Module, input_shape: Shape, **kwargs) -> PairedSpeedup:
    """iter_paired_speedup without the Progress events."""
    return drain(iter_paired_speedup(model_a, model_b, input_shape, **kwargs))


def speedup_text(paired: dict, what: str = "latency") -> str:
    """'latency 2.79x lower (95 % interval 2.61–2.95, 9 paired rounds, 2 threads)', plus ' — <note>' when
    noisy; takes PairedSpeedup.to_json()."""
    threads = paired.get("threads") or 0
    where = f"{threads} thread{'s' if threads != 1 else ''}" if threads else paired.get("device", "gpu")
    # an order-statistic interval covers at least what it claims; below 6 rounds it claims less than 95 %
    level = 95 if paired["coverage"] >= 0.95 else math.floor(100 * paired["coverage"])
    text = (f"{what} {paired['median']:.2f}x lower ({level} % interval {paired['low']:.2f}–{paired['high']:.2f}, "
            f"{paired['rounds']} paired rounds, {where})")
    return text + (f" — {paired['note']}" if paired.get("noisy") else "")


# ----------------------------------------------------------------------------- shared figures and comparison rounds

def architecture_signature(model: nn.Module) -> str:
    """A digest of every parameter's and buffer's name, shape and dtype and every module's type: models with
    the same signature run the same operations on the same shapes, so they share one latency figure (their
    separately timed figures differ only by the machine's noise)."""
    import hashlib

    h = hashlib.sha256()
    for name, module in model.named_modules():
        h.update(f"m {name} {type(module).__module__}.{type(module).__qualname__}\n".encode())
    for kind, items in (("p", model.named_parameters()), ("b", model.named_buffers())):
        for name, t in items:
            h.update(f"{kind} {name} {tuple(t.shape)} {t.dtype}\n".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class RoundFigure:
    """One model of a comparison round: its latency and its speed-up against the round's first model."""

    name: str
    median_ms: float  # median over the rounds of the model's round time (its fastest pass in the round)
    low_ms: float  # median_interval of those round times
    high_ms: float
    speedup: float  # median over the rounds of first model's time / this model's time
    speedup_low: float
    speedup_high: float
    spread: float  # relative_spread of the round times


@dataclass(frozen=True)
class ComparisonRound:
    """Several models timed round-robin in one process, same threads, same batch (iter_comparison_round)."""

    batch: int
    figures: tuple[RoundFigure, ...]  # the first is the reference (the original)
    rounds: int
    coverage: float  # of every interval: the same number of rounds for all
    threads: int
    device: str
    load_start: MachineLoad
    load_end: MachineLoad
    note: str

    def paired_json(self, i: int) -> dict:
        """Model `i`'s speed-up against the first in PairedSpeedup.to_json()'s top-level form (speedup_text
        reads it), marked as coming from this round."""
        f = self.figures[i]
        return {"batch": self.batch, "median": round(f.speedup, 4), "low": round(f.speedup_low, 4),
                "high": round(f.speedup_high, 4), "coverage": round(self.coverage, 4), "rounds": self.rounds,
                "threads": self.threads, "noisy": bool(self.note), "note": self.note, "device": self.device,
                "interval": PairedSpeedup.INTERVAL, "names": [self.figures[0].name, f.name],
                "load_start": self.load_start.to_json(), "load_end": self.load_end.to_json(),
                "source": "final round"}

    def latency_json(self, i: int) -> dict:
        """Model `i`'s latency entry for Metrics.latency_ms (median with its interval, marked)."""
        f = self.figures[i]
        return {"median": round(f.median_ms, 4), "low": round(f.low_ms, 4), "high": round(f.high_ms, 4),
                "runs": self.rounds, "threads": self.threads, "source": "final round"}


def iter_comparison_round(models, input_shape: Shape, batch: int, device: str = "cpu", rounds: int = 9,
                          runs_per_round: int = 3, round_seconds: float | None = None, warmup: int = 3,
                          threads: int | None = None, max_seconds: float = 120.0,
                          cancel: CancelToken | None = None) -> Iterator:
    """Time `models` ((name, module) pairs, the reference first) round-robin on one input; yields Progress
    per round, then a ComparisonRound.

    iter_paired_speedup for more than two models: each round times every model (its fastest of
    `runs_per_round` passes, see there why the fastest), starting one model later each round so order
    effects and drifting load spread over all; the speed-up of a round is the reference's time over the
    model's. Rounds stop early (never below MIN_ROUNDS) once `max_seconds` is spent."""
    if len(models) < 1 or rounds < 1 or runs_per_round < 1:
        raise ValueError("a comparison round needs models, rounds and runs_per_round")
    round_seconds = ROUND_SECONDS if round_seconds is None else round_seconds
    dev = torch.device(device)
    for _, m in models:
        m.eval()
    load_start = machine_load()
    if dev.type == "cpu" and not threads:
        threads = default_threads(load_start)
    n = len(models)
    times: list[list[float]] = [[] for _ in models]
    with fixed_threads(threads if dev.type == "cpu" else None), torch.inference_mode():
        used = torch.get_num_threads() if dev.type == "cpu" else 0
        x = torch.randn(batch, *input_shape, device=dev)
        for _, m in models:
            _warm_up(m, x, dev, warmup)
        start = time.perf_counter()
        for r in range(rounds):
            for j in range(n):
                i = (r + j) % n
                times[i].append(min(_timed_runs(models[i][1], x, dev, runs_per_round, round_seconds,
                                                cancel=cancel)))
            yield Progress("final-round", r + 1, rounds, f"{n} models round-robin, batch {batch}: round "
                           f"{r + 1}/{rounds}")
            if r + 1 >= MIN_ROUNDS and time.perf_counter() - start > max_seconds:
                break
    load_end = machine_load()
    figures, spreads = [], {}
    coverage = 0.0
    for (name, _), t in zip(models, times):
        low, high, coverage = median_interval(t)
        ratios = [a / b if b > 0 else 0.0 for a, b in zip(times[0], t)]
        s_low, s_high, _ = median_interval(ratios)
        figures.append(RoundFigure(name, statistics.median(t), low, high, statistics.median(ratios), s_low, s_high,
                                   relative_spread(t)))
        spreads[f"{name} at batch {batch}"] = relative_spread(t)
    busiest = max((load_start, load_end), key=lambda ld: ld.other_busy)
    note = noise_note(spreads, busiest.cores, busiest.other_busy, load_start.load_avg, used) if dev.type == "cpu" \
        else noise_note(spreads, 1, 0.0, None, 0)
    yield ComparisonRound(batch, tuple(figures), len(times[0]), coverage, used, str(dev), load_start, load_end, note)


def _clear_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) for this process; Linux only."""
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _status_kb(field_name: str) -> int:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
# What glibc's dynamic threshold grows to on a busy heap (its maximum on 64-bit), and twice that for
# trimming, as glibc itself pairs them.
FAST_MMAP_THRESHOLD = 32 * 1024 * 1024


@functools.cache
def _glibc():
    """The C library when it is glibc (mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


def steady_heap() -> None:
    """Serve buffers under FAST_MMAP_THRESHOLD from the heap and keep up to twice that freed there, for the
    rest of the process. With glibc's moving thresholds a forward pass's activations were mapped and faulted
    in afresh, or not, depending on what ran before: the demo's batch-64 pass took 27-50 ms within one
    process on a quiet machine (26-28 ms with the heap steady), and the latency target's search chased that
    noise. (mallopt disables the dynamic threshold for good, so it is set high rather than "reset".)"""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, FAST_MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * FAST_MMAP_THRESHOLD)


@contextmanager
def _mmap_every_large_buffer():
    """Make glibc serve large buffers with mmap and return them at once, so one forward pass shows in
    RSS, and afterwards steady the heap again (a low threshold left in place made every later forward pass
    and training step map and fault in fresh pages: on the demo, batch-64 latency rose from 51 to 71 ms and
    system time doubled)."""
    libc = _glibc()
    if libc is None:  # not glibc: measure as is
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    libc.malloc_trim(0)
    try:
        yield
    finally:
        steady_heap()


def measure_peak_memory(model: nn.Module, input_shape: Shape, batch_size: int = 64, device: str = "cpu") -> int:
    """Extra memory of one forward pass: CUDA max-allocated increase, or CPU peak-RSS increase."""
    dev = torch.device(device)
    model.eval()
    x = torch.randn(batch_size, *input_shape, device=dev)
    with torch.inference_mode():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            base = torch.cuda.memory_allocated(dev)
            model(x)
            torch.cuda.synchronize(dev)
            return int(torch.cuda.max_memory_allocated(dev) - base)
        with _mmap_every_large_buffer():
            if _clear_peak_rss():
                base = _status_kb("VmRSS")
                model(x)
                return max(0, (_status_kb("VmHWM") - base) * 1024)
        import psutil  # portable fallback: sample RSS around the call

        proc = psutil.Process()
        before = proc.memory_info().rss
        model(x)
        return max(0, proc.memory_info().rss - before)
