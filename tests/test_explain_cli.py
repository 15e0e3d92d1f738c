"""`python main.py explain`: the Teach tab's facts as JSON, run in-process on tiny models.

Scores are checked against numbers worked out by hand from weights set by the test; groups against
what a residual block and a concatenation tie together."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from shared_fixtures import TINY_WIDTHS, tiny_resnet, write_fake_fashion
from cli import main as cli
from engine.models import ModelBundle, save_model

CODE = '''
import torch
import torch.nn as nn


class Tiny(nn.Module):
    """One convolution with four filters and a head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        return self.fc(self.conv(x).relu().mean((2, 3)))


class Joined(nn.Module):
    """Two branches joined by a concatenation, read by one convolution."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 6, 3, padding=1)
        self.c = nn.Conv2d(10, 5, 1)
        self.fc = nn.Linear(5, 10)

    def forward(self, x):
        return self.fc(self.c(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))
'''

# filter i of Tiny.conv holds ±MAGNITUDE[i] in all nine taps (signs alternate)
MAGNITUDE = [3.0, 1.0, 4.0, 2.0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A fake Fashion-MNIST, the model code, a Tiny state_dict with set weights, a Joined one, a tiny ResNet."""
    root = tmp_path_factory.mktemp("explain")
    write_fake_fashion(root / "fashion", n_train=16, n_test=8)
    (root / "models.py").write_text(CODE)
    namespace: dict = {}
    exec(CODE, namespace)
    tiny = namespace["Tiny"]()
    signs = torch.tensor([1.0, -1.0] * 5)[:9].view(3, 3)
    with torch.no_grad():
        for i, m in enumerate(MAGNITUDE):
            tiny.conv.weight[i, 0] = m * signs
        tiny.fc.weight.zero_()  # the head reads the channels too; zero, so Group L2 sees only the filters
    torch.save(tiny.state_dict(), root / "tiny.pt")
    torch.manual_seed(0)
    torch.save(namespace["Joined"]().state_dict(), root / "joined.pt")
    bundle = ModelBundle(tiny_resnet(), str(root / "resnet.pt"), "demo:resnet", (1, 28, 28), 10,
                         arch_kwargs={"widths": list(TINY_WIDTHS)})
    save_model(bundle, root / "resnet.pt")
    return root


def explain(workdir: Path, model: str, layer: str, *extra: str, code: str | None = None) -> tuple[int, dict]:
    out = workdir / f"{model}-{layer}.json"
    out.unlink(missing_ok=True)
    args = ["explain", "--model", str(workdir / model), "--data", f"fashion-mnist:{workdir / 'fashion'}",
            "--layer", layer, "--json", str(out), "--quiet", *extra]
    if code:
        args += ["--model-code", f"{workdir / 'models.py'}:{code}"]
    code_ = cli.main(args)
    return code_, json.loads(out.read_text()) if out.exists() else {}


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_scores_are_the_hand_computed_norms(workdir, capsys):
    code, out = explain(workdir, "tiny.pt", "conv", "--methods", "l1,l2", "--ratio", "0.5", "--round-to", "0",
                        code="Tiny")
    assert code == 0, capsys.readouterr().err
    # L1: nine taps of ±m give 9m per filter = 27, 9, 36, 18; torch-pruning divides by their mean (22.5)
    assert out["methods"]["l1"]["scores"] == pytest.approx([1.2, 0.4, 1.6, 0.8], rel=1e-5)
    # Group L2: squared weights 81, 9, 144, 36 (the zeroed head adds nothing); divided by their mean (67.5)
    assert out["methods"]["l2"]["scores"] == pytest.approx([1.2, 9 / 67.5, 144 / 67.5, 36 / 67.5], rel=1e-5)
    for name in ("l1", "l2"):
        assert sorted(out["methods"][name]["cut"]) == [1, 3]  # the two smallest filters go at 0.5
        assert out["methods"][name]["ranks"] == [2, 0, 3, 1]  # first to go: 1, then 3, 0, 2
    assert out["jaccard"] == {"methods": ["l1", "l2"], "matrix": [[1.0, 1.0], [1.0, 1.0]]}
    assert "cuts 2 of 4" in capsys.readouterr().out


def test_json_keys_and_activations_for_an_image(workdir, capsys):
    code, out = explain(workdir, "tiny.pt", "conv", "--methods", "l1,random", "--ratio", "0.5", "--round-to", "0",
                        "--image", "3", code="Tiny")
    assert code == 0, capsys.readouterr().err
    assert {"layer", "group", "methods", "jaccard", "activations"} <= set(out)
    assert out["layer"] == "conv"
    assert set(out["methods"]) == {"l1", "random"}
    for facts in out["methods"].values():
        assert {"scores", "ranks", "cut"} <= set(facts)
        assert len(facts["scores"]) == len(facts["ranks"]) == 4
    assert np.array(out["jaccard"]["matrix"]).shape == (2, 2)
    # the activations are this image's conv output, channel by channel; the cut ones are l1's
    from engine.data import load_dataset
    from engine.explain import test_image

    namespace: dict = {}
    exec(CODE, namespace)
    tiny = namespace["Tiny"]()
    tiny.load_state_dict(torch.load(workdir / "tiny.pt"))
    image, _, _ = test_image(load_dataset(f"fashion-mnist:{workdir / 'fashion'}"), 3)
    with torch.no_grad():
        maps = tiny.conv(image)[0].flatten(1)
    stats = out["activations"]
    assert [s["channel"] for s in stats] == [0, 1, 2, 3]
    assert [s["mean"] for s in stats] == pytest.approx(maps.mean(1).tolist(), abs=1e-5)
    assert [s["peak"] for s in stats] == pytest.approx(maps.abs().amax(1).tolist(), abs=1e-5)
    assert [i for i, s in enumerate(stats) if s["cut"]] == out["methods"]["l1"]["cut"]
    assert out["image"]["index"] == 3 and len(out["image"]["original"]) == 5


def test_residual_block_group_has_both_convolutions_and_the_shortcut(workdir, capsys):
    code, second = explain(workdir, "resnet.pt", "layer2.0.conv2", "--methods", "l1")
    assert code == 0, capsys.readouterr().err
    group = {g["layer"]: g["reason"] for g in second["group"]}
    assert "residual add" in group["layer2.0.shortcut.0"]  # added to conv2's output: same channels
    assert "BatchNorm" in group["layer2.0.bn2"] and "BatchNorm" in group["layer2.0.shortcut.1"]
    assert "next layer" in group["layer3.0.conv1"]  # the next block reads them
    assert "layer2.0.conv1" not in group  # its output is not added to anything
    code, first = explain(workdir, "resnet.pt", "layer2.0.conv1", "--methods", "l1")
    assert code == 0
    assert {g["layer"] for g in first["group"]} == {"layer2.0.bn1", "layer2.0.conv2"}
    code, shortcut = explain(workdir, "resnet.pt", "layer2.0.shortcut.0", "--methods", "l1")
    assert code == 0
    group = {g["layer"]: g["reason"] for g in shortcut["group"]}
    assert "residual add" in group["layer2.0.conv2"]
    assert all(set(g) >= {"layer", "reason"} for g in shortcut["group"])


def test_concatenation_group(workdir, capsys):
    code, out = explain(workdir, "joined.pt", "a", "--methods", "l1", "--round-to", "0", code="Joined")
    assert code == 0, capsys.readouterr().err
    group = {g["layer"]: g["reason"] for g in out["group"]}
    assert "concatenat" in group["c"]  # c reads a's channels inside the joined input
    assert "b" not in group  # joined, not added: b keeps its own channels
    code, out = explain(workdir, "joined.pt", "b", "--methods", "l1", "--round-to", "0", code="Joined")
    assert code == 0
    assert {g["layer"] for g in out["group"]} == {"c"}


def test_unknown_layer_exits_2_with_one_line_naming_the_valid_ones(workdir, capsys):
    code, out = explain(workdir, "resnet.pt", "layer2.0.conv")
    assert code == 2 and out == {}
    line = one_error_line(capsys.readouterr().err)
    assert "'layer2.0.conv'" in line and "layer2.0.conv1" in line and "stem.0" in line
    code, _ = explain(workdir, "resnet.pt", "layer2.0.bn1")  # exists, but has no channels to score
    assert code == 2
    assert "not a convolution or linear layer" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("flags, words", [
    (["--methods", "l1,magnitude-global"], "unstructured"),
    (["--methods", "l1,nope"], "nope"),
    (["--ratio", "1.5"], "ratio"),
    (["--image", "99"], "image 99"),
])
def test_bad_options_exit_2_with_one_line(workdir, capsys, flags, words):
    code, out = explain(workdir, "resnet.pt", "layer1.0.conv1", *flags)
    assert code == 2 and out == {}
    assert words in one_error_line(capsys.readouterr().err)
