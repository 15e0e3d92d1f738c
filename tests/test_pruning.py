"""Pruning engine: every method, exact ratios, untouched originals, cancellation, save/reload, ONNX."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from dataclasses import replace

import pytest
import torch

from engine.data import load_fashion_mnist
from engine.errors import Cancelled, UserError
from engine.events import CancelToken, Progress, result_of
from engine.layers import describe_layers, prunable_layers
from engine.methods import REGISTRY, all_methods, get_method, register_method
from engine.models import DemoResNet, DemoVGG, ModelBundle, load_model
from engine.config import PruneConfig
from engine.pruning import RunDone, StepDone, run_pruning

ROOT = Path(__file__).resolve().parents[1]


def fast(**kw) -> PruneConfig:
    base = dict(eval_limit=128, measure_speed=False, round_to=None, bn_batches=2)
    base.update(kw)
    return PruneConfig(**base)


def run(bundle, data, cfg, **kw) -> tuple[RunDone, list]:
    done, events, _ = pruned(bundle, data, cfg, **kw)
    return done, events


def pruned(bundle, data, cfg, **kw) -> tuple[RunDone, list, ModelBundle]:
    """The run's last event, every event, and the pruned bundle run_pruning returns."""
    events: list = []
    result = result_of(run_pruning(bundle, data, cfg, **kw), events.append)
    assert isinstance(events[-1], RunDone) and result.run is events[-1]
    assert result.bundle.model is not bundle.model  # a copy: the loaded original is never pruned
    return events[-1], events, result.bundle


def state_copy(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", [m.name for m in all_methods()])  # manual needs ticked channels: test_manual.py
def test_every_method_prunes_and_keeps_output_shape(tiny, fashion, name):
    before = state_copy(tiny.model)
    done, events = run(tiny, fashion, fast(method=name, pruning_ratio=0.5))
    steps = [e for e in events if isinstance(e, StepDone)]
    assert [s.step for s in steps] == [0, 1]
    assert any(isinstance(e, Progress) for e in events)
    # The original is bit-identical: pruning works on a copy.
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())
    method = get_method(name)
    if method.structured:
        assert done.after.params < 0.5 * done.before.params
        assert done.after.macs < 0.5 * done.before.macs
    else:
        assert done.after.params == done.before.params
        assert done.after.nonzero_params < 0.6 * done.before.params


def test_structured_ratio_halves_every_prunable_layer(tiny, fashion, tmp_path):
    done, _ = run(tiny, fashion, fast(method="l2", pruning_ratio=0.5), out_dir=tmp_path)
    pruned = load_model(done.files["model"])
    out = pruned.model(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10)
    before = {n: m.weight.shape[0] for n, m in prunable_layers(tiny.model)}
    after = {n: m.weight.shape[0] for n, m in prunable_layers(pruned.model)}
    assert after["fc"] == before["fc"] == 10  # the classifier head is left alone
    for name, channels in before.items():
        if name != "fc":
            assert after[name] == channels // 2, name
    # Halving inputs and outputs of every convolution leaves about a quarter of the MACs.
    assert 3.3 < done.before.macs / done.after.macs < 4.5


def test_unstructured_sparsity_is_exact(tiny, fashion):
    done, events = run(tiny, fashion, fast(method="magnitude-global", pruning_ratio=0.5))
    last = [e for e in events if isinstance(e, StepDone)][-1]
    targeted = [s for s in last.layers if s.name != "fc"]
    total = sum(s.params_before for s in targeted)
    zeros = sum(s.params_after - s.nonzero_after for s in targeted)
    assert zeros == round(0.5 * total)
    head = next(s for s in last.layers if s.name == "fc")
    assert head.nonzero_after == head.params_before
    assert done.after.compressed_bytes < done.before.compressed_bytes
    assert any("latency" in n for n in done.notes)


def test_layerwise_unstructured_hits_each_layer(tiny, fashion):
    _, events = run(tiny, fashion, fast(method="magnitude-layer", pruning_ratio=0.3, steps=2))
    last = [e for e in events if isinstance(e, StepDone)][-1]
    for s in last.layers:
        if s.name != "fc":
            assert s.params_after - s.nonzero_after == round(0.3 * s.params_before), s.name


def test_iterative_steps_shrink_monotonically(tiny, fashion):
    _, events = run(tiny, fashion, fast(method="l1", pruning_ratio=0.6, steps=3, bn_recalibrate=True))
    params = [e.metrics.params for e in events if isinstance(e, StepDone)]
    assert len(params) == 4 and params == sorted(params, reverse=True) and len(set(params)) == 4


def test_target_speedup_is_reached(tiny, fashion):
    done, _ = run(tiny, fashion, fast(method="l2", pruning_ratio=None, target_speedup=2.0))
    assert done.before.macs / done.after.macs >= 2.0
    assert done.before.macs / done.after.macs < 3.0  # small steps: it stops soon after the target


def test_finetune_with_distillation_learns_from_the_teacher(tiny, fashion, monkeypatch):
    import engine.training

    calls = []
    real = engine.training.distillation_loss

    def spy(student, teacher, temperature):
        calls.append(temperature)
        return real(student, teacher, temperature)

    monkeypatch.setattr(engine.training, "distillation_loss", spy)
    cfg = fast(method="taylor", pruning_ratio=0.3, finetune_batches=3, distill=True, bn_recalibrate=True,
               distill_temperature=2.5)
    _, events, distilled = pruned(tiny, fashion, cfg)
    step = [e for e in events if isinstance(e, StepDone)][-1]
    assert step.top1_after_prune is not None and step.top1_after_bn is not None
    assert calls == [2.5] * 3  # every fine-tuning batch compared with the teacher at the chosen temperature
    alone = pruned(tiny, fashion, replace(cfg, distill=False))[2].model.state_dict()
    distilled = distilled.model.state_dict()
    assert any(not torch.equal(distilled[k], alone[k]) for k in distilled)  # the teacher changed what was learnt


def test_bn_scale_sparsity_penalty_shrinks_batchnorm_scales(tiny, fashion):
    """Network Slimming's L1 term on γ: with the penalty the kept γ end smaller than without it."""
    def gammas(reg: float) -> float:
        model = pruned(tiny, fashion, fast(method="bn-scale", pruning_ratio=0.4, finetune_batches=2,
                                           sparsity_reg=reg))[2].model
        assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in tiny.model.parameters())
        return sum(float(m.weight.abs().sum()) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))

    assert gammas(0.05) < gammas(0.0) - 1e-3


def test_cancel_leaves_original_untouched(tiny, fashion):
    before = state_copy(tiny.model)
    token = CancelToken()
    gen = run_pruning(tiny, fashion, fast(method="l2", pruning_ratio=0.5, finetune_batches=50), cancel=token)
    with pytest.raises(Cancelled):
        for event in gen:
            if isinstance(event, Progress) and event.phase == "finetune":
                token.cancel()
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())


def test_cancel_between_groups(tiny, fashion):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        list(run_pruning(tiny, fashion, fast(method="l2", pruning_ratio=0.5), cancel=token,
                         baseline=None))


@pytest.mark.parametrize("bad, fix", [
    (dict(pruning_ratio=1.2), "between 0 and 1"),
    (dict(pruning_ratio=None), "exactly one"),
    (dict(method="nope"), "valid methods: l1"),
    (dict(pruning_ratio=None, target_speedup=2.0, method="magnitude-global"), "unstructured"),
    (dict(steps=0), "steps"),
    (dict(distill=True), "fine-tuning"),
    (dict(ignored_layers=("no.such",)), "--ignore: no layer named 'no.such'"),
    (dict(layer_ratios={"nope": 0.5}), "--layer-ratio: no layer named 'nope'"),
    (dict(ignored_layers=("stem", "layer1", "layer2", "layer3")), "every prunable layer is ignored"),
    (dict(pruning_ratio=float("nan")), "finite"),
    (dict(batch_size=0), r"batch size \(--batch-size\) must be a whole number"),
    (dict(eval_limit=0), r"evaluation images \(--eval-limit\)"),
    (dict(calibration_batches=True), "calibration batches must be a whole number"),
    (dict(scope="everywhere"), "scope .* must be one of layer, global"),
    (dict(device="gpu"), "device .* must be \"cpu\" or \"cuda\""),
    (dict(batch_size=10 ** 9), "would need about .* GiB for one forward pass"),
])
def test_bad_configs_are_explained(tiny, fashion, bad, fix):
    with pytest.raises(UserError, match=fix):
        list(run_pruning(tiny, fashion, fast(**bad)))


def test_registry_refuses_duplicates_and_lists_valid_names():
    with pytest.raises(ValueError, match="twice"):
        register_method("l2", "x", "structured", "x", "x", "x")(lambda: None)
    with pytest.raises(UserError) as err:
        get_method("L3")
    for m in all_methods():
        assert m.name in str(err.value)
    for m in all_methods():
        assert m.description and m.paper and m.measures and m.title
        assert m.family in m.explain()


def test_histograms_show_zero_spike_and_removed_channels(tiny, fashion):
    _, events = run(tiny, fashion, fast(method="magnitude-layer", pruning_ratio=0.5))
    hist = [e for e in events if isinstance(e, StepDone)][-1].histograms["layer1.0.conv1"]
    centre = np.argmin(np.abs((hist.edges[:-1] + hist.edges[1:]) / 2))
    assert hist.after[centre] > hist.before[centre] + 0.4 * hist.before.sum()
    assert hist.after.sum() == hist.before.sum()
    _, events = run(tiny, fashion, fast(method="l1", pruning_ratio=0.5))
    hist = [e for e in events if isinstance(e, StepDone)][-1].histograms["layer1.0.conv1"]
    assert hist.kept.sum() == len(hist.kept) // 2
    # Li et al.: the filters with the smallest L1 norm are the ones removed.
    assert hist.channel_norms[~hist.kept].max() <= hist.channel_norms[hist.kept].min() + 1e-6
    assert hist.after.sum() < hist.before.sum()


def test_the_weight_snapshot_summarises_instead_of_copying():
    """The run keeps what the before/after views need of the original weights, not a copy of them."""
    from engine.layers import weight_snapshot

    layer = torch.nn.Linear(512, 256)
    summary = weight_snapshot(torch.nn.Sequential(layer))["0"]
    w = layer.weight.detach().numpy()
    assert summary.shape == (256, 512) and summary.size == w.size and summary.counts.sum() == w.size
    assert np.allclose(summary.norms, np.abs(w).sum(1))
    assert summary.edges[-1] == np.abs(w).max()
    held = sum(a.nbytes for a in (summary.edges, summary.counts, summary.norms))
    assert held < w.nbytes / 50


@pytest.mark.heavy_memory(gib=0.9)
def test_saved_model_reloads_in_fresh_process_and_onnx_matches(tiny, fashion, tmp_path):
    done, _ = run(tiny, fashion, fast(method="fpgm", pruning_ratio=0.5), out_dir=tmp_path)
    x = next(iter(fashion.loader("test", 64, limit=64)))[0]
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]);"
        "from engine.models import load_model;"
        "b = load_model(sys.argv[2]); x = torch.load(sys.argv[3]);"
        "torch.save(b.model(x), sys.argv[4])")
    subprocess.run([sys.executable, "-c", script, str(ROOT), done.files["model"], str(tmp_path / "x.pt"),
                    str(tmp_path / "y.pt")], check=True, timeout=120)
    reloaded = torch.load(tmp_path / "y.pt")
    meta = json.loads(Path(done.files["meta"]).read_text())
    assert meta["method"] == "fpgm" and meta["parent"] == "tiny" and "torch" in meta["versions"]
    ours = load_model(done.files["model"]).model(x)
    assert torch.allclose(reloaded, ours, atol=1e-5)
    import onnxruntime as ort

    sess = ort.InferenceSession(done.files["onnx"], providers=["CPUExecutionProvider"])
    onnx_out = sess.run(None, {"input": x.numpy()})[0]
    assert (onnx_out.argmax(1) == ours.argmax(1).numpy()).mean() >= 0.99
    assert np.allclose(onnx_out, ours.detach().numpy(), atol=1e-3)


def test_layer_table_marks_dependency_groups(tiny):
    info = {i.name: i for i in describe_layers(tiny.model, (1, 28, 28), ignored=("fc",))}
    # The residual sum ties a block's second conv to the stem/shortcut that feeds the same addition.
    assert info["layer1.0.conv2"].group == info["stem.0"].group
    assert info["layer1.0.conv1"].group != info["layer1.0.conv2"].group
    assert info["fc"].group == -1
    assert info["stem.0"].macs == 28 * 28 * 8 * 9
    assert info["layer2.0.conv1"].out_shape == (16, 14, 14)


def test_cli_prune_json(tmp_path, capsys):
    from cli.main import main
    from engine.models import save_model

    torch.manual_seed(0)
    data = load_fashion_mnist()
    bundle = ModelBundle(DemoResNet(widths=(8, 16, 32)), "tiny", "demo:resnet", (1, 28, 28), 10, data.norm,
                         data.class_names, arch_kwargs={"widths": [8, 16, 32]})
    save_model(bundle, tmp_path / "tiny.pt")
    code = main(["prune", "--model", str(tmp_path / "tiny.pt"), "--data", "fashion-mnist", "--method", "l2",
                 "--ratio", "0.5", "--eval-limit", "128", "--out", str(tmp_path / "run"), "--json",
                 str(tmp_path / "r.json"), "--quiet"])
    assert code == 0
    out = json.loads((tmp_path / "r.json").read_text())
    assert set(out) >= {"method", "config", "before", "after", "steps", "files"}
    assert out["files"]["model"].endswith("model.pt") and out["files"]["onnx"].endswith("model.onnx")
    assert len(out["steps"]) == 1 and out["after"]["params"] < out["before"]["params"]
    assert "latency_ms" in out["after"] and out["after"]["latency_ms"]["64"]["median"] > 0
    code = main(["prune", "--model", str(tmp_path / "tiny.pt"), "--data", "fashion-mnist", "--method", "l2",
                 "--ratio", "1.5", "--quiet"])
    assert code == 2 and "between 0 and 1" in capsys.readouterr().err


def test_onnx_check_recorded_with_the_saved_model(tiny, fashion, tmp_path):
    done, _ = run(tiny, fashion, fast(method="l2", pruning_ratio=0.3), out_dir=tmp_path)
    check = json.loads(Path(done.files["meta"]).read_text())["onnx_check"]
    assert check["images"] == 1024
    assert abs(check["torch_top1"] - check["onnx_top1"]) <= 0.001
    assert check["max_abs_diff"] < 1e-3


def test_rounding_keeps_at_least_round_to_channels(tiny, fashion):
    """At 0.8 an 8-channel layer would keep 1.6 channels, which rounds to 0: it must keep 8 of 16
    and 8 of 32 instead, and the smaller layers must still be pruned rather than skipped."""
    model = DemoResNet(widths=(16, 32, 64)).eval()
    bundle = ModelBundle(model, "tiny", "demo:resnet", (1, 28, 28), 10, fashion.norm, fashion.class_names,
                         arch_kwargs={"widths": [16, 32, 64]})
    kept = pruned(bundle, fashion, fast(method="l1", pruning_ratio=0.8, round_to=8, bn_recalibrate=False))[2]
    after = {n: m.weight.shape[0] for n, m in prunable_layers(kept.model) if n != "fc"}
    before = {n: m.weight.shape[0] for n, m in prunable_layers(model) if n != "fc"}
    for name, channels in after.items():
        assert channels % 8 == 0 and channels >= 8, (name, channels)
        assert channels < before[name], name


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_target_speedup_with_rounding(fashion, scope):
    """Layer scope searches the uniform ratio (and says how close it could get); global scope prunes
    in small steps. Both reach the target."""
    model = DemoResNet(widths=(16, 32, 64)).eval()
    bundle = ModelBundle(model, "tiny", "demo:resnet", (1, 28, 28), 10, fashion.norm, fashion.class_names,
                         arch_kwargs={"widths": [16, 32, 64]})
    done, _ = run(bundle, fashion, fast(method="l1", pruning_ratio=None, target_speedup=2.5, round_to=8,
                                        bn_recalibrate=False, scope=scope))
    assert done.before.macs / done.after.macs >= 2.5
    if scope == "layer":
        note = next(n for n in done.notes if n.startswith("target 2.5×"))
        assert "uniform ratio" in note


class _NoOnnxVGG(DemoVGG):
    """A DemoVGG whose forward starts with an operator ONNX has no form for (the modified Bessel function i0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.special.i0(x))


def test_a_failed_onnx_export_is_a_note_and_the_model_is_saved(fashion, tmp_path):
    model = _NoOnnxVGG(cfg=(4, "M", 8, "M"), hidden=16).eval()
    bundle = ModelBundle(model, "vgg", "demo:vgg", (1, 28, 28), 10, fashion.norm, fashion.class_names,
                         arch_kwargs={"cfg": [4, "M", 8, "M"], "hidden": 16})
    done = list(run_pruning(bundle, fashion, fast(method="l2", pruning_ratio=0.5), out_dir=tmp_path / "out"))[-1]
    assert "onnx" not in done.files and any("ONNX export failed" in n for n in done.notes)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".prunelab-output", "README.md", "model.json",
                                                                     "model.pt", "model.pt2", "weights.safetensors"]
    assert load_model(done.files["model"]).model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.heavy_memory(gib=1.3)
def test_sigterm_during_a_run_leaves_no_output(tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "out"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, str(root / "main.py"), "prune", "--model", "demo:resnet", "--data",
                             "fashion-mnist", "--method", "l2", "--ratio", "0.5", "--finetune-epochs", "1",
                             "--eval-limit", "256", "--no-speed", "--out", str(out)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + 120
    line = ""
    while time.time() < deadline and "step" not in line and proc.poll() is None:
        line = proc.stdout.readline()  # "original: ..." then the fine-tuning starts
        if line.startswith("original"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-1000:]
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no output folder, no temporary beside it
