"""The metric catalogue and the criteria a plan ranks its runs by (with their TOML parsing)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import UserError
from engine.experiments.typed import _key_name, check_typed

if TYPE_CHECKING:
    from engine.experiments.store import RunResult

# ----------------------------------------------------------------------------- metrics and criteria


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is shown: label, display unit and the factor from stored value to that unit."""

    key: str
    label: str
    unit: str
    scale: float
    direction: str  # the natural direction: "max" (higher is better) or "min"


METRICS: dict[str, MetricInfo] = {m.key: m for m in (
    MetricInfo("top1", "top-1 accuracy", "%", 100.0, "max"),
    MetricInfo("top5", "top-5 accuracy", "%", 100.0, "max"),
    MetricInfo("precision_macro", "precision (macro)", "%", 100.0, "max"),
    MetricInfo("recall_macro", "recall (macro)", "%", 100.0, "max"),
    MetricInfo("f1_macro", "F1 (macro)", "%", 100.0, "max"),
    MetricInfo("latency_ms", "latency (median, evaluation batch)", "ms", 1.0, "min"),
    MetricInfo("latency_b1_ms", "latency (median, batch 1)", "ms", 1.0, "min"),
    MetricInfo("throughput_ips", "throughput", "img/s", 1.0, "max"),
    MetricInfo("size_bytes", "size on disk", "MB", 1e-6, "min"),
    MetricInfo("compressed_bytes", "compressed size", "MB", 1e-6, "min"),
    MetricInfo("peak_memory_bytes", "peak memory (forward pass)", "MB", 1e-6, "min"),
    MetricInfo("macs", "MACs", "M", 1e-6, "min"),
    MetricInfo("params", "parameters", "k", 1e-3, "min"),
    MetricInfo("nonzero_params", "non-zero parameters", "k", 1e-3, "min"),
    MetricInfo("run_seconds", "run time (prune, recover, evaluate)", "s", 1.0, "min"),
    MetricInfo("prune_seconds", "pruning time", "s", 1.0, "min"),
)}


def metric_value(result: "RunResult", key: str) -> float | None:
    """A run's figure for a metric key, in display units; None when it was not measured."""
    if key not in METRICS:
        raise UserError(f"unknown metric {key!r}; valid: {', '.join(METRICS)}")
    info, m = METRICS[key], result.metrics
    if key == "latency_ms":
        raw = m.latency() or None
    elif key == "latency_b1_ms":
        raw = m.latency(1) or None
    elif key == "run_seconds":
        raw = result.seconds if result.kind == "run" else None
    elif key == "prune_seconds":
        raw = result.prune_seconds if result.kind == "run" else None
    elif key in ("throughput_ips", "peak_memory_bytes"):
        raw = getattr(m, key) or None  # zero means "speed was not measured"
    else:
        raw = getattr(m, key)
    return None if raw is None else float(raw) * info.scale


@dataclass(frozen=True)
class Criterion:
    """One explicit evaluation criterion: a metric, its direction and unit, a weight, optional constraints.

    Constraints are in display units: `max_drop` is the allowed loss against the original for a
    'max' metric (points for accuracies), `max_value`/`min_value` are absolute bounds (ms, MB, ...),
    `min_speedup` asks a 'min' metric to be at least that many times lower than the original's.
    """

    name: str
    metric: str
    direction: str = ""  # "max" or "min"; empty: the metric's natural direction
    unit: str = ""
    weight: float = 1.0
    max_drop: float | None = None
    max_value: float | None = None
    min_value: float | None = None
    min_speedup: float | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise UserError(f"criterion {self.name!r}: unknown metric {self.metric!r}; valid: {', '.join(METRICS)}")
        info = METRICS[self.metric]
        if not self.direction:
            object.__setattr__(self, "direction", info.direction)
        if not self.unit:
            object.__setattr__(self, "unit", info.unit)
        if self.direction not in ("max", "min"):
            raise UserError(f"criterion {self.name!r}: direction must be 'max' or 'min', got {self.direction!r}")
        for key in ("weight", "max_drop", "max_value", "min_value", "min_speedup"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise UserError(f"criterion {self.name!r}: {key} must be a finite number, got {value!r}")
        if self.weight < 0:
            raise UserError(f"criterion {self.name!r}: weight must be a number ≥ 0, got {self.weight!r}")
        if self.max_drop is not None and self.direction != "max":
            raise UserError(f"criterion {self.name!r}: max_drop applies to 'max' metrics; use max_value or "
                            "min_speedup for a 'min' metric")
        if self.min_speedup is not None and (self.direction != "min" or self.min_speedup <= 0):
            raise UserError(f"criterion {self.name!r}: min_speedup needs a 'min' metric and a positive factor")

    @property
    def label(self) -> str:
        """The metric's human label."""
        return METRICS[self.metric].label

    def constraint_text(self) -> str:
        """The constraints in words, e.g. 'top-1 drop ≤ 1.0 pt'; empty when there are none."""
        parts = []
        unit = " pt" if self.unit == "%" else f" {self.unit}"
        if self.max_drop is not None:
            parts.append(f"{self.name} drop ≤ {self.max_drop:g}{unit}")
        if self.max_value is not None:
            parts.append(f"{self.name} ≤ {self.max_value:g} {self.unit}")
        if self.min_value is not None:
            parts.append(f"{self.name} ≥ {self.min_value:g} {self.unit}")
        if self.min_speedup is not None:
            parts.append(f"{self.name} ≥ {self.min_speedup:g}× lower")
        return ", ".join(parts)

    def violations(self, value: float | None, baseline: float | None) -> list[str]:
        """Broken constraints, in words (an unmeasured value breaks nothing: it cannot be judged)."""
        if value is None:
            return []
        out = []
        unit = " pt" if self.unit == "%" else f" {self.unit}"
        if self.max_drop is not None and baseline is not None and baseline - value > self.max_drop + 1e-9:
            out.append(f"{self.name} drop {baseline - value:.2f}{unit} > {self.max_drop:g}{unit}")
        if self.max_value is not None and value > self.max_value:
            out.append(f"{self.name} {value:.3g} {self.unit} > {self.max_value:g} {self.unit}")
        if self.min_value is not None and value < self.min_value:
            out.append(f"{self.name} {value:.3g} {self.unit} < {self.min_value:g} {self.unit}")
        if self.min_speedup is not None and baseline and value and baseline / value < self.min_speedup:
            out.append(f"{self.name} only {baseline / value:.2f}× lower < {self.min_speedup:g}×")
        return out

    def noise(self, result: "RunResult", baseline: "RunResult | None") -> list[str]:
        """The accuracy constraints this run's verdict rests on noise for: the 95 % interval of the drop
        (or of the figure, for min_value) reaches across the limit, so the evaluation images cannot tell
        whether the run meets it. The verdict itself still judges the measured figure."""
        m = result.metrics
        ci = m.interval(self.metric) if self.metric in m.INTERVALS else None
        if ci is None:
            return []
        from engine.units import difference_interval

        scale, out = METRICS[self.metric].scale, []
        value = getattr(m, self.metric) * scale
        base_ci = baseline.metrics.interval(self.metric) if baseline is not None else None
        if self.max_drop is not None and base_ci is not None:
            b = getattr(baseline.metrics, self.metric)
            low, high = (v * scale for v in difference_interval(b, base_ci, value / scale, ci))
            if low <= self.max_drop <= high:
                out.append(f"{self.name} drop {b * scale - value:.2f} pt, 95 % CI {low:.1f} to {high:.1f} pt over "
                           f"{min(m.samples, baseline.metrics.samples):,} images, spans the {self.max_drop:g} pt limit")
        if self.min_value is not None and ci[0] * scale <= self.min_value <= ci[1] * scale:
            out.append(f"{self.name} {value:.2f} %, 95 % CI {ci[0] * scale:.1f}–{ci[1] * scale:.1f} over "
                       f"{m.samples:,} images, spans the {self.min_value:g} % limit")
        return out

    def excess(self, value: float | None, baseline: float | None) -> float:
        """How far a value is past the constraints, relative to each limit (0 when it meets them)."""
        if value is None:
            return 0.0
        total = 0.0
        if self.max_drop is not None and baseline is not None:
            total += max(0.0, baseline - value - self.max_drop) / max(abs(self.max_drop), 1.0)
        if self.max_value is not None:
            total += max(0.0, value - self.max_value) / max(abs(self.max_value), 1e-9)
        if self.min_value is not None:
            total += max(0.0, self.min_value - value) / max(abs(self.min_value), 1e-9)
        if self.min_speedup is not None and baseline and value:
            total += max(0.0, self.min_speedup - baseline / value) / self.min_speedup
        return total

    def to_json(self) -> dict:
        """Plain dict (for the store and the report)."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Criterion":
        """Inverse of to_json."""
        return cls(**d)


# Documented defaults (examples/plan.toml explains them): accuracy must stay within 1 point of the
# original, then speed counts most, size half as much, memory a quarter; F1 and MACs are shown only.
DEFAULT_CRITERIA: tuple[Criterion, ...] = (
    Criterion("accuracy", "top1", weight=1.0, max_drop=1.0),
    Criterion("latency", "latency_ms", weight=1.0),
    Criterion("size", "size_bytes", weight=0.5),
    Criterion("memory", "peak_memory_bytes", weight=0.25),
    Criterion("f1", "f1_macro", weight=0.0),
    Criterion("macs", "macs", weight=0.0),
)

CRITERION_KEYS = set(Criterion.__dataclass_fields__) - {"name"}


def criteria_from_toml(table: Any, where: str = "[criteria]") -> tuple[Criterion, ...]:
    """Defaults updated by `[criteria.NAME]` tables: a known name changes only the keys given
    (e.g. weight, max_drop), a new name needs `metric`; `weight = 0` keeps it out of the score."""
    if not isinstance(table, dict):
        raise UserError(f"{where} must be a table of [criteria.NAME] sections")
    import typing

    hints = typing.get_type_hints(Criterion)
    found = {c.name: c for c in DEFAULT_CRITERIA}
    for name, spec in table.items():
        name_text = _key_name(name)
        if not isinstance(spec, dict):
            raise UserError(f"[criteria.{name_text}] must be a table, e.g. weight = 1.0, max_drop = 1.0")
        unknown = set(spec) - CRITERION_KEYS
        if unknown:
            raise UserError(f"[criteria.{name_text}]: unknown key(s) {', '.join(map(_key_name, sorted(unknown)))}; "
                            f"valid: {', '.join(sorted(CRITERION_KEYS))}")
        spec = {k: check_typed(v, hints[k], f"[criteria.{name_text}] {k}") for k, v in spec.items()}
        if name in found:
            base = found[name].to_json()
            if "metric" in spec and spec["metric"] != base["metric"]:
                base.update(direction="", unit="")  # a new metric brings its own natural direction and unit
            base.update(spec)
            found[name] = Criterion.from_json(base)
        else:
            if "metric" not in spec:
                raise UserError(f"[criteria.{name_text}] needs metric = one of {', '.join(METRICS)}")
            found[name] = Criterion(name=name, **spec)
    return tuple(found.values())
