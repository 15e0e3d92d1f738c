"""The built-in dataset: Fashion-MNIST from Debian's IDX files, held once in memory."""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from engine.data.common import Normalization, _folder, _reason, shown
from engine.data.dataset import Dataset
from engine.data.tensors import TensorSplit, _split_indices, _stats
from engine.errors import UserError

FASHION_DIR = Path(os.environ.get("PRUNELAB_FASHION_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_HINT = (
    "install Debian's package with `sudo apt-get install dataset-fashion-mnist` "
    "(or set PRUNELAB_FASHION_DIR to a folder holding the four *-ubyte.gz files)"
)

def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    fix = "reinstall the dataset files"
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a garbled stream a zlib.error
        raise UserError(f"cannot read {shown(path)}: {_reason(exc)}; {fix}") from None
    if len(raw) < 4:
        raise UserError(f"{shown(path)} is not an IDX file (too short); {fix}")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise UserError(f"{shown(path)} is not an unsigned-byte IDX file; {fix}")
    if ndim == 0:
        raise UserError(f"{shown(path)} is an IDX file with no dimensions; {fix}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"{shown(path)} is truncated inside its header; {fix}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims)  # exact: a garbled header must not overflow into a plausible size
    have = len(raw) - header
    if have != expected:
        state = "truncated" if have < expected else "longer than its header says"
        raise UserError(f"{shown(path)} is {state} ({have} of {expected} bytes); {fix}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)



# The last few Fashion-MNIST folders read in this process, by their files' identity: decompressing and checking
# the four files took 0.7-2 s, paid again by every load of the same data (the window's demo after another
# dataset, a plan's runs, every command a test runs in-process). Splits only ever view the shared uint8 images,
# never write them. A handful, not one: a fake copy loaded between two loads of the real one must not evict it.
_READ: OrderedDict[tuple, tuple[torch.Tensor, torch.Tensor, int, Normalization]] = OrderedDict()
_READ_KEPT = 3


def _identity(paths: dict[str, Path]) -> tuple:
    """What tells one set of files from another: their paths, sizes and modification times."""
    out = []
    for key in sorted(paths):
        st = paths[key].stat()
        out.append((key, str(paths[key].resolve()), st.st_size, st.st_mtime_ns))
    return tuple(out)


def load_fashion_mnist(root: Path | None = None, val_fraction: float = 1 / 12, seed: int = 0) -> Dataset:
    """The built-in dataset: 55k train, 5k validation (fixed split), 10k test."""
    if root is not None:
        _folder(Path(root), "a Fashion-MNIST folder")
    root = Path(root or FASHION_DIR)
    names = {
        "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
    }
    paths = {}
    for key, stem in names.items():
        path = next((p for p in (root / f"{stem}.gz", root / stem) if p.exists()), None)
        if path is None:
            raise UserError(f"Fashion-MNIST not found in {shown(root)}: {FASHION_HINT}")
        paths[key] = path
    try:
        identity = _identity(paths)
    except OSError:  # gone or unreadable meanwhile: the read below says so
        identity = None
    if identity is not None and identity in _READ:
        _READ.move_to_end(identity)
        images, labels, n_train, norm = _READ[identity]
    else:
        images, labels, n_train = _read_checked(root, paths)
        norm = _stats(images[:n_train])
        if identity is not None:
            _READ[identity] = (images, labels, n_train, norm)
            while len(_READ) > _READ_KEPT:
                _READ.popitem(last=False)
    return _fashion_dataset(images, labels, n_train, norm, val_fraction, seed)


def _read_checked(root: Path, paths: dict[str, Path]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The four files read and checked: (N×1×H×W uint8 images, labels, number of training images)."""
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for key, ndim, what in (("train_x", 3, "images"), ("test_x", 3, "images"),
                            ("train_y", 1, "labels"), ("test_y", 1, "labels")):
        if arrays[key].ndim != ndim:
            raise UserError(f"{shown(paths[key])} holds a {arrays[key].ndim}-D array, not {what} "
                            f"({ndim}-D); reinstall the dataset files")
    if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
        raise UserError(f"{shown(paths['train_x'])} and {shown(paths['test_x'])} hold images of different sizes; "
                        "reinstall the dataset files")
    for key in ("train_y", "test_y"):
        if arrays[key].size and int(arrays[key].max()) >= len(FASHION_CLASSES):
            raise UserError(f"{shown(paths[key])} holds label {int(arrays[key].max())}, outside 0..9; "
                            "reinstall the dataset files")
    if arrays["train_x"].shape[0] != arrays["train_y"].shape[0] or \
            arrays["test_x"].shape[0] != arrays["test_y"].shape[0]:
        raise UserError(f"Fashion-MNIST files in {shown(root)} disagree on the number of images; reinstall them")
    if arrays["train_x"].shape[0] < 2 or arrays["test_x"].shape[0] < 1:
        raise UserError(f"Fashion-MNIST files in {shown(root)} hold too few images; reinstall them")
    images = torch.from_numpy(np.concatenate([arrays["train_x"], arrays["test_x"]])[:, None])
    labels = torch.from_numpy(np.concatenate([arrays["train_y"], arrays["test_y"]]).astype(np.int64))
    return images, labels, arrays["train_x"].shape[0]


def _fashion_dataset(images: torch.Tensor, labels: torch.Tensor, n_train: int, norm: Normalization,
                     val_fraction: float, seed: int) -> Dataset:
    train_idx, val_idx = _split_indices(n_train, val_fraction, seed)
    whole = TensorSplit(images, labels)
    splits = {
        "train": whole.subset(train_idx),
        "val": whole.subset(val_idx),
        "test": whole.subset(torch.arange(n_train, len(labels))),
    }
    shape = (1, images.shape[2], images.shape[3])
    # Flipping is fine for clothes; the demo models train with it.
    return Dataset("Fashion-MNIST", "fashion-mnist", FASHION_CLASSES, shape, shape, norm, splits)
