"""The CUDA timing discipline, exercised without a GPU (#27): CUDA runs asynchronously, so every clock read that
ends a timed stretch must follow a torch.cuda.synchronize, or the figure is the launch time, not the run time.
The synchronisation and the clock are stubbed with a log; on a machine without a GPU this is all of the CUDA
path that can run (the timing on a real GPU was not run here)."""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn as nn

from engine.events import CancelToken


def logging_clock(log: list[str]):
    ticks = iter(range(10**6))
    return SimpleNamespace(perf_counter=lambda: (log.append("clock"), next(ticks) * 1e-3)[1])


class Logged(nn.Module):
    def __init__(self, log: list[str]):
        super().__init__()
        self.log = log
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        self.log.append("model")
        return self.fc(self.conv(x).mean((2, 3)))


def test_sync_waits_for_cuda_and_only_for_cuda(monkeypatch):
    from engine.timing import _sync

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    _sync(torch.device("cpu"))
    assert calls == []
    _sync(torch.device("cuda", 1))
    assert calls == [torch.device("cuda", 1)]


def test_every_pass_is_synchronised_before_the_clock_stops(monkeypatch):
    import engine.timing as timing

    log: list[str] = []
    monkeypatch.setattr(timing, "time", logging_clock(log))
    monkeypatch.setattr(timing, "_sync", lambda dev: log.append(f"sync {dev.type}"))
    times = timing._timed_runs(Logged(log), torch.zeros(1, 1, 5, 5), torch.device("cuda"), runs=3)
    assert len(times) == 3
    passes = log[1:]  # after the start clock: t0, the pass, sync, the end clock, the budget clock
    assert passes == ["clock", "model", "sync cuda", "clock", "clock"] * 3


def test_the_profile_synchronises_around_every_layer(monkeypatch):
    import engine.profile as profile
    from engine.events import result_of

    log: list[str] = []
    monkeypatch.setattr(profile, "time", logging_clock(log))
    monkeypatch.setattr(profile, "_sync", lambda dev: log.append("sync"))
    monkeypatch.setattr(profile, "_warm_up", lambda *a: None)
    model = Logged(log)
    totals, per_layer, _ = result_of(profile._torch_layer_times(model, torch.zeros(1, 1, 5, 5), ["conv", "fc"],
                                                                  rounds=2, passes=1, cancel=CancelToken()))
    assert len(totals) == 2 and set(per_layer) == {"conv", "fc"}
    clocks = [i for i, e in enumerate(log) if e == "clock"]
    assert len(clocks) == 2 * (2 + 2 * 2)  # per pass: its start and end, and each layer's start and end
    assert all(log[i - 1] == "sync" for i in clocks)
