"""The Ray executor against a real Ray cluster on 127.0.0.1 (a head with two worker slots, started and stopped
here): the same results as the local executor except timings, a killed driver resumes, a killed worker's
run is retried, cancel stops the runs in flight and keeps the finished ones; and the executor's flags and
plan keys. Ray failing to start fails the tests (set PRUNELAB_RAY_OPTIONAL=1 to skip them instead).

What costs time here is starting processes (each Ray worker imports torch) and loading data, not the runs:
every plan reads a Fashion-MNIST of 240 images written once (each worker loads it once and keeps it), and
only the killed driver is a process of its own: this process resumes its plan, joined to the cluster from
then on, so the next tests find its workers warm; the tests that kill a worker come last."""
from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from shared_fixtures import ROOT, write_fake_fashion
from cli.main import main as cli_main
from engine.errors import Cancelled, UserError
from engine.events import CancelToken
from engine.experiments import (PlanDone, PlanRunDone, PlanRunStarted, ResultStore, load_plan, parse_plan,
                                run_plan)
from engine.models import DemoResNet, ModelBundle, save_model
from tests.test_bad_inputs import run_in_process

PLAN = """
[plan]
name = "ray"
save_models = {save}
[model]
source = "{model}"
[data]
spec = "fashion-mnist:{data}"
[sweep]
methods = ["l1", "l2"]
ratios = [0.3, 0.5]
[prune]
eval_limit = 128
measure_speed = false
round_to = 4
bn_batches = 2
[[recovery]]
name = "ft"
finetune_batches = {batches}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cannot_start(why: str):
    if os.environ.get("PRUNELAB_RAY_OPTIONAL") == "1":
        pytest.skip(f"Ray cannot start here: {why}")
    pytest.fail(f"Ray cannot start here, so the Ray executor is untested: {why} (set PRUNELAB_RAY_OPTIONAL=1 to "
                "skip instead)")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`ray start --head --block` on 127.0.0.1 with 2 CPUs; its process group is ended after the module, and
    its session folder (sockets, logs) removed: in /tmp/ray one stayed behind per run."""
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        _cannot_start(str(exc))
    port = _free_port()
    ray_bin = Path(sys.executable).parent / "ray"
    log = tmp_path_factory.mktemp("ray") / "head.log"
    # a short path: the session's sockets live below it, and a socket's path may not exceed 107 bytes
    temp = Path(tempfile.mkdtemp(prefix="plt-ray-"))
    with open(log, "wb") as out:  # SIGINT ends it (see _stop): a shell starts a background job with SIGINT
        # ignored, and an ignored signal stays ignored across exec, so the head is started with it restored
        head = subprocess.Popen([sys.executable, "-c", RESTORE_SIGINT, str(ray_bin), "start", "--head", "--block",
                                 "--num-cpus=2", "--num-gpus=0", f"--port={port}", "--node-ip-address=127.0.0.1",
                                 "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=tmp_path_factory.getbasetemp())
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    ready = False
    while time.monotonic() < deadline and head.poll() is None:
        if b"Ray runtime started" in log.read_bytes():
            ready = True
            break
        time.sleep(0.3)
    if not ready:
        _stop(head, temp)
        _cannot_start(log.read_text(errors="replace")[-2000:])
    yield address
    _stop(head, temp)


RESTORE_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execv(sys.argv[1], sys.argv[1:])")


def _stop(head: subprocess.Popen, temp: Path) -> None:
    """The head, its daemons and workers: the group `ray start` leads. SIGINT, since on SIGTERM the node drains
    for up to 30 s (this fixture's teardown waited 5 s, then killed); it ends in about 1.3 s."""
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGINT)
        try:
            head.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def driver(cluster):
    """This process joined to the cluster once, so its tests share warm workers (the CLI test joins alone)."""
    import ray

    from engine.experiments.executors import connect

    assert connect(cluster)
    yield cluster
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model file, a Fashion-MNIST of 240 training and 120 test images (the whole set took the driver,
    its workers and the cluster to 4.8 GiB together, and each worker seconds to load) and that data loaded
    here, shared by the module's tests."""
    from engine.data import load_dataset

    folder = tmp_path_factory.mktemp("model")
    data = load_dataset(f"fashion-mnist:{write_fake_fashion(folder / 'fashion', n_train=240, n_test=120)}")
    torch.manual_seed(0)
    bundle = ModelBundle(DemoResNet(widths=(4, 8, 16)).eval(), "tiny", "demo:resnet", (1, 28, 28), 10, data.norm,
                         data.class_names, arch_kwargs={"widths": [4, 8, 16]})
    path = save_model(bundle, folder / "tiny.pt")
    return path, bundle, data


def plan_file(tmp_path: Path, model: Path, save: bool = False, batches: int = 3, extra: str = "") -> Path:
    data = Path(model).parent / "fashion"  # the `tiny` fixture's, beside its model
    path = tmp_path / "plan.toml"
    path.write_text(PLAN.format(model=model, save=str(save).lower(), batches=batches, data=data) + extra)
    return path


def ray_plan(tmp_path, model, address, **kw):
    plan = load_plan(plan_file(tmp_path, model, **kw))
    plan.executor, plan.address = "ray", address
    return plan


def figures(result) -> tuple:
    m = result.metrics
    return (m.top1, m.top5, m.f1_macro, m.params, m.nonzero_params, m.macs, m.size_bytes)


# ----------------------------------------------------------------------------- the cluster


def test_driver_killed_mid_plan_resumes_on_the_cluster(tmp_path, cluster, tiny, request):
    model, _, _ = tiny
    path = plan_file(tmp_path, model, batches=20)
    store = tmp_path / "s.sqlite"
    args = ["sweep", str(path), "--store", str(store), "--executor", "ray", "--address", cluster, "--quiet"]
    # one run at a time while the first driver lives: one Ray worker beside it, not two (the test's processes
    # held 2.0 GiB together with two); the resuming driver asks for one CPU a run, and its runs' keys are the same
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *args, "--cpus-per-run", "2"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # a wait, not a timing: the first run takes minutes on a busy machine
    stored = 0
    while time.monotonic() < deadline and proc.poll() is None and not stored:
        time.sleep(0.2)
        if store.exists():
            try:
                with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                    stored = db.execute("SELECT COUNT(*) FROM runs WHERE kind = 'run'").fetchone()[0]
            except sqlite3.Error:
                pass
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {r.key for r in ResultStore(store, read_only=True).results()}
    assert 1 <= len(before) < 4
    # a new driver resumes: the command line in this process, joined to the cluster now (the `driver` fixture,
    # whose workers the next tests reuse)
    request.getfixturevalue("driver")
    stdout = io.StringIO()
    code, stderr = run_in_process(args, tmp_path, dict(os.environ), stdout)
    assert code == 0, stderr[-2000:]
    assert f"{4 - len(before)} runs done, {len(before)} already stored" in stdout.getvalue()
    final = ResultStore(store, read_only=True)
    keys = [r.key for r in final.results()]
    assert len(keys) == len(set(keys)) == 4 and before <= set(keys) and final.claims() == []


def test_ray_results_equal_local_and_files_come_back(tmp_path, driver, tiny):
    model, bundle, data = tiny
    local_plan = load_plan(plan_file(tmp_path, model))
    local = [ev for ev in run_plan(local_plan, ResultStore(tmp_path / "local.sqlite"), bundle=bundle, data=data)][-1]
    plan = ray_plan(tmp_path, model, driver, save=True)
    store = ResultStore(tmp_path / "ray.sqlite")
    events = list(run_plan(plan, store, bundle=bundle, data=data))
    done = events[-1]
    assert isinstance(done, PlanDone) and done.ran == 4 and not done.failed
    started = [ev for ev in events if isinstance(ev, PlanRunStarted)]
    assert len({ev.key for ev in started}) == 4 and all(ev.node and ev.pid != os.getpid() for ev in started)
    assert max(len(ev.running) for ev in started) == 2  # two runs in flight on two CPUs
    by_key = {r.key: r for r in local.results}
    assert set(by_key) == {r.key for r in done.results}  # same keys: either executor resumes the other's plan
    for r in done.results:
        assert figures(r) == figures(by_key[r.key]), r.label
        assert r.steps[-1]["top1"] == by_key[r.key].steps[-1]["top1"]
        assert r.extra["executor"] == "ray" and by_key[r.key].extra["executor"] == "local"
        assert r.node == socket.gethostname() and r.threads == torch.get_num_threads()  # the driver's count
        model_file = Path(r.files["model"])  # written by the driver beside its store, not on the worker
        assert model_file.is_file() and model_file.parent.parent == tmp_path / "models"
    again = ResultStore(tmp_path / "ray.sqlite", read_only=True).results()
    assert [(r.node, r.threads) for r in again] == [(r.node, r.threads) for r in done.results]


def test_cancel_stops_runs_in_flight_and_keeps_finished_ones(tmp_path, driver, tiny):
    model, bundle, data = tiny
    plan = ray_plan(tmp_path, model, driver, batches=20)
    store = ResultStore(tmp_path / "s.sqlite")
    cancel = CancelToken()
    finished = []
    with pytest.raises(Cancelled):
        for ev in run_plan(plan, store, cancel, bundle=bundle, data=data):
            if isinstance(ev, PlanRunDone):
                finished.append(ev.result.key)
                cancel.cancel()
    stored = {r.key for r in store.results()}
    assert finished and set(finished) <= stored and len(stored) < 4 and store.claims() == []
    time.sleep(2)  # a cancelled run must not complete and appear later
    assert {r.key for r in store.results()} == stored
    done = list(run_plan(plan, store, bundle=bundle, data=data))[-1]
    assert done.skipped == len(stored) and done.ran == 4 - len(stored)


def test_killed_worker_run_is_retried(tmp_path, driver, tiny):
    model, bundle, data = tiny
    plan = ray_plan(tmp_path, model, driver, batches=10)
    killed = None
    events = []
    for ev in run_plan(plan, ResultStore(tmp_path / "s.sqlite"), bundle=bundle, data=data):
        events.append(ev)
        if isinstance(ev, PlanRunStarted) and killed is None:
            killed = ev
            os.kill(ev.pid, signal.SIGKILL)  # a worker process of the cluster this module started
    done = events[-1]
    assert isinstance(done, PlanDone) and done.ran == 4 and not done.failed
    again = [ev for ev in events if isinstance(ev, PlanRunStarted) and ev.key == killed.key and ev.attempt == 2]
    assert again and again[0].pid != killed.pid and "attempt 2" in again[0].message
    assert killed.key in {r.key for r in done.results}


# ----------------------------------------------------------------------------- flags and plan keys (no cluster)


def test_plan_names_the_executor_and_flags_override_it(tmp_path, tiny, monkeypatch):
    model, _, _ = tiny
    plan = load_plan(plan_file(tmp_path, model).with_name("plan.toml"))
    assert plan.executor == "local" and plan.address is None
    text = plan_file(tmp_path, model).read_text().replace('name = "ray"', 'name = "ray"\nexecutor = "ray"\n'
                                                          'address = "10.0.0.5:6379"\ngpus_per_run = 0.5')
    plan = parse_plan(text, tmp_path)
    assert (plan.executor, plan.address, plan.cpus_per_run, plan.gpus_per_run) == ("ray", "10.0.0.5:6379", 1.0, 0.5)
    for bad, words in (('executor = "slurm"', '"local" or "ray"'), ("cpus_per_run = -1", "0 or more"),
                       ("cpus_per_run = 0", "both 0"), ('address = ""', "address is empty")):
        with pytest.raises(UserError, match=words):
            parse_plan(plan_file(tmp_path, model).read_text().replace('name = "ray"', f'name = "ray"\n{bad}'),
                       tmp_path)
    seen = {}
    import engine.experiments as ex

    def fake_run_plan(plan, *args, **kw):
        seen.update(executor=plan.executor, address=plan.address, cpus=plan.cpus_per_run, gpus=plan.gpus_per_run)
        raise UserError("stop here")

    monkeypatch.setattr(ex, "run_plan", fake_run_plan)
    path = plan_file(tmp_path, model)
    store = str(tmp_path / "f.sqlite")
    assert cli_main(["sweep", str(path), "--store", store, "--address", "auto", "--gpus-per-run", "1"]) == 2
    assert seen == {"executor": "ray", "address": "auto", "cpus": 1.0, "gpus": 1.0}
    assert cli_main(["sweep", str(path), "--store", store, "--executor", "local", "--cpus-per-run", "2"]) == 2
    assert cli_main(["sweep", str(path), "--store", store, "--executor", "ray", "--cpus-per-run", "0"]) == 2


def test_missing_dataset_on_a_worker_names_the_node_and_path(tmp_path, tiny):
    from engine.experiments.executors import _worker_data

    _, bundle, _ = tiny
    text = plan_file(tmp_path, tiny[0]).read_text()
    plan = parse_plan(text.replace(text.split("spec = ", 1)[1].split("\n", 1)[0], f'"imagefolder:{tmp_path}/nowhere"'),
                      tmp_path)
    with pytest.raises(UserError, match=rf"node {socket.gethostname()}.*nowhere.*every node"):
        _worker_data(plan, bundle)


def test_progress_travels_as_builtins_only():
    """The progress queue's actor holds what remote runs put in it: builtins only, or it imports PruneLab and
    torch to hold them (310 MiB on the cluster beside every plan)."""
    from engine.events import Progress
    from engine.experiments import RemoteEvent

    def builtins_only(value) -> bool:
        if isinstance(value, tuple):
            return all(builtins_only(v) for v in value)
        return value is None or type(value) in (str, int, float, bool)

    for event in (RemoteEvent("k", "node", 42),
                  RemoteEvent("k", "node", progress=Progress("finetune", 3, 9, "m", 1.5))):
        wired = event.wire()
        assert builtins_only(wired), wired
        assert RemoteEvent.from_wire(wired) == event


def test_a_killed_workers_run_folder_is_removed_by_the_next_run_on_its_node(tmp_path, monkeypatch):
    """A worker killed mid-run never removes its folder; the next run on the node removes it, and no folder
    PruneLab did not make, nor a live worker's."""
    from engine.experiments.executors import RUN_FOLDER_PREFIX
    from engine.outputs import HOST, process_temp_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"{RUN_FOLDER_PREFIX}{HOST}.{gone.pid}.abc"
    live = tmp_path / f"{RUN_FOLDER_PREFIX}{HOST}.{os.getppid()}.def"
    foreign = [tmp_path / f"{RUN_FOLDER_PREFIX}notapid-x", tmp_path / f"other-{HOST}.{gone.pid}.x"]
    for folder in (dead, live, *foreign):
        folder.mkdir()
    mine = process_temp_dir(RUN_FOLDER_PREFIX)
    assert not dead.exists() and live.exists() and all(f.exists() for f in foreign)
    assert mine.parent == tmp_path and mine.name.startswith(f"{RUN_FOLDER_PREFIX}{HOST}.{os.getpid()}.")
