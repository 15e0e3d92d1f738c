"""Shared fixtures: tiny models, a session-wide Fashion-MNIST, tiny ImageFolder and CIFAR-10 trees.

A plugin conftest.py registers in the processes that run tests (not in the xdist controller); test modules
import its helpers (`from shared_fixtures import tiny_resnet`)."""
from __future__ import annotations

import gc
import gzip
import multiprocessing.forkserver
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT  # noqa: F401  (the repository, for the tests that import it from here)
from engine import data as data_mod
from engine import timing
from engine.budget import freeze_long_lived
from engine.models import DemoResNet, DemoVGG, ModelBundle

TINY_WIDTHS = (4, 8, 16)

# One intra-op thread: on a small shared machine, OpenMP threads competing with another busy process
# spin and make each tiny forward pass hundreds of times slower; one thread keeps the suite fast and steady.
torch.set_num_threads(1)
# and the same in every process a test starts (the CLI's, the window's, a Ray cluster's, the self-test's): the
# suite's other worker keeps the second core busy, and the self-test beside one busy loop used 20.8 s of CPU
# with two threads, 16.8 s with one. A test of thread counts passes its own.
os.environ["OMP_NUM_THREADS"] = "1"

# The suite checks what a timing measures, not how precisely: shorter floors (engine.timing) spare about 3 s
# of each pruning run that measures speed. Tests of the floors themselves pass their own values.
timing.LOAD_WINDOW_S, timing.LATENCY_MIN_SECONDS, timing.ROUND_SECONDS = 0.01, 0.02, 0.002


def pytest_collection_finish(session) -> None:
    """What the app does after its imports (gui/app.py): the libraries and test modules imported by now are
    never scanned again by the collections that free each test's windows (0.2-0.7 s each before)."""
    freeze_long_lived()


@pytest.fixture(scope="module", autouse=True)
def _no_lingering_fork_server():
    """Ends the data loaders' fork server after the module that started it. The app keeps it for its whole life
    (starting workers from it costs milliseconds); a test worker kept it, 0.5 GiB with torch imported, for the
    rest of the run, beside every heavy test the other worker ran."""
    yield
    stop_fork_server()


def stop_fork_server() -> None:
    """Ends multiprocessing's fork server if one runs (the next loader with workers starts a new one)."""
    server = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is not None:
        gc.collect()  # the module's persistent loaders, whose workers the server started
        server._stop()


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same random state, so failures repeat."""
    torch.manual_seed(0)
    np.random.seed(0)
    yield
    # A window pauses the collector during jobs; a test that ends there must not leave the rest of the run
    # with uncollectable garbage (memory grew test after test).
    gc.enable()


@pytest.fixture(scope="session")
def fashion() -> data_mod.Dataset:
    """The real Fashion-MNIST, loaded once (about a second); tests take small slices with `limit`."""
    probe = data_mod.FASHION_DIR / "train-images-idx3-ubyte.gz"
    if not probe.exists() and not (data_mod.FASHION_DIR / "train-images-idx3-ubyte").exists():
        pytest.fail(f"Fashion-MNIST is missing from {data_mod.FASHION_DIR}; run `make dataset`")
    return data_mod.load_fashion_mnist()


def tiny_resnet(in_channels: int = 1, num_classes: int = 10) -> DemoResNet:
    """A DemoResNet with 4/8/16 channels: same graph as the demo, a few thousand parameters."""
    return DemoResNet(in_channels, num_classes, widths=TINY_WIDTHS).eval()


def tiny_vgg(in_channels: int = 1, num_classes: int = 10) -> DemoVGG:
    """A DemoVGG with 4/8 channels and a small classifier."""
    return DemoVGG(in_channels, num_classes, cfg=(4, "M", 8, "M"), hidden=16).eval()


@pytest.fixture
def tiny_model() -> DemoResNet:
    """A fresh tiny residual model in eval mode."""
    return tiny_resnet()


@pytest.fixture
def tiny(fashion) -> ModelBundle:
    """A fresh DemoResNet with 8/16/32 channels (seed 0) carrying Fashion-MNIST's normalisation and classes."""
    torch.manual_seed(0)
    model = DemoResNet(widths=(8, 16, 32)).eval()
    return ModelBundle(model, "tiny", "demo:resnet", (1, 28, 28), 10, fashion.norm, fashion.class_names,
                       arch_kwargs={"widths": [8, 16, 32]})


@pytest.fixture
def window(qtbot, tmp_path, monkeypatch):
    """A shown main window with temporary settings and no automatic demo load (tests/gui_helpers.py)."""
    from gui_helpers import close_window, open_window

    win = open_window(qtbot, tmp_path, monkeypatch)
    yield win
    close_window(qtbot, win)


def write_image_folder(root: Path, classes: tuple[str, ...] = ("cat", "dog", "fox"), per_class: int = 6,
                       size: tuple[int, int] = (20, 16), mode: str = "RGB") -> Path:
    """PNG files under root/<class>/; pixel values encode the class so labels can be checked."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            channels = 3 if mode == "RGB" else 1
            pixels = rng.integers(0, 40, (size[1], size[0], channels), dtype=np.uint8) + np.uint8(100 * label)
            img = Image.fromarray(pixels if channels == 3 else pixels[..., 0], mode)
            img.save(folder / f"img_{i:02d}.png")
    return root


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A flat ImageFolder tree: 3 classes × 6 RGB images of 20×16 pixels."""
    return write_image_folder(tmp_path / "images")


def write_cifar(root: Path, per_batch: int = 10, names: tuple[str, ...] | None = None) -> Path:
    """A fake CIFAR-10 'python version' folder: five data batches, a test batch and batches.meta.

    Image k of a batch is a solid colour: red = 25*(k % 10), green 0, blue 255; label k % 10.
    """
    root.mkdir(parents=True, exist_ok=True)
    names = names or tuple(f"name{i}" for i in range(10))

    def batch(n: int) -> dict:
        labels = [k % 10 for k in range(n)]
        data = np.zeros((n, 3, 32, 32), dtype=np.uint8)
        for k in range(n):
            data[k, 0] = 25 * (k % 10)
            data[k, 2] = 255
        return {b"data": data.reshape(n, 3072), b"labels": labels, b"batch_label": b"fake"}

    for i in range(1, 6):
        (root / f"data_batch_{i}").write_bytes(pickle.dumps(batch(per_batch)))
    (root / "test_batch").write_bytes(pickle.dumps(batch(per_batch)))
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}))
    return root


@pytest.fixture
def cifar_folder(tmp_path: Path) -> Path:
    """A fake CIFAR-10 folder with 50 training and 10 test images."""
    return write_cifar(tmp_path / "cifar-10-batches-py")


def write_idx(path: Path, array: np.ndarray) -> Path:
    """An unsigned-byte IDX file (gzipped when the name ends in .gz)."""
    raw = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_fake_fashion(root: Path, n_train: int = 24, n_test: int = 12) -> Path:
    """Four IDX files shaped like Fashion-MNIST; image i is filled with the value i."""
    root.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        images = np.stack([np.full((28, 28), i, dtype=np.uint8) for i in range(n)])
        write_idx(root / f"{stem}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root


class _StatefulNet(torch.nn.Module):
    """A scriptable model with its own __setstate__, so the archive carries code that runs at load time."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(10, 784) * 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(x, 1) @ self.w.t()

    @torch.jit.export
    def __getstate__(self):
        return (self.w, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        self.w = state[0]
        self.training = state[1]


@pytest.fixture
def hostile_torchscript(tmp_path: Path) -> tuple[Path, Path]:
    """A TorchScript archive whose __setstate__ creates a marker file via torch.from_file(shared=True).

    The compiler drops unused side effects, so the code entry is edited after scripting and the
    marker's value is used. Returns (archive, marker); the marker does not exist yet.
    """
    import warnings
    import zipfile

    clean = tmp_path / "clean_scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(_StatefulNet()).save(str(clean))
    marker = tmp_path / "written_by_the_archive"
    archive = tmp_path / "hostile.pt"
    hook = "    self.training = (state)[1]\n"
    edited = 0
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(archive, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith(".debug_pkl"):
                continue  # its line table would no longer match the edited code
            if "/code/" in info.filename and info.filename.endswith(".py") and hook.encode() in data:
                data = data.decode().replace(hook, f"    _m = torch.from_file(\"{marker}\", True, 8)\n"
                                                   "    self.training = torch.ge(torch.numel(_m), 0)\n").encode()
                edited += 1
            dst.writestr(info, data)
    assert edited == 1, "the scripted __setstate__ changed shape; update the fixture"
    return archive, marker
