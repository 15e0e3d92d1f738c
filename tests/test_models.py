"""Model sources: demo zoo, torchvision, state_dict + code, pickled modules, TorchScript; save/load; ONNX."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from shared_fixtures import TINY_WIDTHS, tiny_resnet, tiny_vgg
from engine import models
from engine.data import Normalization
from engine.errors import NeedsTrust, UserError
from engine.models import ModelBundle, build_arch, export_onnx, load_model, save_model

X = torch.randn(4, 1, 28, 28)

USER_CODE = textwrap.dedent('''
    import torch.nn as nn

    class TinyNet(nn.Module):
        def __init__(self, width=4, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(1, width, 3, padding=1)
            self.bn = nn.BatchNorm2d(width)
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.fc = nn.Linear(width * 4, num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.bn(self.conv(x)).relu()).flatten(1))
''')


def tiny_bundle(model: nn.Module | None = None) -> ModelBundle:
    """A demo:resnet bundle with tiny widths, normalisation and class names."""
    return ModelBundle(model or tiny_resnet(), "tiny", "demo:resnet", (1, 28, 28), 10,
                       Normalization((0.3,), (0.35,)), tuple(f"c{i}" for i in range(10)),
                       {"widths": list(TINY_WIDTHS)}, {"note": "made by a test"})


@pytest.fixture
def user_code(tmp_path: Path) -> Path:
    path = tmp_path / "tiny_net.py"
    path.write_text(USER_CODE)
    return path


# ----------------------------------------------------------------------------- architectures

@pytest.mark.parametrize("arch", ["demo:resnet", "demo:vgg", "resnet"])
def test_demo_architectures_build_for_grey_and_rgb(arch):
    for channels in (1, 3):
        model = build_arch(arch, channels, 7).eval()
        with torch.no_grad():
            assert model(torch.randn(2, channels, 28, 28)).shape == (2, 7)


def test_demo_kwargs_set_the_widths():
    model = build_arch("demo:resnet", 1, 10, {"widths": [4, 8, 16]})  # lists, as JSON stores them
    assert model.stem[0].out_channels == 4 and model.fc.in_features == 16
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in build_arch("demo:resnet").parameters())


def test_a_constructor_that_reads_tensor_data_still_builds_and_is_budget_checked(monkeypatch):
    """RegNet computes its widths from tensors, which the meta-device probe cannot read (all 14 RegNets broke)."""
    model = build_arch("torchvision:regnet_x_400mf", 3, 10)
    assert next(model.parameters()).device.type == "cpu" and model.fc.out_features == 10
    import engine.budget

    monkeypatch.setattr(engine.budget, "check_fits", lambda size, what: (_ for _ in ()).throw(UserError(what)))
    with pytest.raises(UserError, match="regnet_x_400mf"):
        build_arch("torchvision:regnet_x_400mf", 3, 10)


def test_unknown_architectures_are_user_errors():
    with pytest.raises(UserError, match="valid: demo:resnet, demo:vgg"):
        build_arch("demo:alexnet")
    with pytest.raises(UserError, match="unknown architecture"):
        build_arch("keras:thing")
    with pytest.raises(UserError, match="unknown torchvision architecture"):
        build_arch("torchvision:not_a_net")
    with pytest.raises(UserError, match="unknown demo model"):
        load_model("demo:alexnet")


def test_torchvision_resnet18_adapted_to_one_channel_and_ten_classes():
    bundle = load_model("torchvision:resnet18", input_shape=(1, 28, 28), num_classes=10)
    assert bundle.arch == "torchvision:resnet18" and not bundle.scripted
    assert bundle.model.conv1.in_channels == 1 and bundle.model.conv1.out_channels == 64
    assert bundle.model.fc.out_features == 10
    with torch.no_grad():
        assert bundle.model(X[:2]).shape == (2, 10)


def test_torchvision_local_weights_skip_mismatched_layers(tmp_path):
    source = build_arch("torchvision:resnet18", 3, 1000)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": source.state_dict()}, path)
    bundle = load_model("torchvision:resnet18", weights=str(path), input_shape=(1, 32, 32), num_classes=10)
    misshaped = {entry.split()[0] for entry in bundle.meta["weights"]["misshaped"]}
    assert misshaped == {"conv1.weight", "fc.weight", "fc.bias"}
    assert torch.equal(bundle.model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


# ----------------------------------------------------------------------------- state_dict + code

def test_state_dict_with_model_code(tmp_path, user_code):
    spec = f"{user_code}:TinyNet"
    reference = build_arch(f"code:{spec}", kwargs={"width": 6}).eval()
    weights = tmp_path / "tiny_state.pt"
    torch.save(reference.state_dict(), weights)
    bundle = load_model(str(weights), model_code=spec, model_kwargs={"width": 6})
    assert bundle.arch == f"code:{spec}" and bundle.arch_kwargs == {"width": 6}
    with torch.no_grad():
        assert torch.equal(bundle.model(X), reference(X))


def test_state_dict_without_code_or_with_wrong_code(tmp_path, user_code):
    weights = tmp_path / "tiny_state.pt"
    torch.save(build_arch(f"code:{user_code}:TinyNet", kwargs={"width": 6}).state_dict(), weights)
    with pytest.raises(UserError, match="--model-code"):
        load_model(str(weights))
    with pytest.raises(UserError, match="defines no class 'Nope'"):
        load_model(str(weights), model_code=f"{user_code}:Nope")
    with pytest.raises(UserError, match="do not fit the architecture"):
        load_model(str(weights), model_code=f"{user_code}:TinyNet", model_kwargs={"width": 5})
    with pytest.raises(UserError, match="PATH.py:ClassName"):
        load_model(str(weights), model_code="TinyNet")
    with pytest.raises(UserError, match="does not exist"):
        load_model(str(weights), model_code=f"{tmp_path / 'gone.py'}:TinyNet")
    with pytest.raises(UserError, match="could not be built"):
        load_model(str(weights), model_code=f"{user_code}:TinyNet", model_kwargs={"depth": 3})


def test_broken_user_code_is_a_user_error(tmp_path):
    bad = tmp_path / "bad_net.py"
    bad.write_text("import torch.nn as nn\nraise RuntimeError('boom')\n")
    with pytest.raises(UserError, match="importing .*bad_net.py failed: RuntimeError: boom"):
        build_arch(f"code:{bad}:Net")


# ----------------------------------------------------------------------------- pickled modules and TorchScript

def test_whole_pickled_module_needs_trust(tmp_path):
    model = tiny_resnet()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(UserError, match="--trust") as info:
        load_model(str(path))
    assert "DemoResNet" in str(info.value)
    bundle = load_model(str(path), trust=True)
    assert bundle.arch == "module" and isinstance(bundle.model, models.DemoResNet)
    with torch.no_grad():
        assert torch.equal(bundle.model(X), model(X))


def test_save_full_module_keeps_metadata(tmp_path):
    bundle = tiny_bundle()
    bundle.meta = {"input_shape": [1, 28, 28]}
    path = models.save_full_module(bundle, tmp_path / "full.pt")
    loaded = load_model(str(path), trust=True)
    assert loaded.input_shape == (1, 28, 28) and loaded.meta == {"input_shape": [1, 28, 28]}
    with pytest.raises(UserError, match="save_full_module"):
        save_model(loaded, tmp_path / "again.pt")


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_file_is_recognised_but_not_prunable(tmp_path):
    model = tiny_resnet()
    path = tmp_path / "scripted.pt"
    torch.jit.script(model).save(str(path))
    with pytest.raises(NeedsTrust, match="TorchScript archive"):
        load_model(str(path))  # TorchScript is code: never loaded without trust
    bundle = load_model(str(path), trust=True)
    assert bundle.scripted and bundle.arch == "torchscript"
    with torch.no_grad():
        assert torch.allclose(bundle.model(X), model(X), atol=1e-5)
    with pytest.raises(UserError, match="TorchScript"):
        bundle.require_prunable()
    tiny_bundle().require_prunable()  # eager models pass


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_traced_torchscript_is_recognised_too(tmp_path):
    path = tmp_path / "traced.pt"
    torch.jit.trace(tiny_vgg(), X[:1]).save(str(path))
    assert load_model(str(path), trust=True).scripted


@pytest.mark.parametrize("content", [b"", b"not a torch file at all", b"PK\x03\x04 truncated zip"])
def test_corrupt_model_file_is_a_user_error(tmp_path, content):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=str(path)):
        load_model(str(path))


def test_truncated_model_file_is_a_user_error(tmp_path):
    good = save_model(tiny_bundle(), tmp_path / "good.pt")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError):
        load_model(str(cut))


def test_missing_file_and_non_model_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_model(str(tmp_path / "missing.pt"))
    path = tmp_path / "numbers.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(UserError, match="neither a model nor a state_dict"):
        load_model(str(path))


# ----------------------------------------------------------------------------- save / load

def test_save_and_load_round_trip(tmp_path):
    bundle = tiny_bundle()
    for _ in range(2):  # give BatchNorm non-default running statistics
        bundle.model.train()(torch.randn(8, 1, 28, 28))
    bundle.model.eval()
    path = save_model(bundle, tmp_path / "sub" / "tiny.pt")
    assert not path.with_suffix(".pt.part").exists()
    torch.load(path, weights_only=True)  # our files never need trust
    loaded = load_model(str(path))
    assert loaded.arch == "demo:resnet" and loaded.input_shape == (1, 28, 28) and loaded.num_classes == 10
    assert loaded.norm == bundle.norm and loaded.class_names == bundle.class_names
    assert loaded.meta == {"note": "made by a test"}
    with torch.no_grad():
        assert torch.equal(loaded.model(X), bundle.model(X))


def test_round_trip_of_a_structurally_pruned_model(tmp_path):
    import torch_pruning as tp

    bundle = tiny_bundle(tiny_vgg())
    bundle.arch, bundle.arch_kwargs = "demo:vgg", {"cfg": [4, "M", 8, "M"], "hidden": 16}
    pruner = tp.pruner.MagnitudePruner(bundle.model, X[:1], importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.5, ignored_layers=[bundle.model.classifier[-1]])
    pruner.step()
    assert bundle.model.features[0].out_channels == 2
    path = save_model(bundle, tmp_path / "pruned.pt", pruned=True)
    loaded = load_model(str(path))
    assert loaded.model.features[0].out_channels == 2
    with torch.no_grad():
        assert torch.equal(loaded.model(X), bundle.model(X))


def test_demo_source_reads_the_resource_file(tmp_path, monkeypatch):
    monkeypatch.setattr(models.loading, "demo_path", lambda name: tmp_path / f"demo_{name}.pt")
    with pytest.raises(UserError, match="python main.py train --model demo:resnet"):
        load_model("demo:resnet")
    save_model(tiny_bundle(), tmp_path / "demo_resnet.pt")
    bundle = load_model("demo:resnet")
    assert bundle.source == "demo:resnet" and bundle.model.stem[0].out_channels == TINY_WIDTHS[0]


def test_model_from_user_code_needs_code_again(tmp_path, user_code):
    spec = f"{user_code}:TinyNet"
    bundle = ModelBundle(build_arch(f"code:{spec}").eval(), "x", f"code:{spec}", (1, 28, 28), 10)
    path = save_model(bundle, tmp_path / "coded.pt")
    with pytest.raises(UserError, match="--model-code"):
        load_model(str(path))
    loaded = load_model(str(path), model_code=spec)
    with torch.no_grad():
        assert torch.equal(loaded.model(X), bundle.model(X))


def test_copy_is_independent():
    bundle = tiny_bundle()
    twin = bundle.copy()
    with torch.no_grad():
        twin.model.fc.weight.zero_()
    assert float(bundle.model.fc.weight.detach().abs().sum()) > 0
    assert twin.arch_kwargs == bundle.arch_kwargs and twin.arch_kwargs is not bundle.arch_kwargs


# ----------------------------------------------------------------------------- ONNX

@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_export_onnx_matches_torch(tmp_path):
    import onnxruntime as ort

    model = tiny_resnet()
    path = export_onnx(model, (1, 28, 28), tmp_path / "onnx" / "tiny.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 1, 28, 28)  # batch 5 although exported at 1: the batch axis is dynamic
    (ort_out,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch_out = model(x).numpy()
    assert ort_out.shape == (5, 10)
    assert np.array_equal(ort_out.argmax(1), torch_out.argmax(1))
    assert np.allclose(ort_out, torch_out, atol=1e-4)


def test_garbled_pickles_are_user_errors(tmp_path):
    """Random damage to a legacy-format checkpoint fails in many places inside the unpickler
    (IndexError, struct.error, AssertionError, ...): every one must read as a UserError."""
    import io
    import random

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(3)}, buf, _use_new_zipfile_serialization=False)
    source = buf.getvalue()
    rng = random.Random(0)
    for i in range(150):
        data = bytearray(source)
        for _ in range(rng.randint(1, 5)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path = tmp_path / f"garbled{i}.pt"
        path.write_bytes(bytes(data[: rng.randrange(1, len(data) + 1)]))
        try:
            load_model(str(path))
        except UserError:
            pass


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_hostile_torchscript_runs_code_only_with_trust(hostile_torchscript):
    archive, marker = hostile_torchscript
    with pytest.raises(NeedsTrust):
        load_model(str(archive))
    assert not marker.exists()
    torch.jit.load(str(archive))  # the fixture is real: plain loading runs the archive's code
    assert marker.exists()


@pytest.mark.parametrize("content, expected", [
    (b"", "empty"), (b"\x01\x02garbage" * 50, "not a PyTorch file"), (b"PK\x03\x04 truncated", "not a PyTorch file")])
def test_garbage_never_asks_for_trust(tmp_path, content, expected):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=expected) as info:
        load_model(str(path))
    assert not isinstance(info.value, NeedsTrust)


def test_onnx_file_is_named(tmp_path):
    path = export_onnx(tiny_resnet(), (1, 28, 28), tmp_path / "model.bin")
    with pytest.raises(UserError, match="an ONNX model: PruneLab prunes PyTorch models"):
        load_model(str(path))


def test_weights_that_fill_under_half_are_refused(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3, 3), "conv1.weight": torch.zeros(64, 3, 7, 7)}, other)
    with pytest.raises(UserError, match=r"filled \d+ of \d+ tensors.*--partial-weights"):
        load_model("torchvision:resnet18", weights=str(other), input_shape=(3, 32, 32), num_classes=10)
    bundle = load_model("torchvision:resnet18", weights=str(other), input_shape=(3, 32, 32), num_classes=10,
                        partial_weights=True)
    assert bundle.meta["weights"]["filled"] == 1 and bundle.meta["weights"]["unexpected"] == ["encoder.weight"]


def test_user_code_that_exits_or_is_not_a_module(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("import argparse, torch.nn as nn\nclass Net(nn.Module):\n    pass\n"
                      "argparse.ArgumentParser().add_argument('--data', required=True)\n"
                      "p = argparse.ArgumentParser(); p.add_argument('--data', required=True); p.parse_args()\n")
    weights = tmp_path / "w.pt"
    torch.save({"w": torch.zeros(1)}, weights)
    with pytest.raises(UserError, match=r"called sys.exit\(2\) while being imported"):
        load_model(str(weights), model_code=f"{script}:Net")
    plain = tmp_path / "plain.py"
    plain.write_text("import torch.nn as nn\nclass Net(nn.Module):\n    pass\ndef helper():\n    pass\n")
    with pytest.raises(UserError, match="helper in .* is not an nn.Module subclass"):
        load_model(str(weights), model_code=f"{plain}:helper")
    with pytest.raises(UserError, match="nested more than"):
        load_model(str(weights), model_code=f"{plain}:Net", model_kwargs={"a": {"b": {"c": {"d": {"e": 1}}}}})
