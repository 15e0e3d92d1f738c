"""The catalogue of bad inputs: every case through the command line's own entry point.

Each case must end with exit code 2 and exactly one line on stderr that names the problem (no
traceback), and must leave nothing behind: its working folder stays empty and no fixture file
(models, stores, plans, someone else's folders) changes by a byte. Most cases call `cli.main.main`
in this process (with its own working folder, environment, argv and file descriptor 2), since each
interpreter's start-up (importing torch) cost seconds and proved nothing more; the SUBPROCESS cases
run `python main.py` for real, for what only a process shows: the exit status, user code calling
sys.exit, deep recursion, and the TorchScript archive's code not running.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import pickle
import sqlite3
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.models import ModelBundle, save_model

ROOT = Path(__file__).resolve().parents[1]
LANES = 2  # concurrent subprocesses: each is mostly start-up (importing torch), so two overlap well
TIMEOUT_S = 120
# the cases that run as real processes (the rest run in-process, see the module's docstring); the exit status
# of a refused command line is shown by command-unknown (argparse's own exit) and by every other one here
SUBPROCESS = {"model-random-bytes", "torchscript-evaluate", "torchscript-sweep", "pickled-module", "code-sys-exit",
              "code-parses-argv", "kwargs-deep", "command-unknown"}


@dataclass(frozen=True)
class Case:
    """One command line ({F} is the fixtures folder) and what its one line on stderr must contain."""

    id: str
    args: tuple[str, ...]
    expect: str


def prune(*extra: str) -> tuple[str, ...]:
    return ("prune", "--model", "{F}/tiny.pt", "--data", "fashion-mnist", "--method", "l2", "--quiet", *extra)


def prune_r(*extra: str) -> tuple[str, ...]:
    return prune("--ratio", "0.5", *extra)


def evaluate(model: str, *extra: str) -> tuple[str, ...]:
    return ("evaluate", "--model", model, "--data", "fashion-mnist", "--quiet", *extra)


def sweep(plan: str, *extra: str) -> tuple[str, ...]:
    return ("sweep", f"{{F}}/{plan}", "--store", "{F}/work-store.sqlite", "--quiet", *extra)


pytestmark = pytest.mark.heavy_memory(gib=0.9)  # the catalogue runs its subprocess cases a few at a time

CASES = [
    # --- model files: what they are, and code that must not run
    Case("model-missing", evaluate("{F}/nope.pt"), "not found"),
    Case("model-is-folder", evaluate("{F}/somefolder"), "is a folder"),
    Case("model-empty", evaluate("{F}/empty.pt"), "empty (0 bytes): not a PyTorch file"),
    Case("model-random-bytes", evaluate("{F}/random.pt"), "not a PyTorch file"),
    Case("model-zip-not-torch", evaluate("{F}/archive.pt"), "a ZIP archive but not a PyTorch file"),
    Case("model-text", evaluate("{F}/text.pt"), "not a PyTorch file"),
    Case("model-onnx", evaluate("{F}/model.onnx"), "an ONNX model: PruneLab prunes PyTorch models"),
    Case("model-onnx-renamed", evaluate("{F}/onnx_renamed.pt"), "an ONNX model"),
    Case("torchscript-evaluate", evaluate("{F}/hostile.pt"), "TorchScript archive"),
    Case("torchscript-prune", ("prune", "--model", "{F}/hostile.pt", "--data", "fashion-mnist", "--method", "l2",
                               "--ratio", "0.5"), "TorchScript archive"),
    Case("torchscript-sensitivity", ("sensitivity", "--model", "{F}/hostile.pt", "--data", "fashion-mnist"),
         "TorchScript archive"),
    Case("torchscript-sweep", sweep("plan_hostile.toml"), "TorchScript archive"),
    Case("pickled-module", evaluate("{F}/whole_module.pt"), "--trust"),
    Case("model-truncated", evaluate("{F}/truncated.pt"), "truncated.pt"),
    Case("model-numbers-only", evaluate("{F}/numbers.pt"), "neither a model nor a state_dict"),
    Case("state-dict-no-code", evaluate("{F}/state.pt"), "--model-code PATH.py:ClassName"),
    Case("demo-unknown", evaluate("demo:alexnet"), "unknown demo model"),
    Case("torchvision-unknown", evaluate("torchvision:resnet9000"), "unknown torchvision architecture"),
    Case("arch-unknown-scheme", evaluate("hub:resnet"), "not found"),
    # --- user code and its arguments
    Case("code-format", evaluate("{F}/state.pt", "--model-code", "TinyNet"), "PATH.py:ClassName"),
    Case("code-missing", evaluate("{F}/state.pt", "--model-code", "{F}/gone.py:TinyNet"), "does not exist"),
    Case("code-folder", evaluate("{F}/state.pt", "--model-code", "{F}/somefolder.py:TinyNet"), "is not a file"),
    Case("code-no-class", evaluate("{F}/state.pt", "--model-code", "{F}/user.py:Nope"), "defines no class 'Nope'"),
    Case("code-not-module", evaluate("{F}/state.pt", "--model-code", "{F}/user.py:helper"),
         "is not an nn.Module subclass"),
    Case("code-sys-exit", evaluate("{F}/state.pt", "--model-code", "{F}/exits.py:Net"), "called sys.exit(3)"),
    Case("code-parses-argv", evaluate("{F}/state.pt", "--model-code", "{F}/argv.py:Net"), "called sys.exit(2)"),
    Case("code-raises", evaluate("{F}/state.pt", "--model-code", "{F}/raises.py:Net"), "ZeroDivisionError"),
    Case("code-syntax", evaluate("{F}/state.pt", "--model-code", "{F}/syntax.py:Net"), "SyntaxError"),
    Case("kwargs-bad-json", evaluate("{F}/state.pt", "--model-code", "{F}/user.py:TinyNet", "--model-kwargs", "{w"),
         "not valid JSON"),
    Case("kwargs-not-object", evaluate("{F}/state.pt", "--model-code", "{F}/user.py:TinyNet", "--model-kwargs", "[1]"),
         "JSON object"),
    Case("kwargs-deep", evaluate("{F}/state.pt", "--model-code", "{F}/user.py:TinyNet", "--model-kwargs",
                                 "[" * 30000 + "]" * 30000), "--model-kwargs"),
    Case("kwargs-nested", evaluate("{F}/state.pt", "--model-code", "{F}/user.py:TinyNet", "--model-kwargs",
                                   '{"a": {"b": {"c": {"d": {"e": 1}}}}}'), "nested more than"),
    Case("kwargs-huge", evaluate("{F}/state.pt", "--model-code", "{F}/user.py:TinyNet", "--model-kwargs",
                                 json.dumps({"w": "x" * 20000})), "longer than"),
    Case("kwargs-wrong-arg", evaluate("{F}/state.pt", "--model-code", "{F}/user.py:TinyNet", "--model-kwargs",
                                      '{"depth": 3}'), "could not be built"),
    Case("weights-do-not-fit", evaluate("{F}/state.pt", "--model-code", "{F}/user.py:TinyNet", "--model-kwargs",
                                        '{"width": 5}'), "do not fit the architecture"),
    Case("weights-unrelated", evaluate("torchvision:resnet18", "--weights", "{F}/unrelated.pt"), "--partial-weights"),
    Case("weights-missing", evaluate("torchvision:resnet18", "--weights", "{F}/gone.pt"), "does not exist"),
    Case("weights-garbage", evaluate("torchvision:resnet18", "--weights", "{F}/random.pt"), "not a PyTorch file"),
    Case("weights-no-state", evaluate("torchvision:resnet18", "--weights", "{F}/numbers.pt"), "holds no state_dict"),
    # --- options: numbers, counts, names
    Case("ratio-nan", prune("--ratio", "nan"), "finite number"),
    Case("ratio-inf", prune("--ratio", "inf"), "finite number"),
    Case("ratio-text", prune("--ratio", "half"), "expected a number"),
    Case("ratio-above-one", prune("--ratio", "1.5"), "between 0 and 1"),
    Case("ratio-negative", prune("--ratio", "-0.1"), "between 0 and 1"),
    Case("ratio-and-speedup", prune("--ratio", "0.5", "--target-speedup", "2"), "not allowed with"),
    Case("no-ratio", prune(), "one of the arguments --ratio --target-speedup --target-latency "
                              "--target-latency-speedup is required"),
    Case("latency-speedup-below-one", prune("--target-latency-speedup", "0.5"), "must be above 1"),
    Case("speedup-nan", prune("--target-speedup", "nan"), "finite number"),
    Case("speedup-below-one", prune("--target-speedup", "0.5"), "must be above 1"),
    Case("speedup-unstructured", ("prune", "--model", "{F}/tiny.pt", "--data", "fashion-mnist", "--method",
                                  "magnitude-global", "--target-speedup", "2"), "unstructured"),
    Case("method-unknown", ("prune", "--model", "{F}/tiny.pt", "--data", "fashion-mnist", "--method", "nope",
                            "--ratio", "0.5"), "valid methods"),
    Case("batch-zero", prune_r("--batch-size", "0"), "at least 1"),
    Case("batch-negative", prune_r("--batch-size", "-3"), "at least 1"),
    Case("batch-text", prune_r("--batch-size", "many"), "expected a whole number"),
    Case("batch-absurd", prune_r("--batch-size", "2000000000"), "GiB for one forward pass"),
    Case("evaluate-batch-absurd", evaluate("{F}/tiny.pt", "--batch-size", "2000000000"), "GiB for one forward pass"),
    Case("eval-limit-zero", prune_r("--eval-limit", "0"), "at least 1"),
    Case("threads-zero", prune_r("--threads", "0"), "at least 1"),
    Case("evaluate-threads-zero", evaluate("{F}/tiny.pt", "--threads", "0"), "at least 1"),
    Case("steps-zero", prune_r("--steps", "0"), "at least 1"),
    Case("steps-huge", prune_r("--steps", "1000"), "between 1 and 100"),
    Case("finetune-negative", prune_r("--finetune-epochs", "-1"), "must be at least 0"),
    Case("finetune-nan", prune_r("--finetune-epochs", "nan"), "finite number"),
    Case("finetune-batches-zero", prune_r("--finetune-batches", "0"), "at least 1"),
    Case("lr-nan", prune_r("--lr", "nan"), "finite number"),
    Case("lr-zero", prune_r("--lr", "0", "--finetune-batches", "2"), "above 0"),
    Case("max-layer-ratio-zero", prune_r("--max-layer-ratio", "0"), "maximum layer ratio"),
    Case("round-to-negative", prune_r("--round-to", "-1"), "channel rounding (--round-to) must be a positive integer"),
    Case("sparsity-nan", prune_r("--sparsity-reg", "nan"), "finite number"),
    Case("distill-without-finetune", prune_r("--distill"), "distillation needs fine-tuning"),
    Case("std-zero", prune_r("--mean", "0.5", "--std", "0"), "--std values must be above 0"),
    Case("std-nan", prune_r("--mean", "0.5", "--std", "nan"), "finite numbers"),
    Case("std-without-mean", prune_r("--std", "0.3"), "given together"),
    Case("mean-wrong-channels", prune_r("--mean", "0.5,0.5", "--std", "0.3,0.3"), "channels"),
    Case("layer-ratio-unknown", prune_r("--layer-ratio", "nope=0.5"), "--layer-ratio: no layer named 'nope'"),
    Case("layer-ratio-format", prune_r("--layer-ratio", "stem.0"), "NAME=RATIO"),
    Case("layer-ratio-range", prune_r("--layer-ratio", "stem.0=1.5"), "must be in [0, 1)"),
    Case("layer-ratio-nan", prune_r("--layer-ratio", "stem.0=nan"), "finite number"),
    Case("ignore-unknown", prune_r("--ignore", "no.such"), "--ignore: no layer named 'no.such'"),
    Case("ignore-everything", prune_r("--ignore", "stem", "--ignore", "layer1", "--ignore", "layer2", "--ignore",
                                      "layer3"), "nothing would be pruned"),
    Case("input-shape-absurd", prune_r("--input-shape", "3,100000,100000"), "outside what PruneLab handles"),
    Case("input-shape-format", prune_r("--input-shape", "1,28"), "C,H,W"),
    Case("input-shape-wrong", evaluate("{F}/tiny.pt", "--input-shape", "3,28,28"), "does not accept inputs"),
    Case("device-unknown", prune_r("--device", "tpu"), 'must be "cpu" or "cuda"'),
    # --- outputs: checked before any work; nothing foreign is touched
    Case("out-is-file", prune_r("--out", "{F}/text.pt"), "is a file; name a folder"),
    Case("out-foreign-folder", prune_r("--out", "{F}/theirs"), "PruneLab did not write"),
    Case("out-not-writable", prune_r("--out", "/proc/sys/prunelab-out"), "not writable"),
    Case("out-under-a-file", prune_r("--out", "{F}/text.pt/run"), "is a file, not a folder"),
    Case("json-is-folder", prune_r("--json", "{F}/somefolder"), "is a folder"),
    Case("evaluate-json-is-folder", evaluate("{F}/tiny.pt", "--json", "{F}/somefolder"), "is a folder"),
    Case("evaluate-json-not-writable", evaluate("{F}/tiny.pt", "--json", "/proc/sys/m.json"), "not writable"),
    Case("train-out-folder", ("train", "--model", "demo:resnet", "--data", "fashion-mnist", "--epochs", "1", "--out",
                              "{F}/somefolder"), "is a folder"),
    Case("train-out-suffix", ("train", "--model", "demo:resnet", "--data", "fashion-mnist", "--epochs", "1", "--out",
                              "{F}/model.txt"), "should end in .pt"),
    Case("train-epochs-zero", ("train", "--model", "demo:resnet", "--data", "fashion-mnist", "--epochs", "0", "--out",
                               "x.pt"), "above 0"),
    Case("train-epochs-nan", ("train", "--model", "demo:resnet", "--data", "fashion-mnist", "--epochs", "nan",
                              "--out", "x.pt"), "finite number"),
    Case("report-out-folder", ("report", "--store", "{F}/store.sqlite", "--out", "{F}/somefolder"), "is a folder"),
    Case("report-out-suffix", ("report", "--store", "{F}/store.sqlite", "--out", "{F}/report.txt"), ".html"),
    Case("report-store-missing", ("report", "--store", "{F}/nostore.sqlite", "--out", "r.html"), "no result store"),
    Case("report-store-foreign", ("report", "--store", "{F}/foreign.sqlite", "--out", "r.html"), "foreign.sqlite"),
    Case("report-store-random", ("report", "--store", "{F}/random.pt", "--out", "r.html"), "random.pt"),
    Case("sweep-store-foreign", ("sweep", "{F}/plan_ok.toml", "--store", "{F}/foreign.sqlite"), "foreign.sqlite"),
    Case("sweep-store-text", ("sweep", "{F}/plan_ok.toml", "--store", "{F}/text.pt"), "text.pt"),
    Case("sweep-report-folder", sweep("plan_ok.toml", "--report", "{F}/somefolder"), "is a folder"),
    # --- data
    Case("data-unknown-scheme", ("evaluate", "--model", "{F}/tiny.pt", "--data", "mnist:/x"), "fashion-mnist"),
    Case("data-bare-folder", ("evaluate", "--model", "{F}/tiny.pt", "--data", "{F}/badimages"),
         "is a folder without a dataset type; try --data imagefolder:"),
    Case("data-bare-file", ("prune", "--model", "{F}/tiny.pt", "--data", "{F}/text.pt", "--method", "l2", "--ratio",
                            "0.5"), "every dataset is a folder"),
    Case("data-folder-missing", ("evaluate", "--model", "{F}/tiny.pt", "--data", "imagefolder:{F}/nodata"),
         "nodata"),
    Case("data-folder-is-file", ("evaluate", "--model", "{F}/tiny.pt", "--data", "imagefolder:{F}/text.pt"),
         "text.pt"),
    Case("data-folder-no-classes", ("evaluate", "--model", "{F}/tiny.pt", "--data", "imagefolder:{F}/somefolder"),
         "somefolder"),
    Case("data-class-all-corrupt", ("evaluate", "--model", "{F}/tiny.pt", "--data", "imagefolder:{F}/badimages"),
         "badimages"),
    Case("data-cifar-missing", ("evaluate", "--model", "{F}/tiny.pt", "--data", "cifar10:{F}/nocifar"), "nocifar"),
    Case("data-cifar-garbage", ("evaluate", "--model", "{F}/tiny.pt", "--data", "cifar10:{F}/badcifar"),
         "data_batch_1"),
    Case("data-cifar-wrong-keys", ("evaluate", "--model", "{F}/tiny.pt", "--data", "cifar10:{F}/keyscifar"),
         "data_batch_1"),
    # --- plans: every value checked before the work
    Case("plan-missing", ("sweep", "{F}/noplan.toml"), "noplan.toml"),
    Case("plan-bad-toml", sweep("plan_badtoml.toml"), "plan_badtoml.toml"),
    Case("plan-finetune-many", sweep("plan_many.toml"), "finetune_batches"),
    Case("plan-ratio-nan", sweep("plan_nan.toml"), "ratio"),
    Case("plan-unknown-key", sweep("plan_unknown.toml"), "colour"),
    Case("plan-prune-batch-text", sweep("plan_batch.toml"), "batch_size"),
    Case("plan-criteria-type", sweep("plan_criteria.toml"), "max_drop"),
    Case("plan-sensitivity-type", sweep("plan_sensitivity.toml"), "limit"),
    Case("plan-ratio-range", sweep("plan_range.toml"), "between 0 and 1"),
    Case("plan-grants-trust", sweep("plan_trust.toml"), "[model] trust cannot be set in a plan"),
    Case("plan-out-dir-is-file", sweep("plan_outdir.toml"), "out_dir"),
    # --- the command line itself
    Case("command-unknown", ("frobnicate",), "invalid choice"),
    Case("evaluate-no-model", ("evaluate", "--data", "fashion-mnist"), "--model"),
    Case("sensitivity-limit-negative", ("sensitivity", "--model", "{F}/tiny.pt", "--data", "fashion-mnist", "--limit",
                                        "-5"), "--limit"),
]


PLAN_HEAD = """[plan]\nname = "p"\nsave_models = false\n[model]\nsource = "{model}"\n[data]\nspec = "fashion-mnist"\n
[sweep]\nmethods = ["l2"]\nratios = [0.5]\n"""


def write_fixtures(folder: Path) -> None:
    """Every file the cases point at; built once per session."""
    from shared_fixtures import tiny_resnet

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "somefolder").mkdir()
    (folder / "somefolder.py").mkdir()
    theirs = folder / "theirs"
    theirs.mkdir()
    (theirs / "thesis.txt").write_text("a student's own work")
    model = tiny_resnet()
    save_model(ModelBundle(model, "tiny", "demo:resnet", (1, 28, 28), 10, arch_kwargs={"widths": [4, 8, 16]}),
               folder / "tiny.pt")
    (folder / "empty.pt").write_bytes(b"")
    (folder / "random.pt").write_bytes(b"\x17" + np.random.default_rng(0).bytes(8191))
    with zipfile.ZipFile(folder / "archive.pt", "w") as zf:
        zf.writestr("readme.txt", "not a model")
    (folder / "text.pt").write_text("epoch,loss\n1,0.5\n")
    from engine.models import export_onnx

    export_onnx(model, (1, 28, 28), folder / "model.onnx")
    (folder / "onnx_renamed.pt").write_bytes((folder / "model.onnx").read_bytes())
    torch.save(model, folder / "whole_module.pt")
    good = (folder / "tiny.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(good[: len(good) // 2])
    torch.save({"epoch": 3, "lr": 0.1}, folder / "numbers.pt")
    (folder / "user.py").write_text(
        "import torch.nn as nn\n\nclass TinyNet(nn.Module):\n    def __init__(self, width=6):\n        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, width, 3)\n        self.pool = nn.AdaptiveAvgPool2d(1)\n"
        "        self.fc = nn.Linear(width, 10)\n\n    def forward(self, x):\n"
        "        return self.fc(self.pool(self.conv(x)).flatten(1))\n\ndef helper():\n    return 1\n")
    from engine.models import build_arch

    torch.save(build_arch(f"code:{folder / 'user.py'}:TinyNet", kwargs={"width": 6}).state_dict(), folder / "state.pt")
    head = "import torch.nn as nn\nclass Net(nn.Module):\n    pass\n"
    (folder / "exits.py").write_text(head + "import sys\nsys.exit(3)\n")
    (folder / "argv.py").write_text(head + "import argparse\np = argparse.ArgumentParser()\n"
                                           "p.add_argument('--epochs', required=True)\np.parse_args()\n")
    (folder / "raises.py").write_text(head + "x = 1 / 0\n")
    (folder / "syntax.py").write_text(head + "def broken(:\n")
    torch.save({"encoder.weight": torch.zeros(3, 3)}, folder / "unrelated.pt")
    foreign = sqlite3.connect(folder / "foreign.sqlite")
    foreign.execute("CREATE TABLE grades (student TEXT, mark REAL)")
    foreign.execute("INSERT INTO grades VALUES ('ada', 1.0)")
    foreign.commit()
    foreign.close()
    from engine.experiments import ResultStore

    ResultStore(folder / "store.sqlite")  # ours, but empty
    bad = folder / "badimages"
    (bad / "cats").mkdir(parents=True)
    (bad / "dogs").mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(bad / "cats" / f"{i}.png")
        (bad / "dogs" / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken jpeg" + bytes(20))
    for name, batch in (("badcifar", b"garbage" * 10), ("keyscifar", {"wrong": 1})):
        cifar = folder / name / "cifar-10-batches-py"
        cifar.mkdir(parents=True)
        for part in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (cifar / part).write_bytes(batch if isinstance(batch, bytes) else pickle.dumps(batch))
    plans = {
        "plan_ok": PLAN_HEAD, "plan_hostile": PLAN_HEAD.replace("{model}", str(folder / "hostile.pt")),
        "plan_badtoml": "[plan\nname = ",
        "plan_many": PLAN_HEAD + '[[recovery]]\nname = "ft"\nfinetune_batches = "many"\n',
        "plan_nan": PLAN_HEAD.replace("ratios = [0.5]", "ratios = [nan]"),
        "plan_unknown": PLAN_HEAD + "[prune]\ncolour = 3\n",
        "plan_batch": PLAN_HEAD + '[prune]\nbatch_size = "big"\n',
        "plan_criteria": PLAN_HEAD + '[criteria.accuracy]\nmax_drop = "one"\n',
        "plan_sensitivity": PLAN_HEAD + '[sensitivity]\nlimit = "all"\n',
        "plan_range": PLAN_HEAD.replace("ratios = [0.5]", "ratios = [1.5]"),
        "plan_trust": PLAN_HEAD.replace("{model}", str(folder / "hostile.pt")).replace(
            "[data]", "trust = true\n[data]"),
        "plan_outdir": PLAN_HEAD.replace("save_models = false", f'save_models = true\nout_dir = "{folder / "text.pt"}"'),
    }
    for name, text in plans.items():
        (folder / f"{name}.toml").write_text(text.replace("{model}", str(folder / "tiny.pt")))


def fingerprint(folder: Path) -> dict[str, str]:
    """Every file under `folder` with its content hash and mtime (a changed byte or touch shows)."""
    return {str(p.relative_to(folder)): f"{hashlib.sha256(p.read_bytes()).hexdigest()}:{p.stat().st_mtime_ns}"
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory, request) -> dict:
    """Run every case (a few at a time) once; returns {id: (returncode, stderr, leftovers)} and the fixtures."""
    base = tmp_path_factory.mktemp("catalogue")
    fixtures = base / "fixtures"
    write_fixtures(fixtures)
    hostile = request.getfixturevalue("hostile_torchscript_session")
    (fixtures / "hostile.pt").write_bytes(hostile[0].read_bytes())
    before = fingerprint(fixtures)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(base / "home"), PRUNELAB_DATA_DIR=str(base / "data"),
               PRUNELAB_LOG_DIR=str(base / "logs"), OMP_NUM_THREADS="1")

    def prepare(case: Case) -> tuple[Path, list[str]]:
        cwd = base / "work" / case.id
        cwd.mkdir(parents=True)
        return cwd, [a.replace("{F}", str(fixtures)) for a in case.args]

    def run(case: Case):
        cwd, args = prepare(case)
        try:
            proc = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
            code, stderr = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as exc:  # that case fails, naming the wait; the others still report
            partial = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
            code, stderr = None, f"still running after {TIMEOUT_S} s (killed): {partial}"
        return case.id, (code, stderr, sorted(p.name for p in cwd.iterdir()))

    with ThreadPoolExecutor(LANES) as pool:  # the real processes run meanwhile (their threads only wait)
        pending = pool.map(run, [c for c in CASES if c.id in SUBPROCESS])
        results = {}
        for case in CASES:
            if case.id not in SUBPROCESS:
                cwd, args = prepare(case)
                code, stderr = run_in_process(args, cwd, env)
                results[case.id] = (code, stderr, sorted(p.name for p in cwd.iterdir()))
        results.update(pending)
    return {"results": results, "before": before, "after": fingerprint(fixtures), "marker": hostile[1]}


def run_in_process(args: list[str], cwd: Path, env: dict[str, str],
                   stdout: io.StringIO | None = None) -> tuple[int, str]:
    """`python main.py ARGS` in this process: returns (exit code, everything written to stderr); what it
    prints goes to `stdout` when given.

    The working folder, environment and sys.argv are the command's while it runs, and stderr is taken at
    the file descriptor too (a library's C code writes there); all of it is put back afterwards, including
    the log handler the command installs for library warnings."""
    from cli.main import main

    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    warn_log = logging.getLogger("py.warnings")
    saved_handlers, saved_propagate = list(warn_log.handlers), warn_log.propagate
    text = io.StringIO()
    with tempfile.TemporaryFile() as raw:
        sys.stderr.flush()
        fd2 = os.dup(2)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = [str(ROOT / "main.py"), *args]
        os.dup2(raw.fileno(), 2)
        try:
            with contextlib.redirect_stderr(text), contextlib.redirect_stdout(io.StringIO() if stdout is None else stdout):
                try:
                    code = main(args)
                except SystemExit as exc:  # what the interpreter would turn into the exit status
                    code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
        finally:
            os.dup2(fd2, 2)
            os.close(fd2)
            os.chdir(saved_cwd)
            os.environ.clear()
            os.environ.update(saved_env)
            sys.argv = saved_argv
            logging.captureWarnings(False)
            for handler in set(warn_log.handlers) - set(saved_handlers):
                warn_log.removeHandler(handler)
                handler.close()
            warn_log.propagate = saved_propagate
        raw.seek(0)
        return code, text.getvalue() + raw.read().decode(errors="replace")


@pytest.fixture(scope="session")
def hostile_torchscript_session(tmp_path_factory):
    """The conftest's hostile archive, built once for the whole catalogue."""
    from shared_fixtures import hostile_torchscript

    return hostile_torchscript.__wrapped__(tmp_path_factory.mktemp("hostile"))


def test_the_catalogue_is_large_and_unique():
    assert len(CASES) >= 80
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_exit_2(catalogue, case):
    code, stderr, leftovers = catalogue["results"][case.id]
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-2000:]
    assert code == 2, f"exit {code}: {stderr[-1000:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{stderr[-2000:]}"
    assert case.expect in lines[0], lines[0]
    assert leftovers == [], f"left behind: {leftovers}"


def test_no_fixture_changed_and_no_code_ran(catalogue):
    assert catalogue["after"] == catalogue["before"]
    assert not Path(catalogue["marker"]).exists(), "the TorchScript archive's code ran without --trust"
