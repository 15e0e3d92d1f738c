"""Pruning for the machine it runs on: onnxruntime figures of a run, the latency target, the allocation."""
from __future__ import annotations

import pytest
import torch

from engine.config import PruneConfig
from engine.models import DemoResNet, ModelBundle
from engine.pruning import RunDone, run_pruning


@pytest.fixture()
def tiny(fashion) -> ModelBundle:
    torch.manual_seed(0)
    model = DemoResNet(widths=(8, 16, 32)).eval()
    return ModelBundle(model, "tiny", "demo:resnet", (1, 28, 28), 10, fashion.norm, fashion.class_names,
                       arch_kwargs={"widths": [8, 16, 32]})


def fast(**kw) -> PruneConfig:
    base = dict(method="l1", eval_limit=64, measure_speed=False, round_to=None, bn_recalibrate=False, batch_size=4,
                threads=1)
    base.update(kw)
    return PruneConfig(**base)


def last(events) -> RunDone:
    done = list(events)[-1]
    assert isinstance(done, RunDone)
    return done


def test_a_timed_run_also_reports_onnxruntime_paired(tiny, fashion):
    done = last(run_pruning(tiny, fashion, fast(pruning_ratio=0.5, measure_speed=True, latency_repeats=6)))
    ort = done.onnxruntime
    assert ort is not None and ort["runtime"] == "onnxruntime" and ort["names"] == ["original", "pruned"]
    assert set(ort["per_batch"]) == {"1", "4"} and ort["batch"] == 4
    assert ort["low"] <= ort["median"] <= ort["high"] and ort["median"] > 0
    assert done.to_json()["onnxruntime_speedup"] == ort
    assert done.paired is not None and done.paired is not ort


def test_a_model_without_onnx_form_gets_a_note_not_a_failure(tiny, fashion, monkeypatch):
    import engine.models.saving as saving

    def no_export(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::weird' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(saving, "export_onnx", no_export)
    done = last(run_pruning(tiny, fashion, fast(pruning_ratio=0.5, measure_speed=True, latency_repeats=6)))
    assert done.onnxruntime is None and done.paired is not None
    assert any("onnxruntime latency not measured" in n and "aten::weird" in n for n in done.notes)
