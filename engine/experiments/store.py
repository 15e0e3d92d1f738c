"""Run records and the SQLite result store: marked, refused when foreign, shared by sweeps through claims
(engine.experiments.claims decides who may take a run; the store keeps the rows)."""
from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Iterator, Sequence

from engine.errors import UserError
from engine.experiments.claims import LEASE_S, RENEW_S, Claim, ClaimOwner, ClaimStatus, _claim_of, claim_is_live
from engine.experiments.claims import owner_alive  # noqa: F401  (kept importable from here)
from engine.metrics import Metrics
from engine.paths import data_dir
from engine.config import PruneConfig

STORE_NAME = "results.sqlite"
NEW_STORE_BYTES = 1 << 20  # free space a new store needs up front (its tables, then a few runs)
SCHEMA_VERSION = 3  # 2: header marks (application_id, user_version) and the claims table; 3: where-timed columns

# ----------------------------------------------------------------------------- results


class RunKind(StrEnum):
    """A row of the runs table: a pruning run or the original model's evaluation (stored as the text)."""

    RUN = "run"
    BASELINE = "baseline"


@dataclass
class RunResult:
    """One stored run (or the baseline row): its configuration, metrics, timings and files."""

    key: str
    kind: str  # a RunKind
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
    node: str = ""  # where the run was timed: the machine (a Ray node's host name) ...
    threads: int = 0  # ... and the CPU threads its latency used (0: a GPU, or not timed)

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
            "created": self.created, "extra": json.dumps(self.extra), "node": self.node, "threads": self.threads,
        }

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "RunResult":
        """Inverse of to_row."""
        t = json.loads(row["timings"])
        raw = json.loads(row["metrics"])
        metrics = Metrics.from_json(raw)  # older rows carry "samples" only: their intervals come from it
        where = {"node": row["node"] or "", "threads": row["threads"] or 0} if "node" in row.keys() else {}
        return cls(key=row["key"], kind=row["kind"], label=row["label"], method=row["method"], ratio=row["ratio"],
                   target_speedup=row["target_speedup"], guided=bool(row["guided"]),
                   config=json.loads(row["config"]), metrics=metrics, steps=json.loads(row["steps"]),
                   seconds=t.get("seconds", 0.0), prune_seconds=t.get("prune_seconds", 0.0),
                   recover_seconds=t.get("recover_seconds", 0.0), device=row["device"],
                   versions=json.loads(row["versions"]), files=json.loads(row["files"]),
                   notes=json.loads(row["notes"]), model=row["model"], dataset=row["dataset"], created=row["created"],
                   extra=json.loads(row["extra"] or "{}"), **where)

    def csv_row(self) -> dict:
        """A flat dict of every figure, for the CSV export."""
        m = self.metrics
        row = {"key": self.key, "kind": self.kind, "label": self.label, "method": self.method,
               "ratio": self.ratio, "target_speedup": self.target_speedup, "guided": self.guided,
               "recovery": self.recovery}
        for k in ("top1", "top5", "precision_macro", "recall_macro", "f1_macro", "params", "nonzero_params",
                  "macs", "size_bytes", "compressed_bytes", "throughput_ips", "peak_memory_bytes"):
            row[k] = getattr(m, k)
        row.update(m.interval_columns())
        for bs in sorted(m.latency_ms, key=int):
            row[f"latency_b{bs}_median_ms"] = m.latency(bs)
            row[f"latency_b{bs}_p95_ms"] = m.latency(bs, "p95")
        row.update(seconds=round(self.seconds, 3), prune_seconds=round(self.prune_seconds, 4),
                   recover_seconds=round(self.recover_seconds, 3), device=self.device, node=self.node,
                   threads=self.threads,
                   versions=json.dumps(self.versions), model_file=self.files.get("model", ""),
                   model=self.model, dataset=self.dataset, created=self.created, config=json.dumps(self.config))
        return row


def run_label(cfg: PruneConfig, recovery: str = "", guided: bool = False) -> str:
    """A short name for a run, e.g. 'l2 @ 0.5', 'taylor @ 2× [bn+ft]' (MACs), 'l2 @ 20 ms' or 'l2 @ 2× lower latency'."""
    target = (f"{cfg.pruning_ratio:g}" if cfg.pruning_ratio is not None else
              f"{cfg.target_speedup:g}×" if cfg.target_speedup is not None else
              f"{cfg.target_latency:g} ms" if cfg.target_latency is not None else
              f"{cfg.target_latency_speedup:g}× lower latency" if cfg.target_latency_speedup is not None else "manual")
    label = f"{cfg.method} @ {target}"
    if guided:
        label += " (sensitivity-guided)"
    if recovery:
        label += f" [{recovery}]"
    return label


# ----------------------------------------------------------------------------- store


def default_store_path() -> Path:
    """The result store in the user's data folder (PRUNELAB_DATA_DIR overrides it)."""
    return data_dir() / STORE_NAME


RUN_COLUMNS = ("key", "kind", "label", "method", "ratio", "target_speedup", "guided", "config", "metrics", "steps",
               "timings", "device", "versions", "files", "notes", "model", "dataset", "created", "extra")
# Where a run was timed (schema 3), so the ranking pools latencies measured alike; older stores gain them empty.
WHERE_COLUMNS = (("node", "TEXT"), ("threads", "INTEGER"))

# The store marks itself in the SQLite header: PRAGMA application_id (offset 68) says "a PruneLab result
# store" and PRAGMA user_version (offset 60) the schema version, so another program's database or a newer
# store is recognised from the first 100 bytes, before SQLite opens (and possibly changes) the file.
APPLICATION_ID = int.from_bytes(b"PrLb", "big")  # 0x50724C62
SQLITE_MAGIC = b"SQLite format 3\x00"
OUR_TABLES = {"runs", "plans", "sensitivity", "meta"}  # schema 1 had these and no application_id


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
        _check_intact(path)
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


def _read_only_uri(path: Path) -> str:
    """A read-only SQLite URI that creates nothing beside the file: immutable unless a sweep's WAL is there
    (then plain read-only, which reads through it)."""
    wal = Path(f"{path}-wal").exists()
    return f"{path.absolute().as_uri()}?mode=ro{'' if wal else '&immutable=1'}"


def _check_intact(path: Path) -> None:
    """Refuse a store that was cut short or overwritten, in one line and before anything writes to it
    (SQLite's quick_check reads every page; a store is small)."""
    try:
        db = sqlite3.connect(_read_only_uri(path), uri=True, timeout=30)
        try:
            found = [str(r[0]) for r in db.execute("PRAGMA quick_check(1)")]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        found = [str(exc)]
    if found != ["ok"]:
        raise damaged_store(path, found[0] if found else "no pages")


def damaged_store(path: Path, why: str) -> UserError:
    """The one line for a store SQLite cannot read (or, when `why` says so, a full disk or a lock)."""
    why = " ".join(why.replace("*** in database main ***", "").split())[:200]
    if "full" in why:
        return UserError(f"no space left on the disk of the result store {path} ({why}); free space there or "
                         "choose another file with --store PATH")
    if "locked" in why:
        return UserError(f"result store {path} is locked by another program ({why}); close it and try again")
    return UserError(f"{path} is a damaged result store ({why}); it was left untouched: restore it from a backup "
                     "or choose another file with --store PATH")


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

        new = version is None and not self.path.exists()
        check_output_file(self.path, NEW_STORE_BYTES if new else 0, flag="result store")
        try:
            self._create_or_upgrade()
        except BaseException as exc:
            if new:  # a store refused on creation (a full disk, say) leaves no empty file behind
                for leftover in (self.path, Path(f"{self.path}-journal"), Path(f"{self.path}-wal"),
                                 Path(f"{self.path}-shm")):
                    leftover.unlink(missing_ok=True)
            if isinstance(exc, sqlite3.DatabaseError):
                raise damaged_store(self.path, str(exc)) from None
            raise
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
                have = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
                for col, kind in WHERE_COLUMNS:
                    if col not in have:
                        db.execute(f"ALTER TABLE runs ADD COLUMN {col} {kind}")
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
            db = sqlite3.connect(_read_only_uri(self.path), uri=True, timeout=30, isolation_level=None)
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
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:  # a full disk or a lock: the store itself is fine
            if "full" not in str(exc) and "locked" not in str(exc):
                raise
            raise damaged_store(self.path, str(exc)) from None
        except sqlite3.DatabaseError as exc:  # damaged after it was checked (another program wrote into it)
            if isinstance(exc, (sqlite3.ProgrammingError, sqlite3.IntegrityError)):  # bugs of ours
                raise
            raise damaged_store(self.path, str(exc)) from None
        finally:
            db.close()

    def _has_table(self, db: sqlite3.Connection, name: str) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() \
            is not None

    # runs
    def put(self, result: RunResult, owner: ClaimOwner | None = None) -> None:
        """Write (or replace) one run or baseline row and release `owner`'s claim on it, in one transaction."""
        row = result.to_row()
        cols = RUN_COLUMNS + tuple(c for c, _ in WHERE_COLUMNS)
        with self._connect(write=True) as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
            db.execute(f"INSERT OR REPLACE INTO runs ({', '.join(cols)}, seq) "
                       f"VALUES ({', '.join('?' * len(cols))}, ?)", [row[c] for c in cols] + [seq])
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
              now: float | None = None) -> tuple[ClaimStatus, Claim | None]:
        """Try to claim `key` for `owner` in one transaction: (STORED, None) when `table` already holds it,
        (BUSY, holder) when another owner's claim is live, else (CLAIMED, our claim) (taking over a claim
        whose owner is dead or whose lease expired)."""
        if table not in ("runs", "sensitivity"):
            raise ValueError(f"unknown table {table!r}")
        now = time.time() if now is None else now
        with self._connect(write=True) as db:
            if db.execute(f"SELECT 1 FROM {table} WHERE key = ?", (key,)).fetchone():
                return ClaimStatus.STORED, None
            row = db.execute("SELECT * FROM claims WHERE key = ?", (key,)).fetchone()
            if row is not None and row["owner"] != owner.token:
                holder = _claim_of(row)
                if claim_is_live(holder, now):
                    return ClaimStatus.BUSY, holder
            mine = Claim(key, owner, now + lease_s, now)
            db.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (key, owner.token, owner.pid, owner.host, owner.proc_start, mine.expires, now))
            return ClaimStatus.CLAIMED, mine

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

    def put_final_round(self, name: str, record: dict) -> None:
        """Add a plan's final comparison round (runner.final_round) to its record, in one transaction, once the
        round is complete: a round cut short leaves the record as it was."""
        with self._connect(write=True) as db:
            row = db.execute("SELECT plan FROM plans WHERE name = ?", (name,)).fetchone()
            if row is None:
                return
            db.execute("UPDATE plans SET plan = ? WHERE name = ?",
                       (json.dumps(dict(json.loads(row["plan"]), final_round=record)), name))

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
