"""The result store: it marks itself, refuses any other file without changing a byte of it, upgrades
schema-1 stores, opens read-only for reports, and lets sweeps share it through claims with leases
(two real processes compute disjoint parts of one plan)."""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shared_fixtures import ROOT
from cli.main import main as cli_main
from engine.errors import UserError
from engine.events import CancelToken
from engine import experiments as ex
from engine.experiments import (APPLICATION_ID, SCHEMA_VERSION, ClaimOwner, PlanDone, PlanRunDone, PlanWaiting,
                                ResultStore, RunResult, load_plan, run_plan)
from engine.metrics import Metrics
from engine.models import DemoResNet, ModelBundle, save_model

SIDE_FILES = ("-wal", "-shm", "-journal")


def snapshot(path: Path) -> tuple[bytes, int, list[str]]:
    """The file's bytes, its mtime and the names of every file beside it."""
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir())


def foreign_db(path: Path, wal: bool = False, app_id: int = 0, user_version: int = 0) -> Path:
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.execute("INSERT INTO notes (text) VALUES ('someone else''s data')")
    if app_id:
        db.execute(f"PRAGMA application_id = {app_id}")
    if user_version:
        db.execute(f"PRAGMA user_version = {user_version}")
    db.commit()
    db.close()
    assert not any(Path(f"{path}{s}").exists() for s in SIDE_FILES)
    return path


def fake_result(key: str, top1: float = 0.9, kind: str = "run", extra: dict | None = None) -> RunResult:
    m = Metrics(top1=top1, latency_ms={}, size_bytes=1000, macs=1000, params=100, compressed_bytes=900)
    return RunResult(key, kind, f"l2 @ {top1:g}", "l2" if kind == "run" else "none", 0.5, None, False, {}, m,
                     extra=dict(extra or {}))


def header(path: Path) -> tuple[int, int]:
    raw = path.read_bytes()[:100]
    return int.from_bytes(raw[68:72], "big"), int.from_bytes(raw[60:64], "big")


# ----------------------------------------------------------------------------- what the store opens


@pytest.mark.parametrize("make, message", [
    (lambda p: foreign_db(p), "another program"),
    (lambda p: foreign_db(p, wal=True), "another program"),
    (lambda p: foreign_db(p, app_id=0x12345678), "another program"),
    (lambda p: p.write_bytes(os.urandom(4096)), "not an SQLite file"),
    (lambda p: p.write_text("name,top1\nl2,0.9\n"), "not an SQLite file"),
    (lambda p: p.write_bytes(b"SQLite format 3\x00"), "not an SQLite file"),  # shorter than a header
    (lambda p: foreign_db(p, app_id=APPLICATION_ID, user_version=SCHEMA_VERSION + 7), "newer PruneLab"),
])
@pytest.mark.parametrize("read_only", [False, True])
def test_foreign_files_are_refused_untouched(tmp_path, make, message, read_only):
    path = tmp_path / "theirs.db"
    make(path)
    before = snapshot(path)
    time.sleep(0.01)  # a write would show in the mtime
    with pytest.raises(UserError, match=message) as err:
        ResultStore(path, read_only=read_only)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    assert snapshot(path) == before  # same bytes, same mtime, no -wal/-shm/-journal beside it


def test_sweep_and_report_refuse_a_foreign_store_with_one_line(tmp_path, capsys):
    plan = tmp_path / "p.toml"
    plan.write_text("[model]\nsource = 'demo:resnet'\n[sweep]\nmethods = ['l2']\nratios = [0.5]\n")
    theirs = foreign_db(tmp_path / "theirs.sqlite")
    before = snapshot(theirs)
    assert cli_main(["sweep", str(plan), "--store", str(theirs)]) == 2
    assert cli_main(["report", "--store", str(theirs), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("another program" in line for line in err)
    assert snapshot(theirs) == before and not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("empty", [False, True])
def test_missing_or_empty_file_becomes_a_marked_store(tmp_path, empty):
    path = tmp_path / "sub" / "new.sqlite"
    if empty:
        path.parent.mkdir()
        path.write_bytes(b"")
    store = ResultStore(path)
    assert header(path) == (APPLICATION_ID, SCHEMA_VERSION)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone()[0] == str(SCHEMA_VERSION)
    store.put(fake_result("a"))
    assert ResultStore(path).keys() == {"a"}  # reopening our own store is fine


def make_schema1_store(path: Path) -> Path:
    """A store as PruneLab wrote it before the header marks (schema 1), holding one run."""
    cols = ", ".join(c + (" TEXT PRIMARY KEY" if c == "key" else "") for c in ex.RUN_COLUMNS)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(f"""
    CREATE TABLE IF NOT EXISTS runs ({cols}, seq INTEGER);
    CREATE TABLE IF NOT EXISTS plans (name TEXT PRIMARY KEY, plan TEXT, updated TEXT);
    CREATE TABLE IF NOT EXISTS sensitivity (key TEXT PRIMARY KEY, result TEXT, created TEXT);
    CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
    INSERT OR IGNORE INTO meta VALUES ('schema', '1');
    """)
    row = fake_result("old-run").to_row()
    db.execute(f"INSERT INTO runs ({', '.join(ex.RUN_COLUMNS)}, seq) VALUES ({', '.join('?' * len(ex.RUN_COLUMNS))}, 1)",
               [row[c] for c in ex.RUN_COLUMNS])
    db.commit()
    db.close()
    return path


def test_schema1_store_opens_read_only_untouched_then_upgrades_in_place(tmp_path):
    path = make_schema1_store(tmp_path / "old.sqlite")
    assert header(path) == (0, 0)
    before = snapshot(path)
    time.sleep(0.01)
    ro = ResultStore(path, read_only=True)
    assert ro.keys() == {"old-run"} and ro.get("old-run").metrics.top1 == 0.9 and ro.claims() == []
    with pytest.raises(UserError, match="read-only"):
        ro.put(fake_result("new"))
    assert snapshot(path) == before
    store = ResultStore(path)  # ours, recognised by its tables: upgraded, data kept
    assert header(path) == (APPLICATION_ID, SCHEMA_VERSION)
    assert store.keys() == {"old-run"}
    store.put(fake_result("new"))
    assert store.keys() == {"old-run", "new"} and store.claims() == []


def test_report_reads_the_store_without_changing_it(tmp_path, capsys):
    path = tmp_path / "db" / "s.sqlite"
    store = ResultStore(path)
    store.put(fake_result("base", 0.92, kind="baseline"))
    store.put(fake_result("r1", 0.91))
    store.put_plan("p", {"keys": ["r1"], "baseline": "base", "criteria": []})
    del store
    before = snapshot(path)
    time.sleep(0.01)
    out = tmp_path / "out" / "r.html"
    assert cli_main(["report", "--store", str(path), "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".csv").is_file()
    assert snapshot(path) == before  # no WAL, no shared-memory file, no new byte


@pytest.mark.parametrize("target, message", [
    ("folder", "is a folder"),
    ("r.txt", "should end in .html"),
    ("ro/r.html", "not writable"),
    ("file/r.html", "is a file"),
])
def test_report_out_checked_before_reading(tmp_path, capsys, target, message):
    if os.geteuid() == 0 and target.startswith("ro/"):
        pytest.skip("root may write anywhere")
    (tmp_path / "folder").mkdir()
    (tmp_path / "ro").mkdir(mode=0o555)
    (tmp_path / "file").write_text("x")
    store = ResultStore(tmp_path / "s.sqlite")
    store.put(fake_result("r1"))
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert cli_main(["report", "--store", str(store.path), "--out", str(tmp_path / target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing


def test_sweep_report_path_checked_before_any_run(tmp_path, capsys):
    plan = tmp_path / "p.toml"
    plan.write_text("[model]\nsource = 'demo:resnet'\n[sweep]\nmethods = ['l2']\nratios = [0.5]\n")
    (tmp_path / "dir.html").mkdir()
    store = tmp_path / "s.sqlite"
    for bad in (str(tmp_path / "dir.html"), str(tmp_path / "report.pdf")):
        assert cli_main(["sweep", str(plan), "--store", str(store), "--report", bad]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not store.exists()  # refused before the store was even created
    assert cli_main(["sweep", str(plan), "--store", str(tmp_path / "dir.html")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_report_files_appear_together_or_not_at_all(tmp_path, monkeypatch):
    from engine import report

    store = ResultStore(tmp_path / "s.sqlite")
    store.put(fake_result("r1"))

    monkeypatch.setattr(report, "build_html", lambda *a, **k: None)  # fails after the CSV was written
    with pytest.raises(TypeError):
        report.write_report(store, tmp_path / "r.html")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("s.sqlite")) == []


# ----------------------------------------------------------------------------- claims and leases


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_claims_busy_stored_and_released(tmp_path):
    store = ResultStore(tmp_path / "c.sqlite")
    a, b = ClaimOwner.here(), ClaimOwner.here()  # two sweeps of this (live) process
    status, mine = store.claim("k", a)
    assert status == "claimed" and mine.owner == a
    assert store.claim("k", a)[0] == "claimed"  # claiming again renews our own claim
    status, holder = store.claim("k", b)
    assert status == "busy" and holder.owner.token == a.token and holder.owner.pid == os.getpid()
    store.put(fake_result("k"), a)  # storing releases the claim in the same transaction
    assert store.claims() == [] and store.claim("k", b) == ("stored", None)
    store.claim("x", a)
    store.release(a, "x")
    assert store.claim("x", b)[0] == "claimed"
    store.put_sensitivity("scan", {"r": 1}, b)
    assert store.claim("scan", a, table="sensitivity") == ("stored", None)


def test_dead_or_expired_owners_are_taken_over(tmp_path):
    store = ResultStore(tmp_path / "c.sqlite")
    me = ClaimOwner.here()
    host = me.host
    now = 1_000_000.0
    dead = ClaimOwner("dead", dead_pid(), host, None)
    assert store.claim("a", dead, now=now)[0] == "claimed"
    assert store.claim("a", me, now=now + 1)[0] == "claimed"  # same host, pid gone: taken at once
    reused = ClaimOwner("reused", os.getpid(), host, (me.proc_start or 0.0) - 3600)  # our pid, older process
    store.claim("b", reused, now=now)
    assert store.claim("b", me, now=now + 1)[0] == "claimed"
    remote = ClaimOwner("remote", 4242, "another-host.example", None)  # cannot be looked at: the lease decides
    store.claim("c", remote, lease_s=120, now=now)
    assert store.claim("c", me, now=now + 119)[0] == "busy"
    assert store.claim("c", me, now=now + 121)[0] == "claimed"
    live = ClaimOwner("live", os.getpid(), host, me.proc_start)
    store.claim("d", live, lease_s=120, now=now)
    assert store.renew(live, lease_s=120, now=now + 100) == 1  # renewed: still busy past the first expiry
    assert store.claim("d", me, now=now + 150)[0] == "busy"
    assert store.claim("d", me, now=now + 221)[0] == "claimed"  # expired even though the pid lives


def test_leases_are_renewed_in_the_background_and_released_on_exit(tmp_path, monkeypatch):
    monkeypatch.setattr(ex.store, "RENEW_S", 0.05)
    store = ResultStore(tmp_path / "c.sqlite")
    me = ClaimOwner.here()
    with store.leases(me):
        first = store.claim("k", me, lease_s=1.0)[1].expires
        deadline = time.time() + 5
        while store.claims()[0].expires <= first and time.time() < deadline:
            time.sleep(0.02)
        assert store.claims()[0].expires > first + 50  # renewed to a full LEASE_S
    assert store.claims() == []


# ----------------------------------------------------------------------------- run_plan sharing a store


PLAN = """
[plan]
name = "shared"
save_models = false
[model]
source = "tiny.pt"
[sweep]
methods = ["l1", "l2"]
ratios = [0.3, 0.5]
[prune]
eval_limit = 128
measure_speed = false
round_to = 4
{extra}
"""


@pytest.fixture()
def tiny_setup(tmp_path, fashion):
    torch.manual_seed(0)
    bundle = ModelBundle(DemoResNet(widths=(4, 8, 16)).eval(), "tiny", "demo:resnet", (1, 28, 28), 10,
                         fashion.norm, fashion.class_names, arch_kwargs={"widths": [4, 8, 16]})
    save_model(bundle, tmp_path / "tiny.pt")

    def plan(extra: str = "") -> Path:
        path = tmp_path / "plan.toml"
        path.write_text(PLAN.format(extra=extra))
        return path

    return bundle, fashion, plan


def _keys(plan_path: Path, bundle) -> list[str]:
    return [r.key for r in ex.plan_runs(load_plan(plan_path), bundle)]


@pytest.mark.parametrize("outcome", ["stored by the other", "lease expires", "owner dead"])
def test_run_plan_leaves_claimed_runs_to_their_owner_then_includes_or_takes_them(tmp_path, tiny_setup,
                                                                                 monkeypatch, outcome):
    monkeypatch.setattr(ex.runner, "POLL_S", 0.05)
    bundle, data, make_plan = tiny_setup
    plan_path = make_plan()
    plan = load_plan(plan_path)
    store = ResultStore(tmp_path / "s.sqlite")
    keys = _keys(plan_path, bundle)
    me = ClaimOwner.here()
    other = ClaimOwner("other", dead_pid() if outcome == "owner dead" else os.getpid(), me.host, None)
    # the lease runs out only once the plan waits for it (a fixed 1.5 s lease ran out before the plan reached
    # the run when the other runs took longer on a busy machine, and the plan never waited)
    store.claim(keys[1], other, lease_s=600)
    events = []
    for ev in run_plan(plan, store, CancelToken(), bundle=bundle, data=data):
        events.append(ev)
        if isinstance(ev, PlanWaiting) and outcome == "stored by the other" and not store.count(keys[1]):
            store.put(fake_result(keys[1], extra={"pid": other.pid}), other)
        if isinstance(ev, PlanWaiting) and outcome == "lease expires" and \
                sum(isinstance(e, PlanWaiting) for e in events) == 1:
            store.renew(other, lease_s=0.3)  # its owner stops renewing
    done = events[-1]
    assert isinstance(done, PlanDone) and len(done.results) == 4 and store.claims() == []
    waited = [ev for ev in events if isinstance(ev, PlanWaiting)]
    ran_here = {ev.result.key for ev in events if isinstance(ev, PlanRunDone) and not ev.skipped}
    if outcome == "owner dead":
        assert not waited and ran_here == set(keys) and done.ran == 4
    else:
        assert waited and waited[0].keys == (keys[1],) and "process" in waited[0].message
        # the claimed run is never started while its owner holds it: all the others come first
        started = [ev.key for ev in events if type(ev).__name__ == "PlanProgress" and ev.index]
        assert started[:3] == [k for k in keys if k != keys[1]]
    if outcome == "stored by the other":
        assert done.ran == 3 and done.shared == 1 and keys[1] not in ran_here
        assert store.get(keys[1]).extra["pid"] == other.pid
    if outcome == "lease expires":
        assert done.ran == 4 and ran_here == set(keys)
    for key in ran_here:
        assert store.get(key).extra["pid"] == os.getpid()


def test_failed_run_releases_its_claim(tmp_path, tiny_setup, monkeypatch):
    bundle, data, make_plan = tiny_setup
    store = ResultStore(tmp_path / "s.sqlite")

    def boom(*args, **kwargs):
        raise RuntimeError("pruning blew up")
        yield  # a generator, like the real one

    import engine.pruning

    monkeypatch.setattr(engine.pruning, "run_pruning", boom)
    with pytest.raises(RuntimeError):
        for _ in run_plan(load_plan(make_plan()), store, bundle=bundle, data=data):
            pass
    assert store.claims() == [] and store.keys() == set()
    assert len(store.keys("baseline")) == 1  # the baseline was stored before the run failed


RUN_LINE = re.compile(r"^\[\d+/\d+\] .+ \(([0-9a-f]{20})\)$", re.M)


@pytest.mark.heavy_memory(gib=1.6)
@pytest.mark.slow
def test_two_sweeps_on_one_store_share_the_work(tmp_path, tiny_setup):
    """Two real `sweep` processes on one store: every run is computed exactly once, by one of them.

    The first is held (SIGSTOP) while it works on a run, until the second has computed one: on a busy machine
    the second interpreter once started only after the first had done all four runs."""
    bundle, _, make_plan = tiny_setup
    plan_path = make_plan("finetune_batches = 3\nbatch_size = 32")
    keys = _keys(plan_path, bundle)
    store = tmp_path / "shared.sqlite"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "main.py"), "sweep", str(plan_path), "--store", str(store), "--quiet"]

    def start() -> subprocess.Popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def rows(sql: str, pid: int) -> list:
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30) as db:
                return db.execute(sql, (pid,)).fetchall()
        except sqlite3.OperationalError:  # no store or no table yet
            return []

    first = start()
    procs = [first]
    try:
        deadline = time.monotonic() + 120
        while not {k for k, in rows("SELECT key FROM claims WHERE pid = ?", first.pid)} & set(keys):
            assert first.poll() is None, f"the first sweep ended before claiming a run: {first.communicate()[1]}"
            assert time.monotonic() < deadline, "the first sweep claimed no run in 120 s"
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)  # mid-run, its claim committed; far inside its 120 s lease
        procs.append(start())
        deadline = time.monotonic() + 60
        while procs[1].poll() is None and time.monotonic() < deadline and not rows(
                "SELECT key FROM runs WHERE kind = 'run' AND json_extract(extra, '$.pid') = ?", procs[1].pid):
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGCONT)
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    computed = [set(RUN_LINE.findall(out)) for out, _ in outs]
    assert computed[0].isdisjoint(computed[1]), "a run was computed by both sweeps"
    assert computed[0] | computed[1] == set(keys)
    assert computed[0] and computed[1], f"one sweep did all the work: {[len(c) for c in computed]}"
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT key, kind, json_extract(extra, '$.pid') FROM runs").fetchall()
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    by_pid = {p.pid: computed[i] for i, p in enumerate(procs)}
    assert sorted(k for k, kind, _ in rows if kind == "run") == sorted(keys)
    for key, kind, pid in rows:
        assert pid in by_pid, f"row {key} was written by an unknown process {pid}"
        if kind == "run":
            assert key in by_pid[pid]  # the row names the process that printed it as computed
    assert sum(kind == "baseline" for _, kind, _ in rows) == 1
    for out, _ in outs:  # each sweep ranks the whole plan, its own runs and the other's ('2=': tied with the first)
        assert len(re.findall(r"^\d+=?\s+\S+ @ ", out, re.M)) == len(keys)


def test_a_store_written_before_the_typed_values_still_loads(tmp_path):
    """A store written by e48adf0 (RunResult built from 22 positional values, kinds and claim states as text),
    rebuilt from its SQL dump with its header marks: every row loads by keyword, kinds compare as RunKind."""
    from engine.experiments import ClaimStatus, RunKind

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript((Path(__file__).parent / "data" / "store_e48adf0.sql").read_text())
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    store = ResultStore(path)
    run, = store.results()
    base = store.get("baseline-abc")
    assert run.kind == RunKind.RUN and base.kind == RunKind.BASELINE and isinstance(run.kind, str)
    assert (run.key, run.label, run.method, run.ratio, run.guided) == ("0123456789abcdef0123", "l2 @ 0.5", "l2", 0.5,
                                                                      False)
    assert (run.seconds, run.prune_seconds, run.recover_seconds) == (9.0, 0.3, 4.0)
    assert run.steps[0]["top1_after_prune"] == 0.5 and run.notes == ["a note"] and run.extra["arch"] == "sig"
    assert (run.model, run.dataset, run.node, run.threads) == ("demo:resnet", "fashion-mnist", "old-host", 2)
    assert run.metrics.top1 == 0.88 and base.metrics.latency(1) == 2.0 and base.files == {"model": "demo:resnet"}
    assert run.latency_speedup(base) == 2.0
    assert store.claim(run.key, ClaimOwner.here()) == (ClaimStatus.STORED, None)
    again = ResultStore(tmp_path / "new.sqlite")
    again.put(run, ClaimOwner.here())  # written back as it was read
    assert again.get(run.key).to_row() == run.to_row()
