"""Where a plan's runs execute: here, one after another (LocalExecutor), or on a Ray cluster (RayExecutor).

The runner claims runs in the store, submits them to an executor and writes each Outcome to the store the
moment it arrives; an executor only runs them. Both build the same RunResult from the same seeded
run_pruning, so accuracy, parameters and MACs do not depend on the executor; only the timings do, and each
result records where it was timed (node, device, threads).

On Ray the driver (this process) keeps the SQLite store; the model travels once through Ray's object store
(no shared disk), the dataset spec is resolved on each worker (so a dataset must be reachable at the same
path on every node), pruned model files come back as bytes, and progress comes back through a Ray queue.
"""
from __future__ import annotations

import gc
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Iterator

import torch

from engine import versions
from engine.budget import BudgetError, guarded, parse_limit
from engine.config import PruneConfig
from engine.errors import Cancelled, UserError, first_line, resource_error
from engine.events import CancelToken, Progress
from engine.outputs import process_temp_dir
from engine.experiments.plans import Plan, Recovery
from engine.experiments.store import RunKind, RunResult
from engine.pruning import RunDone

MEMORY_HINT = ", leave large layers alone ([prune] ignored_layers)"
CANCEL_GRACE_S = 5.0  # a cancelled Ray run gets this long to stop by itself before its worker is killed
PROGRESS_EVERY_S = 0.25  # at most this often a remote run sends its progress to the driver
RAY_PIN = "ray==2.60.0"


@dataclass(frozen=True)
class Job:
    """One claimed run: its place in the plan, key, label and configuration."""

    index: int
    total: int
    key: str
    label: str
    cfg: PruneConfig
    rec: Recovery
    guided: bool


@dataclass(frozen=True)
class PlannedRun:
    """One run a plan asks for, before it is claimed: its key, label, configuration and recovery."""

    key: str
    label: str
    cfg: PruneConfig
    rec: Recovery
    guided: bool = False  # its layer ratios come from the plan's sensitivity scan

    def job(self, index: int, total: int) -> Job:
        """The claimed run, numbered `index` of `total`."""
        return Job(index, total, self.key, self.label, self.cfg, self.rec, self.guided)


class RunStatus(StrEnum):
    """How a run ended."""

    DONE = "done"  # a result to store
    FAILED = "failed"  # out of memory, or its Ray worker died: this run fails, the plan goes on
    REFUSED = "refused"  # bad input (a UserError on a Ray worker): the plan stops with its one line


@dataclass(frozen=True)
class Started:
    """A run began on `node` (a Ray worker picked it up; `attempt` > 1 after a worker died)."""

    job: Job
    node: str
    pid: int
    attempt: int = 1


@dataclass(frozen=True)
class Outcome:
    """A run ended: its result (not yet stored), or why it failed (`failed`, a one-line reason)."""

    job: Job
    result: RunResult | None = None
    failed: str = ""


@dataclass(frozen=True)
class RemoteReply:
    """What a Ray worker sends back for one run: the result and its model files (name -> (relative path,
    bytes)), or why it failed (`reason`)."""

    status: RunStatus
    result: RunResult | None = None
    files: dict = field(default_factory=dict)
    reason: str = ""


@dataclass(frozen=True)
class RemoteEvent:
    """An item of the Ray progress queue: a run started on `node` (`progress` None) or its progress."""

    key: str
    node: str
    pid: int = 0
    progress: Progress | None = None

    def wire(self) -> tuple:
        """Builtins only, so the queue's actor never imports PruneLab and torch to hold it (it did, and took
        310 MiB of the cluster's memory beside each plan; now under 45)."""
        p = self.progress
        return self.key, self.node, self.pid, None if p is None else (str(p.phase), p.done, p.total, p.message,
                                                                      p.eta_s)

    @classmethod
    def from_wire(cls, item: tuple) -> RemoteEvent:
        key, node, pid, progress = item
        return cls(key, node, pid, None if progress is None else Progress(*progress))


# ----------------------------------------------------------------------------- results and where they were timed


def device_text(device: str) -> str:
    """'cpu (x86_64, 2 threads)' or 'cuda (NVIDIA H200)': the device a run used, as stored."""
    import platform

    if device.startswith("cuda") and torch.cuda.is_available():  # "cuda" or "cuda:N"
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def timed_threads(done_metrics: Any, device: str) -> int:
    """CPU threads the latency was measured with (from the metrics), else torch's count; 0 on a GPU."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return 0
    for entry in (getattr(done_metrics, "latency_ms", None) or {}).values():
        if isinstance(entry, dict) and entry.get("threads"):
            return int(entry["threads"])
    return torch.get_num_threads()


def result_of(done: RunDone, job: Job, plan: Plan, executor: str) -> RunResult:
    """The stored record of a finished run, stamped with where it was timed."""
    cfg = job.cfg
    steps = [s.metrics.to_json(detail=False) | {"step": s.step, "ratio": s.ratio,
                                                "top1_after_prune": s.top1_after_prune,
                                                "top1_after_bn": s.top1_after_bn} for s in done.steps]
    recover = sum(s.recover_seconds for s in done.steps)
    return RunResult(key=job.key, kind=RunKind.RUN, label=job.label, method=cfg.method, ratio=cfg.pruning_ratio,
                     target_speedup=cfg.target_speedup, guided=job.guided, config=cfg.to_json(), metrics=done.after,
                     steps=steps, seconds=done.seconds, prune_seconds=done.prune_seconds, recover_seconds=recover,
                     device=device_text(cfg.device), versions=versions(), files=dict(done.files),
                     notes=list(done.notes), model=plan.model, dataset=plan.data,
                     created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                     extra={"recovery": job.rec.name, "recovery_summary": job.rec.summary, "plan": plan.name,
                            "latency_speedup": done.paired,  # paired original/pruned timing (None: not measured)
                            "onnxruntime_speedup": done.onnxruntime,  # the same in onnxruntime (None: not measured)
                            "latency_target": done.latency_target,  # a target latency's plan and check (or None)
                            "executor": executor},
                     node=socket.gethostname(), threads=timed_threads(done.after, cfg.device))


def _run_one(bundle, data, job: Job, plan: Plan, baseline, out_dir: Path | None, limit: int | None,
             cancel: CancelToken, executor: str, models: dict | None = None) -> Iterator:
    """run_pruning under the memory budget; yields its events and returns the RunResult, or a failure
    reason (str) when memory ran out. Shared by both executors, so both compute the same thing.

    The result records the pruned model's architecture signature (extra["arch"]); with `models`, the first
    pruned model of each signature is kept there (on the CPU) for the plan's final comparison round."""
    pruned = None
    try:
        pruned = yield from guarded(run_pruning_events(bundle, data, job.cfg, cancel, out_dir, baseline), limit,
                                    MEMORY_HINT)
        result = result_of(pruned.run, job, plan, executor)
        result.extra["arch"] = pruned.run.arch
        if models is not None and pruned.run.arch not in models:
            models[pruned.run.arch] = pruned.bundle.model.cpu().eval()
        return result
    except Exception as exc:  # noqa: BLE001 - out of memory (budget, CUDA) fails this run only
        reason = exc if isinstance(exc, BudgetError) else resource_error(exc)
        if reason is None:
            raise
        return str(reason)
    finally:
        del pruned
        gc.collect()  # free the pruned copy, its optimiser and activations before the next run


def run_pruning_events(bundle, data, cfg: PruneConfig, cancel: CancelToken, out_dir, baseline) -> Iterator:
    """engine.pruning.run_pruning (imported late: it pulls in torch-pruning); returns its `Pruned`."""
    from engine.pruning import run_pruning

    return run_pruning(bundle, data, cfg, cancel, out_dir=out_dir, baseline=baseline)


# ----------------------------------------------------------------------------- local


class LocalExecutor:
    """Runs here, in this process, one at a time (a run claimed is a run started)."""

    name = "local"
    capacity = 1

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._queue: list[Job] = []
        self.models: dict = {}  # architecture signature -> a pruned model of it, for the final round

    def open(self, plan: Plan, bundle, data, baseline, models_dir: Path | None) -> None:
        """Remember what every run shares."""
        self.plan, self.bundle, self.data, self.baseline, self.models_dir = plan, bundle, data, baseline, models_dir

    @property
    def running(self) -> int:
        """Runs submitted and not ended."""
        return len(self._queue)

    def submit(self, job: Job) -> None:
        """Queue a claimed run (it starts when events() is drained)."""
        self._queue.append(job)

    def events(self, cancel: CancelToken) -> Iterator:
        """Run the next queued run: its engine events, then its Outcome."""
        job = self._queue[0]
        out_dir = self.models_dir / job.key if self.models_dir else None
        got = yield from _run_one(self.bundle, self.data, job, self.plan, self.baseline.metrics, out_dir,
                                  self.limit, cancel, self.name,
                                  # saved models are rebuilt for the final round: none is held in memory
                                  self.models if self.models_dir is None else None)
        self._queue.pop(0)  # (kept on an exception, so the runner releases its claim)
        yield Outcome(job, failed=got) if isinstance(got, str) else Outcome(job, result=got)

    def keys(self) -> list[str]:
        """Keys of the runs submitted and not ended."""
        return [j.key for j in self._queue]

    def in_flight(self) -> tuple[str, ...]:
        """Labels of the runs submitted and not ended."""
        return tuple(j.label for j in self._queue)

    def close(self) -> None:
        """Nothing to release."""


# ----------------------------------------------------------------------------- Ray (worker side)

_WORKER_DATA: dict = {}  # per worker process: the dataset of the last spec, so its next run skips loading it


def worker_node() -> str:
    """'host (ip)' of the Ray node this worker runs on, for messages."""
    try:
        import ray

        return f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"
    except Exception:  # noqa: BLE001 - only for a message
        return socket.gethostname()


def _worker_data(plan: Plan, bundle):
    """Resolve the plan's dataset spec on this worker, once per process; a dataset missing here names the
    node and the path, since every node must reach it at the same path."""
    from engine.data import load_dataset
    from engine.inputs import load_inputs

    key = (plan.data, plan.input_shape, plan.seed, plan.mean, plan.std)
    if key not in _WORKER_DATA:
        _WORKER_DATA.clear()
        try:
            data = load_dataset(plan.data, input_shape=plan.input_shape, seed=plan.seed)
        except (UserError, OSError) as exc:
            raise UserError(f"Ray worker on node {worker_node()} cannot load the dataset {plan.data!r}: {exc}; "
                            "every node must reach the dataset at the same path (docs/cluster.md)") from None
        _WORKER_DATA[key] = load_inputs(bundle, data, mean=plan.mean, std=plan.std).data
    return _WORKER_DATA[key]


RUN_FOLDER_PREFIX = "prunelab-ray-"  # + host.pid.random: a run's model files on a Ray worker


def remote_run(bundle, plan: Plan, job: Job, baseline, queue, limit: int | None, threads: int = 0) -> RemoteReply:
    """One run on a Ray worker: RemoteEvents go to `queue`, the result (and model files, as bytes) back to
    the driver, which stores it. A UserError comes back REFUSED with its line, so the driver can say it plainly."""
    node = worker_node()
    if threads:
        # the driver's thread count: fine-tuning's float sums depend on it, so the same count gives the same
        # accuracy as a run on the driver (Ray starts workers with one thread per reserved CPU)
        torch.set_num_threads(threads)
    queue.put(RemoteEvent(job.key, node, os.getpid()).wire())
    try:
        data = _worker_data(plan, bundle)
        last = 0.0
        # a worker killed mid-run (cancelled, out of memory) never removes its folder: the next run on the
        # node removes those of workers that are gone
        tmp = process_temp_dir(RUN_FOLDER_PREFIX)
        try:
            out_dir = tmp / job.key if plan.save_models else None
            runner = _run_one(bundle, data, job, plan, baseline, out_dir, limit or parse_limit(None), CancelToken(),
                              "ray")
            while True:
                try:
                    ev = next(runner)
                except StopIteration as stop:
                    got = stop.value
                    break
                now = time.monotonic()
                if isinstance(ev, Progress) and (now - last >= PROGRESS_EVERY_S or ev.done >= ev.total):
                    last = now
                    queue.put(RemoteEvent(job.key, node, progress=ev).wire())
            if isinstance(got, str):
                return RemoteReply(RunStatus.FAILED, reason=got)
            files = {name: (Path(p).relative_to(out_dir).as_posix(), Path(p).read_bytes())
                     for name, p in got.files.items() if out_dir is not None and Path(p).is_file()}
            return RemoteReply(RunStatus.DONE, got, files)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except UserError as exc:
        return RemoteReply(RunStatus.REFUSED, reason=str(exc))


# ----------------------------------------------------------------------------- Ray (driver side)


def import_ray():
    """The ray module, or a UserError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError(f"the Ray executor needs Ray; install it with `pip install {RAY_PIN}` (or run with "
                        "--executor local)") from None
    return ray


CONNECT_TIMEOUT_S = 30.0  # the longest a sweep waits for a Ray head to answer (sweep --connect-timeout)


def head_address(address: str) -> tuple[str, int]:
    """(host, port) of the Ray head `address` names: HOST:PORT, ray://HOST:PORT, or "auto" (the cluster this
    machine's RAY_ADDRESS or last `ray start` names); a UserError for anything else."""
    text = address.strip()
    if text == "auto":
        from ray._private.services import get_ray_address_from_environment

        found = get_ray_address_from_environment("auto", None)
        if not found:
            raise UserError("--address auto found no Ray cluster on this machine; start one with `ray start --head` "
                            "or give HOST:PORT of its head")
        text = found
    host, _, port = text.split("://", 1)[-1].rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--address {address!r} is not HOST:PORT of a Ray head (e.g. 10.0.0.5:6379), or \"auto\"")
    return host, int(port)


def wait_for_head(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Return once something listens at the head's address; a UserError after `timeout` seconds.

    Ray itself retries an absent head for minutes, with Ctrl-C unheard while its C++ client waits, so the
    port is tried here first: each try is short and the pauses between them are Python sleeps (Ctrl-C stops
    them at once). A head that is starting may refuse for a moment, hence the retries until the deadline."""
    host, port = head_address(address)
    deadline = time.monotonic() + timeout
    why = "no answer"
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.05, min(left, 1.0))):
                return
        except socket.gaierror:
            raise UserError(f"cannot reach the Ray cluster at {address}: unknown host {host!r}; give HOST:PORT of "
                            "its head (`ray start --head` prints it), or run with --executor local") from None
        except OSError as exc:
            why = "connection refused" if isinstance(exc, ConnectionRefusedError) else (exc.strerror or "no answer")
        if deadline - time.monotonic() <= 0:
            break
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
    raise UserError(f"no Ray head answered at {address} within {timeout:g} s ({why}); start one with `ray start "
                    "--head` there, raise --connect-timeout, or run with --executor local")


def connect(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Join the Ray cluster at `address` ("auto": the one on this machine), or start a Ray instance here
    when None; True when this call did so (False: this process was connected already). Ray's own log lines
    go to the log file, not the terminal."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    import logging

    import engine

    kwargs: dict = {"logging_level": logging.WARNING, "log_to_driver": False,
                    # the engine package travels to every worker: no shared disk or install of PruneLab there
                    "runtime_env": {"py_modules": [str(Path(engine.__file__).parent)]}}
    if address:
        wait_for_head(address, timeout)
        kwargs["address"] = address
        # the head answered the port: one attempt of Ray's own (not its twenty) if it is not a Ray head after all
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "1")
        _token_auth_when_available()
    else:  # "local": a new instance, never a stale one named in /tmp/ray by a cluster that is gone
        kwargs["address"] = "local"
        kwargs["include_dashboard"] = False
    try:
        with _stderr_to_log():
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray instance"
        raise UserError(f"cannot reach the Ray cluster at {where}: {first_line(exc)}; start one with "
                        "`ray start --head` and copy its token here (`ray get-auth-token` there, RAY_AUTH_TOKEN "
                        "here; docs/cluster.md), or run with --executor local") from None
    return True


@contextmanager
def _stderr_to_log():
    """Point file descriptor 2 at the log file while Ray connects: its C++ client writes its retries there,
    past Python's sys.stderr, and the user should see PruneLab's one line only."""
    from engine.paths import log_dir

    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / "ray.log", "ab")
    except OSError:  # no log folder: Ray's lines stay where they were
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(log.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        log.close()


class RayExecutor:
    """Runs on a Ray cluster (or a Ray instance started here when no address is given), as many at once as
    the cluster has room for (its CPUs / cpus_per_run, GPUs / gpus_per_run)."""

    name = "ray"

    def __init__(self, address: str | None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0,
                 limit: int | None = None) -> None:
        self.address, self.cpus, self.gpus, self.limit = address, cpus_per_run, gpus_per_run, limit
        self.capacity = 1
        self._refs: dict = {}  # object ref -> Job
        self._started = False
        self._queue = None
        self._attempts: dict[str, int] = {}
        self.models: dict = {}  # pruned models stay on the workers; the final round rebuilds saved ones

    def open(self, plan: Plan, bundle, data, baseline, models_dir: Path | None) -> None:
        """Connect (or start a local Ray), put the model in the object store, make the progress queue."""
        ray = import_ray()
        from ray.util.queue import Queue

        self._started = connect(self.address)  # (False when the sweep connected first: Ray ends with it)
        res = ray.cluster_resources()
        slots = [res.get("CPU", 0) / self.cpus] if self.cpus else []
        if self.gpus:
            if not res.get("GPU"):
                raise UserError(f"the Ray cluster has no GPUs, but --gpus-per-run is {self.gpus:g}; use "
                                "--gpus-per-run 0 or add GPU nodes")
            slots.append(res["GPU"] / self.gpus)
        self.capacity = max(1, int(min(slots)))
        self.plan, self.models_dir = plan, models_dir
        _pickle_user_code_by_value(bundle)
        self._model = ray.put(bundle)  # once; every run reads it from the object store
        self._baseline = baseline.metrics
        self._queue = Queue(actor_options={"num_cpus": 0})
        self._task = ray.remote(remote_run).options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=3)
        self._ray = ray
        self._threads = torch.get_num_threads()

    @property
    def running(self) -> int:
        """Runs submitted and not ended."""
        return len(self._refs)

    def keys(self) -> list[str]:
        """Keys of the runs submitted and not ended."""
        return [j.key for j in self._refs.values()]

    def in_flight(self) -> tuple[str, ...]:
        """Labels of the runs submitted and not ended, those already running first."""
        jobs = sorted(self._refs.values(), key=lambda j: (j.key not in self._attempts, j.index))
        return tuple(j.label for j in jobs)

    def submit(self, job: Job) -> None:
        """Send a claimed run to the cluster."""
        ref = self._task.remote(self._model, self.plan, job, self._baseline, self._queue, self.limit, self._threads)
        self._refs[ref] = job

    def events(self, cancel: CancelToken) -> Iterator:
        """Progress of the runs in flight until at least one ends, then every Outcome ready."""
        ray = self._ray
        while True:
            yield from self._drain()
            if cancel.cancelled:
                yield from self._stop()
                cancel.check()
            ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=0.2)
            if ready:
                ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
                yield from self._drain()
                for ref in ready:
                    yield self._outcome(ref)
                return

    def _drain(self) -> Iterator:
        by_key = {j.key: j for j in self._refs.values()}
        for wired in self._queue.get_nowait_batch(self._queue.qsize()) if self._queue.qsize() else ():
            item = RemoteEvent.from_wire(wired)
            job = by_key.get(item.key)
            if job is None:
                continue
            if item.progress is None:  # a second start of a key: Ray retried it after its worker died
                self._attempts[job.key] = self._attempts.get(job.key, 0) + 1
                yield Started(job, item.node, item.pid, self._attempts[job.key])
            else:
                ev = item.progress
                yield Progress(ev.phase, ev.done, ev.total, f"{job.label} on {item.node}: {ev.message}", ev.eta_s)

    def _outcome(self, ref) -> Outcome:
        ray = self._ray
        job = self._refs.pop(ref)
        try:
            out = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            raise Cancelled("cancelled by the user") from None
        except ray.exceptions.RayTaskError as exc:  # a bug in the run: stop the plan, as it would here
            raise RuntimeError(f"run {job.label} failed on the Ray cluster: {exc}") from None
        except ray.exceptions.RayError as exc:  # the worker or node died more often than Ray retries
            return Outcome(job, failed=f"the Ray worker died ({type(exc).__name__}); a re-run retries it")
        if out.status is RunStatus.REFUSED:
            raise UserError(out.reason)
        if out.status is RunStatus.FAILED:
            return Outcome(job, failed=out.reason)
        return Outcome(job, result=self._write_files(out.result, out.files))

    def _write_files(self, result: RunResult, files: dict) -> RunResult:
        """The run's model files, written whole beside the driver's store (workers share no disk with it)."""
        if not files or self.models_dir is None:
            result.files = {}
            return result
        from engine.outputs import atomic_dir

        final = self.models_dir / result.key
        with atomic_dir(final) as temp:
            for name, (rel, blob) in files.items():
                (temp / rel).parent.mkdir(parents=True, exist_ok=True)
                (temp / rel).write_bytes(blob)
        result.files = {name: str(final / rel) for name, (rel, _) in files.items()}
        return result

    def _stop(self) -> Iterator:
        """Cancel the runs in flight (ray.cancel); runs that finish meanwhile still come out to be stored."""
        ray = self._ray
        refs = list(self._refs)
        for ref in refs:
            ray.cancel(ref)
        done, left = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
        for ref in left:
            ray.cancel(ref, force=True)
        for ref in done:
            try:
                out = ray.get(ref)
            except ray.exceptions.RayError:
                self._refs.pop(ref, None)
                continue
            if isinstance(out, RemoteReply) and out.status is RunStatus.DONE:
                yield self._outcome(ref)
        self._refs.clear()

    def close(self) -> None:
        """Forget the queue and the model; shut Ray down when this executor started it."""
        ray = getattr(self, "_ray", None)
        if ray is None:
            return
        for ref in list(self._refs):
            ray.cancel(ref, force=True)
        self._refs.clear()
        if self._queue is not None:
            try:
                ray.kill(self._queue.actor)
            except Exception:  # noqa: BLE001 - the cluster may be gone already
                pass
        self._model = None
        if self._started:
            ray.shutdown()


def _token_auth_when_available() -> None:
    """Ray 2.5x+ heads require a token by default, yet a driver given an explicit address only sends one when
    told to: with a token at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) and no mode
    chosen, choose token mode, so `--address HOST:PORT` works as `ray start` prints it."""
    if os.environ.get("RAY_AUTH_MODE"):
        return
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or Path(path).is_file():
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray reads its configuration once, at import: make it look again (what `ray start` does)
            from ray._raylet import Config

            Config.initialize("")
        except (ImportError, AttributeError):
            pass


def _pickle_user_code_by_value(bundle) -> None:
    """A model class from the user's own file exists only on this machine: send its code with the model."""
    import sys

    from ray import cloudpickle

    for cls in type(bundle.model).__mro__:
        module = sys.modules.get(cls.__module__)
        if module is not None and cls.__module__.startswith("prunelab_user_"):
            cloudpickle.register_pickle_by_value(module)


def make_executor(plan: Plan, limit: int | None, explicit_limit: int | None):
    """The executor the plan names ([plan] executor, or the sweep's --executor)."""
    if plan.executor == "ray":
        return RayExecutor(plan.address, plan.cpus_per_run, plan.gpus_per_run, explicit_limit)
    return LocalExecutor(limit)
