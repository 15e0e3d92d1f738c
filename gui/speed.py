"""Latency and speed-up figures as the Results tab shows them: each one says its batch size and how it was
estimated, so a speed-up beside a latency is always the speed-up of that latency's batch.

Two estimates exist (engine.timing): each model timed separately (median of many passes; the Latency
column, the live plots) and the paired one, the original and the pruned model timed interleaved in rounds
at the end of a run (median of the rounds' ratios, with an interval). They measure the same thing a little
differently, so they can differ by a few per cent; the paired one is the better speed-up.
"""
from __future__ import annotations

from engine.latency_target import target_words
from engine.metrics import Metrics
from engine.pruning import RunDone
from engine.timing import speedup_text

RUN_BATCH = 0  # the mode "each run's batch size" (the largest it measured), as opposed to a fixed batch


def run_batch(m: Metrics) -> int | None:
    """The largest batch size `m`'s latency was measured at (the run's own), or None when not measured."""
    sizes = [int(k) for k in m.latency_ms if str(k).isdigit()]
    return max(sizes) if sizes else None


def batch_of(m: Metrics, mode: int) -> int | None:
    """The batch size a figure is shown at: `mode` itself, or the run's own batch for RUN_BATCH."""
    batch = run_batch(m) if mode == RUN_BATCH else mode
    return batch if batch is not None and str(batch) in m.latency_ms else None


def latency_at(m: Metrics, batch: int | None, stat: str = "median") -> float | None:
    """Latency in ms at `batch` (timed separately), or None when not measured there."""
    if batch is None or str(batch) not in m.latency_ms:
        return None
    return m.latency(batch, stat) or m.latency(batch)  # runs saved without percentiles: the median


def latency_cell(m: Metrics, mode: int, mixed: bool) -> tuple[str, str]:
    """(text, tooltip) of a Latency cell; the text names the batch when the column mixes batch sizes."""
    batch = batch_of(m, mode)
    value = latency_at(m, batch)
    if value is None:
        return "not measured", "Latency was not measured for this run (Prune ▸ options: measure speed)"
    text = f"{value:.2f} ms" + (f" (batch {batch})" if mixed else "")
    figures = m.latency_ms[str(batch)]
    threads = figures.get("threads")
    tip = (f"Batch {batch}: median {value:.3f} ms per batch over {figures.get('runs', '?')} timed passes, "
           f"p5–p95 {latency_at(m, batch, 'p5'):.3f}–{latency_at(m, batch, 'p95'):.3f} ms"
           + (f", {threads} CPU thread{'s' if threads != 1 else ''}" if threads else "") +
           ". Timed on its own after the run (not interleaved with the original).")
    return text, tip


def paired_at(done: RunDone, batch: int | None) -> dict | None:
    """The paired (interleaved) figures at `batch`, in PairedSpeedup.to_json()'s top-level form, or None."""
    paired = done.paired
    if not paired or batch is None:
        return None
    one = (paired.get("per_batch") or {}).get(str(batch))
    if one is not None:
        return {**paired, **one}
    # figures saved before per-batch ones were kept are the headline: the largest batch, the run's own
    headline = paired.get("batch", run_batch(done.after))
    return paired if headline == batch else None


def speedup_at(done: RunDone, batch: int | None) -> tuple[float | None, str]:
    """(times faster, estimate) at `batch`: the paired median when the run timed both models interleaved there,
    else the ratio of the separately timed medians; (None, '') when latency was not measured at `batch`."""
    paired = paired_at(done, batch)
    if paired is not None:
        return float(paired["median"]), "paired"
    before, after = latency_at(done.before, batch), latency_at(done.after, batch)
    if before and after:
        return before / after, "separate"
    return None, ""


def speedup_cell(done: RunDone, mode: int, mixed: bool) -> tuple[str, str, float]:
    """(text, tooltip, sort value) of a Speed-up cell at the same batch as the Latency cell beside it."""
    batch = batch_of(done.after, mode)
    value, estimate = speedup_at(done, batch)
    if value is None:
        return "–", "Latency was not measured for this run", 0.0
    where = f" (batch {batch})" if mixed else ""
    if estimate == "paired":
        paired = paired_at(done, batch)
        noisy = ", noisy" if paired.get("noisy") else ""
        text = f"{value:.2f}× [{paired['low']:.2f}–{paired['high']:.2f}{noisy}]{where}"
    else:
        text = f"{value:.2f}× separate{where}"
    return text, speedup_tip(done, batch), value


def speedup_tip(done: RunDone, batch: int | None) -> str:
    """Every speed-up the run measured, one line per batch size and estimate, the shown one first."""
    sizes = sorted({int(k) for k in done.after.latency_ms if str(k).isdigit()} |
                   {int(k) for k in ((done.paired or {}).get("per_batch") or {})}, key=lambda b: (b != batch, b))
    lines = []
    for size in sizes:
        paired = paired_at(done, size)
        if paired is not None:
            lines.append(f"Batch {size}, paired: {speedup_text(paired)}")
        before, after = latency_at(done.before, size), latency_at(done.after, size)
        if before and after:
            lines.append(f"Batch {size}, timed separately: {before:.3f} → {after:.3f} ms, {before / after:.2f}× "
                         "lower")
    if getattr(done, "onnxruntime", None):  # the same paired timing on both ONNX exports
        lines.append(f"onnxruntime: {speedup_text(done.onnxruntime)}")
    if getattr(done, "latency_target", None):  # met or not, measured against the original at the end
        lines.insert(0, target_words(done.latency_target)[0].upper() + target_words(done.latency_target)[1:])
    return "\n".join(lines) or "latency not measured"


def header_batch(runs: list[RunDone], mode: int) -> tuple[str, bool]:
    """('batch 64', False) when every run shows the same batch size, ("each run's batch", True) when they
    differ (each cell then names its own)."""
    if mode != RUN_BATCH:
        return f"batch {mode}", False
    sizes = {run_batch(done.after) for done in runs} - {None}
    if len(sizes) == 1:
        return f"batch {sizes.pop()}", False
    return ("each run's batch", True) if sizes else ("the run's batch", False)


# ----------------------------------------------------------------------------- one figure per architecture

ORIGINAL = 0  # same_arch_as value: the run kept the original's layer shapes (unstructured pruning)


def same_arch_as(done: RunDone, earlier: dict[int, RunDone]) -> int | None:
    """The run whose latency figure `done` shares: ORIGINAL when it kept the shapes of the model it started
    from, else the first of `earlier` (run id -> RunDone) with the same layer shapes, started from the same
    architecture and timed at the same batch sizes and threads; None when it has its own figure.

    Two runs with one architecture run the same operations, so their separately timed figures differ
    only by the machine's noise: 26 ms beside 50.6 ms read as a real difference."""
    if not done.arch or not done.after.latency_ms:
        return None
    if done.arch == done.original_arch:
        return ORIGINAL
    how = _timed_how(done.after)
    for run_id in sorted(earlier):
        other = earlier[run_id]
        if other.arch == done.arch and other.original_arch == done.original_arch and _timed_how(other.after) == how:
            return run_id
    return None


def _timed_how(m: Metrics) -> tuple:
    return tuple(sorted((k, v.get("threads")) for k, v in m.latency_ms.items()))


def same_arch_text(same: int | None) -> str:
    """'same architecture as #3', 'same architecture as the original', or ''."""
    if same is None:
        return ""
    return "same architecture as the original" if same == ORIGINAL else f"same architecture as #{same}"


def shared_cell(header: str, done: RunDone, source: RunDone | None, same: int | None, mode: int,
                mixed: bool) -> tuple[str, str, float]:
    """(text, tooltip, sort value) of a Latency or Speed-up cell showing the shared figure of `source` (the
    run named by `same`), or the run's own when it has none."""
    note = same_arch_text(same)
    if same == ORIGINAL:  # the original's own figure, and 1× by definition rather than a noisy ratio
        if header == "Latency":
            text, tip = latency_cell(done.before, mode, mixed)
            value = latency_at(done.before, batch_of(done.before, mode))
            return f"{text} ({note})", f"{tip}\n{note}: its layer shapes did not change", value or 1e9
        return f"1.00× ({note})", f"{note}: the same operations on the same shapes run in the same time", 1.0
    shown = source if source is not None and same is not None else done
    if header == "Latency":
        text, tip = latency_cell(shown.after, mode, mixed)
        value = latency_at(shown.after, batch_of(shown.after, mode))
        value = value if value is not None else 1e9
    else:
        text, tip, value = speedup_cell(shown, mode, mixed)
    if note:
        text, tip = f"{text} ({note})", f"{tip}\n{note}: one figure for both (this run's own timing differs only "\
                                        "by the machine's noise)"
    return text, tip, value


def scatter_x(done: RunDone, source: RunDone | None, same: int | None, reference: float, mode: int) \
        -> tuple[float, float, float] | None:
    """(latency, low, high) in ms of a run's scatter point: the reference latency (the original's, the same
    for every run) over the run's paired speed-up and its 95 % interval, so the points compare as the
    paired rounds did; the separately timed median and p5–p95 where no paired figure exists."""
    if same == ORIGINAL:
        return reference, reference, reference
    shown = source if source is not None and same is not None else done
    batch = batch_of(shown.after, mode)
    paired = paired_at(shown, batch)
    if paired is not None and paired.get("median") and reference:
        return (reference / paired["median"], reference / (paired.get("high") or paired["median"]),
                reference / (paired.get("low") or paired["median"]))
    value = latency_at(shown.after, batch)
    if value is None:
        return None
    return value, latency_at(shown.after, batch, "p5") or value, latency_at(shown.after, batch, "p95") or value
