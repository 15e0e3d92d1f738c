"""The built-in dataset: Fashion-MNIST from Debian's IDX files, held once in memory."""
from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from engine.data.common import _folder, _reason, shown
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



def load_fashion_mnist(root: Path | None = None, val_fraction: float = 1 / 12, seed: int = 0) -> Dataset:
    """The built-in dataset: 55k train, 5k validation (fixed split), 10k test."""
    if root is not None:
        _folder(Path(root), "a Fashion-MNIST folder")
    root = Path(root or FASHION_DIR)
    names = {
        "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
    }
    arrays, paths = {}, {}
    for key, stem in names.items():
        path = next((p for p in (root / f"{stem}.gz", root / stem) if p.exists()), None)
        if path is None:
            raise UserError(f"Fashion-MNIST not found in {shown(root)}: {FASHION_HINT}")
        arrays[key], paths[key] = read_idx(path), path
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
    images = torch.from_numpy(np.concatenate([arrays["train_x"], arrays["test_x"]])[:, None].copy())
    labels = torch.from_numpy(np.concatenate([arrays["train_y"], arrays["test_y"]]).astype(np.int64))
    n_train = arrays["train_x"].shape[0]
    train_idx, val_idx = _split_indices(n_train, val_fraction, seed)
    whole = TensorSplit(images, labels)
    norm = _stats(images[:n_train])
    splits = {
        "train": whole.subset(train_idx),
        "val": whole.subset(val_idx),
        "test": whole.subset(torch.arange(n_train, len(labels))),
    }
    shape = (1, images.shape[2], images.shape[3])
    # Flipping is fine for clothes; the demo models train with it.
    return Dataset("Fashion-MNIST", "fashion-mnist", FASHION_CLASSES, shape, shape, norm, splits)
