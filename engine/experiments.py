"""Experiment plans (methods × ratios × recovery), their runner, the SQLite result store, criteria,
the Pareto front and the ranking that names the best run in plain words.

A plan is plain data (a TOML file or the GUI's Experiment tab); `run_plan` turns it into one
`PruneConfig` per run, evaluates the original model once, runs every pending configuration through
`engine.pruning.run_pruning` and writes each finished run to the store in its own transaction, so an
interrupted plan loses at most the run in progress and a restart skips what is already stored. Sweeps
sharing a store claim each run before computing it (see ResultStore.claim and run_plan).
"""
from __future__ import annotations

import gc
import hashlib
import json
import math
import os
import sqlite3
import sys
import time
import tomllib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from engine.budget import BudgetError, guarded, parse_limit, rss_bytes
from engine.checks import check_run
from engine.errors import UserError, resource_error
from engine.events import CancelToken, Progress
from engine.methods import all_methods, get_method
from engine.metrics import Metrics
from engine.outputs import check_writable
from engine.pruning import PruneConfig, RunDone

STORE_NAME = "results.sqlite"
SCHEMA_VERSION = 2  # 2: header marks (application_id, user_version) and the claims table

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


# ----------------------------------------------------------------------------- results


@dataclass
class RunResult:
    """One stored run (or the baseline row): its configuration, metrics, timings and files."""

    key: str
    kind: str  # "run" or "baseline"
    label: str
    method: str
    ratio: float | None
    target_speedup: float | None
    guided: bool
    config: dict
    metrics: Metrics
    steps: list = field(default_factory=list)  # each step's metrics (JSON), for curves
    seconds: float = 0.0
    prune_seconds: float = 0.0
    recover_seconds: float = 0.0
    device: str = "cpu"
    versions: dict = field(default_factory=dict)
    files: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    model: str = ""
    dataset: str = ""
    created: str = ""
    extra: dict = field(default_factory=dict)  # recovery name, memory after the run, ...

    @property
    def recovery(self) -> str:
        """Name of the recovery setting this run used."""
        return self.extra.get("recovery", "")

    def latency_speedup(self, baseline: "RunResult | None") -> float | None:
        """Times faster than the original: the paired (interleaved) median when timed so, else the ratio."""
        paired = self.extra.get("latency_speedup")
        if paired and paired.get("median"):
            return float(paired["median"])
        b = baseline.metrics if baseline else None
        if b and b.latency() and self.metrics.latency():
            return b.latency() / self.metrics.latency()
        return None

    def to_row(self) -> dict:
        """Column values for the store."""
        return {
            "key": self.key, "kind": self.kind, "label": self.label, "method": self.method, "ratio": self.ratio,
            "target_speedup": self.target_speedup, "guided": int(self.guided), "config": json.dumps(self.config),
            "metrics": json.dumps(self.metrics.to_json(detail=True) | {"samples": self.metrics.samples}),
            "steps": json.dumps(self.steps),
            "timings": json.dumps({"seconds": self.seconds, "prune_seconds": self.prune_seconds,
                                   "recover_seconds": self.recover_seconds}),
            "device": self.device, "versions": json.dumps(self.versions), "files": json.dumps(self.files),
            "notes": json.dumps(self.notes), "model": self.model, "dataset": self.dataset,
            "created": self.created, "extra": json.dumps(self.extra),
        }

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "RunResult":
        """Inverse of to_row."""
        t = json.loads(row["timings"])
        raw = json.loads(row["metrics"])
        metrics = Metrics.from_json(raw)
        metrics.samples = int(raw.get("samples") or 0)
        return cls(row["key"], row["kind"], row["label"], row["method"], row["ratio"], row["target_speedup"],
                   bool(row["guided"]), json.loads(row["config"]), metrics,
                   json.loads(row["steps"]), t.get("seconds", 0.0), t.get("prune_seconds", 0.0),
                   t.get("recover_seconds", 0.0), row["device"], json.loads(row["versions"]),
                   json.loads(row["files"]), json.loads(row["notes"]), row["model"], row["dataset"],
                   row["created"], json.loads(row["extra"] or "{}"))

    def csv_row(self) -> dict:
        """A flat dict of every figure, for the CSV export."""
        m = self.metrics
        row = {"key": self.key, "kind": self.kind, "label": self.label, "method": self.method,
               "ratio": self.ratio, "target_speedup": self.target_speedup, "guided": self.guided,
               "recovery": self.recovery}
        for k in ("top1", "top5", "precision_macro", "recall_macro", "f1_macro", "params", "nonzero_params",
                  "macs", "size_bytes", "compressed_bytes", "throughput_ips", "peak_memory_bytes"):
            row[k] = getattr(m, k)
        for bs in sorted(m.latency_ms, key=int):
            row[f"latency_b{bs}_median_ms"] = m.latency(bs)
            row[f"latency_b{bs}_p95_ms"] = m.latency(bs, "p95")
        row.update(seconds=round(self.seconds, 3), prune_seconds=round(self.prune_seconds, 4),
                   recover_seconds=round(self.recover_seconds, 3), device=self.device,
                   versions=json.dumps(self.versions), model_file=self.files.get("model", ""),
                   model=self.model, dataset=self.dataset, created=self.created, config=json.dumps(self.config))
        return row


def run_label(cfg: PruneConfig, recovery: str = "", guided: bool = False) -> str:
    """A short name for a run, e.g. 'l2 @ 0.5' or 'taylor @ 2× [bn+ft]'."""
    target = f"{cfg.pruning_ratio:g}" if cfg.pruning_ratio is not None else f"{cfg.target_speedup:g}×"
    label = f"{cfg.method} @ {target}"
    if guided:
        label += " (sensitivity-guided)"
    if recovery:
        label += f" [{recovery}]"
    return label


# ----------------------------------------------------------------------------- store


def default_store_path() -> Path:
    """The result store in the user's data directory (PRUNELAB_DATA_DIR overrides it)."""
    env = os.environ.get("PRUNELAB_DATA_DIR")
    if env:
        base = Path(env)
    elif sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "PruneLab"
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support" / "PruneLab"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "prunelab"
    return base / STORE_NAME


RUN_COLUMNS = ("key", "kind", "label", "method", "ratio", "target_speedup", "guided", "config", "metrics", "steps",
               "timings", "device", "versions", "files", "notes", "model", "dataset", "created", "extra")

# The store marks itself in the SQLite header: PRAGMA application_id (offset 68) says "a PruneLab result
# store" and PRAGMA user_version (offset 60) the schema version, so another program's database or a newer
# store is recognised from the first 100 bytes, before SQLite opens (and possibly changes) the file.
APPLICATION_ID = int.from_bytes(b"PrLb", "big")  # 0x50724C62
SQLITE_MAGIC = b"SQLite format 3\x00"
OUR_TABLES = {"runs", "plans", "sensitivity", "meta"}  # schema 1 had these and no application_id

# Claims let several sweeps share one store. Every holder renews its leases every RENEW_S seconds from a
# background thread, so a claim lives as long as its process whatever the run is doing. On the same host a
# dead owner is seen at once (its pid is gone, a zombie, or now another process); the lease only decides for
# a holder on another machine sharing the file, or a frozen process: 2 minutes is four missed renewals,
# patient with a loaded machine or a slow disk, yet a crashed remote sweep's run is taken over soon.
LEASE_S = 120.0
RENEW_S = 30.0
POLL_S = 1.0  # how often a sweep that waits for another's runs looks at the store


def _host() -> str:
    import socket

    return socket.gethostname()


def _process_start(pid: int) -> float | None:
    """When a process started (seconds since the epoch), to tell a live owner from a reused pid."""
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:  # psutil missing, no such process, or not allowed to look
        return None


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds claims: one per run_plan call (token), in process `pid` on `host`, started at `proc_start`."""

    token: str
    pid: int
    host: str
    proc_start: float | None = None

    @classmethod
    def here(cls) -> "ClaimOwner":
        """A new owner for this process."""
        import uuid

        return cls(uuid.uuid4().hex, os.getpid(), _host(), _process_start(os.getpid()))

    def describe(self) -> str:
        """'process 1234' (with the host when it is another machine)."""
        return f"process {self.pid}" + ("" if self.host == _host() else f" on {self.host}")


@dataclass(frozen=True)
class Claim:
    """A run (or baseline, or sensitivity scan) being computed: its key, owner and lease expiry (epoch s)."""

    key: str
    owner: ClaimOwner
    expires: float
    claimed: float


def owner_alive(owner: ClaimOwner) -> bool:
    """False when the owner is known dead: same host and its pid is gone, a zombie, or a newer process."""
    if owner.host != _host():
        return True  # cannot look at another machine's processes: the lease decides
    try:
        import psutil
    except ImportError:
        try:
            os.kill(owner.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    try:
        proc = psutil.Process(owner.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if owner.proc_start is not None and abs(proc.create_time() - owner.proc_start) > 1.0:
            return False  # the pid now belongs to another process
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
    return True


def claim_is_live(claim: Claim, now: float | None = None) -> bool:
    """True while the claim's lease runs and its owner is not known dead."""
    now = time.time() if now is None else now
    return claim.expires > now and owner_alive(claim.owner)


def inspect_store_file(path: str | Path) -> int | None:
    """The schema version of a PruneLab store at `path` (1 for stores made before the header marks), or None
    for a missing or empty file (a new store). Anything else is refused with a UserError, and the file is
    only read: its first 100 bytes, and for an unmarked SQLite file its table names through an immutable
    read-only connection, which creates no journal, WAL or shared-memory file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"result store {path} is a folder; name a file such as {path / STORE_NAME}")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UserError(f"cannot read result store {path}: {exc.strerror or exc}") from None
    if size == 0:
        return None
    try:
        with open(path, "rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        raise UserError(f"cannot read result store {path}: {exc.strerror or exc}") from None
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise UserError(f"{path} is not a PruneLab result store (not an SQLite file); it was left untouched: "
                        "choose another file with --store PATH")
    version = int.from_bytes(header[60:64], "big")
    app_id = int.from_bytes(header[68:72], "big")
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise UserError(f"{path} was written by a newer PruneLab (store schema {version}, this one knows "
                            f"{SCHEMA_VERSION}); update PruneLab or choose another file with --store PATH")
        return max(version, 1)
    foreign = (f"{path} is an SQLite database of another program, not a PruneLab result store; it was left "
               "untouched: choose another file with --store PATH")
    if app_id != 0:
        raise UserError(foreign)
    # Unmarked: a schema-1 store of ours (it has our tables and a schema row) or someone else's database.
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            schema = (db.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()
                      if OUR_TABLES <= tables else None)
        finally:
            db.close()
    except sqlite3.DatabaseError:
        raise UserError(foreign) from None
    if not schema:
        raise UserError(foreign)
    return 1


class ResultStore:
    """SQLite (WAL) file holding one row per finished run, the baselines, the plans, sensitivity scans and the
    claims of runs being computed.

    Each call opens its own short connection, so the store can be used from any thread and never holds a
    lock between runs; every write is one `BEGIN IMMEDIATE` transaction. A file that is not a PruneLab store
    is refused before it is opened (see inspect_store_file); a schema-1 store is upgraded in place.
    `read_only=True` (reports) never writes: no table, mark or WAL file is created.
    """

    def __init__(self, path: str | Path | None = None, read_only: bool = False):
        self.path = Path(path) if path else default_store_path()
        self.read_only = read_only
        version = inspect_store_file(self.path)
        if read_only:
            if version is None:
                raise UserError(f"no result store at {self.path}; run `python main.py sweep PLAN.toml --store "
                                f"{self.path}` first")
            self.schema = version
            return
        from engine.outputs import check_output_file

        check_output_file(self.path, flag="result store")
        try:
            self._create_or_upgrade()
        except sqlite3.DatabaseError as exc:
            raise UserError(f"{self.path} is not a usable result store ({exc}); choose another file with "
                            "--store PATH") from exc
        self.schema = SCHEMA_VERSION

    def _create_or_upgrade(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Created in rollback-journal mode, marks and tables in one transaction: another sweep creating the
        # same store at the same moment sees either an empty file or a marked, complete one. WAL comes after.
        with self._connect(write=True) as db:
            app_id = db.execute("PRAGMA application_id").fetchone()[0]
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables and not OUR_TABLES <= tables):
                raise UserError(f"{self.path} became another program's database while it was opened; it was "
                                "left untouched: choose another file with --store PATH")
            if app_id == APPLICATION_ID and version > SCHEMA_VERSION:
                raise UserError(f"{self.path} was written by a newer PruneLab (store schema {version}); update "
                                "PruneLab or choose another file with --store PATH")
            if app_id != APPLICATION_ID or version < SCHEMA_VERSION:
                cols = ", ".join(c + (" TEXT PRIMARY KEY" if c == "key" else "") for c in RUN_COLUMNS)
                for sql in (f"CREATE TABLE IF NOT EXISTS runs ({cols}, seq INTEGER)",
                            "CREATE TABLE IF NOT EXISTS plans (name TEXT PRIMARY KEY, plan TEXT, updated TEXT)",
                            "CREATE TABLE IF NOT EXISTS sensitivity (key TEXT PRIMARY KEY, result TEXT, created TEXT)",
                            "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)",
                            "CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT, pid INTEGER, "
                            "host TEXT, proc_start REAL, expires REAL, claimed REAL)",
                            f"PRAGMA application_id = {APPLICATION_ID}",
                            f"PRAGMA user_version = {SCHEMA_VERSION}"):
                    db.execute(sql)
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()

    @contextmanager
    def _connect(self, write: bool = False):
        if self.read_only:
            if write:
                raise UserError(f"{self.path} was opened read-only; nothing can be stored in it here")
            # With no WAL file beside it the main file holds everything: immutable reads it without creating
            # one. While a sweep writes (WAL present), plain read-only mode reads through the existing WAL.
            wal = Path(f"{self.path}-wal").exists()
            db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro{'' if wal else '&immutable=1'}",
                                 uri=True, timeout=30, isolation_level=None)
        else:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            if not write:
                yield db
                return
            db.execute("PRAGMA synchronous=FULL")  # a finished run survives a kill or a power cut
            db.execute("BEGIN IMMEDIATE")  # take the write lock now: read-then-write never deadlocks
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    def _has_table(self, db: sqlite3.Connection, name: str) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() \
            is not None

    # runs
    def put(self, result: RunResult, owner: ClaimOwner | None = None) -> None:
        """Write (or replace) one run or baseline row and release `owner`'s claim on it, in one transaction."""
        row = result.to_row()
        with self._connect(write=True) as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
            db.execute(f"INSERT OR REPLACE INTO runs ({', '.join(RUN_COLUMNS)}, seq) "
                       f"VALUES ({', '.join('?' * len(RUN_COLUMNS))}, ?)", [row[c] for c in RUN_COLUMNS] + [seq])
            if owner is not None:
                db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (result.key, owner.token))

    def keys(self, kind: str = "run") -> set[str]:
        """Keys of the stored rows of one kind."""
        with self._connect() as db:
            return {r[0] for r in db.execute("SELECT key FROM runs WHERE kind = ?", (kind,))}

    def get(self, key: str) -> RunResult | None:
        """One row by key, or None."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE key = ?", (key,)).fetchone()
        return RunResult.from_row(row) if row else None

    def results(self, keys: Sequence[str] | None = None, kind: str = "run") -> list[RunResult]:
        """Rows of one kind in the order they finished (only `keys`, when given)."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs WHERE kind = ? ORDER BY seq", (kind,)).fetchall()
        out = [RunResult.from_row(r) for r in rows]
        if keys is not None:
            wanted = set(keys)
            out = [r for r in out if r.key in wanted]
        return out

    def count(self, key: str) -> int:
        """How many rows have this key (0 or 1: keys are unique)."""
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM runs WHERE key = ?", (key,)).fetchone()[0]

    # claims
    def claim(self, key: str, owner: ClaimOwner, table: str = "runs", lease_s: float = LEASE_S,
              now: float | None = None) -> tuple[str, Claim | None]:
        """Try to claim `key` for `owner` in one transaction: ('stored', None) when `table` already holds it,
        ('busy', holder) when another owner's claim is live, else ('claimed', our claim) (taking over a claim
        whose owner is dead or whose lease expired)."""
        if table not in ("runs", "sensitivity"):
            raise ValueError(f"unknown table {table!r}")
        now = time.time() if now is None else now
        with self._connect(write=True) as db:
            if db.execute(f"SELECT 1 FROM {table} WHERE key = ?", (key,)).fetchone():
                return "stored", None
            row = db.execute("SELECT * FROM claims WHERE key = ?", (key,)).fetchone()
            if row is not None and row["owner"] != owner.token:
                holder = _claim_of(row)
                if claim_is_live(holder, now):
                    return "busy", holder
            mine = Claim(key, owner, now + lease_s, now)
            db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (key, owner.token, owner.pid, owner.host, owner.proc_start, mine.expires, now))
            return "claimed", mine

    def renew(self, owner: ClaimOwner, lease_s: float = LEASE_S, now: float | None = None) -> int:
        """Extend every lease `owner` holds; returns how many."""
        now = time.time() if now is None else now
        with self._connect(write=True) as db:
            return db.execute("UPDATE claims SET expires = ? WHERE owner = ?", (now + lease_s, owner.token)).rowcount

    def release(self, owner: ClaimOwner, key: str | None = None) -> None:
        """Drop `owner`'s claim on `key` (every claim of `owner` when key is None)."""
        with self._connect(write=True) as db:
            if key is None:
                db.execute("DELETE FROM claims WHERE owner = ?", (owner.token,))
            else:
                db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner.token))

    def claims(self) -> list[Claim]:
        """Every claim row, live or not (see claim_is_live)."""
        with self._connect() as db:
            if not self._has_table(db, "claims"):
                return []
            return [_claim_of(r) for r in db.execute("SELECT * FROM claims ORDER BY claimed")]

    @contextmanager
    def leases(self, owner: ClaimOwner) -> Iterator[None]:
        """Renew `owner`'s leases every RENEW_S seconds from a daemon thread; on exit release them all."""
        import threading

        stop = threading.Event()

        def keep() -> None:
            while not stop.wait(RENEW_S):
                try:
                    self.renew(owner)
                except (sqlite3.Error, UserError):
                    pass  # a busy or vanished store: the next beat tries again

        thread = threading.Thread(target=keep, name="prunelab-leases", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)
            try:
                self.release(owner)
            except sqlite3.Error:
                pass  # the claims stay until their owner is seen dead or their lease runs out

    # plans
    def put_plan(self, name: str, record: dict) -> None:
        """Remember a plan (its settings, criteria and run keys) for reports."""
        with self._connect(write=True) as db:
            db.execute("INSERT OR REPLACE INTO plans VALUES (?, ?, ?)",
                       (name, json.dumps(record), time.strftime("%Y-%m-%dT%H:%M:%S")))

    def plans(self) -> list[dict]:
        """Stored plans, most recently updated last."""
        with self._connect() as db:
            rows = db.execute("SELECT name, plan, updated FROM plans ORDER BY updated, rowid").fetchall()
        return [dict(json.loads(r["plan"]), name=r["name"], updated=r["updated"]) for r in rows]

    # sensitivity
    def put_sensitivity(self, key: str, result: dict, owner: ClaimOwner | None = None) -> None:
        """Store a sensitivity scan (the JSON of SensitivityDone) and release `owner`'s claim on it."""
        with self._connect(write=True) as db:
            db.execute("INSERT OR REPLACE INTO sensitivity VALUES (?, ?, ?)",
                       (key, json.dumps(result), time.strftime("%Y-%m-%dT%H:%M:%S")))
            if owner is not None:
                db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, owner.token))

    def sensitivity(self, key: str | None = None) -> list[dict]:
        """Stored scans (one by key, or all, oldest first)."""
        with self._connect() as db:
            if key:
                rows = db.execute("SELECT result FROM sensitivity WHERE key = ?", (key,)).fetchall()
            else:
                rows = db.execute("SELECT result FROM sensitivity ORDER BY created, rowid").fetchall()
        return [json.loads(r[0]) for r in rows]


def _claim_of(row: sqlite3.Row) -> Claim:
    return Claim(row["key"], ClaimOwner(row["owner"], row["pid"], row["host"], row["proc_start"]), row["expires"],
                 row["claimed"])


# ----------------------------------------------------------------------------- plans

PLAN_SECTIONS = {
    "plan": {"name", "seed", "store", "out_dir", "save_models", "memory_limit"},
    "model": {"source", "code", "kwargs", "weights", "trust", "input_shape", "mean", "std"},
    "data": {"spec"},
    "sweep": {"methods", "ratios", "target_speedups", "sensitivity_guided"},
    "prune": set(PruneConfig.__dataclass_fields__) - {"method", "pruning_ratio", "target_speedup", "layer_ratios",
                                                      "seed"},
    "recovery": None,  # an array of tables, checked separately
    "sensitivity": {"ratios", "limit", "method", "bn_recalibrate"},
    "criteria": None,
}
RECOVERY_KEYS = {"name", "bn_recalibrate", "bn_batches", "finetune_epochs", "finetune_batches", "finetune_lr",
                 "optimizer", "distill", "distill_temperature", "distill_weight", "sparsity_reg", "steps"}


@dataclass(frozen=True)
class Recovery:
    """One recovery setting of a plan: BatchNorm re-estimation and/or fine-tuning after pruning."""

    name: str = "none"
    options: dict = field(default_factory=dict)  # PruneConfig fields

    @property
    def summary(self) -> str:
        """Words for tables: 'BN re-estimation + 50 fine-tuning batches'."""
        o = self.options
        parts = []
        if o.get("bn_recalibrate"):
            parts.append("BN re-estimation")
        if o.get("finetune_batches"):
            parts.append(f"{o['finetune_batches']} fine-tuning batches")
        elif o.get("finetune_epochs"):
            parts.append(f"{o['finetune_epochs']:g} fine-tuning epochs")
        if o.get("distill"):
            parts.append("distillation")
        if (o.get("steps") or 1) > 1:
            parts.append(f"{o['steps']} steps")
        return " + ".join(parts) or "none"


@dataclass
class Plan:
    """Methods × ratios (or target speed-ups) × recovery settings on one model and dataset, with a seed,
    criteria, a result store and a folder for the pruned models."""

    model: str = "demo:resnet"
    data: str = "fashion-mnist"
    methods: tuple[str, ...] = ("l2",)
    ratios: tuple[float, ...] = (0.5,)
    target_speedups: tuple[float, ...] = ()
    recoveries: tuple[Recovery, ...] = (Recovery(),)
    prune: dict = field(default_factory=dict)  # PruneConfig fields shared by every run
    seed: int = 0
    criteria: tuple[Criterion, ...] = DEFAULT_CRITERIA
    name: str = "plan"
    store: str | None = None
    out_dir: str | None = None
    save_models: bool = True
    memory_limit: int | None = None  # bytes each job may reach (None: the default share of the machine)
    sensitivity_guided: bool = False  # add a per-layer-ratio run per structured method × ratio
    sensitivity: dict = field(default_factory=dict)  # ratios, limit, method, bn_recalibrate for that scan
    model_code: str | None = None
    model_kwargs: dict | None = None
    weights: str | None = None
    trust: bool = False  # set by `sweep --trust`, never by the plan file
    input_shape: tuple[int, int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def configs(self) -> list[tuple[PruneConfig, Recovery]]:
        """One PruneConfig per run (method × target × recovery), validated. Unstructured methods get no
        target-speed-up runs: zeroed weights do not reduce MACs."""
        out = []
        targets = [("pruning_ratio", r) for r in self.ratios] + [("target_speedup", s) for s in self.target_speedups]
        for method in self.methods:
            for kind, value in targets:
                if kind == "target_speedup" and not get_method(method).structured:
                    continue
                for rec in self.recoveries:
                    kw = dict(self.prune)
                    kw.update(rec.options)
                    kw.update(method=method, seed=self.seed, pruning_ratio=None, target_speedup=None)
                    kw[kind] = float(value)
                    try:
                        cfg = PruneConfig(**kw)
                        cfg.validate()
                    except TypeError as exc:
                        raise UserError(f"plan: bad pruning option ({exc})") from exc
                    except UserError as exc:
                        raise UserError(f"plan: {method} at {kind.replace('_', ' ')} {value}: {exc}") from exc
                    out.append((cfg, rec))
        if not out:
            raise UserError("plan: no runs; give [sweep] methods and ratios (or target_speedups)")
        return out

    def model_identity(self) -> dict:
        """What identifies the model in run keys: the source and its flags, plus the file's content digest."""
        ident = {"source": self.model, "code": self.model_code, "kwargs": self.model_kwargs, "weights": self.weights,
                 "input_shape": list(self.input_shape) if self.input_shape else None,
                 "mean": list(self.mean) if self.mean else None, "std": list(self.std) if self.std else None}
        ident["digest"] = _file_digest(self.model)
        return ident

    def to_json(self) -> dict:
        """Plain dict, stored with the results (the report shows the setup from it)."""
        d = asdict(self)
        d["criteria"] = [c.to_json() for c in self.criteria]
        d["recoveries"] = [{"name": r.name, "options": r.options, "summary": r.summary} for r in self.recoveries]
        return d

    def resolved_store(self, override: str | Path | None = None) -> Path:
        """The store path: the command-line choice, else the plan's, else the user data directory."""
        if override:
            return Path(override)
        if self.store:
            return Path(self.store)
        return default_store_path()

    def models_dir(self, store_path: Path) -> Path:
        """Where the pruned models of the runs go (one folder per run)."""
        return Path(self.out_dir) if self.out_dir else Path(store_path).parent / "models"

    def check_outputs(self, store_path: Path) -> None:
        """Refuse, before any work, a models folder that is a file or cannot be written."""
        if not self.save_models:
            return
        folder = self.models_dir(store_path)
        where = "[plan] out_dir" if self.out_dir else "the models folder beside the store"
        if folder.exists() and not folder.is_dir():
            raise UserError(f"{where} {folder} is a file; name a folder for the pruned models (out_dir)")
        check_writable(folder, flag=f"{where} (out_dir)", folder=True)


def _file_digest(source: str) -> str | None:
    """sha256 prefix of a model file (demo sources: their weights file), so retrained weights get new keys."""
    path = None
    kind, _, name = source.partition(":")
    if kind == "demo":
        from engine.models import demo_path

        path = demo_path(name)
    elif kind != "torchvision":
        path = Path(source)
    if path is None or not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _expect(value: Any, kind: type | tuple, where: str, hint: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise UserError(f"{where} must be {hint}, got {value!r}")
    if not isinstance(value, kind):
        raise UserError(f"{where} must be {hint}, got {value!r}")
    return value


def _numbers(value: Any, where: str, low: float, high: float | None, hint: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    _expect(value, list, where, f"a list of numbers ({hint})")
    out = []
    for v in value:
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= low
                or (high is not None and v >= high)):
            raise UserError(f"{where} must hold finite numbers {hint}, got {_shown(v)}")
        out.append(float(v))
    return tuple(out)


# ----------------------------------------------------------------------------- typed values

# A plan's values are checked against the annotations of what consumes them (PruneConfig for [prune] and
# [[recovery]], Criterion for [criteria.NAME], sensitivity.scan for [sensitivity]), so a new option is
# checked without a second list here; ranges are then PruneConfig.validate()'s and Criterion's own.
_WORDS = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string",
          tuple: "a list of layer names", dict: "a table"}


def _shown(value: Any) -> str:
    """A value for a one-line message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key_name(key: str) -> str:
    """A key as typed, or its repr when it holds spaces or control characters."""
    return key if key and key.isprintable() and " " not in key else repr(key)


def _type_words(hint: Any) -> str:
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_words(a) for a in args if a is not type(None))
    if origin is not None and args and origin not in (dict, tuple):
        plural = {float: "finite numbers", int: "whole numbers", str: "strings", bool: "true/false values"}
        return f"a list of {plural.get(args[0], 'values')}"
    return _WORDS.get(origin or hint, getattr(hint, "__name__", str(hint)))


def check_typed(value: Any, hint: Any, where: str) -> Any:
    """`value` (from TOML or the GUI) checked against a type annotation; raises a UserError naming `where`.

    Numbers must be finite; booleans are not numbers; lists become tuples for tuple fields. Numbers keep
    their TOML type (1 stays 1, not 1.0), so run keys stay as they were.
    """
    import collections.abc
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return check_typed(value, option, where)
            except UserError as exc:
                if "finite" in str(exc) and isinstance(value, float):
                    raise
        raise UserError(f"{where} must be {_type_words(hint)}, got {_shown(value)}")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is float and number and not math.isfinite(value):
        raise UserError(f"{where} must be a finite number, got {value}")
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = number
    elif hint is str:
        ok = isinstance(value, str)
    elif hint is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{where} must be {_WORDS[tuple]}, e.g. [\"layer1.0.conv1\"], got {_shown(value)}")
        return tuple(value)
    elif hint is dict or origin is dict:
        ok = isinstance(value, dict)
    elif origin in (list, collections.abc.Sequence) and args:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be {_type_words(hint)}, got {_shown(value)}")
        return [check_typed(v, args[0], where) for v in value]
    else:
        ok = True  # an annotation the plan format has no value for: left to the consumer's own checks
    if not ok:
        raise UserError(f"{where} must be {_type_words(hint)}, got {_shown(value)}")
    return value


def check_prune_options(table: dict, where: str) -> dict:
    """[prune] or [[recovery]] options, each checked against PruneConfig's annotation of that field."""
    import re
    import typing

    from engine.training import OPTIMIZERS

    hints = typing.get_type_hints(PruneConfig)
    out = {}
    for key, value in table.items():
        value = check_typed(value, hints[key], f"{where} {key}")
        if key == "optimizer" and value not in OPTIMIZERS:
            raise UserError(f"{where} optimizer must be one of {', '.join(OPTIMIZERS)}, got {_shown(value)}")
        if key == "device" and not re.fullmatch(r"cpu|cuda(:\d+)?", value):
            raise UserError(f"{where} device must be \"cpu\" or \"cuda\" (or \"cuda:N\"), got {_shown(value)}")
        out[key] = value
    return out


def check_sensitivity_options(table: dict, where: str = "[sensitivity]") -> dict:
    """[sensitivity] options, checked against the annotations of sensitivity.scan, then their ranges."""
    import typing

    from engine.sensitivity import scan

    hints = typing.get_type_hints(scan)
    out = {}
    for key, value in table.items():
        if key == "ratios":
            value = list(_numbers(value, f"{where} ratios", 0.0, 1.0, "between 0 and 1 (exclusive)"))
        else:
            value = check_typed(value, hints[key], f"{where} {key}")
        if key == "limit" and value is not None and value < 1:
            raise UserError(f"{where} limit must be a number of validation images of at least 1, got {value}")
        if key == "method":
            try:
                method = get_method(value)
            except UserError as exc:
                raise UserError(f"{where} method: {exc}") from None
            if not method.structured:
                raise UserError(f"{where} method must be a structured method (the scan removes channels), "
                                f"got {value!r}")
        out[key] = value
    return out


def _methods(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        if value in ("structured", "unstructured"):
            return tuple(m.name for m in all_methods(value))
        if value == "all":
            return tuple(m.name for m in all_methods())
        value = [value]
    _expect(value, list, "[sweep] methods", 'a list of method names, "structured", "unstructured" or "all"')
    for name in value:
        if not isinstance(name, str):
            raise UserError(f"[sweep] methods must hold method names, got {name!r}")
        try:
            get_method(name)
        except UserError as exc:
            raise UserError(f"[sweep] methods: {exc}") from None
    if len(set(value)) != len(value):
        raise UserError("[sweep] methods lists a method twice; list each once")
    return tuple(value)


def parse_plan(text: str, base_dir: str | Path = ".", source: str = "plan") -> Plan:
    """Build a Plan from TOML text; relative paths are resolved against `base_dir`.

    Every error is a UserError naming the bad key and how to fix it.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{source} is not valid TOML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise UserError(f"{source} nests its values too deeply to be a plan; see examples/plan.toml") from None
    unknown = set(doc) - set(PLAN_SECTIONS)
    if unknown:
        raise UserError(f"{source}: unknown section(s) {', '.join(map(_key_name, sorted(unknown)))}; "
                        f"valid: {', '.join(PLAN_SECTIONS)}")
    for section, keys in PLAN_SECTIONS.items():
        if section in doc and keys is not None:
            _expect(doc[section], dict, f"[{section}]", "a table")
            bad = set(doc[section]) - keys
            if bad:
                raise UserError(f"{source}: unknown key(s) in [{section}]: {', '.join(map(_key_name, sorted(bad)))}; "
                                f"valid: {', '.join(sorted(keys))}")
    base = Path(base_dir)

    def path(value: Any, where: str) -> str:
        _expect(value, str, where, "a path string")
        if not value or "\x00" in value:
            raise UserError(f"{where} must be a path, got {_shown(value)}")
        try:
            p = Path(value).expanduser()
        except RuntimeError:  # ~name of a user this machine does not know
            raise UserError(f"{where}: cannot find the home folder in {_shown(value)}; write the full path") from None
        return str(p if p.is_absolute() else base / p)

    plan_t, model_t, data_t = doc.get("plan", {}), doc.get("model", {}), doc.get("data", {})
    sweep_t, prune_t = doc.get("sweep", {}), doc.get("prune", {})
    plan = Plan()
    plan.name = _expect(plan_t.get("name", Path(source).stem), str, "[plan] name", "a string")
    plan.seed = _expect(plan_t.get("seed", 0), int, "[plan] seed", "an integer")
    if "store" in plan_t:
        plan.store = path(plan_t["store"], "[plan] store")
    if "out_dir" in plan_t:
        plan.out_dir = path(plan_t["out_dir"], "[plan] out_dir")
    plan.save_models = _expect(plan_t.get("save_models", True), bool, "[plan] save_models", "true or false")
    if "memory_limit" in plan_t:
        limit = _expect(plan_t["memory_limit"], (str, int), "[plan] memory_limit", 'a size such as "8G" or "70%"')
        try:
            plan.memory_limit = parse_limit(limit)
        except UserError as exc:
            raise UserError(f"{source}: [plan] memory_limit: {exc}") from None

    if "source" not in model_t:
        raise UserError(f"{source}: [model] source is missing; e.g. source = \"demo:resnet\" or a model file")
    src = _expect(model_t["source"], str, "[model] source", "a string such as \"demo:resnet\"")
    if ":" not in src or Path(src).suffix in (".pt", ".pth") or src.startswith((".", "/")):
        src = path(src, "[model] source")
    plan.model = src
    if "code" in model_t:
        code = _expect(model_t["code"], str, "[model] code", "PATH.py:ClassName")
        file, sep, cls = code.rpartition(":")
        plan.model_code = f"{path(file, '[model] code')}:{cls}" if sep else code
    if "kwargs" in model_t:
        plan.model_kwargs = _expect(model_t["kwargs"], dict, "[model] kwargs", "a table of arguments")
    if "weights" in model_t:
        plan.weights = path(model_t["weights"], "[model] weights")
    if "trust" in model_t:  # trust is the person's to give, not the file's: a shared plan must not grant it
        raise UserError(f"{source}: [model] trust cannot be set in a plan; pass --trust to `sweep` if you trust "
                        "the model file (it holds code that runs when it loads)")
    if "input_shape" in model_t:
        shape = _expect(model_t["input_shape"], list, "[model] input_shape", "[C, H, W]")
        if len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
            raise UserError(f"[model] input_shape must be three positive integers [C, H, W], got {shape!r}")
        plan.input_shape = tuple(shape)
    for key, low in (("mean", -1e9), ("std", 0.0)):  # a zero std would divide every pixel by zero
        if key in model_t:
            setattr(plan, key, _numbers(model_t[key], f"[model] {key}", low, None,
                                        "per channel" + (", above 0" if key == "std" else "")))

    plan.data = _expect(data_t.get("spec", "fashion-mnist"), str, "[data] spec", "a dataset spec string")
    kind, sep, rest = plan.data.partition(":")
    if sep and rest and kind in ("imagefolder", "cifar10"):
        plan.data = f"{kind}:{path(rest, '[data] spec')}"

    if "methods" not in sweep_t:
        raise UserError(f"{source}: [sweep] methods is missing; e.g. methods = [\"l1\", \"l2\"] or \"structured\"")
    plan.methods = _methods(sweep_t["methods"])
    plan.ratios = _numbers(sweep_t.get("ratios", []), "[sweep] ratios", 0.0, 1.0, "between 0 and 1 (exclusive)")
    plan.target_speedups = _numbers(sweep_t.get("target_speedups", []), "[sweep] target_speedups", 1.0, None,
                                    "above 1.0")
    if not plan.ratios and not plan.target_speedups:
        raise UserError(f"{source}: [sweep] needs ratios (e.g. [0.3, 0.5, 0.7]) or target_speedups (e.g. [2.0])")
    plan.sensitivity_guided = _expect(sweep_t.get("sensitivity_guided", False), bool, "[sweep] sensitivity_guided",
                                      "true or false")
    plan.sensitivity = check_sensitivity_options(dict(doc.get("sensitivity", {})))

    plan.prune = check_prune_options(dict(prune_t), "[prune]")
    recoveries = doc.get("recovery", [{"name": "none"}])
    if isinstance(recoveries, dict):
        recoveries = [recoveries]
    _expect(recoveries, list, "[[recovery]]", "an array of tables")
    recs = []
    for i, r in enumerate(recoveries):
        _expect(r, dict, f"[[recovery]] #{i + 1}", "a table")
        bad = set(r) - RECOVERY_KEYS
        if bad:
            raise UserError(f"{source}: unknown key(s) in [[recovery]] #{i + 1}: {', '.join(map(_key_name, sorted(bad)))}; "
                            f"valid: {', '.join(sorted(RECOVERY_KEYS))}")
        where = f"[[recovery]] #{i + 1}"
        if "name" in r:
            _expect(r["name"], str, f"{where} name", "a string")
        opts = check_prune_options({k: v for k, v in r.items() if k != "name"}, where)
        recs.append(Recovery(str(r.get("name") or Recovery(options=opts).summary), opts))
    if len({r.name for r in recs}) != len(recs):
        raise UserError(f"{source}: two [[recovery]] tables share a name; give each a distinct name")
    plan.recoveries = tuple(recs)
    if "criteria" in doc:
        plan.criteria = criteria_from_toml(doc["criteria"])
    plan.configs()  # validates every combination now, before any work starts
    return plan


def load_plan(path: str | Path) -> Plan:
    """Read and validate a TOML plan file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"plan file {path} does not exist; see examples/plan.toml for a documented example")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read plan file {path}: {exc}") from None
    return parse_plan(text, path.resolve().parent, str(path))


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


def run_key(plan: Plan, cfg: PruneConfig, identity: dict | None = None) -> str:
    """Deterministic key of one run: model (with file digest) + dataset + the full PruneConfig."""
    return _digest({"model": identity or plan.model_identity(), "data": plan.data, "config": cfg.to_json()})


def baseline_key(plan: Plan, cfg: PruneConfig, identity: dict | None = None) -> str:
    """Key of the original model's evaluation under the plan's evaluation settings."""
    settings = {k: getattr(cfg, k) for k in ("device", "batch_size", "eval_limit", "measure_speed",
                                             "latency_repeats", "threads")}
    return "baseline-" + _digest({"model": identity or plan.model_identity(), "data": plan.data, "eval": settings})


def load_inputs(plan: Plan):
    """Load the plan's dataset and model once and make them fit (shared by every run)."""
    from engine.inputs import fit_data
    from engine.data import load_dataset
    from engine.models import load_model

    data = load_dataset(plan.data, input_shape=plan.input_shape, seed=plan.seed)
    bundle = load_model(plan.model, weights=plan.weights, model_code=plan.model_code,
                        model_kwargs=plan.model_kwargs, trust=plan.trust, input_shape=plan.input_shape,
                        num_classes=data.num_classes)
    return bundle, fit_data(bundle, data, plan.mean, plan.std)


def _versions() -> dict:
    import numpy
    import torch
    import torch_pruning as tp

    from engine import __version__

    return {"prunelab": __version__, "torch": torch.__version__, "torch_pruning": getattr(tp, "__version__", "?"),
            "numpy": numpy.__version__, "python": sys.version.split()[0]}


def _device_text(device: str) -> str:
    import platform

    import torch

    if device == "cuda" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def plan_runs(plan: Plan, bundle=None, scan=None) -> list[tuple]:
    """Every run of the plan as (key, label, config, recovery, guided); sensitivity-guided runs need the
    plan's scan (`scan`, a SensitivityDone) and the model to count MACs."""
    identity = plan.model_identity()
    runs = []
    for cfg, rec in plan.configs():
        label = run_label(cfg, rec.name if len(plan.recoveries) > 1 else "")
        runs.append((run_key(plan, cfg, identity), label, cfg, rec, False))
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
            runs.append((run_key(plan, g, identity), label, g, rec, True))
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
        if status != "busy":
            return status == "claimed"
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
    """
    cancel = cancel or CancelToken()
    owner = ClaimOwner.here()
    limit = memory_limit or plan.memory_limit or parse_limit(None)
    with store.leases(owner):
        yield from _run_plan(plan, store, cancel, bundle, data, owner, limit)


def _run_plan(plan: Plan, store: ResultStore, cancel: CancelToken, bundle, data, owner: ClaimOwner,
              limit: int) -> Iterator:
    start = time.perf_counter()
    from engine.metrics import evaluate
    from engine.pruning import run_pruning

    if bundle is None or data is None:
        yield Progress("plan", 0, 1, "loading model and dataset")
        bundle, data = load_inputs(plan)
    bundle.require_prunable()
    plan.check_outputs(store.path)
    for cfg, _ in plan.configs():  # layer names, memory: before the scan and the baseline, not at run 17
        check_run(cfg, bundle)
    scan = None
    if plan.sensitivity_guided:
        for ev in guarded(sensitivity_for_plan(plan, bundle, data, store, cancel, owner), limit):
            scan = ev
            yield ev
    runs = plan_runs(plan, bundle, scan)
    identity = plan.model_identity()
    total = len(runs)
    first_cfg = runs[0][2]
    b_key = baseline_key(plan, first_cfg, identity)
    store.put_plan(plan.name, dict(plan.to_json(), keys=[r[0] for r in runs], baseline=b_key))
    done_keys = store.keys("run")
    skipped = sum(1 for r in runs if r[0] in done_keys)

    baseline = store.get(b_key)
    if baseline is None and not (yield from _acquire(store, b_key, owner, cancel, "the original model's "
                                                     "evaluation", total=total, skipped=skipped)):
        baseline = store.get(b_key)  # another sweep evaluated it while this one waited
    if baseline is None:
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
            baseline = _stamp(RunResult(b_key, "baseline", "original", "none", 0.0, None, False, {}, sink[0], [],
                                        time.perf_counter() - t0, 0.0, 0.0, _device_text(first_cfg.device),
                                        _versions(), {"model": plan.model}, [], plan.model, plan.data,
                                        time.strftime("%Y-%m-%dT%H:%M:%S")), owner)
            store.put(baseline, owner)
        except BaseException:
            store.release(owner, b_key)
            raise
    yield PlanStarted(plan.name, tuple(r[0] for r in runs), tuple(r[1] for r in runs), baseline, skipped,
                      tuple(plan.criteria))
    ran = shared = 0
    failed: list[str] = []
    pending = list(enumerate(runs, 1))
    shown = ""
    while pending:
        waiting, holders = [], []
        for index, (key, label, cfg, rec, guided) in pending:
            cancel.check()
            status, holder = ("stored", None) if key in done_keys else store.claim(key, owner)
            if status == "stored":
                stored = store.get(key)
                if stored is not None:  # (a stored row is never deleted; the check only guards the type)
                    by_other = key not in done_keys
                    shared += by_other
                    yield PlanRunDone(index, total, stored, skipped=True, shared=by_other)
                    continue
                done_keys.discard(key)  # deleted by hand since the plan started: claim it next time round
            if status != "claimed":
                waiting.append((index, (key, label, cfg, rec, guided)))
                if holder is not None:
                    holders.append(holder.owner.describe())
                continue
            yield PlanProgress(index, total, key, label, skipped, f"run {index}/{total}: {label}")
            try:
                out_dir = None
                if plan.save_models:
                    out_dir = plan.models_dir(store.path) / key
                final = ev = None
                for ev in guarded(run_pruning(bundle, data, cfg, cancel, out_dir=out_dir, baseline=baseline.metrics),
                                  limit, ", leave large layers alone ([prune] ignored_layers)"):
                    if isinstance(ev, RunDone):
                        final = ev
                    yield ev
                result = _stamp(_result_of(final, key, label, cfg, rec, guided, plan), owner)
                store.put(result, owner)  # the moment the run finishes: a later crash cannot lose it
            except Exception as exc:  # noqa: BLE001 - out of memory (budget, CUDA) fails this run only
                store.release(owner, key)  # another sweep, or a re-run, may take it
                reason = exc if isinstance(exc, BudgetError) else resource_error(exc)
                if reason is None:
                    raise
                failed.append(f"{label}: {reason}")
                final = ev = None
                gc.collect()
                yield PlanRunFailed(index, total, key, label, str(reason))
                continue
            except BaseException:
                store.release(owner, key)  # failed or cancelled: another sweep may take it
                raise
            ran += 1
            del final, ev
            gc.collect()  # free the pruned copy, its optimiser and activations before the next run
            yield PlanRunDone(index, total, result, rss_bytes=rss_bytes())
        pending = waiting
        if pending:
            who = sorted(set(holders))
            text = (f"{len(pending)} run{'s are' if len(pending) > 1 else ' is'} being computed by "
                    f"{', '.join(who)}; waiting to include {'them' if len(pending) > 1 else 'it'} "
                    "(cancel to stop: they are stored anyway, and a re-run includes them)")
            if text != shown:
                shown = text
                yield PlanWaiting(0, total, "", "waiting", skipped, text, tuple(who),
                                  tuple(r[1][0] for r in pending))
            _pause(POLL_S, cancel)
    results = tuple(store.results([r[0] for r in runs]))
    yield PlanDone(results, baseline, rank(results, plan.criteria, baseline, model=plan.model), str(store.path),
                   time.perf_counter() - start, ran, skipped, shared, tuple(failed))


def _result_of(done: RunDone, key: str, label: str, cfg: PruneConfig, rec: Recovery, guided: bool,
               plan: Plan) -> RunResult:
    steps = [s.metrics.to_json(detail=False) | {"step": s.step, "ratio": s.ratio,
                                                "top1_after_prune": s.top1_after_prune,
                                                "top1_after_bn": s.top1_after_bn} for s in done.steps]
    recover = sum(s.recover_seconds for s in done.steps)
    return RunResult(key, "run", label, cfg.method, cfg.pruning_ratio, cfg.target_speedup, guided, cfg.to_json(),
                     done.after, steps, done.seconds, done.prune_seconds, recover, _device_text(cfg.device),
                     _versions(), dict(done.files), list(done.notes), plan.model, plan.data,
                     time.strftime("%Y-%m-%dT%H:%M:%S"),
                     {"recovery": rec.name, "recovery_summary": rec.summary, "plan": plan.name,
                      "latency_speedup": done.paired})  # paired original/pruned timing (None: not measured)


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

    @property
    def feasible(self) -> bool:
        """True when the run meets every constraint."""
        return not self.violations


@dataclass(frozen=True)
class Ranking:
    """Runs ordered best first (those meeting every constraint ahead of the others), and the verdict."""

    criteria: tuple[Criterion, ...]
    baseline_values: dict
    entries: tuple[RankedRun, ...]
    best: RankedRun | None
    recommendation: str

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
        # same layer shapes, measured the same way (device, batch sizes, threads)
        how = tuple(sorted((bs, v.get("threads")) for bs, v in r.metrics.latency_ms.items()))
        shapes.setdefault((r.metrics.macs, r.metrics.params, r.device, how), []).append(i)
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
    scores = [0.0] * len(results)
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
    if weight_sum:
        scores = [s / weight_sum for s in scores]
    # Constraints judge what was measured (and shown); pooling only keeps noise out of the score.
    viol = [tuple(v for c in criteria for v in c.violations(row[c.name], base_vals[c.name])) for row in measured]
    # Runs meeting every constraint first, by score; then the others, closest to the constraints first.
    excess = [sum(c.excess(row[c.name], base_vals[c.name]) for c in criteria) for row in measured]
    order = sorted(range(len(results)), key=lambda i: (bool(viol[i]), round(excess[i], 9), -round(scores[i], 9),
                                                       results[i].metrics.macs, results[i].label))
    entries = tuple(RankedRun(results[i], round(scores[i], 4), measured[i], viol[i], n + 1)
                    for n, i in enumerate(order))
    best = entries[0] if entries and entries[0].feasible else None
    return Ranking(criteria, base_vals, entries, best, recommendation(entries, criteria, baseline, model))


def _target_text(r: RunResult) -> str:
    if r.ratio is not None:
        return f"ratio {r.ratio:g}"
    return f"target speed-up {r.target_speedup:g}×" if r.target_speedup else ""


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
                   model: str = "this model") -> str:
    """The plain-words verdict, built from the table's own numbers."""
    if not entries:
        return "No runs yet: run the plan to get a recommendation."
    constraints = "; ".join(t for t in (c.constraint_text() for c in criteria) if t) or "no constraints"
    weights = ", ".join(f"{c.name} {c.weight:g}" for c in criteria if c.weight > 0)
    first = entries[0]
    r = first.result
    name = f"`{r.method}` at {_target_text(r).replace('ratio ', '')}"
    if r.guided:
        name += " with sensitivity-guided layer ratios"
    if r.recovery and r.recovery != "none":
        name += f" ({r.extra.get('recovery_summary', r.recovery)})"
    if first.feasible:
        return (f"For {model}, under these constraints ({constraints}; weights: {weights}), {name} is best: "
                f"{describe_gain(r, baseline)}.")
    return (f"For {model}, no run meets the constraints ({constraints}). The closest is {name}: "
            f"{describe_gain(r, baseline)}, but {', '.join(first.violations)}. Relax the constraints or prune less.")
