"""The Prune panel's Target latency: its controls reach PruneConfig, a run in the window prunes to it, and the
Results table says whether the end's paired timing met it (#27)."""
from __future__ import annotations

import pytest

from test_gui import RUN_TIMEOUT_MS, fast_options, loaded  # noqa: F401 - the fixture: the tiny model loaded

from engine.config import PruneConfig


def choose_latency(panel, ms: float, runtime: str, allocation: str) -> None:
    panel.mode_combo.setCurrentIndex(panel.mode_combo.findData("latency"))
    panel.latency_spin.setValue(ms)
    panel.fields["runtime"].set_value(runtime)
    panel.fields["allocation"].set_value(allocation)


def test_the_target_latency_controls_reach_the_config(qtbot):
    from gui.method_panel import LATENCY_ROWS, MethodPanel

    panel = MethodPanel()
    qtbot.addWidget(panel)
    rows = [panel.fields[name].widget for name in LATENCY_ROWS]
    assert not any(panel.amount_form.isRowVisible(w) for w in rows)  # the ratio needs neither
    assert panel.config().target_latency is None
    choose_latency(panel, 12.5, "onnxruntime", "latency")
    assert all(panel.amount_form.isRowVisible(w) for w in rows)
    assert panel.amount_stack.currentWidget() is panel.latency_spin
    cfg = panel.config(scope="layer")
    assert (cfg.target_latency, cfg.runtime, cfg.allocation) == (12.5, "onnxruntime", "latency")
    assert cfg.pruning_ratio is None and cfg.target_speedup is None
    cfg.validate()  # exactly one target, and one the engine accepts
    assert panel.fields["runtime"].widget.toolTip().startswith("What a target latency is measured on")

    again = MethodPanel()  # the settings round trip
    qtbot.addWidget(again)
    again.restore(panel.options())
    assert again.config().target_latency == 12.5 and again.config().allocation == "latency"

    panel.mode_combo.setCurrentIndex(panel.mode_combo.findData("latency_speedup"))  # the same, as a speed-up
    panel.latency_speedup_spin.setValue(2.5)
    assert all(panel.amount_form.isRowVisible(w) for w in rows)
    assert panel.amount_stack.currentWidget() is panel.latency_speedup_spin
    cfg = panel.config(scope="layer")
    assert (cfg.target_latency_speedup, cfg.target_latency, cfg.pruning_ratio, cfg.runtime) == \
        (2.5, None, None, "onnxruntime")
    cfg.validate()
    again.restore(panel.options())
    assert again.config().target_latency_speedup == 2.5

    panel.select_method("magnitude-layer")  # unstructured: zeroed weights do not make the model faster
    for mode in ("latency", "latency_speedup"):
        assert not panel.mode_combo.model().item(panel.mode_combo.findData(mode)).isEnabled()
    assert panel.mode_combo.currentData() == "ratio" and panel.config().target_latency_speedup is None


def test_a_run_in_the_window_prunes_to_the_target_and_says_whether_it_was_met(loaded, qtbot, monkeypatch):
    """The search's timing is replaced by MACs (a stand-in, so the test does not depend on a quiet machine); the
    end's paired check is real, so only the structure of what the window shows is asserted."""
    import engine.latency_target as lt
    from engine.metrics import count_macs
    from gui.results import config_tip

    def macs_ms(original, original_rt, trial, shape, *rest):
        a, b = count_macs(original, shape) / 1e6, count_macs(trial, shape) / 1e6
        return a, b, a / b

    monkeypatch.setattr(lt, "_paired_trial", macs_ms)
    panel = loaded.ui.method_panel
    fast_options(loaded, steps=1)
    original_mmacs = count_macs(loaded.session.loaded.bundle.model, (1, 28, 28)) / 1e6
    choose_latency(panel, 0.6 * original_mmacs, "torch", "uniform")  # 'ms' are MACs in millions here
    with qtbot.waitSignal(loaded.run_finished, timeout=RUN_TIMEOUT_MS) as finished:
        assert loaded.start_run()
    record = loaded.session.runs[finished.args[0]]
    assert record.config.target_latency == pytest.approx(0.6 * original_mmacs, abs=1e-3)
    target = record.done.latency_target
    assert target is not None and target["allocation"] == "uniform" and 0 < target["ratio"] < 1
    assert record.done.after.macs < record.done.before.macs
    assert record.amount.startswith(f"≤ {record.config.target_latency:g} ms on torch: ")
    assert record.amount.split(": ")[-1] in ("met", "not met")
    assert f"measured {target['measured_ms']:.3f} ms (95 % interval" in config_tip(record)


def test_the_results_say_out_of_reach_with_the_measured_figure():
    from types import SimpleNamespace

    from engine.metrics import Metrics
    from gui.results import RunRecord, config_tip
    from gui.speed import speedup_tip

    target = {"target_ms": 1.0, "runtime": "onnxruntime", "batch": 64, "reachable": False, "met": False,
              "measured_ms": 3.25, "low": 3.1, "high": 3.4, "rounds": 9, "original_measured_ms": 6.5, "speedup": 2.0}
    done = SimpleNamespace(before=Metrics(), after=Metrics(), paired=None, onnxruntime=None, latency_target=target)
    run = RunRecord(1, "#1", "red", PruneConfig(pruning_ratio=None, target_latency=1.0, runtime="onnxruntime"),
                    done=done)
    assert run.amount == "≤ 1 ms on onnxruntime: out of reach"
    line = ("target latency 1 ms on onnxruntime at batch 64: out of reach within the maximum layer ratio: measured "
            "3.250 ms (95 % interval 3.100–3.400, 9 paired rounds; the original 6.500 ms, 2.00x faster)")
    assert line in config_tip(run)
    assert speedup_tip(done, 64).startswith("T" + line[1:])
    target.update(reachable=True, met=True, measured_ms=0.95)
    assert run.amount.endswith(": met")
