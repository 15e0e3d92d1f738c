"""ONNX export's opset: the default for every model that has a form there, the fallback once for an operator
that needs it (F.fold is aten::col2im, opset 18: VOLO), said in model.json; the file runs in onnxruntime."""
from __future__ import annotations

import json

import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.data import Normalization
from engine.models import DemoResNet, ModelBundle, export_onnx, onnx_opset
from engine.models.saving import ONNX_FALLBACK_OPSET, ONNX_OPSET


class Folding(nn.Module):
    """Unfold then fold back to the input's own height and width, as VOLO's outlook attention does (the output
    size traced from the input's shape, uneven padding so the pads' order shows)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = self.conv(x)
        cols = F.unfold(x, (3, 2), padding=(1, 0), stride=2)
        x = F.fold(cols, x.shape[-2:], (3, 2), padding=(1, 0), stride=2)
        return self.fc(x.flatten(1))


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def test_fold_exports_at_the_fallback_opset_and_matches_torch(tmp_path, capfd):
    torch.manual_seed(0)
    model = Folding().eval()
    path = export_onnx(model, (1, 8, 8), tmp_path / "fold.onnx")
    assert onnx_opset(path) == ONNX_FALLBACK_OPSET == 18
    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(_run(path, x), model(x), atol=1e-5)
    # the exporter's C++ log of the first, failed try (the whole graph) stays off the command's stdout
    assert capfd.readouterr().out == ""


def test_a_plain_model_stays_at_the_default_opset(tmp_path):
    path = export_onnx(DemoResNet(widths=(8, 16, 32)), (1, 28, 28), tmp_path / "plain.onnx")
    assert onnx_opset(path) == ONNX_OPSET == 17


def test_model_json_says_the_opset(tmp_path):
    import engine.deploy as deploy

    norm, classes = Normalization((0.5,), (0.25,)), tuple("abcdefghij")
    for name, model, shape, opset in (("fold", Folding(), (1, 8, 8), 18),
                                      ("plain", DemoResNet(widths=(8, 16, 32)), (1, 28, 28), 17)):
        bundle = ModelBundle(model.eval(), name, "module", shape, 10, norm, classes, {})
        files = deploy.save_outputs(bundle, tmp_path / name, structured=True)
        assert json.loads((tmp_path / name / "model.json").read_text())["onnx_opset"] == opset
        x = torch.randn(2, *shape)
        assert torch.allclose(_run(files["onnx"], x), model(x), atol=1e-5)
