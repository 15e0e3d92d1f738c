"""benchmarks/coverage.py: a timm model expected over the memory budget is deferred with the reason, without
starting its process, and counted and listed as deferred."""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _coverage():
    spec = importlib.util.spec_from_file_location("coverage_benchmark", ROOT / "benchmarks" / "coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_model_over_the_budget_is_deferred_not_started(monkeypatch):
    cov = _coverage()
    family, row = next(iter(json.loads(cov.FAMILIES.read_text()).items()))
    need = cov.expected_peak(f"timm:{row['model']}")
    assert need == cov.BASE_BYTES + cov.BYTES_PER_PARAM * row["params"]
    monkeypatch.setattr(cov.subprocess, "Popen", lambda *a, **k: (_ for _ in ()).throw(AssertionError("started")))
    args = argparse.Namespace(limit=need - 1, timeout=1, jobs=1, resume="")
    deferred = cov.run_one(f"timm:{row['model']}", f"timm {family}", Path("."), args)
    monkeypatch.undo()  # the Markdown's machine line may start a process of its own
    assert deferred["status"] == "deferred" and "budget" in deferred["reason"] and deferred["peak_rss"] == 0
    groups = cov.summary([deferred])
    assert groups["timm"]["deferred"] == 1 and groups["timm"]["pruned"] == 0
    text = cov.markdown([deferred], args, "python benchmarks/coverage.py", "now", 2)
    assert "1 deferred (over the memory budget)" in text and f"**timm:{row['model']}**: expected to need" in text


def test_torchvision_models_are_not_estimated():
    assert _coverage().expected_peak("torchvision:resnet18") is None


def test_a_model_stopped_at_the_memory_budget_is_deferred_not_refused(monkeypatch):
    """A run the budget stops while pruning (EfficientViM reached 8 GiB) is deferred with the reason: it was
    neither refused by PruneLab nor a failure of the model."""
    import engine.pruning
    from engine.budget import BudgetError

    cov = _coverage()

    def stopped(*args, **kwargs):
        raise BudgetError("the prune phase reached the memory limit")
        yield  # a generator, as run_pruning is

    monkeypatch.setattr(cov, "_load", lambda spec, folder, limit, row: (None, None))
    monkeypatch.setattr(engine.pruning, "run_pruning", stopped)
    row = cov.child("timm:anything", Path("."), 2 ** 33)
    assert row["status"] == "deferred" and "memory limit" in row["reason"]


def test_a_timm_transformer_made_for_another_size_gets_it_too():
    """MaxViT's pico model needs 256 (its windows do not divide 224): it is tried after 224."""
    cov = _coverage()
    assert cov.input_sizes("timm:maxvit_pico_rw_256") == [224, 256]
    assert cov.input_sizes("timm:vit_tiny_patch16_224") == [224]


def test_resume_keeps_pruned_rows_unless_run_again():
    keep = _coverage().kept_rows
    planned = [("timm levit", "timm:levit_128s"), ("timm volo", "timm:volo_d1_224"), ("timm deit", "timm:deit_t")]
    previous = [{"model": "timm:levit_128s", "status": "pruned"}, {"model": "timm:volo_d1_224", "status": "failed"},
                {"model": "timm:deit_t", "status": "pruned"}, {"model": "timm:gone", "status": "pruned"}]
    chosen = planned[:2]
    assert [r["model"] for r in keep(previous, planned, chosen)] == ["timm:levit_128s", "timm:deit_t"]
    again = keep(previous, planned, chosen, again=True)
    assert [(r["model"], r["category"]) for r in again] == [("timm:deit_t", "timm deit")]
