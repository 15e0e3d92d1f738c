"""The command line, run in-process (cli.main.main) except for one real `python main.py --help`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from shared_fixtures import ROOT, TINY_WIDTHS, tiny_resnet, write_fake_fashion
from cli import main as cli
from engine.events import CancelToken
from engine.models import ModelBundle, save_model

METRICS_KEYS = {"top1", "top5", "precision_macro", "recall_macro", "f1_macro", "params", "nonzero_params", "macs",
                "size_bytes", "compressed_bytes", "latency_ms", "throughput_ips", "peak_memory_bytes"}


def save_tiny(path: Path, channels: int = 1, classes: int = 10, side: int = 28) -> Path:
    """A tiny demo:resnet model file, as `train` would write it."""
    bundle = ModelBundle(tiny_resnet(channels, classes), str(path), "demo:resnet", (channels, side, side), classes,
                         arch_kwargs={"widths": list(TINY_WIDTHS)})
    return save_model(bundle, path)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_models_lists_the_demo_zoo(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    assert "demo:resnet" in out and "demo:vgg" in out and "torchvision:NAME" in out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "evaluate" in out and "train" in out


def test_evaluate_writes_the_json_of_the_contract(tmp_path, capsys):
    model = save_tiny(tmp_path / "tiny.pt")
    out_json = tmp_path / "out" / "metrics.json"
    code = cli.main(["evaluate", "--model", str(model), "--data", "fashion-mnist", "--batch-size", "8",
                     "--threads", "1", "--json", str(out_json), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "top-1 accuracy" in captured.out and f"wrote {out_json}" in captured.out
    doc = json.loads(out_json.read_text())
    assert {"model", "dataset", "device", "metrics"} == set(doc)
    assert (doc["model"], doc["dataset"], doc["device"]) == (str(model), "fashion-mnist", "cpu")
    m = doc["metrics"]
    assert METRICS_KEYS <= set(m), METRICS_KEYS - set(m)
    for key in ("top1", "top5", "precision_macro", "recall_macro", "f1_macro"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["top5"] >= m["top1"]
    assert m["params"] == sum(p.numel() for p in tiny_resnet().parameters())
    assert 0 < m["nonzero_params"] <= m["params"] and m["macs"] > 0
    assert m["size_bytes"] > m["compressed_bytes"] > 0
    assert set(m["latency_ms"]) == {"1", "8"}  # batch 1 and the chosen batch
    for stats in m["latency_ms"].values():
        assert 0 < stats["median"] <= stats["p95"]
    assert m["throughput_ips"] > 0 and m["peak_memory_bytes"] > 0


def test_missing_model_file_exits_2(tmp_path, image_folder, capsys):
    code = cli.main(["evaluate", "--model", str(tmp_path / "missing.pt"), "--data", f"imagefolder:{image_folder}"])
    assert code == 2
    assert "missing.pt" in one_error_line(capsys.readouterr().err)


def test_unknown_dataset_spec_exits_2(tmp_path, capsys):
    code = cli.main(["evaluate", "--model", "demo:resnet", "--data", "mnist"])
    assert code == 2
    assert "valid dataset specs" in one_error_line(capsys.readouterr().err)


def test_untrusted_pickle_exits_2_and_trust_gets_further(tmp_path, image_folder, capsys):
    path = tmp_path / "whole.pt"
    torch.save(tiny_resnet(), path)
    args = ["evaluate", "--model", str(path), "--data", f"imagefolder:{image_folder}", "--quiet"]
    assert cli.main(args) == 2
    assert "--trust" in one_error_line(capsys.readouterr().err)
    # Trusted, the module loads; it then fails on the real mismatch (10 outputs, 3 classes), still exit 2.
    assert cli.main(args + ["--trust", "--input-shape", "1,28,28"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "3 classes" in line and "--trust" not in line


def test_evaluate_on_an_image_folder_and_cancel(tmp_path, image_folder, capsys, monkeypatch):
    model = save_tiny(tmp_path / "rgb.pt", channels=3, classes=3, side=20)
    args = ["evaluate", "--model", str(model), "--data", f"imagefolder:{image_folder}", "--batch-size", "2",
            "--threads", "1", "--quiet", "--json", str(tmp_path / "m.json")]
    assert cli.main(args) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert set(metrics["latency_ms"]) == {"1", "2"} and metrics["top5"] == 1.0  # 3 classes: top-5 always right
    capsys.readouterr()
    token = CancelToken()
    token.cancel()
    monkeypatch.setattr(cli, "CANCEL", token)
    assert cli.main(args) == 130
    assert "cancelled" in capsys.readouterr().err


def test_train_writes_model_and_card_and_repeats_with_seed(tmp_path, capsys):
    fake = write_fake_fashion(tmp_path / "fm", n_train=24, n_test=12)

    def train(out: Path) -> dict:
        code = cli.main(["train", "--model", "demo:vgg", "--data", f"fashion-mnist:{fake}", "--epochs", "1",
                         "--batch-size", "8", "--seed", "3", "--out", str(out), "--quiet"])
        assert code == 0, capsys.readouterr().err
        return torch.load(out, weights_only=True)

    first, second = train(tmp_path / "a.pt"), train(tmp_path / "b.pt")
    assert first["arch"] == "demo:vgg" and first["input_shape"] == [1, 28, 28] and first["num_classes"] == 10
    assert first["state"].keys() == second["state"].keys()
    assert all(torch.equal(first["state"][k], second["state"][k]) for k in first["state"])  # same seed, same model
    card = json.loads((tmp_path / "a.json").read_text())
    assert card["name"] == "demo:vgg" and card["seed"] == 3 and card["training"]["epochs"] == 1
    assert {"top1", "top5", "f1_macro", "params", "macs"} <= set(card["metrics"])
    assert card["normalization"]["mean"] == first["norm"]["mean"]
    assert "wrote" in capsys.readouterr().out


def test_main_py_help_runs_as_a_subprocess():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "main.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    for command in ("models", "train", "evaluate"):
        assert command in proc.stdout
    assert proc.stderr == ""
