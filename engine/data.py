"""Datasets: built-in Fashion-MNIST, ImageFolder and CIFAR-10 folders, splits and loaders.

Small datasets (Fashion-MNIST, CIFAR-10) live once in memory as uint8 tensors; splits are
index views into them and batches are converted (channels, size, augmentation,
normalisation) on the fly, so there is never a second copy of the data and no per-image
Python overhead on a 2-core machine.
"""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

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
SPEC_HELP = "valid dataset specs: fashion-mnist, imagefolder:PATH, cifar10:PATH"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

Shape = tuple[int, int, int]


def read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise UserError(f"cannot read {path}: {exc}; reinstall the dataset files") from exc
    if len(raw) < 4:
        raise UserError(f"{path} is not an IDX file (too short); reinstall the dataset files")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file; reinstall the dataset files")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    expected = int(np.prod(dims)) if dims else 0
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != expected:
        raise UserError(f"{path} is truncated ({data.size} of {expected} bytes); reinstall the dataset files")
    return data.reshape(dims)


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation, in the [0, 1] pixel scale."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def adapted(self, channels: int) -> "Normalization":
        """The same statistics for another channel count (grey <-> RGB)."""
        if len(self.mean) == channels:
            return self
        m = float(np.mean(self.mean))
        s = float(np.mean(self.std))
        return Normalization((m,) * channels, (s,) * channels)


class TensorSplit:
    """A view into uint8 images held once in memory: `indices` select the split."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None):
        self.images = images  # N×C×H×W uint8, shared by all splits
        self.labels = labels
        self.indices = torch.arange(len(labels)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def subset(self, indices: torch.Tensor) -> "TensorSplit":
        """A narrower view; no pixels are copied."""
        return TensorSplit(self.images, self.labels, self.indices[indices])

    def targets(self) -> np.ndarray:
        """Labels of this split as numpy."""
        return self.labels[self.indices].numpy()


def convert_batch(x: torch.Tensor, shape: Shape) -> torch.Tensor:
    """Convert a float batch in [0, 1] to `shape` channels and size."""
    c, h, w = shape
    if x.shape[1] != c:
        if c == 1:
            if x.shape[1] == 3:
                weights = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
                x = (x * weights).sum(1, keepdim=True)
            else:
                x = x.mean(1, keepdim=True)
        elif x.shape[1] == 1:
            x = x.expand(-1, c, -1, -1)
        else:
            raise UserError(f"cannot convert {x.shape[1]}-channel images to {c} channels; pass --input-shape")
    if x.shape[2:] != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return x


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 2, flip: bool = True) -> torch.Tensor:
    """Per-sample random shifts (zero padding) and horizontal flips, vectorised over the batch."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = torch.arange(h)[None, :] + dy[:, None]
    cols = torch.arange(w)[None, :] + dx[:, None]
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * pad))
    out = out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out


class TensorLoader:
    """Batches from a TensorSplit: slice, convert, augment, normalise; no worker processes."""

    def __init__(self, split: TensorSplit, batch_size: int, shape: Shape, norm: Normalization,
                 shuffle: bool = False, augment: bool = False, seed: int = 0, drop_last: bool = False,
                 flip: bool = True):
        self.split, self.batch_size, self.shape, self.norm = split, batch_size, shape, norm.adapted(shape[0])
        self.shuffle, self.augment, self.drop_last, self.flip = shuffle, augment, drop_last, flip
        self.generator = torch.Generator().manual_seed(seed)
        self.mean = torch.tensor(self.norm.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(self.norm.std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.split.indices
        if self.shuffle:
            order = order[torch.randperm(len(order), generator=self.generator)]
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.split.images[idx].float().div_(255.0)
            x = convert_batch(x, self.shape)
            if self.augment:
                x = random_crop_flip(x, self.generator, flip=self.flip)
            yield (x - self.mean) / self.std, self.split.labels[idx]


@dataclass
class Dataset:
    """A dataset with train/val/test splits, converted to one input shape and normalisation."""

    name: str
    spec: str
    class_names: tuple[str, ...]
    native_shape: Shape
    input_shape: Shape
    norm: Normalization
    splits: dict = field(repr=False, default_factory=dict)
    kind: str = "tensor"  # "tensor" (in memory) or "folder" (files read lazily)
    flip: bool = True  # horizontal flips are safe augmentation for this data

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def adapted(self, input_shape: Shape | None = None, norm: Normalization | None = None) -> "Dataset":
        """The same data converted to a model's input shape and normalisation (no copy)."""
        shape = tuple(input_shape) if input_shape else self.input_shape
        new_norm = (norm or self.norm).adapted(shape[0])
        return replace(self, input_shape=shape, norm=new_norm)

    def split_size(self, split: str) -> int:
        """Number of images in a split."""
        return len(self._split(split))

    def _split(self, split: str):
        if split not in self.splits:
            raise UserError(f"unknown split {split!r}; valid: {', '.join(self.splits)}")
        return self.splits[split]

    def loader(self, split: str, batch_size: int = 128, shuffle: bool = False, augment: bool = False,
               limit: int | None = None, seed: int = 0, drop_last: bool = False):
        """An iterable of normalised (images, labels) batches; `limit` keeps a deterministic prefix."""
        data = self._split(split)
        if limit is not None and limit < len(data):
            data = data.subset(torch.arange(limit)) if self.kind == "tensor" else \
                torch.utils.data.Subset(data, range(limit))
        if self.kind == "tensor":
            return TensorLoader(data, batch_size, self.input_shape, self.norm, shuffle, augment, seed,
                                drop_last, flip=self.flip)
        return _folder_loader(data, batch_size, self.input_shape, self.norm, shuffle, augment, seed,
                              drop_last)


def _split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic (rest, held-out) index split."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = max(1, int(round(n * fraction)))
    return perm[held:].sort().values, perm[:held].sort().values


def _stats(images: torch.Tensor, max_images: int = 20000) -> Normalization:
    """Per-channel mean/std of uint8 images, from at most `max_images` of them."""
    sample = images[:max_images].float().div_(255.0)
    mean = sample.mean(dim=(0, 2, 3))
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return Normalization(tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std))


def load_fashion_mnist(root: Path | None = None, val_fraction: float = 1 / 12, seed: int = 0) -> Dataset:
    """The built-in dataset: 55k train, 5k validation (fixed split), 10k test."""
    root = Path(root or FASHION_DIR)
    names = {
        "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
    }
    arrays = {}
    for key, stem in names.items():
        path = next((p for p in (root / f"{stem}.gz", root / stem) if p.exists()), None)
        if path is None:
            raise UserError(f"Fashion-MNIST not found in {root}: {FASHION_HINT}")
        arrays[key] = read_idx(path)
    if arrays["train_x"].shape[0] != arrays["train_y"].shape[0] or \
            arrays["test_x"].shape[0] != arrays["test_y"].shape[0]:
        raise UserError(f"Fashion-MNIST files in {root} disagree on the number of images; reinstall them")
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


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches without running arbitrary code: numpy arrays and builtins only."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _read_cifar_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return _NumpyOnlyUnpickler(fh, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise UserError(f"cannot read CIFAR-10 batch {path}: {exc}; use the 'python version' archive") from exc


def load_cifar10(path: Path, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """A CIFAR-10 'python version' folder (data_batch_1..5, test_batch, batches.meta)."""
    root = Path(path)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    train_files = [root / f"data_batch_{i}" for i in range(1, 6)]
    missing = [p.name for p in train_files + [root / "test_batch"] if not p.exists()]
    if missing:
        raise UserError(f"{root} is not a CIFAR-10 python folder (missing {', '.join(missing)}); "
                        "extract cifar-10-python.tar.gz and pass that folder")
    xs, ys = [], []
    for p in train_files + [root / "test_batch"]:
        batch = _read_cifar_batch(p)
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    names = tuple(f"class {i}" for i in range(10))
    meta = root / "batches.meta"
    if meta.exists():
        info = _read_cifar_batch(meta)
        names = tuple(n.decode() for n in info.get(b"label_names", [])) or names
    images = torch.from_numpy(np.concatenate(xs))
    labels = torch.from_numpy(np.concatenate(ys))
    n_train = sum(len(y) for y in ys[:-1])
    train_idx, val_idx = _split_indices(n_train, val_fraction, seed)
    whole = TensorSplit(images, labels)
    splits = {"train": whole.subset(train_idx), "val": whole.subset(val_idx),
              "test": whole.subset(torch.arange(n_train, len(labels)))}
    return Dataset("CIFAR-10", f"cifar10:{path}", names, (3, 32, 32), (3, 32, 32), _stats(images[:n_train]),
                   splits)


class _FolderImages(torch.utils.data.Dataset):
    """Image files with labels, decoded lazily and converted to one shape."""

    def __init__(self, samples: Sequence[tuple[str, int]]):
        self.samples = list(samples)
        self.transform = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as img:
            img = img.convert("RGB")
            x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        return (self.transform(x) if self.transform else x), label

    def targets(self) -> np.ndarray:
        return np.array([s[1] for s in self.samples], dtype=np.int64)


def _scan_classes(root: Path) -> tuple[list[str], list[tuple[str, int]]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    samples = []
    for label, name in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(root / name)):
            for f in sorted(files):
                if f.lower().endswith(IMAGE_EXTENSIONS):
                    samples.append((os.path.join(dirpath, f), label))
    return classes, samples


def load_image_folder(path: Path, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                      input_shape: Shape | None = None) -> Dataset:
    """An ImageFolder tree: either train/ with val/ and/or test/, or one folder split by seed."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist; pass imagefolder:PATH to a folder of class folders")
    sub = {name: root / name for name in ("train", "val", "test") if (root / name).is_dir()}
    if "train" in sub and len(sub) > 1:
        classes, train = _scan_classes(sub["train"])
        splits = {"train": train}
        for name in ("val", "test"):
            if name in sub:
                c, s = _scan_classes(sub[name])
                if c != classes:
                    raise UserError(f"{sub[name]} has other class folders than {sub['train']}; make them match")
                splits[name] = s
        if "val" not in splits:
            splits["val"] = splits["test"]
        if "test" not in splits:
            splits["test"] = splits["val"]
    else:
        # A lone train/ folder holds the class folders: split it by seed (not one class named "train").
        folders = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
        base = sub["train"] if folders == [sub.get("train")] else root
        classes, samples = _scan_classes(base)
        if len(samples) < 3:
            raise UserError(f"{root} holds fewer than 3 images in class sub-folders; "
                            "expected PATH/<class>/<image>.png")
        perm = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
        n_test = max(1, int(len(samples) * test_fraction))
        n_val = max(1, int(len(samples) * val_fraction))
        pick = lambda ids: [samples[i] for i in sorted(ids)]  # noqa: E731 - tiny local helper
        splits = {"test": pick(perm[:n_test]), "val": pick(perm[n_test:n_test + n_val]),
                  "train": pick(perm[n_test + n_val:])}
    if len(classes) < 2:
        raise UserError(f"{root} needs at least two class folders; found {len(classes)}")
    if not splits["train"]:
        raise UserError(f"{root} has no training images; expected PATH/<class>/<image>.png")
    from PIL import Image

    with Image.open(splits["train"][0][0]) as first:
        channels = 1 if first.mode in ("L", "I", "I;16", "1") else 3
        side = min(max(first.size), 224)
        native: Shape = (channels, first.size[1], first.size[0])
    shape = tuple(input_shape) if input_shape else (channels, side, side)
    folder = {k: _FolderImages(v) for k, v in splits.items()}
    norm = _folder_stats(folder["train"], shape)
    return Dataset(root.name, f"imagefolder:{path}", tuple(classes), native, shape, norm, folder, kind="folder")


class _FolderTransform:
    """Picklable per-image conversion for DataLoader workers."""

    def __init__(self, shape: Shape, norm: Normalization | None, augment: bool):
        self.shape, self.norm, self.augment = shape, norm, augment

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = convert_batch(x[None].float().div_(255.0), self.shape)
        if self.augment:
            x = random_crop_flip(x, torch.Generator().manual_seed(int(torch.randint(0, 2**31, (1,)))),
                                 pad=max(1, self.shape[1] // 14))
        x = x[0]
        if self.norm is not None:
            mean = torch.tensor(self.norm.mean).view(-1, 1, 1)
            std = torch.tensor(self.norm.std).view(-1, 1, 1)
            x = (x - mean) / std
        return x


def _folder_stats(images: _FolderImages, shape: Shape, max_images: int = 500) -> Normalization:
    images.transform = _FolderTransform(shape, None, False)
    step = max(1, len(images) // max_images)
    batch = torch.stack([images[i][0] for i in range(0, len(images), step)])
    images.transform = None
    mean = batch.mean(dim=(0, 2, 3))
    std = batch.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return Normalization(tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std))


def num_workers() -> int:
    """Loader workers: leave one core to the model on small machines."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _folder_loader(data, batch_size, shape, norm, shuffle, augment, seed, drop_last):
    view = _TransformedView(data, _FolderTransform(shape, norm, augment))
    return torch.utils.data.DataLoader(
        view, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers(),
        generator=torch.Generator().manual_seed(seed), persistent_workers=False)


class _TransformedView(torch.utils.data.Dataset):
    """Applies a transform on top of a folder dataset without mutating it."""

    def __init__(self, data, transform):
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        x, y = self.data[i]
        return self.transform(x), y


def load_dataset(spec: str, *, input_shape: Shape | None = None, seed: int = 0) -> Dataset:
    """Parse a dataset spec (`fashion-mnist`, `imagefolder:PATH`, `cifar10:PATH`) and load it."""
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    if kind in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        data = load_fashion_mnist(Path(path) if path else None, seed=seed)
    elif kind == "imagefolder" and path:
        data = load_image_folder(Path(path), seed=seed, input_shape=input_shape)
    elif kind == "cifar10" and path:
        data = load_cifar10(Path(path), seed=seed)
    else:
        raise UserError(f"unknown dataset spec {spec!r}; {SPEC_HELP}")
    return data.adapted(input_shape) if input_shape else data
