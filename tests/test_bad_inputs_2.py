"""The catalogue of bad inputs, round two: a Ray head that does not answer, damaged stores, edited PruneLab
model files, a full disk, datasets read as they are, and memory limits that hold from the first byte.

Same rules as tests/test_bad_inputs.py: each case runs through the command line's own entry point and
must end with exit code 2 and exactly one line on stderr naming the problem, leaving its working folder
empty and every fixture file unchanged (content and mtime). Most cases run in this process; the SUBPROCESS
ones run `python main.py` for what only a process shows: the memory cases' own peak (their 1 GiB limit is
below what pytest already uses) and the Ray head's wait timed from a cold start.
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
from tests.test_bad_inputs import Case, fingerprint, run_in_process

ROOT = Path(__file__).resolve().parents[1]
LANES = 2  # concurrent subprocesses: each is mostly start-up (importing torch), so two overlap well
TIMEOUT_S = 300  # generous: the machine these run on may be very busy
SUBPROCESS = {"ray-closed-port", "mem-archive-record", "mem-wide-layers", "mem-bomb-class", "mem-thin-class"}

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
    # --- a full disk ({D}: a 64 KiB tmpfs filled to the last byte): refused up front, naming the path
    Case("disk-prune-out", ("prune", "--model", "{F}/tiny.pt", "--data", "fashion-mnist", "--method", "l2", "--ratio",
                            "0.5", "--quiet", "--out", "{D}/run"), "--out {D}/run: only"),
    Case("disk-evaluate-json", evaluate("{F}/tiny.pt", "--json", "{D}/m.json"), "--json {D}/m.json: only"),
    Case("disk-explain-json", ("explain", "--model", "{F}/tiny.pt", "--data", "fashion-mnist", "--layer", "stem.0",
                               "--json", "{D}/e.json", "--quiet"), "--json {D}/e.json: only"),
    Case("disk-report-out", ("report", "--store", "{F}/ok.sqlite", "--out", "{D}/r.html"), "--out {D}/r.html: only"),
    Case("disk-sweep-models", ("sweep", "{F}/plan_save.toml", "--store", "new.sqlite", "--quiet"), "{D}/models"),
    Case("disk-sweep-store", ("sweep", "{F}/plan.toml", "--store", "{D}/s.sqlite", "--quiet"), "{D}/s.sqlite: only"),
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
    # --- the memory limit from the first byte (peaks measured: see test_memory_cases_stay_under_their_limit)
    Case("mem-archive-record", evaluate("{F}/big_record.pt", "--memory-limit", "1G"),
         "unpacks to 2.0 GiB"),
    Case("mem-wide-layers", evaluate("{F}/wide.pt", "--memory-limit", "1G"), "parameters) needs about"),
    Case("mem-bomb-class", ("evaluate", "--model", "{F}/tiny.pt", "--data", "imagefolder:{F}/bombs", "--quiet",
                            "--memory-limit", "1G"), "12000×12000 pixels, above the"),
    Case("mem-thin-class", ("evaluate", "--model", "{F}/tiny.pt", "--data", "imagefolder:{F}/thin", "--quiet",
                            "--memory-limit", "1G"), "1×120000 pixels, too elongated"),
]


def edit_model(folder: Path, name: str, change, pruned: bool = False) -> None:
    """A copy of the tiny PruneLab model file with one field changed by `change(payload)`."""
    from shared_fixtures import tiny_resnet

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
    from shared_fixtures import tiny_resnet

    state = {f"model.{k}": v for k, v in tiny_resnet().state_dict().items()}
    torch.save({"state_dict": dict(state, **{"model.some_flag": 3}), "epoch": 2}, folder / "lightning_extra.pt")
    torch.save({"state_dict": state, "hyper_parameters": {"args": argparse.Namespace(lr=0.1, width=4)}},
               folder / "lightning_namespace.pt")
    torch.save({"state_dict": state, "arch": "resnet18"}, folder / "recorded_wrong.pt")
    big_record(folder / "tiny.pt", folder / "big_record.pt")
    edit_model(folder, "wide.pt", lambda p: p["arch_kwargs"].update(widths=[2000, 2000, 2000]))  # 0.83 GiB of weights


def big_record(src: Path, dst: Path, claimed: int = 2 << 30) -> None:
    """A copy of a torch.save archive whose biggest record claims `claimed` bytes in the zip directory (a
    deflated record of zeros says as much in 0.1 % of the space; torch's reader allocates what it claims)."""
    import struct
    import zipfile

    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as zf:
        info = max(zf.infolist(), key=lambda i: i.file_size)
    name = info.filename.encode()
    pos = 0
    while (pos := data.find(b"PK\x01\x02", pos)) != -1:  # the central directory entry of that record
        n = struct.unpack_from("<H", data, pos + 28)[0]
        if bytes(data[pos + 46: pos + 46 + n]) == name:
            struct.pack_into("<I", data, pos + 24, claimed)  # uncompressed size
            break
        pos += 4
    dst.write_bytes(bytes(data))


def write_images(folder: Path) -> None:
    """Image folders: a class made only of a decompression bomb (a 12000² PNG of 0.4 MB), one of a 1×120000 PNG."""
    import struct
    import zlib

    from PIL import Image

    def png(path: Path, width: int, height: int) -> None:
        def chunk(kind: bytes, body: bytes) -> bytes:
            return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        z = zlib.compressobj(9)
        row = bytes(width + 1)  # filter byte, then grey zeros
        idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
                         + chunk(b"IDAT", idat) + chunk(b"IEND", b""))

    for name, (w, h) in (("bombs", (12000, 12000)), ("thin", (1, 120000))):
        for cls in ("a", "b"):
            (folder / name / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((28, 28), 40 * i, np.uint8)).save(folder / name / "a" / f"{i}.png")
        png(folder / name / "b" / "big.png", w, h)


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
    good.rename(folder / "ok.sqlite")


def write_plan(folder: Path) -> None:
    """The tiny model file and a plan of one run on it."""
    from shared_fixtures import tiny_resnet

    folder.mkdir(parents=True, exist_ok=True)
    save_model(ModelBundle(tiny_resnet(), "tiny", "demo:resnet", (1, 28, 28), 10, arch_kwargs={"widths": [4, 8, 16]}),
               folder / "tiny.pt")
    (folder / "plan.toml").write_text(PLAN.replace("{model}", str(folder / "tiny.pt")))


def write_fixtures(folder: Path) -> None:
    """Every file the cases point at."""
    write_plan(folder)
    (folder / "plan_save.toml").write_text(PLAN.replace("{model}", str(folder / "tiny.pt")).replace(
        "save_models = false", f'save_models = true\nout_dir = "{folder.parent / "full" / "models"}"'))
    write_stores(folder)
    write_models(folder)
    write_images(folder)


def _high_water(pid: int) -> int:
    """The process's own peak resident memory (VmHWM) in bytes; 0 once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_measured(argv: list[str], cwd: Path, env: dict) -> tuple[int, str, int]:
    """Run a command; its exit code, stderr and peak resident memory in bytes.

    The peak is the child's own high-water mark after exec, polled until it exits: wait4's ru_maxrss also
    counts the pages the fork shared with this (large) test process, so it reported pytest's size."""
    with open(cwd.parent / f"{cwd.name}.stderr", "w+") as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        deadline, peak = time.monotonic() + TIMEOUT_S, 0
        while True:
            peak = max(peak, _high_water(proc.pid))  # monotonic: only the exit's last moments are unseen
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
            time.sleep(0.01)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return proc.returncode, err.read(), peak


def mount_full_disk(folder: Path) -> bool:
    """A 64 KiB tmpfs at `folder` (root only; False when it cannot be mounted)."""
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        return False
    return True


def fill(folder: Path) -> dict:
    """Fill `folder`'s file system to the last byte; returns its fingerprint."""
    with open(folder / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"x" * 1024)
        except OSError:
            pass
    return fingerprint(folder)


@pytest.fixture(scope="session")
def catalogue2(tmp_path_factory) -> dict:
    """Run every case (a few at a time) once; returns {id: (returncode, stderr, leftovers)} and fingerprints."""
    base = tmp_path_factory.mktemp("catalogue2")
    fixtures = base / "fixtures"
    write_fixtures(fixtures)
    before = fingerprint(fixtures)
    env = env_for(base)
    port = str(closed_port())
    full = base / "full"
    mounted = mount_full_disk(full)

    def run(case: Case):
        cwd = base / "work" / case.id
        cwd.mkdir(parents=True)
        if case.id.startswith("disk-") and not mounted:
            return case.id, None
        args = [a.replace("{F}", str(fixtures)).replace("{PORT}", port).replace("{D}", str(full)) for a in case.args]
        start = time.monotonic()
        if case.id in SUBPROCESS:
            code, stderr, peak = run_measured([sys.executable, str(ROOT / "main.py"), *args], cwd, env)
        else:
            (code, stderr), peak = run_in_process(args, cwd, env), None
        return case.id, (code, stderr, sorted(p.name for p in cwd.iterdir()), time.monotonic() - start, peak)

    try:
        full_before = fill(full) if mounted else {}
        with ThreadPoolExecutor(LANES) as pool:  # the real processes run meanwhile (their threads only wait)
            pending = pool.map(run, [c for c in CASES if c.id in SUBPROCESS])
            results = dict(run(c) for c in CASES if c.id not in SUBPROCESS)
            results.update(pending)
        full_after = fingerprint(full) if mounted else {}
    finally:
        if mounted:
            subprocess.run(["umount", str(full)], check=False)
    return {"results": results, "before": before, "after": fingerprint(fixtures), "port": port, "base": base,
            "full": (str(full), full_before, full_after)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_exit_2(catalogue2, case):
    if catalogue2["results"][case.id] is None:
        pytest.skip("a small tmpfs cannot be mounted here (needs root)")
    code, stderr, leftovers, _, _ = catalogue2["results"][case.id]
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr, stderr[-2000:]
    assert code == 2, f"exit {code}: {stderr[-1000:]}"
    assert len(lines) == 1, f"{len(lines)} lines on stderr:\n{stderr[-2000:]}"
    assert case.expect.replace("{PORT}", catalogue2["port"]).replace("{D}", catalogue2["full"][0]) in lines[0], lines[0]
    assert leftovers == [], f"left behind: {leftovers}"


def test_no_fixture_changed_and_nothing_left_on_the_full_disk(catalogue2):
    """Fixtures unchanged; the full disk holds its filler only (no 0-byte store, no temporary)."""
    assert catalogue2["after"] == catalogue2["before"]
    _, full_before, full_after = catalogue2["full"]
    assert full_after == full_before


@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith("mem-")], ids=lambda c: c.id)
def test_memory_cases_stay_under_their_limit(catalogue2, case):
    """Refused before allocating: the command's own peak stays under its --memory-limit of 1 GiB (the files ask
    for 2 GiB and more; before, such inputs peaked at 2 to 3.4 GB)."""
    code, _, _, _, peak = catalogue2["results"][case.id]
    assert code == 2
    assert 0 < peak < 2 ** 30, f"peak {peak / 2 ** 20:.0f} MiB"


def test_a_disk_that_fills_while_writing_names_the_path_and_leaves_nothing(tmp_path, monkeypatch):
    """ENOSPC in the middle of a write (a JSON file, a model folder): one line naming the target, no temporary."""
    import errno

    from engine.errors import UserError
    from engine.outputs import atomic_dir, write_text_atomic

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(UserError, match=f"no space left on the disk of {tmp_path / 'm.json'}"):
        write_text_atomic(tmp_path / "m.json", "{}")
    with pytest.raises(UserError, match=f"no space left on the disk of {tmp_path / 'run'}"):
        with atomic_dir(tmp_path / "run") as temp:
            (temp / "model.json").write_text("{}")
    assert list(tmp_path.iterdir()) == []


def test_ray_closed_port_fails_within_the_connect_timeout():
    """The wait itself ends at --connect-timeout (Ray's own retries at a closed port take minutes); the bound
    above leaves a busy machine's scheduling delays room, yet not Ray's minutes."""
    from engine.errors import UserError
    from engine.experiments.executors import wait_for_head

    start = time.monotonic()
    with pytest.raises(UserError, match="within 1 s"):
        wait_for_head(f"127.0.0.1:{closed_port()}", 1.0)
    assert 0.9 < time.monotonic() - start < 15.0


def test_ray_closed_port_through_the_command_line_creates_nothing(catalogue2):
    """No store appears in the user's data folder either, and the refusal does not take Ray's minutes: it
    takes about what the other real processes of the catalogue take to start and refuse (measured beside it,
    so a busy machine slows both), plus its 2 s wait and Ray's import."""
    results = catalogue2["results"]
    seconds = results["ray-closed-port"][3]
    others = max(results[c][3] for c in SUBPROCESS if c != "ray-closed-port")
    assert seconds < 2 * others + 30, (seconds, others)
    assert not (catalogue2["base"] / "data" / "results.sqlite").exists()


def test_ray_ctrl_c_while_connecting_is_obeyed_at_once(tmp_path):
    """Ctrl-C while waiting for a head at a closed port: "cancelled" at once (the process then exits 130), not
    after the 60 s connection timeout; no store created. Under 1 ms here at load 3-5; the bound leaves room for a
    busy machine."""
    import threading

    write_plan(tmp_path / "f")
    store = tmp_path / "store.sqlite"
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), "sweep", str(tmp_path / "f" / "plan.toml"),
                             "--store", str(store), "--address", f"127.0.0.1:{closed_port()}", "--connect-timeout",
                             "60", "--quiet"], cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_as_from_a_shell)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic(), line) for line in proc.stderr))
    reader.start()
    try:
        deadline = time.monotonic() + 60
        # wait until it is waiting for the head: Ray imported, and the process idle between its tries (importing
        # Ray takes seconds on a busy machine, and the claim is about the wait, not the import)
        while time.monotonic() < deadline and "_raylet" not in _loaded_modules(proc.pid):
            time.sleep(0.2)
        while time.monotonic() < deadline:
            before = _cpu_ticks(proc.pid)
            time.sleep(0.5)
            if _cpu_ticks(proc.pid) - before <= 5:  # under a tenth of a core: sleeping between tries
                break
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
    assert lines[-1][0] - sent < 15.0, lines[-1][0] - sent
    assert not store.exists()


def _as_from_a_shell() -> None:
    """The child starts as a terminal's command does: Ctrl-C neither ignored nor blocked, whatever earlier tests
    left in this pytest worker (tests/test_signals_unblocked.py covers a parent that did)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _cpu_ticks(pid: int) -> int:
    """User and system CPU time a process has used, in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _loaded_modules(pid: int) -> str:
    """The shared objects a process has mapped (Ray's _raylet shows that `import ray` has run)."""
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


# ----------------------------------------------------------------------------- datasets read as they are


def _grey_folder(root: Path, classes=("a", "b"), n: int = 3, value: int = 40) -> Path:
    from PIL import Image

    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((16, 16), value + i, np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_links_out_of_the_dataset_are_not_followed_and_said(tmp_path):
    """`loopdir -> ..` (a class folder leading out) and a file linked from elsewhere are left out, in a warning."""
    from engine.data import load_dataset

    root = _grey_folder(tmp_path / "data")
    _grey_folder(tmp_path / "sibling", classes=("x",), n=5)
    (root / "loopdir").symlink_to("..")
    (root / "a" / "stolen.png").symlink_to(tmp_path / "sibling" / "x" / "0.png")
    (root / "b" / "inside.png").symlink_to(root / "a" / "0.png")  # a link within the dataset is fine
    data = load_dataset(f"imagefolder:{root}")
    assert data.class_names == ("a", "b")
    files = [p for split in data.splits.values() for p, _ in split.samples]
    assert not any("stolen" in p or "loopdir" in p for p in files)
    assert any("inside.png" in p for p in files)
    assert any("left out 2 links leading out of" in w for w in data.warnings), data.warnings


def test_16_bit_pngs_are_scaled_not_clipped(tmp_path):
    """A folder of 16-bit grey PNGs at half scale measures a mean of 0.5, not 0.996 (clipped at 255)."""
    from PIL import Image

    from engine.data import load_dataset

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((16, 16), 32768, np.uint16)).save(tmp_path / cls / f"{i}.png")
    assert Image.open(tmp_path / "a" / "0.png").mode.startswith("I;16")
    data = load_dataset(f"imagefolder:{tmp_path}")
    assert abs(data.norm.mean[0] - 0.5) < 0.01, data.norm


def test_oversized_images_are_counted_and_named(tmp_path):
    """A decompression bomb beside good images is counted among the skipped and named in the warning."""
    from engine.data import load_dataset

    root = _grey_folder(tmp_path / "data")
    write_images(tmp_path / "made")
    (root / "b" / "bomb.png").write_bytes((tmp_path / "made" / "bombs" / "b" / "big.png").read_bytes())
    data = load_dataset(f"imagefolder:{root}")
    assert any("skipped 1 damaged image file of 7" in w and "bomb.png: 12000×12000" in w
               for w in data.warnings), data.warnings


def test_library_warnings_go_to_the_log_not_the_terminal(tmp_path):
    """Palette PNGs with transparency make PIL warn on every decode: stderr keeps PruneLab's lines only, the
    warning is in the log."""
    from PIL import Image

    from shared_fixtures import tiny_resnet

    model = tmp_path / "rgb.pt"
    save_model(ModelBundle(tiny_resnet(3, 2), "tiny", "demo:resnet", (3, 28, 28), 2,
                           arch_kwargs={"widths": [4, 8, 16]}), model)
    root = tmp_path / "pal"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            img = Image.fromarray(np.full((28, 28), 3 * i, np.uint8)).convert("P")
            img.info["transparency"] = b"\x00" * 4
            img.save(root / cls / f"{i}.png", transparency=b"\x00" * 4)
    env = env_for(tmp_path)
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "evaluate", "--model", str(model),
                           "--data", f"imagefolder:{root}", "--quiet", "--no-speed"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr and "warnings.warn" not in proc.stderr, proc.stderr
    assert all(line.startswith(("warning:", "note:")) for line in proc.stderr.strip().splitlines()), proc.stderr
    assert "Palette images with Transparency" in (tmp_path / "logs" / "cli-warnings.log").read_text()


UNWRAPPED_NET = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(8))  # used outside a module: torch-pruning warns about it
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.relu(self.conv(x)) * self.scale.view(1, -1, 1, 1)
        return self.head(torch.relu(self.conv2(x)).mean((2, 3)))
'''


def test_torch_prunings_warning_goes_to_the_log_during_a_prune_with_exports(tmp_path):
    """torch-pruning's "will prune the last non-singleton dimension" warning (a parameter used outside a module)
    and whatever the exporters warn while `prune --out` writes model.pt2 and model.onnx reach the log file, not
    the terminal: a successful run leaves stderr to PruneLab's own progress line."""
    from shared_fixtures import write_image_folder

    (tmp_path / "mynet.py").write_text(UNWRAPPED_NET)
    write_image_folder(tmp_path / "imgs")
    sys.path.insert(0, str(tmp_path))
    try:
        from mynet import Net

        torch.save(Net().state_dict(), tmp_path / "w.pt")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mynet", None)
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), "prune", "--model", "w.pt", "--model-code",
                           "mynet.py:Net", "--data", "imagefolder:imgs", "--method", "l2", "--ratio", "0.5",
                           "--no-speed", "--out", "out"], cwd=tmp_path, env=env_for(tmp_path), capture_output=True,
                          text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "model.onnx").exists() and (tmp_path / "out" / "model.pt2").exists()
    assert "warn" not in proc.stderr.lower(), proc.stderr
    assert "last non-singleton dimension" in (tmp_path / "logs" / "cli-warnings.log").read_text()
