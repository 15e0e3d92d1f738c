"""The deployment set, checked from outside: a fresh interpreter that cannot import PruneLab loads model.pt2
(or model.ts), model.onnx and the weights, preprocesses the images from model.json and the ONNX metadata
alone, and must give PruneLab's own predictions and reported top-1."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.main import main
from engine.data import load_dataset
from engine.inputs import fit_data
from engine.models import load_model

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4

# Runs in `python -I` from an empty folder: only torch, onnxruntime, Pillow and what the folder holds.
OUTSIDE = r'''
import json, math, os, re, sys
import numpy as np
import torch
import torch.nn.functional as F
import onnxruntime as ort
from PIL import Image

try:
    import engine  # noqa: F401
    importable = True
except ImportError:
    importable = False


def from_onnx_metadata(path, props):
    """The ONNX file's metadata_props alone say how to feed it."""
    c, h, w = props["input_shape"]
    resize = props["resize"]
    assert resize["policy"] == "cover-then-centre-crop", resize
    x = torch.from_numpy(np.array(Image.open(path).convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)[None]
    x = x.float() / 255
    if c == 1:
        x = (x * torch.tensor(props["grey_from_rgb"]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    ih, iw = x.shape[2:]
    if (ih, iw) != (h, w):
        s = max(h / ih, w / iw)
        nh, nw = max(h, math.floor(ih * s + 0.5)), max(w, math.floor(iw * s + 0.5))
        if (nh, nw) != (ih, iw):
            x = F.interpolate(x, size=(nh, nw), mode=resize["interpolation"], antialias=resize["antialias"],
                              align_corners=resize["align_corners"])
        x = x[:, :, (nh - h) // 2:(nh - h) // 2 + h, (nw - w) // 2:(nw - w) // 2 + w]
    return ((x - torch.tensor(props["mean"]).view(1, -1, 1, 1)) / torch.tensor(props["std"]).view(1, -1, 1, 1))


def check(folder, images_file, out_file):
    """One set: what its program, its ONNX file and its rebuild give for the images."""
    images = json.load(open(images_file))
    meta = json.load(open(os.path.join(folder, "model.json")))
    card = open(os.path.join(folder, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", card, re.S)
    os.chdir(folder)  # the card's code reads model.json beside it
    space = {}
    exec(next(b for b in blocks if "def preprocess" in b), space)  # the card's preprocessing, as a user copies it
    result = {"importable": importable, "files": sorted(os.listdir("."))}
    program = meta["program"]["file"]
    if program == "model.pt2":
        model = torch.export.load("model.pt2").module()
    elif program == "model.ts":
        model = torch.jit.load("model.ts")
    batch = torch.cat([space["preprocess"](p) for p, _ in images])
    with torch.no_grad():
        result["program"] = model(batch).tolist()
        result["program_batch1"] = model(batch[:1]).tolist()
    session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    props = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    result["onnx_props"] = props
    onnx_batch = np.concatenate([from_onnx_metadata(p, props).numpy() for p, _ in images])
    result["onnx"] = session.run(None, {session.get_inputs()[0].name: onnx_batch})[0].tolist()
    if meta.get("build"):  # the card's rebuild from weights.safetensors with the architecture's own code
        code = next(b for b in blocks if "def rebuild" in b)
        if meta["architecture"].startswith("code:"):
            import importlib.util
            path, _, cls = meta["architecture"][5:].rpartition(":")
            spec = importlib.util.spec_from_file_location("user_model", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            space[cls] = getattr(module, cls)
        import torchvision, timm  # noqa: E401
        space.update(torchvision=torchvision, timm=timm)
        exec(code, space)
        with torch.no_grad():
            result["rebuilt"] = space["model"](batch).tolist()
    json.dump(result, open(out_file, "w"))


for job in json.load(open(sys.argv[1])):  # [folder, images file, result file] per set
    check(*map(os.path.abspath, job))
'''

USER_CODE = '''
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, num_classes=3, width=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))
'''

CLASSES = ("circle", "square", "stripes")


def rgb_folder(root: Path, per_class: dict[str, int]) -> Path:
    """train/ and test/ of three classes of 40×48 RGB images (not the model's size: the resize is used)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for k, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 80, (40, 48, 3), dtype=np.uint8)
                img[:, :, k] += np.uint8(120)
                Image.fromarray(img).save(root / split / name / f"{i}.png")
    return root


def _fashion_pngs(folder: Path, limit: int) -> tuple[list, object]:
    """The Fashion-MNIST test images PruneLab evaluates with `limit`, as PNG files."""
    from PIL import Image

    data = load_dataset("fashion-mnist")
    split = data.splits["test"]
    picks = data.sample("test", limit)
    folder.mkdir()
    images = []
    for i in picks:
        path = folder / f"{i}.png"
        Image.fromarray(split.images[split.indices[i]][0].numpy()).save(path)
        images.append((str(path), int(split.labels[split.indices[i]])))
    return images, data


def _prune(out: Path, argv: list[str], speed: bool = False) -> dict:
    code = main(["prune", *argv, "--method", "l1", "--ratio", "0.5", *([] if speed else ["--no-speed"]), "--quiet",
                 "--out", str(out), "--json", str(out.parent / f"{out.name}.json")])
    assert code == 0
    return json.loads((out.parent / f"{out.name}.json").read_text())


def _ours(out: Path, spec: str, argv_model: dict, limit: int | None) -> np.ndarray:
    """PruneLab's own logits for the evaluated test images: its model.pt and its data pipeline."""
    data = load_dataset(spec, input_shape=argv_model.get("input_shape"))
    bundle = load_model(str(out / "model.pt"), model_code=argv_model.get("code"))
    fitted = fit_data(bundle, data)
    with torch.inference_mode():
        return torch.cat([bundle.model.eval()(x) for x, _ in fitted.loader("test", 64, limit=limit)]).numpy()


CASES = [
    pytest.param("demo", id="demo-resnet-fashion"),
    pytest.param("torchvision", id="torchvision-resnet18-folder"),
    pytest.param("timm", id="timm-resnet10t-folder"),
    pytest.param("code", id="user-code-folder"),
]


def _make_set(case: str, tmp_path: Path) -> dict:
    """One deployment set made by `prune --out`, the images to check it on and PruneLab's own logits."""
    out = tmp_path / "set"
    limit = None
    if case == "demo":
        limit = 200
        images, _ = _fashion_pngs(tmp_path / "pngs", limit)
        spec, model_args = "fashion-mnist", {}
        report = _prune(out, ["--model", "demo:resnet", "--data", spec, "--eval-limit", str(limit)])
    else:
        root = rgb_folder(tmp_path / "folder", {"train": 8, "test": 4})
        spec = f"imagefolder:{root}"
        images = [(str(root / "test" / name / f"{i}.png"), k) for k, name in enumerate(CLASSES) for i in range(4)]
        model_args = {"input_shape": (3, 32, 32)}
        argv = ["--data", spec, "--input-shape", "3,32,32"]
        if case == "torchvision":
            argv += ["--model", "torchvision:resnet18"]
        elif case == "timm":
            argv += ["--model", "timm:resnet10t"]
        else:
            (tmp_path / "net.py").write_text(USER_CODE)
            torch.manual_seed(0)
            import importlib.util

            spec_ = importlib.util.spec_from_file_location("user_net", tmp_path / "net.py")
            module = importlib.util.module_from_spec(spec_)
            spec_.loader.exec_module(module)
            torch.save(module.Net().state_dict(), tmp_path / "net.pt")
            model_args["code"] = f"{tmp_path / 'net.py'}:Net"
            argv += ["--model", str(tmp_path / "net.pt"), "--model-code", model_args["code"]]
        report = _prune(out, argv)
    return {"out": out, "images": images, "report": report, "meta": json.loads((out / "model.json").read_text()),
            "ours": _ours(out, spec, model_args, limit)}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict:
    """Each case's set and what one fresh interpreter outside PruneLab made of it. One interpreter for all:
    each start imported torch, onnxruntime and timm again (4.5 s of CPU a set). A case whose set could not
    be made holds its exception, raised by its own test."""
    made, results = {}, {}
    for param in CASES:
        case = param.values[0]
        try:
            made[case] = _make_set(case, tmp_path_factory.mktemp(case))
        except Exception as exc:  # noqa: BLE001 - the case's test fails with it; the other sets still run
            made[case] = exc
            continue
        folder = made[case]["out"].parent
        (folder / "images.json").write_text(json.dumps(made[case]["images"]))
        results[case] = folder / "result.json"
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "outside.py").write_text(OUTSIDE)
    jobs = [[str(made[c]["out"]), str(r.parent / "images.json"), str(r)] for c, r in results.items()]
    (elsewhere / "jobs.json").write_text(json.dumps(jobs))
    subprocess.run([sys.executable, "-I", "outside.py", "jobs.json"], cwd=elsewhere, check=True, timeout=300)
    for case, result in results.items():
        made[case]["got"] = json.loads(result.read_text())
    return made


@pytest.mark.heavy_memory(gib=1.1)
@pytest.mark.parametrize("case", CASES)
def test_the_set_works_without_prunelab(case, sets):
    made = sets[case]
    if isinstance(made, Exception):
        raise made
    images, report, meta, ours, got = (made[k] for k in ("images", "report", "meta", "ours", "got"))

    assert not got["importable"], "the outside interpreter could import PruneLab"
    assert {"model.onnx", "weights.safetensors", "model.json", "README.md", "model.pt"} <= set(got["files"])
    assert meta["program"]["file"] in got["files"]
    labels = np.array([label for _, label in images])
    for kind in ("program", "onnx", "rebuilt"):
        if kind == "rebuilt" and case == "demo":
            continue  # the demo network is PruneLab's own code: no architecture to rebuild outside
        theirs = np.array(got[kind])
        assert theirs.shape == ours.shape, kind
        assert (theirs.argmax(1) == ours.argmax(1)).all(), kind
        assert np.abs(theirs - ours).max() <= TOLERANCE, (kind, np.abs(theirs - ours).max())
    assert np.abs(np.array(got["program_batch1"]) - ours[:1]).max() <= TOLERANCE  # a dynamic batch
    top1 = float((np.array(got["program"]).argmax(1) == labels).mean())
    assert top1 == pytest.approx(report["after"]["top1"], abs=1e-9) and len(images) == meta["figures"]["images"]
    assert meta["figures"]["top1"] == report["after"]["top1"]

    props = got["onnx_props"]
    pre = meta["preprocessing"]
    assert props["mean"] == pre["mean"] and props["std"] == pre["std"] and props["input_shape"] == pre["input_shape"]
    assert props["class_names"] == meta["classes"] and props["pruning_method"] == "l1"
    assert props["pruning_ratio"] == 0.5 and props["prunelab_version"]
    if case != "demo":
        assert meta["classes"] == list(CLASSES) and pre["mean"] is not None and len(pre["mean"]) == 3


def test_the_card_and_json_say_what_a_user_needs(tmp_path):
    """Figures with their interval and images, the original's identity, the pruning settings, the card."""
    from engine.deploy import sha256_file
    from engine.models import demo_path
    from engine.units import wilson_interval

    out = tmp_path / "set"
    report = _prune(out, ["--model", "demo:resnet", "--data", "fashion-mnist", "--eval-limit", "100",
                          "--batch-size", "8"], speed=True)
    meta = json.loads((out / "model.json").read_text())
    fig = meta["figures"]
    paired = report["latency_speedup"]
    assert fig["speedup"]["latency"] == paired["median"] and fig["speedup"]["batch"] == paired["batch"] == 8
    assert fig["speedup"]["device"] == "cpu" and fig["speedup"]["interval"] == [paired["low"], paired["high"]]
    assert set(fig["latency_ms"]) == {"1", "8"}
    assert fig["latency_ms"]["8"] == report["after"]["latency_ms"]["8"]["median"]
    assert fig["images"] == 100 and fig["top1"] == report["after"]["top1"]
    assert fig["top1_interval_95"] == [round(v, 4) for v in wilson_interval(fig["top1"], 100)]
    assert fig["macs"] == report["after"]["macs"] and fig["params"] == report["after"]["params"]
    assert meta["original"]["file"] == "demo_resnet.pt"
    assert meta["original"]["sha256"] == sha256_file(demo_path("resnet"))
    assert meta["pruning"]["method"] == "l1" and meta["pruning"]["ratio"] == 0.5
    assert meta["pruning"]["family"] == "structured"
    assert meta["input"]["shape"] == ["batch", 1, 28, 28] and meta["output"]["shape"] == ["batch", 10]
    assert meta["layers"] and all(isinstance(v, dict) for v in meta["layers"].values())
    card = (out / "README.md").read_text()
    assert f"{100 * fig['top1']:.2f} %" in card and "100 test images" in card
    assert f"{paired['median']:.2f}x" in card and "at batch 8 on cpu" in card
    assert "torch.export.load('model.pt2').module()" in card and "ort.InferenceSession('model.onnx'" in card
    assert "model.pt`: PruneLab's own file" in card


def test_an_export_that_fails_falls_back_and_says_why(tmp_path, monkeypatch):
    """torch.export failing gives model.ts with the reason in the card; both failing is said too."""
    import engine.deploy as deploy
    from engine.data import Normalization
    from engine.models import DemoResNet, ModelBundle

    def refuse(*_args, **_kwargs):
        raise RuntimeError("no export for this one")

    bundle = ModelBundle(DemoResNet(widths=(8, 16, 32)).eval(), "tiny", "demo:resnet", (1, 28, 28), 10,
                         Normalization((0.5,), (0.25,)), tuple("abcdefghij"), {"widths": [8, 16, 32]})
    monkeypatch.setattr(deploy, "export_program", refuse)
    notes: list[str] = []
    files = deploy.save_outputs(bundle, tmp_path / "ts", structured=True, notes=notes)
    assert "torchscript" in files and "program" not in files
    card = (tmp_path / "ts" / "README.md").read_text()
    assert "model.ts" in card and "no export for this one" in card and "torch.jit.load('model.ts')" in card
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(torch.jit.load(files["torchscript"])(x), bundle.model(x), atol=1e-5)

    monkeypatch.setattr(deploy, "trace_torchscript", refuse)
    files = deploy.save_outputs(bundle, tmp_path / "none", structured=True, notes=notes)
    assert "torchscript" not in files and "program" not in files and "onnx" in files
    meta = json.loads((tmp_path / "none" / "model.json").read_text())
    assert meta["program"]["file"] is None and "no export" in meta["program"]["trace_error"]
    assert "No PyTorch program" in (tmp_path / "none" / "README.md").read_text()
    assert any("neither torch.export" in n for n in notes)


def test_a_bad_out_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code = main(["prune", "--model", "demo:resnet", "--data", "fashion-mnist", "--method", "l1", "--ratio", "0.5",
                 "--out", str(tmp_path / "afile"), "--quiet"])
    assert code == 2 and "is a file" in capsys.readouterr().err


def test_a_plan_with_save_models_writes_the_set_per_run(tmp_path, fashion):
    """Plans save each run's model through the same writer as prune --out."""
    from engine.data import Normalization
    from engine.models import DemoResNet, ModelBundle, save_model

    torch.manual_seed(0)
    save_model(ModelBundle(DemoResNet(widths=(8, 16, 32)).eval(), "tiny", "demo:resnet", (1, 28, 28), 10,
                           Normalization((0.3,), (0.35,)), fashion.class_names, {"widths": [8, 16, 32]}),
               tmp_path / "tiny.pt")
    plan = tmp_path / "plan.toml"
    plan.write_text(f'[plan]\nname = "p"\nsave_models = true\nout_dir = "{tmp_path / "models"}"\n'
                    f'[model]\nsource = "{tmp_path / "tiny.pt"}"\n[sweep]\nmethods = ["l1"]\nratios = [0.5]\n'
                    "[prune]\neval_limit = 64\nmeasure_speed = false\nround_to = 4\n")
    assert main(["sweep", str(plan), "--store", str(tmp_path / "s.sqlite"), "--quiet"]) == 0
    (run,) = list((tmp_path / "models").iterdir())
    assert {"model.pt2", "model.onnx", "weights.safetensors", "model.json", "README.md", "model.pt"} <= {
        p.name for p in run.iterdir()}
    meta = json.loads((run / "model.json").read_text())
    assert meta["preprocessing"]["mean"] == [0.3] and meta["figures"]["images"] == 64
    assert meta["original"]["sha256"] and meta["pruning"]["method"] == "l1"
