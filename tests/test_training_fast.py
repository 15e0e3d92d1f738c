"""The fast fine-tuning step keeps the result and leaves the models as it found them; the recipe options
(schedule, warm-up, label smoothing, augmentation) reach the fine-tuning."""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
import torchvision

import engine.pruning as pruning
from engine.config import PruneConfig
from engine.errors import UserError
from engine.events import drain
from engine.models import ModelBundle
from engine.training import TrainConfig, _lr_at, inference_teacher, train
from shared_fixtures import tiny_resnet


def test_warm_up_climbs_then_the_schedule_runs_over_the_rest():
    cfg = TrainConfig(lr=1.0, schedule="cosine", warmup=0.2)
    assert _lr_at(cfg, 0, 100) == pytest.approx(0.1)
    assert _lr_at(cfg, 10, 100) == pytest.approx(0.55)
    assert _lr_at(cfg, 20, 100) == pytest.approx(1.0)  # the cosine starts where the warm-up ends
    assert _lr_at(cfg, 60, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert _lr_at(TrainConfig(lr=1.0, schedule="cosine"), 0, 100) == 1.0  # no warm-up: as before


def test_the_folded_teacher_gives_the_teachers_outputs_and_leaves_it_alone():
    teacher = tiny_resnet().eval()
    before = copy.deepcopy(teacher.state_dict())
    folded = inference_teacher(teacher, torch.channels_last)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(folded(x.contiguous(memory_format=torch.channels_last)), teacher(x), atol=1e-4)
    assert folded is not teacher
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]) and v.is_contiguous(), k


def test_training_leaves_weights_contiguous_and_matches_the_legacy_step(fashion):
    data = fashion.adapted((1, 28, 28))
    teacher = tiny_resnet().eval()
    results = {}
    for legacy in (True, False):
        torch.manual_seed(0)
        student = copy.deepcopy(teacher)
        cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, max_batches=4, validate=False, legacy_pipeline=legacy)
        drain(train(student, data, cfg, teacher=teacher))
        results[legacy] = student.state_dict()
    for k, v in results[False].items():
        assert v.is_contiguous(), k  # saved files and exports expect the usual layout
        if v.is_floating_point():
            assert torch.allclose(v, results[True][k], atol=1e-4), k


def test_recipe_options_reach_the_fine_tuning(fashion, monkeypatch):
    seen = []
    real = pruning.train

    def spy(model, data, cfg, *args, **kw):
        seen.append(cfg)
        return real(model, data, cfg, *args, **kw)

    monkeypatch.setattr(pruning, "train", spy)
    bundle = ModelBundle(tiny_resnet(), "tiny", "demo:resnet", (1, 28, 28), 10)
    cfg = PruneConfig(method="l2", pruning_ratio=0.3, finetune_batches=2, eval_limit=50, measure_speed=False,
                      finetune_schedule="constant", warmup=0.1, label_smoothing=0.2)
    drain(pruning.run_pruning(bundle, fashion, cfg))
    assert [(c.schedule, c.warmup, c.label_smoothing, c.augment) for c in seen] == [("constant", 0.1, 0.2, False)]
    drain(pruning.run_pruning(bundle, fashion, replace(cfg, finetune_augment=True)))
    assert seen[-1].augment is True


@pytest.mark.parametrize("other_busy, legacy", [(2.0, False), (0.0, False), (2.0, True)])
def test_training_threads_are_the_cores_other_work_leaves_free(fashion, monkeypatch, other_busy, legacy):
    import engine.training as training
    from engine.timing import MachineLoad

    monkeypatch.setattr(training, "machine_load", lambda window_s=0.2: MachineLoad(2, other_busy, None))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []
    try:
        cfg = TrainConfig(epochs=1, batch_size=16, lr=0.01, max_batches=2, validate=False, legacy_pipeline=legacy)
        drain(train(tiny_resnet(), fashion, cfg, regularizer=lambda m: seen.append(torch.get_num_threads())))
        assert torch.get_num_threads() == 2  # restored after training
    finally:
        torch.set_num_threads(before)
    # a busy machine: one thread (a second would wait at every barrier); quiet: both; legacy: torch's own
    assert seen == [1 if other_busy and not legacy else 2] * 2


def test_precision_auto_is_bfloat16_only_where_the_processor_has_it(monkeypatch):
    import engine.training as training

    cpu = torch.device("cpu")
    assert training.compute_dtype("fp32", cpu) is None
    monkeypatch.setattr(training, "native_bfloat16", lambda device: True)
    assert training.compute_dtype("auto", cpu) is torch.bfloat16
    assert training.compute_dtype("bf16", cpu) is torch.bfloat16
    small, big = tiny_resnet(), torchvision.models.resnet18(num_classes=10)
    assert training.compute_dtype("auto", cpu, big, (3, 64, 64), 64) is torch.bfloat16
    assert training.compute_dtype("auto", cpu, small, (1, 28, 28), 32) is None  # too little work per batch
    depthwise = torchvision.models.mobilenet_v2(num_classes=10)
    assert training.compute_dtype("auto", cpu, depthwise, (3, 224, 224), 128) is None  # slower in bfloat16
    assert training.compute_dtype("bf16", cpu, small, (1, 28, 28), 32) is torch.bfloat16  # asked for: given
    monkeypatch.setattr(training, "native_bfloat16", lambda device: False)
    assert training.compute_dtype("auto", cpu, big, (3, 64, 64), 64) is None  # emulated: slower than float32
    with pytest.raises(UserError, match="does not compute bfloat16 natively.*--precision auto or fp32"):
        training.compute_dtype("bf16", cpu)
    with pytest.raises(UserError, match="does not compute bfloat16"):  # refused before any work
        PruneConfig(method="l2", pruning_ratio=0.3, finetune_epochs=1.0, training_precision="bf16").validate()
    PruneConfig(method="l2", pruning_ratio=0.3, training_precision="bf16").validate()  # no fine-tuning: no matter


def test_bfloat16_fine_tuning_computes_in_bfloat16_and_keeps_float32_weights(fashion):
    data = fashion.adapted((1, 28, 28))
    teacher = tiny_resnet().eval()
    seen = {}
    for precision in ("bf16", "fp32"):
        student = copy.deepcopy(teacher)
        dtypes = set()
        hook = student.stem.register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
        torch.manual_seed(0)
        cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, max_batches=3, validate=False, precision=precision)
        done = drain(train(student, data, cfg, teacher=teacher))
        hook.remove()
        seen[precision] = dtypes
        assert all(v.dtype == torch.float32 for v in student.state_dict().values() if v.is_floating_point())
        assert math.isfinite(done.history[-1].train_loss)
        assert not any(torch.equal(a, b) for a, b in zip(student.parameters(), teacher.parameters()))  # it learned
    assert seen == {"bf16": {torch.bfloat16}, "fp32": {torch.float32}}


def test_a_run_says_when_fine_tuning_computed_in_bfloat16(fashion, monkeypatch):
    import engine.training as training

    bundle = ModelBundle(tiny_resnet(), "tiny", "demo:resnet", (1, 28, 28), 10)
    monkeypatch.setattr(training, "native_bfloat16", lambda device: True)
    monkeypatch.setattr(training, "BF16_MIN_MACS_PER_BATCH", 0)  # the tiny model counts as large enough
    notes = {}
    for precision in ("auto", "fp32"):
        cfg = PruneConfig(method="l2", pruning_ratio=0.3, finetune_batches=2, eval_limit=50, measure_speed=False,
                          training_precision=precision)
        notes[precision] = drain(pruning.run_pruning(bundle, fashion, cfg)).notes
    assert any("bfloat16" in n for n in notes["auto"]) and not any("bfloat16" in n for n in notes["fp32"])
