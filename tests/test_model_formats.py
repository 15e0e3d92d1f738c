"""The user's own model: weights-only formats, torchvision/timm architectures fitted to the data, seeds,
the Open model dialog's recipe and check, and the same files through the command line."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cli import main as cli
from shared_fixtures import tiny_resnet, write_image_folder
from engine.data import load_dataset
from engine.errors import UserError
from engine.inputs import (NORM_PRESETS, ModelRecipe, RecipeChecked, check_recipe, model_for_data, open_recipe,
                           preset_norm)
from engine.models import build_arch, describe_file, list_architectures, load_model, sniff

ARCH = "torchvision:resnet18"


@pytest.fixture(scope="module")
def rgb(tmp_path_factory) -> Path:
    """An RGB ImageFolder of 32×32 images, 3 classes."""
    return write_image_folder(tmp_path_factory.mktemp("formats") / "rgb", per_class=8, size=(32, 32))


@pytest.fixture(scope="module")
def data(rgb):
    return load_dataset(f"imagefolder:{rgb}")


@pytest.fixture(scope="module")
def reference():
    """The 'trained' model a user brings: resnet18 for 3 channels and 3 classes, with moved BatchNorm statistics."""
    torch.manual_seed(1)
    model = build_arch(ARCH, 3, 3)
    model.train()(torch.rand(4, 3, 32, 32))
    return model.eval()


def same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


def save(kind: str, model: torch.nn.Module, path: Path) -> Path:
    """`model` saved the way other tools save it."""
    state = model.state_dict()
    if kind == "state_dict":
        torch.save(state, path)
    elif kind == "lightning":
        torch.save({"epoch": 7, "global_step": 70, "state_dict": {f"model.{k}": v for k, v in state.items()},
                    "hyper_parameters": {"lr": 0.1}}, path)
    elif kind == "dataparallel":
        torch.save({"model_state_dict": {f"module.{k}": v for k, v in state.items()}, "optimizer": {}}, path)
    elif kind == "ema":
        torch.save({"ema": state, "epoch": 3}, path)
    elif kind == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


@pytest.mark.parametrize("kind", ["state_dict", "lightning", "dataparallel", "ema", "safetensors"])
def test_weights_only_formats_load_by_architecture_name(tmp_path, data, reference, kind):
    path = save(kind, reference, tmp_path / ("w.safetensors" if kind == "safetensors" else "w.pt"))
    assert sniff(path) == ("safetensors" if kind == "safetensors" else "torch")
    by_file = model_for_data(str(path), data, model_code=ARCH)  # --model FILE --model-code torchvision:NAME
    by_name = model_for_data(ARCH, data, weights=str(path))  # --model torchvision:NAME --weights FILE
    for bundle in (by_file, by_name):
        assert bundle.arch == ARCH and bundle.meta["weights"]["filled"] == bundle.meta["weights"]["total"]
        assert same_outputs(bundle.model, reference)
    info = describe_file(path)
    assert info.needs_arch and not info.needs_trust and info.tensors == len(reference.state_dict())
    assert info.arch == ARCH and info.arch_source == "guessed"


def test_safetensors_reads_no_pickle(tmp_path, reference, monkeypatch):
    path = save("safetensors", reference, tmp_path / "w.safetensors")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load (pickle) used for safetensors"))
    assert same_outputs(load_model(str(path), model_code=ARCH, input_shape=(3, 32, 32), num_classes=3).model,
                        reference)


def test_checkpoint_that_records_its_timm_architecture_needs_no_name(tmp_path, data):
    model = build_arch("timm:resnet10t", 3, 3)
    path = tmp_path / "timm_train.pth.tar"
    torch.save({"arch": "resnet10t", "epoch": 1, "state_dict": model.state_dict()}, path)
    bundle = model_for_data(str(path), data)
    assert bundle.arch == "timm:resnet10t" and same_outputs(bundle.model, model)
    assert describe_file(path).arch_source == "recorded"


def test_torchvision_and_timm_take_channels_and_classes_from_the_data(data):
    for arch in (ARCH, "timm:resnet10t"):
        bundle, fitted = open_recipe(ModelRecipe(arch=arch), data)
        assert bundle.input_shape == (3, 32, 32) and bundle.num_classes == 3, arch
        with torch.no_grad():
            x, _ = next(iter(fitted.loader("test", 2)))
            assert bundle.model(x).shape == (len(x), 3)
    grey = model_for_data(ARCH, data, input_shape=(1, 32, 32))  # an explicit shape still wins
    assert grey.model.conv1.in_channels == 1


def test_head_and_stem_adapted_and_named(tmp_path, data):
    imagenet = build_arch(ARCH, 3, 1000)
    path = save("lightning", imagenet, tmp_path / "imagenet.ckpt")
    bundle = model_for_data(str(path), data, model_code=ARCH)
    misshaped = {m.split()[0] for m in bundle.meta["weights"]["misshaped"]}
    assert misshaped == {"fc.weight", "fc.bias"} and bundle.model.fc.out_features == 3
    assert torch.equal(bundle.model.layer4[1].conv2.weight, imagenet.layer4[1].conv2.weight)
    grey = model_for_data(str(path), data, model_code=ARCH, input_shape=(1, 32, 32))  # the stem changes too
    assert "conv1.weight" in {m.split()[0] for m in grey.meta["weights"]["misshaped"]}


def test_seeded_untrained_builds_are_identical(data):
    first = model_for_data(ARCH, data, seed=5).model.state_dict()
    again = model_for_data(ARCH, data, seed=5).model.state_dict()
    other = model_for_data(ARCH, data, seed=6).model.state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["conv1.weight"], other["conv1.weight"])
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    model_for_data(ARCH, data, seed=5)
    assert torch.equal(torch.rand(1), expected)  # the caller's random state is left as it was


def test_mismatching_file_is_named(tmp_path, data):
    path = tmp_path / "other.pt"
    torch.save(tiny_resnet(3, 3).state_dict(), path)
    with pytest.raises(UserError, match=r"do not fit the architecture \(filled \d+ of 122 tensors; missing: conv1.weight"
                                        r".*unexpected: stem.0.weight.*--partial-weights"):
        model_for_data(str(path), data, model_code=ARCH)
    with pytest.raises(UserError, match="holds only weights.*torchvision:NAME or timm:NAME"):
        model_for_data(str(path), data)
    with pytest.raises(UserError, match="unknown timm architecture 'resnet_nope'"):
        model_for_data(str(path), data, model_code="timm:resnet_nope")


def test_recipe_round_trips_through_json_and_checks(tmp_path, data, reference):
    path = save("dataparallel", reference, tmp_path / "dp.pt")
    recipe = ModelRecipe(file=str(path), arch=ARCH, norm="imagenet")
    again = ModelRecipe.from_json(json.loads(json.dumps(recipe.to_json())))
    assert again == recipe
    events = list(check_recipe(again, data, limit=5))
    done = events[-1]
    assert isinstance(done, RecipeChecked) and events[0].phase == "check"
    assert (done.tensors_filled, done.tensors_total, done.unmatched) == (122, 122, ())
    assert done.output_classes == done.dataset_classes == 3 and done.images == min(5, data.split_size("val"))
    assert done.norm_mean == NORM_PRESETS["imagenet"].mean and done.params > 11_000_000 and done.macs > 0
    with pytest.raises(UserError, match="damaged"):
        ModelRecipe.from_json({"file": "x", "colour": "red"})
    with pytest.raises(UserError, match="needs an architecture"):
        ModelRecipe(arch=f"{tmp_path}/net.py:Net").load_args()
    assert preset_norm("dataset", data) == (data.norm.mean, data.norm.std)
    with pytest.raises(UserError, match="valid: auto, dataset"):
        preset_norm("imagenet-21k", data)


def test_architecture_list_is_searchable():
    found = list_architectures("resnet18")
    assert "torchvision:resnet18" in found and any(n.startswith("timm:") for n in found)
    assert len(list_architectures()) > 500 and list_architectures("mobilenetv3 small", limit=3)


def test_command_line_loads_the_formats(tmp_path, rgb, capsys):
    """The same files through `python main.py evaluate`, in this process (cli.main with its own argv,
    environment and stderr: a process would only add torch's start-up)."""
    from tests.test_bad_inputs import run_in_process

    small = "torchvision:squeezenet1_1"  # evaluate measures latency: a small network keeps this quick
    imagenet = build_arch(small, 3, 1000)
    lightning = save("lightning", imagenet, tmp_path / "l.ckpt")
    dp = tmp_path / "dp.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in imagenet.state_dict().items()}, str(dp))
    wrong = tmp_path / "wrong.pt"
    torch.save(tiny_resnet(3, 3).state_dict(), wrong)
    common = ["--data", f"imagefolder:{rgb}", "--quiet", "--batch-size", "4", "--no-speed"]
    runs = {
        "untrained": ["--model", small],  # RGB folder, no --input-shape
        "lightning": ["--model", str(lightning), "--model-code", small],
        "safetensors": ["--model", small, "--weights", str(dp)],
    }
    results = {}
    for name, flags in runs.items():
        out = io.StringIO()
        code, err = run_in_process(["evaluate", *flags, *common], tmp_path, dict(os.environ), out)
        results[name] = (code, out.getvalue(), err)
    for name in ("untrained", "lightning", "safetensors"):
        rc, out, err = results[name]
        assert rc == 0 and "top-1 accuracy" in out, (name, err[-500:])
    for name in ("lightning", "safetensors"):  # the head was adapted to 3 classes and its weights named
        assert "filled 50 of 52 tensors; wrong shape: " in results[name][2], name
        assert "classifier.1.weight [1000, 512, 1, 1] vs [3, 512, 1, 1]" in results[name][2], name
    # a file that does not fit fails before any work (in this process: no start-up to pay)
    assert cli.main(["evaluate", "--model", str(wrong), "--model-code", small, *common]) == 2
    err = capsys.readouterr().err
    assert "do not fit the architecture" in err and "unexpected: stem.0.weight" in err, err
