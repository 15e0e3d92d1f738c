"""The metrics table, and the prune command's closing lines: every speed-up names its batch size and how it
was timed, so it can be found in the table above it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from engine.config import rounding_words
from engine.metrics import Metrics
from engine.timing import speedup_text
from engine.units import fmt_bytes, fmt_count, intervals_overlap

if TYPE_CHECKING:
    from engine.pruning import RunDone

METRIC_ROWS: list[tuple[str, Callable[[Metrics], str]]] = [
    ("top-1 accuracy", lambda m: m.figure_text("top1")),
    ("top-5 accuracy", lambda m: m.figure_text("top5")),
    ("precision (macro)", lambda m: f"{m.precision_macro * 100:.2f} %"),
    ("recall (macro)", lambda m: f"{m.recall_macro * 100:.2f} %"),
    ("F1 (macro)", lambda m: m.figure_text("f1_macro")),
    ("parameters", lambda m: fmt_count(m.params)),
    ("non-zero parameters", lambda m: f"{fmt_count(m.nonzero_params)} ({m.sparsity:.1%} zero)"),
    ("MACs", lambda m: fmt_count(m.macs)),
    ("size on disk", lambda m: fmt_bytes(m.size_bytes)),
    ("compressed size", lambda m: fmt_bytes(m.compressed_bytes)),
]


def metrics_table(columns: dict[str, Metrics], latency_rows: Sequence[tuple[str, list[str]]] = ()) -> str:
    """A plain-text table with one column per model; `latency_rows` go after the latency figures."""
    rows = [(label, [fn(m) for m in columns.values()]) for label, fn in METRIC_ROWS]
    first = next(iter(columns.values()))
    for bs in sorted(first.latency_ms, key=int):
        rows.append((f"latency batch {bs} (median)", [f"{m.latency(bs):.2f} ms" for m in columns.values()]))
        rows.append((f"latency batch {bs} (p95)", [f"{m.latency(bs, 'p95'):.2f} ms" for m in columns.values()]))
    rows.extend(latency_rows)
    if first.latency_ms:
        rows.append(("throughput", [f"{m.throughput_ips:.0f} img/s" for m in columns.values()]))
        rows.append(("peak memory (forward)", [fmt_bytes(m.peak_memory_bytes) for m in columns.values()]))
    w0 = max(len(r[0]) for r in rows)
    widths = [max(len(name), *(len(r[1][i]) for r in rows)) for i, name in enumerate(columns)]
    lines = ["  ".join([" " * w0] + [n.rjust(w) for n, w in zip(columns, widths)])]
    for label, vals in rows:
        lines.append("  ".join([label.ljust(w0)] + [v.rjust(w) for v, w in zip(vals, widths)]))
    return "\n".join(lines)


def accuracy_change(before: Metrics, after: Metrics) -> str:
    """'top-1 −0.83 pt', and when the two 95 % intervals overlap, that the change is within their noise."""
    text = f"top-1 {100 * (after.top1 - before.top1):+.2f} pt"
    a, b = before.interval("top1"), after.interval("top1")
    if a is not None and b is not None and intervals_overlap(a, b):
        n = min(before.samples, after.samples)
        text += f" (within the noise of {n:,} images: the 95 % intervals overlap)"
    return text


def amount_line(method, cfg) -> str:
    """The run's first summary line: the method, what it was asked for, and (structured) how channel counts
    were rounded, so a removed share off the request is not a surprise."""
    asked = (cfg.pruning_ratio if cfg.pruning_ratio is not None else f"for {cfg.target_speedup}x"
             if cfg.target_speedup is not None else f"for at most {cfg.target_latency:g} ms on {cfg.runtime}"
             if cfg.target_latency is not None else f"for {cfg.target_latency_speedup:g}x lower latency on {cfg.runtime}")
    line = f"{method.title}, {method.ratio_meaning} {asked}"
    return line + f"; {rounding_words(cfg.round_to)}" if method.structured and not method.manual else line


def _ratio(before: float, after: float) -> str:
    return f"{before / after:.2f}x" if after > 0 else "-"


def paired_rows(done: RunDone) -> list[tuple[str, list[str]]]:
    """Table rows of the paired timing (per batch: each model's median of its rounds' fastest passes), so the
    summary's paired speed-up can be read off the table."""
    if not done.paired:
        return []
    return [(f"latency batch {bs} (paired rounds)", [f"{p['a_ms']:.2f} ms", f"{p['b_ms']:.2f} ms"])
            for bs, p in sorted(done.paired.get("per_batch", {}).items(), key=lambda kv: int(kv[0]))]


def latency_summary(done: RunDone) -> list[str]:
    """The latency lines of the summary ([] when latency was not measured)."""
    sp = done.speedups()
    if "latency" not in sp:
        return []
    b, a = done.before, done.after
    batches = sorted(set(b.latency_ms) & set(a.latency_ms), key=int, reverse=True)  # the headline batch first
    separate = ", ".join(f"{_ratio(b.latency(bs), a.latency(bs))} at batch {bs}" for bs in batches)
    paired = done.paired
    if not paired:
        top = batches[0]
        lines = [f"latency at batch {top}: {sp['latency']:.2f}x lower (the table's medians, timed separately, "
                 f"not paired)" + "".join(f"; at batch {bs}: {_ratio(b.latency(bs), a.latency(bs))} lower"
                                          for bs in batches[1:])]
        top_batch = top
    else:
        top_batch = paired["batch"]
        others = [p for bs, p in sorted(paired.get("per_batch", {}).items(), key=lambda kv: -int(kv[0]))
                  if int(bs) != top_batch]
        # the noise note gets its own line below; here only the figures
        lines = [speedup_text({**paired, "noisy": False}, what=f"latency at batch {top_batch}:")
                 + "".join(f"; at batch {p['batch']}: {p['median']:.2f}x lower ({p['rounds']} rounds)" for p in others),
                 "  paired: both models timed in turn, round after round; the speed-up is the median of the "
                 "rounds' ratios, so it can differ a little from the ratio of the 'paired rounds' rows (each "
                 "model's median round); timed separately (the 'median' rows): " + separate]
    ratio = sp["latency_efficiency"]
    verdict = "more than" if ratio > 1.05 else "less than" if ratio < 0.95 else "about as much as"
    lines.append(f"latency gain / MACs gain at batch {top_batch}: {sp['latency']:.2f}x / {sp['macs']:.2f}x = "
                 f"{ratio:.2f} (latency fell {verdict} MACs)")
    if paired and paired.get("noisy") and paired.get("note"):
        lines.append(f"note: {paired['note']}")
    if done.onnxruntime:  # what most users deploy, timed the same way on both ONNX exports
        lines.append(speedup_text(done.onnxruntime, what=f"onnxruntime latency at batch {done.onnxruntime['batch']}:"))
    return lines
