"""Pruning does no work twice: a one-step run ranked from the weights cuts once, on the preflight's copy, with
one dependency graph, and that copy is used only when the configuration and the weights are unchanged."""
from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch_pruning as tp

import engine.pruners as pruners
from engine.config import PruneConfig
from engine.events import CancelToken, result_of
from engine.pruning import run_pruning

EXAMPLE = torch.zeros(1, 1, 28, 28)


@pytest.fixture
def graphs(monkeypatch) -> list:
    """Every dependency graph torch-pruning builds, counted (the model it traced)."""
    built = []
    real = tp.DependencyGraph.build_dependency

    def counting(self, model, *args, **kwargs):
        built.append(model)
        return real(self, model, *args, **kwargs)

    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", counting)
    return built


@pytest.fixture
def copies(monkeypatch) -> list:
    """Every copy the preflight makes of the model."""
    made = []
    real = pruners._shared_copy

    def spy(model, device):
        made.append(real(model, device))
        return made[-1]

    monkeypatch.setattr(pruners, "_shared_copy", spy)
    return made


def _cfg(**kw) -> PruneConfig:
    return PruneConfig(**{"method": "l2", "pruning_ratio": 0.5, "round_to": None, "eval_limit": 64,
                          "measure_speed": False, **kw})


def _pruner(model, cfg: PruneConfig):
    return pruners.make_pruner(model, cfg.validate(), cfg, EXAMPLE, 10, 1, CancelToken(), reuse_preflight=True)


def _widths(model) -> dict[str, int]:
    return {n: m.weight.shape[0] for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_one_step_run_traces_once_and_its_result_is_the_preflight_copy(tiny, fashion, graphs, copies):
    pruned = result_of(run_pruning(tiny, fashion, _cfg()))
    assert len(graphs) == 1 and graphs[0] is copies[0]  # one graph, of the copy the preflight cut
    assert pruned.bundle.model is copies[0]
    assert pruned.run.after.params < pruned.run.before.params


def test_the_reused_cut_is_the_cut_the_run_would_have_made(tiny, fashion, monkeypatch):
    """Same weights, channels, histograms and notes as cutting the model itself after the baseline."""
    reused = result_of(run_pruning(tiny, fashion, _cfg(round_to=8)))
    monkeypatch.setattr(pruners.StructuredPruner, "_cuts_like_the_preflight", lambda self, cfg: False)
    cut_again = result_of(run_pruning(tiny, fashion, _cfg(round_to=8)))
    assert _same(reused.bundle.model, cut_again.bundle.model)
    assert reused.run.notes == cut_again.run.notes
    for a, b in zip(reused.run.steps[-1].histograms.values(), cut_again.run.steps[-1].histograms.values()):
        assert (a.kept == b.kept).all()


def test_a_changed_configuration_is_not_served_the_stale_copy(tiny, graphs, copies):
    model = copy.deepcopy(tiny.model)
    pruner = _pruner(model, _cfg(pruning_ratio=0.5))
    pruner.run_cfg = replace(pruner.run_cfg, pruning_ratio=0.25)  # changed after the preflight
    list(pruner.step(1, CancelToken()))
    assert pruner.model is model and pruner.model is not copies[0]
    assert len(graphs) == 2 and graphs[1] is model  # the model itself traced, once
    fresh = copy.deepcopy(tiny.model)
    expected = _pruner(fresh, _cfg(pruning_ratio=0.25))
    list(expected.step(1, CancelToken()))
    assert _widths(pruner.model) == _widths(expected.model) != _widths(copies[0])


def test_changed_weights_are_not_served_the_stale_copy(tiny, copies):
    model = copy.deepcopy(tiny.model)
    pruner = _pruner(model, _cfg())
    with torch.no_grad():
        model.stem[0].weight.mul_(-3.0).add_(1.0)  # another ranking of the first layer's channels
    fresh = copy.deepcopy(model)
    list(pruner.step(1, CancelToken()))
    assert pruner.model is model
    expected = _pruner(fresh, _cfg())
    list(expected.step(1, CancelToken()))
    assert _same(pruner.model, expected.model) and not _same(pruner.model, copies[0])


def test_a_calibrated_method_builds_one_graph_per_model(tiny, fashion, graphs, copies):
    """Taylor ranks from training images, gathered after the baseline: the preflight's copy (magnitude) cannot
    stand in, so the model is traced too, once."""
    pruned = result_of(run_pruning(tiny, fashion, _cfg(method="taylor", calibration_batches=1)))
    assert len(graphs) == 2 and graphs[0] is copies[0] and graphs[1] is pruned.bundle.model


def test_a_stale_copy_is_freed_with_the_collector_paused(tiny, monkeypatch):
    """The GUI pauses the cycle collector during a job: a copy that is not used must not stay for the run."""
    import gc
    import weakref

    real, made = pruners._shared_copy, []

    def spy(model, device):
        trial = real(model, device)
        made.append(weakref.ref(trial))
        return trial

    monkeypatch.setattr(pruners, "_shared_copy", spy)
    gc.disable()
    try:
        pruner = _pruner(copy.deepcopy(tiny.model), _cfg())
        pruner.run_cfg = replace(pruner.run_cfg, pruning_ratio=0.25)
        list(pruner.step(1, CancelToken()))
        assert made and made[0]() is None
    finally:
        gc.enable()


def test_the_graph_is_traced_with_one_batched_forward_pass(tiny):
    """torch-pruning unpacks a bare tensor example (model(*x)): an unbatched run failing part-way came first."""
    from engine.tracing import dependency_graph

    shapes: list = []
    model = copy.deepcopy(tiny.model)
    model.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))  # copies keep it
    pruners.trial_prune(model, _cfg(), 0.5, EXAMPLE, 10)
    dependency_graph(model, EXAMPLE)
    assert shapes == [tuple(EXAMPLE.shape)] * 2


def test_the_shared_copy_has_hooks_and_buffers_of_its_own(tiny):
    """The copy's empty hook dicts are made up front (faster than deepcopy's): they must still be its own, or
    torch-pruning's tracing hooks on the copy would fire on the original."""
    model = copy.deepcopy(tiny.model)
    calls: list = []
    model.fc.register_forward_hook(lambda *_: calls.append("original"))
    trial = pruners._shared_copy(model, EXAMPLE.device)
    trial.stem[0].register_forward_hook(lambda *_: calls.append("copy"))
    assert not model.stem[0]._forward_hooks and type(trial.stem[0]._forward_hooks) is type(model.stem[0]._forward_hooks)
    trial(EXAMPLE)
    assert calls == ["copy", "original"]  # the original's hook came along, as deepcopy copies it
    model(EXAMPLE)
    assert calls == ["copy", "original", "original"]
    assert all(a is not b for a, b in zip(trial.buffers(), model.buffers()))
    assert all(a.data_ptr() == b.data_ptr() for a, b in zip(trial.parameters(), model.parameters()))
