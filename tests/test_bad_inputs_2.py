"""The catalogue of bad inputs, round two: a Ray head that does not answer, damaged stores, edited PruneLab
model files, a full disk, datasets read as they are, and memory limits that hold from the first byte.

Same rules as tests/test_bad_inputs.py: each case runs through the real command line in a subprocess and
must end with exit code 2 and exactly one line on stderr naming the problem, leaving its working folder
empty and every fixture file unchanged (content and mtime).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.models import ModelBundle, save_model
from tests.test_bad_inputs import Case, fingerprint

ROOT = Path(__file__).resolve().parents[1]
LANES = 3
TIMEOUT_S = 120

PLAN = """[plan]\nname = "p"\nsave_models = false\n[model]\nsource = "{model}"\n[data]\nspec = "fashion-mnist"\n
[sweep]\nmethods = ["l2"]\nratios = [0.5]\n"""


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound for a moment to pick it, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(base: Path) -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(base / "home"), PRUNELAB_DATA_DIR=str(base / "data"),
                PRUNELAB_LOG_DIR=str(base / "logs"), OMP_NUM_THREADS="1")


def evaluate(model: str, *extra: str) -> tuple[str, ...]:
    return ("evaluate", "--model", model, "--data", "fashion-mnist", "--quiet", *extra)


def report(store: str) -> tuple[str, ...]:
    return ("report", "--store", f"{{F}}/{store}", "--out", "r.html")


CASES = [
    # --- a Ray head that does not answer: one line, and no store created before the cluster answered
    Case("ray-closed-port", ("sweep", "{F}/plan.toml", "--store", "new-store.sqlite", "--executor", "ray",
                             "--address", "127.0.0.1:{PORT}", "--connect-timeout", "2", "--quiet"),
         "no Ray head answered at 127.0.0.1:{PORT} within 2 s"),
    Case("ray-garbage-address", ("sweep", "{F}/plan.toml", "--store", "new-store.sqlite", "--address", "not-an-address",
                                 "--quiet"), "is not HOST:PORT of a Ray head"),
    Case("ray-connect-timeout-zero", ("sweep", "{F}/plan.toml", "--address", "127.0.0.1:{PORT}",
                                      "--connect-timeout", "0"), "--connect-timeout must be above 0"),
    # --- damaged stores: one line naming the file, which stays as it was
    Case("report-store-truncated", report("truncated.sqlite"), "truncated.sqlite is a damaged result store"),
    Case("report-store-corrupted", report("corrupted.sqlite"), "corrupted.sqlite is a damaged result store"),
    Case("report-store-header-only", report("header.sqlite"), "header.sqlite is a damaged result store"),
    Case("sweep-store-corrupted", ("sweep", "{F}/plan.toml", "--store", "{F}/corrupted.sqlite", "--quiet"),
         "corrupted.sqlite is a damaged result store"),
    # --- PruneLab model files edited by hand: the field and the file named, in the CLI (the GUI: below)
    Case("edited-no-arch", evaluate("{F}/no_arch.pt"), "no_arch.pt is a PruneLab model file whose 'arch' is missing"),
    Case("edited-arch-type", evaluate("{F}/arch_int.pt"), "'arch' is a int, not an architecture name"),
    Case("edited-arch-kwargs", evaluate("{F}/kwargs_unknown.pt"), "kwargs_unknown.pt: demo:resnet could not be built with"),
    Case("edited-negative-classes", evaluate("{F}/negative_classes.pt"), "'num_classes' is -3"),
    Case("edited-state-list", evaluate("{F}/state_list.pt"), "'state' is a list, not a state_dict"),
    Case("edited-pruned-no-attrs", evaluate("{F}/pruned_no_attrs.pt"), "lacks the pruned layers' sizes"),
    Case("edited-pruned-absent-layer", evaluate("{F}/pruned_absent.pt"),
         "names layers the architecture does not have (nope.conv)"),
    # --- architectures that cannot take the data, and checkpoints said as they are
    Case("vit-on-28px", evaluate("torchvision:vit_b_16"), "patch size"),
    Case("timm-unknown-tag", evaluate("timm:resnet18.no_such_tag"), "timm:resnet18 has no pretrained tag 'no_such_tag'"),
    Case("lightning-non-tensor-entry", evaluate("{F}/lightning_extra.pt"), "lightning_extra.pt holds only weights"),
    Case("lightning-namespace", evaluate("{F}/lightning_namespace.pt"), "lightning_namespace.pt holds only weights"),
    Case("recorded-arch-does-not-fit", evaluate("{F}/recorded_wrong.pt"), "torchvision:resnet18 recorded in"),
    Case("random-weights-note-then-error", evaluate("torchvision:resnet18", "--batch-size", "2000000000"),
         "GiB for one forward pass"),
]


def edit_model(folder: Path, name: str, change, pruned: bool = False) -> None:
    """A copy of the tiny PruneLab model file with one field changed by `change(payload)`."""
    from tests.conftest import tiny_resnet

    src = folder / ("tiny_pruned.pt" if pruned else "tiny.pt")
    if not src.exists():
        save_model(ModelBundle(tiny_resnet(), "tiny", "demo:resnet", (1, 28, 28), 10,
                               arch_kwargs={"widths": [4, 8, 16]}), src, pruned=pruned)
    payload = torch.load(src, weights_only=True)
    change(payload)
    torch.save(payload, folder / name)


def write_models(folder: Path) -> None:
    """Edited PruneLab files and checkpoints of other tools."""
    import argparse

    edit_model(folder, "no_arch.pt", lambda p: p.pop("arch"))
    edit_model(folder, "arch_int.pt", lambda p: p.update(arch=5))
    edit_model(folder, "kwargs_unknown.pt", lambda p: p["arch_kwargs"].update(depth=3))
    edit_model(folder, "negative_classes.pt", lambda p: p.update(num_classes=-3))
    edit_model(folder, "state_list.pt", lambda p: p.update(state=list(p["state"].values())))
    edit_model(folder, "pruned_no_attrs.pt", lambda p: p["state"].pop("attrs"), pruned=True)
    edit_model(folder, "pruned_absent.pt", lambda p: p["state"]["attrs"].update({"nope.conv": {"out_channels": 3}}),
               pruned=True)
    from tests.conftest import tiny_resnet

    state = {f"model.{k}": v for k, v in tiny_resnet().state_dict().items()}
    torch.save({"state_dict": dict(state, **{"model.some_flag": 3}), "epoch": 2}, folder / "lightning_extra.pt")
    torch.save({"state_dict": state, "hyper_parameters": {"args": argparse.Namespace(lr=0.1, width=4)}},
               folder / "lightning_namespace.pt")
    torch.save({"state_dict": state, "arch": "resnet18"}, folder / "recorded_wrong.pt")


def write_stores(folder: Path) -> None:
    """A store with a few pages of plans, then copies of it cut short, overwritten inside, and only its header."""
    from engine.experiments import ResultStore

    good = folder / "good.sqlite"
    store = ResultStore(good)
    for i in range(40):
        store.put_plan(f"plan{i}", {"keys": [f"k{i}-{j}" for j in range(60)]})
    data = good.read_bytes()
    assert len(data) > 8 * 4096
    (folder / "truncated.sqlite").write_bytes(data[: len(data) // 2])
    page = 4096
    (folder / "corrupted.sqlite").write_bytes(data[:page] + bytes([0x55]) * (len(data) - 2 * page) + data[-page:])
    (folder / "header.sqlite").write_bytes(data[:100])
    good.unlink()


def write_fixtures(folder: Path) -> None:
    """Every file the cases point at."""
    from tests.conftest import tiny_resnet

    folder.mkdir(parents=True, exist_ok=True)
    save_model(ModelBundle(tiny_resnet(), "tiny", "demo:resnet", (1, 28, 28), 10, arch_kwargs={"widths": [4, 8, 16]}),
               folder / "tiny.pt")
    (folder / "plan.toml").write_text(PLAN.replace("{model}", str(folder / "tiny.pt")))
    write_stores(folder)
    write_models(folder)


@pytest.fixture(scope="session")
def catalogue2(tmp_path_factory) -> dict:
    """Run every case (a few at a time) once; returns {id: (returncode, stderr, leftovers)} and fingerprints."""
    base = tmp_path_factory.mktemp("catalogue2")
    fixtures = base / "fixtures"
    write_fixtures(fixtures)
    before = fingerprint(fixtures)
    env = env_for(base)
    port = str(closed_port())

    def run(case: Case):
        cwd = base / "work" / case.id
        cwd.mkdir(parents=True)
        args = [a.replace("{F}", str(fixtures)).replace("{PORT}", port) for a in case.args]
        start = time.monotonic()
        proc = subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT_S)
        return case.id, (proc.returncode, proc.stderr, sorted(p.name for p in cwd.iterdir()),
                         time.monotonic() - start)

    with ThreadPoolExecutor(LANES) as pool:
        results = dict(pool.map(run, CASES))
    return {"results": results, "before": before, "after": fingerprint(fixtures), "port": port, "base": base}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_exit_2(catalogue2, case):
    code, stderr, leftovers, _ = catalogue2["results"][case.id]
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-2000:]
    assert code == 2, f"exit {code}: {stderr[-1000:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{stderr[-2000:]}"
    assert case.expect.replace("{PORT}", catalogue2["port"]) in lines[0], lines[0]
    assert leftovers == [], f"left behind: {leftovers}"


def test_no_fixture_changed(catalogue2):
    assert catalogue2["after"] == catalogue2["before"]


def test_ray_closed_port_fails_within_the_connect_timeout():
    """The wait itself ends at --connect-timeout (Ray's own retries at a closed port take minutes)."""
    from engine.errors import UserError
    from engine.experiments.executors import wait_for_head

    start = time.monotonic()
    with pytest.raises(UserError, match="within 1 s"):
        wait_for_head(f"127.0.0.1:{closed_port()}", 1.0)
    assert 0.9 < time.monotonic() - start < 3.0


def test_ray_closed_port_through_the_command_line_creates_nothing(catalogue2):
    """No store appears in the user's data folder either, and the refusal does not take Ray's minutes."""
    _, _, _, seconds = catalogue2["results"]["ray-closed-port"]
    assert seconds < 90, seconds  # start-up on a busy machine included
    assert not (catalogue2["base"] / "data" / "results.sqlite").exists()


def test_ray_ctrl_c_while_connecting_is_obeyed_within_2_s(tmp_path):
    """Ctrl-C while waiting for a head at a closed port: "cancelled" within 2 s (the process then exits 130),
    no store created."""
    import threading

    write_fixtures(tmp_path / "f")
    store = tmp_path / "store.sqlite"
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "sweep", str(tmp_path / "f" / "plan.toml"),
                             "--store", str(store), "--address", f"127.0.0.1:{closed_port()}", "--connect-timeout",
                             "60", "--quiet"], cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line) for line in proc.stderr))
    reader.start()
    try:
        deadline = time.monotonic() + 60
        # wait until it is connecting: importing Ray takes seconds on a busy machine
        while time.monotonic() < deadline and "_raylet" not in _loaded_modules(proc.pid):
            time.sleep(0.2)
        time.sleep(1.0)
        assert proc.poll() is None, proc.communicate()
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
    assert proc.returncode == 130, lines
    assert [line.strip() for _, line in lines if line.strip()] == ["cancelled"], lines
    assert lines[-1][0] - sent < 2.0, lines[-1][0] - sent
    assert not store.exists()


def _loaded_modules(pid: int) -> str:
    """The shared objects a process has mapped (Ray's _raylet shows that `import ray` has run)."""
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""
