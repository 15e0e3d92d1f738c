"""What a new user reads: help texts, notes about random weights, the speed-up summary, hints for a bare --data."""
from __future__ import annotations

import argparse
import json
import re

import pytest

from cli import main as cli
from cli.summary import latency_summary, metrics_table, paired_rows
from shared_fixtures import write_fake_fashion
from engine.metrics import Metrics
from engine.pruning import RunDone
from test_cli import one_error_line, save_tiny


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def flag_help(command: str, flag: str) -> str:
    action = next(a for a in subparsers()[command]._actions if flag in a.option_strings)
    return action.help or ""


# ----------------------------------------------------------------------------- help texts

def test_every_flag_of_every_command_has_help():
    missing = {name: [a.option_strings for a in p._actions if not a.help]
               for name, p in subparsers().items()}
    assert not {k: v for k, v in missing.items() if v}, missing


def test_negated_flags_read_as_what_they_do():
    no_speed = flag_help("prune", "--no-speed")
    assert no_speed.startswith("skip") and "--no-speed" not in no_speed, no_speed
    prune_head = flag_help("prune", "--prune-head")
    assert prune_head.startswith("prune the classifier head") and "--prune-head" not in prune_head, prune_head
    assert flag_help("evaluate", "--no-speed") == no_speed  # one text, from the config option


def test_weights_help_names_timm_too():
    for command in ("evaluate", "prune", "sensitivity"):
        text = flag_help(command, "--weights")
        assert "torchvision:NAME" in text and "timm:NAME" in text, (command, text)


def test_evaluate_takes_eval_limit_and_no_speed(tmp_path, capsys):
    model = save_tiny(tmp_path / "tiny.pt")
    fake = write_fake_fashion(tmp_path / "fm", n_train=24, n_test=12)
    out = tmp_path / "m.json"
    code = cli.main(["evaluate", "--model", str(model), "--data", f"fashion-mnist:{fake}", "--eval-limit", "5",
                     "--no-speed", "--quiet", "--json", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["latency_ms"] == {} and metrics["throughput_ips"] == 0  # not timed
    assert "(5 images)" in captured.out and "latency" not in captured.out


# ----------------------------------------------------------------------------- random weights

def test_a_named_architecture_without_weights_says_its_accuracy_means_nothing(tmp_path, image_folder, capsys):
    args = ["evaluate", "--model", "torchvision:resnet18", "--data", f"imagefolder:{image_folder}",
            "--batch-size", "2", "--threads", "1", "--quiet"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert ("note: torchvision:resnet18 has no --weights: its weights are random (seed 0), so its accuracy means "
            "nothing; pass --weights FILE to evaluate your trained model") in err, err
    model = save_tiny(tmp_path / "rgb.pt", channels=3, classes=3, side=20)  # a trained file: no such note
    assert cli.main(["evaluate", "--model", str(model), "--data", f"imagefolder:{image_folder}", "--no-speed",
                     "--quiet"]) == 0
    assert "random" not in capsys.readouterr().err


def test_the_untrained_note_names_the_command_and_seed():
    note = cli.untrained_note("timm:resnet18", 7, "prune")
    assert note == ("timm:resnet18 has no --weights: its weights are random (seed 7), so its accuracy means "
                    "nothing; pass --weights FILE to prune your trained model")


# ----------------------------------------------------------------------------- the speed-up summary

def latency(median: float) -> dict:
    return {"median": median, "p95": median * 1.2}


# The figures of a real run (the tester's cli1): the paired rounds keep each round's fastest pass, so their
# ratio (2.90x at batch 64) differs from the ratio of the separately timed medians (1399 / 655 ms = 2.14x).
BEFORE = Metrics(macs=555, params=11, compressed_bytes=40, latency_ms={"1": latency(27.68), "64": latency(1398.89)})
AFTER = Metrics(macs=256, params=5, compressed_bytes=19, latency_ms={"1": latency(21.42), "64": latency(654.74)})
PAIRED = {"batch": 64, "median": 2.9034, "low": 1.9107, "high": 3.0297, "coverage": 0.9375, "rounds": 5,
          "threads": 1, "noisy": True, "note": "noisy machine: other work keeps 2.0 of 2 cores busy", "device": "cpu",
          "per_batch": {"1": {"batch": 1, "median": 1.4308, "rounds": 9, "a_ms": 25.049, "b_ms": 17.0944},
                        "64": {"batch": 64, "median": 2.9034, "rounds": 5, "a_ms": 1271.227, "b_ms": 437.8435}}}


def test_summary_names_the_batch_and_the_estimate_of_each_figure():
    lines = latency_summary(RunDone("l2", {}, BEFORE, AFTER, (), {}, 1.0, 0.1, paired=PAIRED))
    text = "\n".join(lines)
    assert lines[0].startswith("latency at batch 64: 2.90x lower (93 % interval 1.91–3.03, 5 paired rounds"), text
    assert "at batch 1: 1.43x lower" in lines[0]
    assert "2.14x at batch 64, 1.29x at batch 1" in text  # the table's separately timed medians
    assert "latency gain / MACs gain at batch 64: 2.90x / 2.17x = 1.34 (latency fell more than MACs)" in text
    assert "efficiency" not in text
    assert lines[-1] == "note: noisy machine: other work keeps 2.0 of 2 cores busy"


def test_the_table_holds_each_models_paired_median_round():
    done = RunDone("l2", {}, BEFORE, AFTER, (), {}, 1.0, 0.1, paired=PAIRED)
    table = metrics_table({"before": BEFORE, "after": AFTER}, paired_rows(done))
    row = next(line for line in table.splitlines() if line.startswith("latency batch 64 (paired rounds)"))
    before_ms, after_ms = (float(v) for v in re.findall(r"([\d.]+) ms", row))
    assert (before_ms, after_ms) == (1271.23, 437.84)
    summary = "\n".join(latency_summary(done))
    assert "median of the rounds' ratios" in summary and "'paired rounds' rows" in summary


def test_separately_timed_summary_says_so():
    lines = latency_summary(RunDone("l2", {}, BEFORE, AFTER, (), {}, 1.0, 0.1))
    assert lines[0] == ("latency at batch 64: 2.14x lower (the table's medians, timed separately, not paired); "
                        "at batch 1: 1.29x lower")
    assert lines[1].endswith("= 0.99 (latency fell about as much as MACs)")
    assert latency_summary(RunDone("l2", {}, Metrics(macs=2), Metrics(macs=1), (), {}, 1.0, 0.1)) == []


def test_prune_summary_matches_its_table(tmp_path, capsys):
    """A real run: the summary's separately timed ratios are those of the table's median rows."""
    model = save_tiny(tmp_path / "tiny.pt")
    fake = write_fake_fashion(tmp_path / "fm", n_train=24, n_test=12)
    code = cli.main(["prune", "--model", str(model), "--data", f"fashion-mnist:{fake}", "--method", "l2", "--ratio",
                     "0.5", "--batch-size", "4", "--threads", "1", "--round-to", "1", "--out", str(tmp_path / "run"),
                     "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {m[0]: (float(m[1]), float(m[2]))
            for m in re.findall(r"^latency batch (\d+) \(median\)\s+([\d.]+) ms\s+([\d.]+) ms$", out, re.M)}
    assert set(rows) == {"1", "4"}
    summary = next(line for line in out.splitlines() if line.startswith("  paired: "))
    quoted = {m[1]: float(m[0]) for m in re.findall(r"([\d.]+)x at batch (\d+)", summary)}
    assert set(quoted) == set(rows), summary
    for bs, (before, after) in rows.items():  # the table rounds to 0.01 ms: allow for it
        slack = before / after * (0.005 / before + 0.005 / after) + 0.005
        assert abs(quoted[bs] - before / after) <= slack, (summary, rows)
    assert re.search(r"^latency at batch 4: [\d.]+x lower \(", out, re.M), out
    assert "latency batch 4 (paired rounds)" in out


# ----------------------------------------------------------------------------- a bare --data path

@pytest.mark.parametrize("make, expect", [
    (lambda tmp: tmp / "photos", "try --data imagefolder:{}"),
    (lambda tmp: write_fake_fashion(tmp / "fm", n_train=4, n_test=4), "try --data fashion-mnist:{}"),
])
def test_a_bare_folder_gets_the_spec_it_needs(tmp_path, capsys, make, expect):
    folder = make(tmp_path)
    folder.mkdir(exist_ok=True)
    assert cli.main(["evaluate", "--model", "demo:resnet", "--data", str(folder)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert expect.format(folder) in line, line


def test_a_bare_file_is_told_datasets_are_folders(tmp_path, capsys):
    path = tmp_path / "images.zip"
    path.write_bytes(b"PK")
    assert cli.main(["prune", "--model", "demo:resnet", "--data", str(path), "--method", "l2", "--ratio", "0.3"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "every dataset is a folder: imagefolder:DIR" in line and "extract an archive first" in line, line


# ----------------------------------------------------------------------------- flags said once

def test_device_is_one_flag_that_takes_cuda_n(capsys):
    helps = {c: flag_help(c, "--device") for c in ("evaluate", "train", "sensitivity", "explain", "profile")}
    assert len(set(helps.values())) == 1 and "cuda:N" in helps["evaluate"], helps
    args = subparsers()["evaluate"].parse_args(["--model", "demo:resnet", "--data", "fashion-mnist", "--device",
                                                "cuda:1"])
    assert args.device == "cuda:1"
    assert cli.main(["evaluate", "--model", "demo:resnet", "--data", "fashion-mnist", "--device", "tpu"]) == 2
    err = capsys.readouterr().err
    assert one_error_line(err) and '--device must be "cpu" or "cuda" (or "cuda:N"), got \'tpu\'' in err, err


def test_shared_flags_read_the_same_in_every_command():
    for flag in ("--model", "--data", "--seed", "--quiet", "--memory-limit", "--trust"):
        texts = {flag_help(c, flag) for c in ("evaluate", "prune", "sensitivity", "explain", "profile", "sweep")
                 if any(flag in a.option_strings for a in subparsers()[c]._actions)}
        assert len(texts) == 1 or flag in ("--memory-limit", "--seed"), (flag, texts)
    job, run = flag_help("evaluate", "--memory-limit"), flag_help("sweep", "--memory-limit")
    assert job.replace("the job", "the run").split(" (default")[0] == run.split(" (default")[0]  # one text
    assert "the plan's memory_limit" in run and "the plan's" not in job


def test_no_command_module_imports_the_entry_point():
    """cli.main registers the commands; they take shared flags and helpers from cli.args and cli.running, so
    cli/ has no import cycle (imports inside functions counted)."""
    import ast
    from pathlib import Path

    folder = Path(cli.__file__).parent
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and path.name != "main.py":
                assert node.module != "cli.main" and not (node.module == "cli" and any(
                    a.name == "main" for a in node.names)), f"{path.name}:{node.lineno} imports cli.main"
