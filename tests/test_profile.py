"""Where the time goes: per-layer times, width curves, onnxruntime's node names, the cache, the command."""
from __future__ import annotations

import json
import time

import pytest
import torch.nn as nn

from shared_fixtures import tiny_resnet
from engine import profile as prof
from engine.profile import WidthCurve, curve_widths, module_of_node, profile_model


def run_cli(args: list[str], cwd) -> tuple[int, str, str]:
    """The command in this process: (exit code, stdout, stderr)."""
    import io
    import os

    from test_bad_inputs import run_in_process

    out = io.StringIO()
    code, stderr = run_in_process(args, cwd, dict(os.environ), stdout=out)
    return code, out.getvalue(), stderr


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNELAB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def quiet(monkeypatch):
    """The machine counts as quiet, so the profile is cached whatever else runs (only quiet figures are)."""
    monkeypatch.setattr(prof, "noise_note", lambda *a, **k: "")


def test_node_names_map_to_their_modules():
    modules = {"stem.0", "layer1.0.conv1", "layer2.0.shortcut.0", "fc"}
    assert module_of_node("/layer1/layer1.0/conv1/Conv", modules) == "layer1.0.conv1"
    assert module_of_node("/layer2/layer2.0/shortcut/shortcut.0/Conv", modules) == "layer2.0.shortcut.0"
    assert module_of_node("/stem/stem.0/Conv", modules) == "stem.0"
    assert module_of_node("/fc/Gemm", modules) == "fc"
    assert module_of_node("/layer1/layer1.0/relu/Relu", modules) is None


def test_curve_widths_and_snapping():
    assert curve_widths(64) == [8, 16, 24, 32, 40, 48, 56, 64]
    assert curve_widths(6, groups=3) == [3, 6]
    curve = WidthCurve("c", (8, 16, 24, 32), (1.0, 1.0, 2.0, 2.1), (1.0,) * 4, (2.1,) * 4)
    assert curve.at(12) == pytest.approx(1.0)
    assert curve.snap(10) == 16  # 16 channels cost what 10 do: keep them
    assert curve.snap(20) == 20  # 24 costs more than 20 (interpolated), so no snap up
    assert curve.steps() == [24]


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_profile_times_every_prunable_layer_and_caches(runtime, cache, quiet, monkeypatch):
    model = tiny_resnet()
    p = profile_model(model, (1, 16, 16), batch=2, runtime=runtime, threads=1, rounds=5, passes=1)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [t.name for t in p.layers] == names
    assert all(t.ms > 0 and t.low <= t.ms <= t.high for t in p.layers)  # onnxruntime's nodes found their layers
    assert sum(t.share for t in p.layers) + p.other_share == pytest.approx(1.0, abs=0.02)
    assert p.total_low <= p.total_ms <= p.total_high and not p.cached
    stem = p.curves["stem.0"]
    assert stem.widths == (1, 2, 3, 4) and all(ms > 0 for ms in stem.ms)
    assert (p.deployed_ms is not None) == (runtime == "onnxruntime")
    assert len(list((cache / "profiles").glob("*.json"))) == 1 and not list((cache / "profiles").glob(".*"))

    def no_timing(*args, **kwargs):
        raise AssertionError("a cached profile was measured again")

    monkeypatch.setattr(prof, "_torch_layer_times", no_timing)
    monkeypatch.setattr(prof, "_ort_layer_times", no_timing)
    t0 = time.process_time()
    again = profile_model(model, (1, 16, 16), batch=2, runtime=runtime, threads=1, rounds=5, passes=1)
    assert again.cached and time.process_time() - t0 < 1.0
    assert again.layers == p.layers and again.curves == p.curves
    with pytest.raises(AssertionError, match="measured again"):  # another batch is another key
        profile_model(model, (1, 16, 16), batch=3, runtime=runtime, threads=1)


def test_depthwise_and_grouped_layers_get_curves(cache):
    model = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.Conv2d(8, 8, 1, groups=2), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()
    p = profile_model(model, (2, 6, 6), batch=1, runtime="onnxruntime", threads=1, rounds=5, passes=1)
    assert p.curves["1"].widths == tuple(range(1, 9))
    assert p.curves["2"].widths == (2, 4, 6, 8)
    assert set(p.curves) == {"0", "1", "2", "4"}


def test_profile_command_and_its_cache(tmp_path, cache, quiet):
    from shared_fixtures import write_fake_fashion

    # the data gives the input shape only: a Fashion-MNIST of 24 images, not the whole set (0.15 GiB more)
    spec = f"fashion-mnist:{write_fake_fashion(tmp_path / 'fashion')}"
    out = tmp_path / "p.json"
    code, stdout, stderr = run_cli(["profile", "--model", "demo:resnet", "--data", spec, "--batch-size",
                                    "2", "--threads", "1", "--no-curves", "--json", str(out), "--quiet"], tmp_path)
    assert code == 0, stderr
    data = json.loads(out.read_text())
    assert data["runtime"] == "torch" and data["batch"] == 2 and len(data["layers"]) == 10
    assert "everything else" in stdout and "measured in" in stdout
    code, stdout, _ = run_cli(["profile", "--model", "demo:resnet", "--data", spec, "--batch-size", "2",
                               "--threads", "1", "--no-curves", "--quiet"], tmp_path)
    assert code == 0 and "read from the cache" in stdout


@pytest.mark.parametrize("args, words", [
    (["--runtime", "onnxruntime", "--device", "cuda"], "CUDAExecutionProvider"),
    (["--runtime", "tensorrt"], "invalid choice"),
    (["--json", "{tmp}"], "--json"),
])
def test_profile_bad_input_is_one_line_before_loading(args, words, tmp_path, cache, monkeypatch):
    import cli.running

    monkeypatch.setattr(cli.running, "resolve", lambda *a: pytest.fail("loaded the model before refusing"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, stderr = run_cli(["profile", "--model", "demo:resnet", "--data", "fashion-mnist", *args], tmp_path)
    assert code == 2 and words in stderr and len(stderr.strip().splitlines()) == 1, stderr



def test_a_busy_machine_is_said_beside_the_profile(cache, monkeypatch):
    from engine.timing import MachineLoad

    monkeypatch.setattr(prof, "machine_load", lambda *a, **k: MachineLoad(2, 2.0, 30.0))
    p = profile_model(tiny_resnet(), (1, 16, 16), batch=1, threads=1, rounds=5, passes=1, curves=False)
    assert p.note.startswith("noisy machine") and "2.0 of 2 cores" in p.note


def test_a_busy_machines_profile_is_never_served_from_the_cache(cache, monkeypatch):
    """Figures taken beside other work are not cached, and a noisy profile already in the cache (from an older
    version) is measured again: the latency allocation planned with one for every later run."""
    from dataclasses import replace

    from engine.timing import MachineLoad

    model = tiny_resnet()
    monkeypatch.setattr(prof, "machine_load", lambda *a, **k: MachineLoad(2, 2.0, 30.0))
    busy = profile_model(model, (1, 16, 16), batch=1, threads=1, rounds=5, passes=1)
    assert busy.note and not list(cache.glob("profiles/*.json"))
    key = prof.cache_key(model, (1, 16, 16), 1, "torch", "cpu", 1)
    prof.store(key, replace(busy, note=""))  # as if quiet: served
    assert profile_model(model, (1, 16, 16), batch=1, threads=1, rounds=5, passes=1).cached
    prof.store(key, busy)  # noisy in the cache: measured again
    again = profile_model(model, (1, 16, 16), batch=1, threads=1, rounds=5, passes=1)
    assert not again.cached
