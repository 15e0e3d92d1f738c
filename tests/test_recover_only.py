"""Recover only: a continued run that cuts nothing and trains the parent's model further (engine and window)."""
from __future__ import annotations

import pytest
import torch

from engine.config import PruneConfig
from engine.errors import UserError
from engine.events import result_of
from engine.models import DemoResNet, ModelBundle
from engine.pruning import RunDone, StepDone, run_pruning


def _tiny(fashion) -> ModelBundle:
    torch.manual_seed(0)
    return ModelBundle(DemoResNet(widths=(8, 16, 32)).eval(), "tiny", "demo:resnet", (1, 28, 28), 10, fashion.norm,
                       fashion.class_names, arch_kwargs={"widths": [8, 16, 32]})


def _fast(**kw) -> PruneConfig:
    return PruneConfig(**dict(dict(eval_limit=128, measure_speed=False, round_to=None, bn_batches=2), **kw))


def _pruned(bundle, data, cfg, **kw) -> tuple[RunDone, ModelBundle]:
    events: list = []
    pruned = result_of(run_pruning(bundle, data, cfg, **kw), events.append)
    assert isinstance(events[-1], RunDone) and pruned.run is events[-1]
    return pruned.run, pruned.bundle


def test_recover_only_trains_without_cutting_and_keeps_zeros(fashion):
    _, sparse = _pruned(_tiny(fashion), fashion, _fast(method="magnitude-global", pruning_ratio=0.5))
    zeros = {n: p == 0 for n, p in sparse.model.state_dict().items() if n.endswith("weight") and (p == 0).any()}
    assert zeros
    done, result = _pruned(sparse, fashion, _fast(finetune_batches=3, pruning_ratio=0.9), recover_only=True)
    state = result.model.state_dict()
    assert done.after.params == done.before.params  # nothing cut, the ratio of the panel ignored
    assert all(bool((state[n][z] == 0).all()) for n, z in zeros.items())  # sparsity did not grow back
    assert any(not torch.equal(state[n], p) for n, p in sparse.model.state_dict().items())  # it trained
    assert any("Recover only" in n for n in done.notes) and result.meta["recover_only"] is True


def test_recover_only_needs_a_recovery(fashion):
    with pytest.raises(UserError, match="needs a recovery"):
        list(run_pruning(_tiny(fashion), fashion, _fast(), recover_only=True))


def test_distilling_further_learns_from_the_given_teacher(fashion, monkeypatch):
    import engine.pruning

    original = _tiny(fashion)
    _, pruned = _pruned(original, fashion, _fast(method="l2", pruning_ratio=0.5))
    teachers = []
    real_teacher = engine.pruning._teacher
    monkeypatch.setattr(engine.pruning, "_teacher", lambda b, dev: teachers.append(b) or real_teacher(b, dev))
    done, _ = _pruned(pruned, fashion, _fast(finetune_batches=2, distill=True), recover_only=True, teacher=original)
    assert teachers == [original] and done.after.params == done.before.params


def test_window_offers_recover_only_and_records_a_child_run(qtbot, tmp_path, monkeypatch, fashion):
    pytest.importorskip("pytestqt")
    from tests.gui_helpers import TIMEOUT_MS, close_window, load_tiny, open_window, quick_options

    win = open_window(qtbot, tmp_path, monkeypatch)
    try:
        load_tiny(qtbot, win, fashion)
        quick_options(win, steps=1, bn=False)
        win.ui.method_panel.select_method("l2")
        win.ui.method_panel.ratio_slider.setValue(30)
        with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
            assert win.start_run()
        win.ui.results.continue_requested.emit(1)
        recover = next(b for b in win.continue_box.buttons() if b.text() == "Recover only")
        assert not recover.isEnabled() and "fine-tuning" in recover.toolTip()  # no recovery set: nothing to do
        win.continue_box.button(win.continue_box.StandardButton.Cancel).click()
        win.ui.method_panel.bn_check.setChecked(True)
        win.ui.results.continue_requested.emit(1)
        recover = next(b for b in win.continue_box.buttons() if b.text() == "Recover only")
        assert recover.isEnabled()
        with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
            recover.click()
        child = win.session.runs[2]
        assert child.status == "done" and child.parent == 1 and child.recover_only
        assert child.done.after.params == win.session.runs[1].done.after.params  # nothing cut
        assert child.amount == "recover only" and child.pruned is not None
        assert win.ui.results.parent_of(2) == 1
    finally:
        close_window(qtbot, win)
