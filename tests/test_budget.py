"""The memory budget: a job that grows past it stops alone, with one line; the process goes on."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from engine.budget import BudgetError, guarded, parse_limit, rss_bytes, total_memory
from engine.errors import UserError
from engine.events import Progress
from engine.models import DemoResNet, ModelBundle

ROOT = Path(__file__).resolve().parents[1]
CHUNK = 32 * 2 ** 20  # bytes per allocation: small steps, so the watchdog's exception lands between them

HUNGRY_MODEL = '''
import torch
import torch.nn as nn


class Hungry(nn.Module):
    """Fine for one image; a batch makes it hoard memory, 32 MiB at a time, up to 8 GiB."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)
        self.hoard = []

    def forward(self, x):
        if x.shape[0] > 1:
            for _ in range(256):
                self.hoard.append(torch.ones(8 * 2 ** 20))
        return self.fc(self.conv(x).mean((2, 3)))
'''


def hoarding_job(steps: int = 200):
    """Yields progress, then keeps allocating (as torch-pruning's tracing does, with no yield in between)."""
    hoard = []
    yield Progress("trace", 0, 1, "building the dependency graph")
    for _ in range(steps):
        hoard.append(torch.ones(CHUNK // 4))
    yield Progress("trace", 1, 1, "done")


def test_limits_parse_and_refuse_nonsense():
    assert parse_limit("1500M") == 1500 * 2 ** 20
    assert parse_limit("2G") == 2 * 2 ** 30
    assert parse_limit(3 * 2 ** 30) == 3 * 2 ** 30
    assert parse_limit("50%") == int(total_memory() * 0.5)
    assert parse_limit(None) == int(total_memory() * 0.7)
    for bad in ("lots", "12Q", "0%", "150%", "1M", "-5G", "nan"):
        with pytest.raises(UserError):
            parse_limit(bad)


def test_a_job_past_its_budget_stops_with_one_line_and_frees_its_memory():
    base = rss_bytes()
    limit = base + 400 * 2 ** 20
    seen = []
    with pytest.raises(BudgetError) as info:
        for event in guarded(hoarding_job(), limit):
            seen.append(event.phase)
    message = str(info.value)
    assert "\n" not in message and message.startswith("the trace phase reached the memory limit")
    assert "--batch-size" in message and "--memory-limit" in message
    assert seen == ["trace"]  # stopped in the middle of the phase that has no cancellation point
    assert rss_bytes() < base + 200 * 2 ** 20  # the hoard is gone and its pages went back to the system
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:  # no second exception is pending for this thread
        pass
    assert not [t for t in threading.enumerate() if t.name == "prunelab-memory-watchdog"]


SWALLOW_CHUNKS = 16  # 512 MiB: past the test's 300 MiB margin; 40 chunks took the test process to 2.2 GiB


def swallowing_job(bare: bool):
    """A job whose own error handling catches everything around its allocations (as torch-pruning's
    tracing does with a bare except, and PruneLab's ONNX export with `except Exception`). Past its
    allocations it goes on working (sleeping) for 1 s without allocating, so a watchdog slow to get
    a CPU on a busy machine still sees the limit passed while the job runs."""
    hoard = []
    yield Progress("export", 0, 1, "")
    for i in range(SWALLOW_CHUNKS + 100):
        try:
            if i < SWALLOW_CHUNKS:
                hoard.append(torch.ones(CHUNK // 4))
            else:
                time.sleep(0.01)
        except Exception:  # noqa: BLE001
            pass
        except BaseException:  # noqa: B036 - the bare-except case
            if not bare:
                raise
    yield Progress("export", 1, 1, "")


@pytest.mark.parametrize("bare", [False, True])
def test_a_job_that_catches_everything_is_still_stopped(bare):
    # `except Exception` cannot catch the watchdog's exception; a bare except can, and is stopped at its next event
    limit = rss_bytes() + 300 * 2 ** 20
    with pytest.raises(BudgetError, match="the export phase reached the memory limit"):
        for _ in guarded(swallowing_job(bare), limit):
            pass


def test_a_job_within_its_budget_is_untouched():
    events = list(guarded(hoarding_job(steps=3), rss_bytes() + 2 * 2 ** 30))
    assert [e.done for e in events] == [0, 1]


def test_a_budget_below_what_is_already_used_is_refused_at_once():
    with pytest.raises(UserError, match="already uses"):
        next(guarded(hoarding_job(), 64 * 2 ** 20))


@pytest.fixture
def hungry_code(tmp_path) -> str:
    path = tmp_path / "hungry.py"
    path.write_text(HUNGRY_MODEL)
    return f"{path}:Hungry"


def test_cli_prune_past_the_budget_exits_2_with_one_line(tmp_path, hungry_code):
    from engine.models import build_arch

    weights = tmp_path / "hungry_state.pt"
    torch.save(build_arch(f"code:{hungry_code}").state_dict(), weights)
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "prune", "--model", str(weights), "--model-code", hungry_code,
         "--data", "fashion-mnist", "--method", "l2", "--ratio", "0.5", "--eval-limit", "128", "--quiet",
         "--memory-limit", "1G", "--out", str(out)],  # the process starts at about 0.5 GiB
        cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "reached the memory limit" in lines[0] and "1.0 GiB allowed" in lines[0], lines
    assert not out.exists()


HUNGER = {"on": False}


HOARD_CHUNKS = 24  # 768 MiB a batch: past the tests' margins of 400-600 MiB, yet bounded when the watchdog is
# slow to get a CPU on a busy machine (400 chunks took the test process to 13 GB before the job was stopped)


class HungryResNet(DemoResNet):
    """A tiny DemoResNet that, once HUNGER is on, hoards memory on every batch (its pruned copies too)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if HUNGER["on"] and x.shape[0] > 1:
            hoard = [torch.ones(CHUNK // 4) for _ in range(HOARD_CHUNKS)]
            del hoard
        return super().forward(x)


def test_a_plan_run_past_the_budget_fails_alone(tmp_path, fashion):
    from engine.experiments import PlanDone, PlanRunDone, PlanRunFailed, ResultStore, parse_plan, run_plan

    plan = parse_plan('[plan]\nname = "p"\nsave_models = false\n[model]\nsource = "x.pt"\n[data]\nspec = '
                      '"fashion-mnist"\n[sweep]\nmethods = ["l1", "l2"]\nratios = [0.5]\n[prune]\neval_limit = 64\n'
                      'measure_speed = false\nround_to = 4\n')
    bundle = ModelBundle(HungryResNet(1, 10, widths=(4, 8, 16)).eval(), "hungry", "demo:resnet", (1, 28, 28), 10)
    limit = rss_bytes() + 600 * 2 ** 20
    failed, done = [], None
    HUNGER["on"] = False
    try:
        for ev in run_plan(plan, ResultStore(tmp_path / "s.sqlite"), bundle=bundle, data=fashion, memory_limit=limit):
            if isinstance(ev, PlanRunDone):
                HUNGER["on"] = True  # the baseline and the first run were normal; the second run hoards
            elif isinstance(ev, PlanRunFailed):
                failed.append(ev)
            elif isinstance(ev, PlanDone):
                done = ev
    finally:
        HUNGER["on"] = False
    assert [f.label for f in failed] == ["l2 @ 0.5"] and "reached the memory limit" in failed[0].message
    assert [r.method for r in done.results] == ["l1"] and len(done.failed) == 1
