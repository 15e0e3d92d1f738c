"""Paired latency: original and pruned timed interleaved, the median ratio with its interval, the
thread default from free cores, and the noisy-machine verdict (pure, so given numbers decide it)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from engine.errors import Cancelled
from engine.events import CancelToken, Progress
from engine.metrics import Metrics
from engine.timing import (SPREAD_LIMIT, PairedSpeedup, default_threads, free_threads, iter_paired_speedup,
                           measure_latency, measure_paired_speedup, median_interval, noise_note, relative_spread,
                           speedup_text, usable_cores)
from engine.models import DemoResNet, ModelBundle
from engine.config import PruneConfig
from engine.pruning import PAIRED_ROUNDS, RunDone, run_pruning

SHAPE = (1, 28, 28)


def heavy() -> nn.Module:
    """About 30 M MACs per image: far slower than light() on any machine, busy or not."""
    return nn.Sequential(nn.Conv2d(1, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1)).eval()


def light() -> nn.Module:
    """About 30 k MACs per image."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()).eval()


class Logged(nn.Module):
    """Records its name in a shared log on every forward pass."""

    def __init__(self, name: str, log: list) -> None:
        super().__init__()
        self.name, self.log, self.inner = name, log, nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.log.append(self.name)
        return self.inner(x)


# ----------------------------------------------------------------------------- the paired timer

def test_paired_timer_finds_the_lighter_model_faster_in_both_directions():
    a, b = heavy(), light()
    fwd = measure_paired_speedup(a, b, SHAPE, batch_sizes=(1, 4), rounds=6, runs_per_round=2, warmup=1)
    back = measure_paired_speedup(b, a, SHAPE, batch_sizes=(4,), rounds=6, runs_per_round=2, warmup=1)
    assert isinstance(fwd, PairedSpeedup)
    assert [r.batch for r in fwd.batches] == [1, 4] and fwd.headline.batch == 4
    for r in fwd.batches:
        assert r.rounds == len(r.ratios) == 6
        assert r.median > 1.5 and r.a_ms > r.b_ms  # heavy over light
        assert r.low <= r.median <= r.high and r.coverage >= 0.95
        assert r.a_spread >= 0 and r.b_spread >= 0
    assert back.headline.median < 1 / 1.5  # the ratio is A over B, not whichever is larger
    assert 1 <= fwd.threads <= usable_cores()
    assert fwd.noisy == bool(fwd.note)
    out = json.loads(json.dumps(fwd.to_json()))  # plain JSON
    assert out["median"] == pytest.approx(fwd.headline.median, rel=1e-3) and out["rounds"] == 6
    assert set(out["per_batch"]) == {"1", "4"} and out["interval"] == "order-statistic"
    assert out["load_start"]["cores"] == usable_cores()


def test_rounds_alternate_which_model_goes_first_and_report_progress():
    log: list[str] = []
    a, b = Logged("a", log), Logged("b", log)
    events = list(iter_paired_speedup(a, b, (4,), batch_sizes=(2,), rounds=4, runs_per_round=2, round_seconds=0.0,
                                      warmup=1, threads=1))
    assert [e.done for e in events if isinstance(e, Progress)] == [1, 2, 3, 4]
    assert isinstance(events[-1], PairedSpeedup) and events[-1].threads == 1
    timed = log[2:]  # after one warm-up pass of each
    assert timed == ["a", "a", "b", "b", "b", "b", "a", "a", "a", "a", "b", "b", "b", "b", "a", "a"]


def test_paired_timer_honours_cancel_and_restores_threads():
    before = torch.get_num_threads()
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        measure_paired_speedup(light(), light(), SHAPE, batch_sizes=(1,), rounds=3, threads=1, cancel=token)
    assert torch.get_num_threads() == before


# ----------------------------------------------------------------------------- interval, threads, noise

def test_median_interval_is_the_order_statistic_one():
    values = [9.0, 1.0, 8.0, 2.0, 7.0, 3.0, 6.0, 4.0, 5.0]
    low, high, coverage = median_interval(values)
    assert (low, high) == (2.0, 8.0)  # 2nd and 8th of 9: 1 - 2 * 10/512
    assert coverage == pytest.approx(1 - 20 / 512)
    low, high, coverage = median_interval([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (low, high) == (1.0, 5.0) and coverage == pytest.approx(1 - 2 / 32)  # 5 rounds cannot reach 95 %
    wide = median_interval(list(range(40)))
    assert wide[0] <= 19.5 <= wide[1] and 0.95 <= wide[2] < 0.99


def test_thread_default_is_what_other_work_leaves_free():
    assert free_threads(8, 3.4, 8) == 5
    assert free_threads(2, 2.0, 2) == 1  # every core busy: still one
    assert free_threads(4, 9.0, 4) == 1
    assert free_threads(16, 0.0, 4) == 4  # never more than torch's own setting
    assert 1 <= default_threads() <= min(usable_cores(), torch.get_num_threads())
    lat = measure_latency(light(), SHAPE, (1,), warmup=1, repeats=3, min_seconds=0.0)
    assert 1 <= lat["1"]["threads"] <= usable_cores()  # the count used is still recorded


def test_noise_verdict_flags_spread_rounds_and_busy_cores():
    steady = [10.0, 10.2, 9.9, 10.1, 10.0, 10.3, 9.8]
    spread = [10.0, 10.5, 14.0, 30.0, 9.0, 25.0, 12.0]
    assert relative_spread(steady) < 0.05 and relative_spread(spread) > SPREAD_LIMIT
    assert relative_spread([5.0]) == 0.0
    quiet = noise_note({"original at batch 64": relative_spread(steady)}, 4, 0.2, 2.1, 2)
    assert quiet == ""
    noisy = noise_note({"original at batch 64": relative_spread(spread), "pruned at batch 64": 0.01}, 4, 0.2,
                       2.1, 2)
    assert noisy.startswith("noisy machine:") and "original at batch 64" in noisy and "pruned" not in noisy
    assert "3.0 of 4 cores" in noise_note({}, 4, 3.0, None, 1)
    assert "load average 4.0 on 2 cores" in noise_note({}, 2, 0.0, 4.0, 1)
    assert noise_note({}, 2, 0.0, 2.5, 2) == ""  # the load average counts our own threads
    assert "\n" not in noisy


def test_speedup_text_names_interval_rounds_threads_and_note():
    base = {"median": 2.789, "low": 2.61, "high": 2.95, "coverage": 0.961, "rounds": 9, "threads": 2,
            "noisy": False, "note": "", "device": "cpu"}
    assert speedup_text(base) == "latency 2.79x lower (95 % interval 2.61–2.95, 9 paired rounds, 2 threads)"
    noisy = dict(base, noisy=True, note="noisy machine: other work keeps 1.9 of 2 cores busy", coverage=0.9375,
                 rounds=5, threads=1)
    assert speedup_text(noisy) == ("latency 2.79x lower (93 % interval 2.61–2.95, 5 paired rounds, 1 thread) "
                                   "— noisy machine: other work keeps 1.9 of 2 cores busy")


# ----------------------------------------------------------------------------- in a pruning run

def tiny_bundle(data) -> ModelBundle:
    torch.manual_seed(0)
    return ModelBundle(DemoResNet(widths=(8, 16, 32)).eval(), "tiny", "demo:resnet", SHAPE, 10, data.norm,
                       data.class_names, arch_kwargs={"widths": [8, 16, 32]})


def test_run_reports_the_paired_speedup(fashion):
    cfg = PruneConfig(method="l2", pruning_ratio=0.5, eval_limit=64, round_to=None, batch_size=8,
                      latency_repeats=6)
    done = list(run_pruning(tiny_bundle(fashion), fashion, cfg))[-1]
    assert isinstance(done, RunDone) and done.paired is not None
    out = json.loads(json.dumps(done.to_json()))
    pair = out["latency_speedup"]
    for key in ("median", "low", "high", "rounds", "threads", "noisy", "note"):
        assert key in pair
    assert pair["rounds"] == PAIRED_ROUNDS and pair["batch"] == 8 and set(pair["per_batch"]) == {"1", "8"}
    assert pair["low"] <= pair["median"] <= pair["high"] and pair["threads"] >= 1
    assert pair["names"] == ["original", "pruned"]
    assert done.speedups()["latency"] == pair["median"]  # the paired figure, not the separate timings
    assert out["speedups"]["latency"] == pair["median"]
    assert "paired rounds" in done.speedup_text()
    assert done.after.latency_ms and done.before.latency_ms  # the per-model figures stay


def test_run_without_speed_has_no_paired_figure(fashion):
    cfg = PruneConfig(method="l1", pruning_ratio=0.3, eval_limit=64, round_to=None, measure_speed=False)
    done = list(run_pruning(tiny_bundle(fashion), fashion, cfg))[-1]
    assert done.paired is None and done.to_json()["latency_speedup"] is None
    assert "latency" not in done.speedups() and done.speedup_text() == ""


def test_separately_timed_runs_say_so():
    before = Metrics(macs=400, params=40, compressed_bytes=40, latency_ms={"8": {"median": 3.0}})
    after = Metrics(macs=100, params=10, compressed_bytes=10, latency_ms={"8": {"median": 1.0}})
    done = RunDone("l2", {}, before, after, (), {}, 1.0, 0.1)
    assert done.speedups()["latency"] == pytest.approx(3.0)
    assert done.speedup_text() == "latency 3.00x lower (timed separately, not paired)"


# ----------------------------------------------------------------------------- the GUI's results table

def test_results_table_shows_interval_and_noise(qtbot):
    from gui.results import COLUMNS, ResultsView, RunRecord

    paired = {"median": 2.79, "low": 2.61, "high": 2.95, "coverage": 0.961, "rounds": 9, "threads": 1,
              "noisy": True, "note": "noisy machine: other work keeps 1.9 of 2 cores busy", "device": "cpu"}
    before = Metrics(macs=400, params=40, compressed_bytes=40, latency_ms={"1": {"median": 3.0}})
    after = Metrics(macs=100, params=10, compressed_bytes=10, latency_ms={"1": {"median": 1.0}})
    view = ResultsView()
    qtbot.addWidget(view)
    record = RunRecord(1, "#1", "#ff0000", PruneConfig(), done=RunDone("l2", {}, before, after, (), {}, 1.0, 0.1,
                                                                        paired=paired), status="done")
    view.add_run(record)
    col = [c[0] for c in COLUMNS].index("Speed-up")
    item = view.model.item(0, col)
    assert view.model.horizontalHeaderItem(col).text() == "Speed-up, batch 1"
    assert item.text() == "2.79× [2.61–2.95, noisy]"  # the MACs reduction is the MACs column's
    assert "4.0× fewer" in view.model.item(0, [c[0] for c in COLUMNS].index("MACs")).text()
    assert "other work keeps 1.9 of 2 cores busy" in item.toolTip() and "9 paired rounds" in item.toolTip()
