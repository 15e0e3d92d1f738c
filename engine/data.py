"""Datasets: built-in Fashion-MNIST, ImageFolder and CIFAR-10 folders, splits and loaders.

Small datasets (Fashion-MNIST, CIFAR-10) live once in memory as uint8 tensors; splits are
index views into them and batches are converted (channels, size, augmentation,
normalisation) on the fly, so there is never a second copy of the data and no per-image
Python overhead on a 2-core machine.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
import stat
import struct
import unicodedata
import zlib
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
SCHEMES = ("fashion-mnist", "imagefolder", "cifar10")
SCHEME_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist"}
MAX_PATH_CHARS = 4096  # Linux PATH_MAX: longer text cannot name a file
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

Shape = tuple[int, int, int]


def _breaks_line(ch: str) -> bool:
    """Control characters and line/paragraph separators: they would split or garble a one-line message."""
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


def shown(text: object, limit: int = 200) -> str:
    """Text (usually a path) made safe for a one-line message: odd characters escaped, long text shortened."""
    s = str(text)
    if any(_breaks_line(ch) for ch in s):
        s = ascii(s)
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _reason(exc: object) -> str:
    """An exception's message (or any text) on one short line: library messages may span lines or be empty."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return shown(text, 120)


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed dataset spec: one of SCHEMES and, where given, a path."""

    scheme: str
    path: str | None = None

    def __str__(self) -> str:
        return self.scheme if self.path is None else f"{self.scheme}:{self.path}"


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """Parse `fashion-mnist[:DIR]`, `imagefolder:PATH` or `cifar10:PATH`; touches no file."""
    if not isinstance(spec, str):
        raise UserError(f"dataset spec must be text, not {type(spec).__name__}; {SPEC_HELP}")
    quoted = shown(repr(spec), 80)
    kind, _, path = spec.partition(":")
    kind = kind.strip().lower()
    scheme = SCHEME_ALIASES.get(kind, kind)
    if scheme not in SCHEMES:
        raise UserError(f"unknown dataset spec {quoted}; {SPEC_HELP}")
    path = path.strip()
    if not path:
        if scheme == "fashion-mnist":
            return DatasetSpec(scheme)
        raise UserError(f"dataset spec {quoted} names no path; {SPEC_HELP}")
    if any(_breaks_line(ch) for ch in path):
        raise UserError(f"dataset path in {quoted} contains a control character; {SPEC_HELP}")
    if len(path) > MAX_PATH_CHARS:
        raise UserError(f"dataset path in {quoted} is {len(path)} characters long, more than any path "
                        f"({MAX_PATH_CHARS}); {SPEC_HELP}")
    return DatasetSpec(scheme, path)


def _folder(path: Path, what: str) -> Path:
    """`path` if it is a folder we may list, else a UserError naming it (`what`: "an image folder")."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{shown(path)} is not {what}: it does not exist; {SPEC_HELP}") from None
    except (OSError, ValueError) as exc:  # too long a name, a loop of links, an embedded NUL
        raise UserError(f"cannot open {shown(path)}: {_reason(exc)}; {SPEC_HELP}") from None
    if not stat.S_ISDIR(mode):
        raise UserError(f"{shown(path)} is not {what}: it is a file; {SPEC_HELP}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"cannot read {shown(path)}: permission denied; fix its permissions")
    return path


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
    warnings: tuple[str, ...] = ()  # one line each, for the user: e.g. damaged files that were left out

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


class _Dtype:
    """Stands in for numpy.dtype while unpickling: only plain numeric types, built from checked fields.

    numpy's own dtype/ndarray `__setstate__` trust their input; a garbled state tuple can crash the
    interpreter (seen with a 7-item dtype state), so pickle-controlled state never reaches them.
    """

    def __init__(self, name=None, align=False, copy=True):
        self.name, self.order = name, "|"

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.order = state[1]

    def real(self) -> np.dtype:
        """The numpy dtype this stands for; UnpicklingError unless it is a plain number type."""
        name = self.name.decode("latin1") if isinstance(self.name, bytes) else self.name
        if not isinstance(name, str) or len(name) != 2 or name[0] not in "uifb" or name[1] not in "1248":
            raise pickle.UnpicklingError(f"unsupported numpy dtype {shown(repr(name), 20)}")
        dtype = np.dtype(name)
        return dtype.newbyteorder(self.order) if self.order in "<>" else dtype


def _array_from(raw, dtype, shape, fortran: bool = False) -> np.ndarray:
    """An array from pickled fields, each checked before numpy sees it."""
    if not isinstance(dtype, _Dtype):
        raise pickle.UnpicklingError("numpy array without a dtype")
    real = dtype.real()
    if not isinstance(raw, (bytes, bytearray)):
        raise pickle.UnpicklingError("numpy array without raw bytes (object arrays are refused)")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and 0 <= n for n in shape) or len(shape) > 8:
        raise pickle.UnpicklingError(f"numpy array with shape {shown(repr(shape), 40)}")
    if math.prod(shape) * real.itemsize != len(raw):
        raise pickle.UnpicklingError(f"numpy array of shape {shape} holds {len(raw)} bytes, "
                                     f"not {math.prod(shape) * real.itemsize}")
    return np.frombuffer(bytes(raw), dtype=real).reshape(shape, order="F" if fortran else "C")


class _Array:
    """Stands in for an ndarray between `_reconstruct` and its state; `array` is set from checked fields."""

    array: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("damaged numpy array state")
        _, shape, dtype, fortran, raw = state
        self.array = _array_from(raw, dtype, shape, bool(fortran))


class _NdarrayMarker:
    """What `numpy.ndarray` resolves to: only passed to `_reconstruct`, never instantiated."""

    @staticmethod
    def __setstate__(state) -> None:
        raise pickle.UnpicklingError("damaged pickle: state applied to numpy.ndarray itself")


class _Call:
    """A shared stand-in function that pickle's BUILD opcode cannot give attributes to between loads."""

    __slots__ = ("fn",)

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)

    def __setstate__(self, state) -> None:
        raise pickle.UnpicklingError("damaged pickle: state applied to a function")


def _reconstruct(cls, shape=None, typecode=None) -> _Array:
    if cls is not _NdarrayMarker:
        raise pickle.UnpicklingError("numpy _reconstruct of something other than an ndarray")
    return _Array()


def _scalar(dtype, raw=b""):
    return _array_from(raw, dtype, (1,))[0]


def _frombuffer(buf, dtype, shape, order="C") -> np.ndarray:
    return _array_from(buf, dtype, tuple(shape) if isinstance(shape, list) else shape, order == "F")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches without running arbitrary code: numpy arrays and builtins only.

    The allowed numpy names resolve to the checked stand-ins above, not to numpy itself.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _Call(_reconstruct),
        ("numpy._core.multiarray", "_reconstruct"): _Call(_reconstruct),
        ("numpy", "ndarray"): _NdarrayMarker,
        ("numpy", "dtype"): _Dtype,  # a class: BUILD on it calls the unbound __setstate__ and fails
        ("numpy.core.multiarray", "scalar"): _Call(_scalar),
        ("numpy._core.multiarray", "scalar"): _Call(_scalar),
        ("numpy.core.numeric", "_frombuffer"): _Call(_frombuffer),  # pickle protocol 5
        ("numpy._core.numeric", "_frombuffer"): _Call(_frombuffer),
        ("_codecs", "encode"): None,  # Python 3 pickles of bytes at protocol 2
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[module, name] or super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch file")


def _unwrapped(value):
    """A top-level pickled value with array stand-ins replaced by their arrays."""
    if isinstance(value, _Array):
        if value.array is None:
            raise pickle.UnpicklingError("numpy array without its data")
        return value.array
    if isinstance(value, dict):
        return {k: _unwrapped(v) if isinstance(v, _Array) else v for k, v in value.items()}
    return value


CIFAR_FIX = "use the 'python version' archive (cifar-10-python.tar.gz)"


def _read_cifar_pickle(path: Path):
    """Unpickle one CIFAR file with numpy-only globals; any failure is a UserError naming the file."""
    try:
        with open(path, "rb") as fh:
            return _unwrapped(_NumpyOnlyUnpickler(fh, encoding="bytes").load())
    except pickle.UnpicklingError as exc:
        raise UserError(f"cannot read CIFAR-10 batch {shown(path)}: {_reason(exc)}; {CIFAR_FIX}") from None
    except OSError as exc:
        raise UserError(f"cannot read CIFAR-10 batch {shown(path)}: {_reason(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - garbage makes pickle raise almost any type; none is a bug of ours
        raise UserError(f"cannot read CIFAR-10 batch {shown(path)}: not a pickle file "
                        f"({type(exc).__name__}: {_reason(exc)}); {CIFAR_FIX}") from None


def _get(batch: dict, key: str):
    """A CIFAR field: bytes keys (Python 2 pickles) or str keys (re-pickled under Python 3)."""
    return batch[key.encode()] if key.encode() in batch else batch.get(key)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N×3×32×32 uint8) and labels (N int64) of one batch file, every field checked."""
    batch = _read_cifar_pickle(path)
    where = f"CIFAR-10 batch {shown(path)}"
    if not isinstance(batch, dict):
        raise UserError(f"{where} holds a {type(batch).__name__}, not a dict with data and labels; {CIFAR_FIX}")
    data, labels = _get(batch, "data"), _get(batch, "labels")
    for key, value in (("data", data), ("labels", labels)):
        if value is None:
            keys = ", ".join(sorted(shown(k.decode(errors="replace") if isinstance(k, bytes) else k, 20)
                                    for k in batch)[:8]) or "none"
            hint = " (fine_labels: a CIFAR-100 file; PruneLab reads CIFAR-10)" \
                if key == "labels" and _get(batch, "fine_labels") is not None else ""
            raise UserError(f"{where} has no {key!r} key (keys: {keys}){hint}; {CIFAR_FIX}")
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "ui":
        kind = f"{data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{where}: data is a {kind}, not an array of pixel bytes; {CIFAR_FIX}")
    if data.ndim != 2 or data.shape[1] != 3072:
        raise UserError(f"{where}: data has shape {tuple(data.shape)}, expected rows of 3072 values "
                        f"(3×32×32); {CIFAR_FIX}")
    if data.dtype != np.uint8 and data.size and (int(data.min()) < 0 or int(data.max()) > 255):
        raise UserError(f"{where}: pixel values outside 0..255; {CIFAR_FIX}")
    try:
        y = np.asarray(labels)
    except Exception:  # noqa: BLE001 - ragged or odd label lists make numpy raise; treat them as not integers
        y = None
    if y is None or y.ndim != 1 or (y.size and y.dtype.kind not in "ui"):
        raise UserError(f"{where}: labels are not a list of integers; {CIFAR_FIX}")
    if len(y) != data.shape[0]:
        raise UserError(f"{where} has {data.shape[0]} images but {len(y)} labels; {CIFAR_FIX}")
    if data.shape[0] == 0:
        raise UserError(f"{where} holds no images; {CIFAR_FIX}")
    bad = np.flatnonzero((y < 0) | (y > 9))
    if bad.size:
        raise UserError(f"{where}: label {int(y[bad[0]])} (image {int(bad[0])}) is outside 0..9; {CIFAR_FIX}")
    return data.astype(np.uint8, copy=False).reshape(-1, 3, 32, 32), y.astype(np.int64)


def _cifar_names(meta: Path) -> tuple[str, ...] | None:
    """Class names from batches.meta; None when it lists none."""
    info = _read_cifar_pickle(meta)
    names = info.get(b"label_names", info.get("label_names")) if isinstance(info, dict) else None
    if names is None:
        return None
    if not isinstance(names, (list, tuple)) or len(names) != 10 or \
            not all(isinstance(n, (bytes, str)) for n in names):
        raise UserError(f"CIFAR-10 file {shown(meta)}: label_names is not a list of 10 names; {CIFAR_FIX}")
    return tuple(shown(n.decode(errors="replace") if isinstance(n, bytes) else n, 60) for n in names)


def load_cifar10(path: Path, val_fraction: float = 0.1, seed: int = 0) -> Dataset:
    """A CIFAR-10 'python version' folder (data_batch_1..5, test_batch, batches.meta)."""
    root = _folder(Path(path), "a CIFAR-10 python folder")
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    train_files = [root / f"data_batch_{i}" for i in range(1, 6)]
    missing = [p.name for p in train_files + [root / "test_batch"] if not p.exists()]
    if missing:
        raise UserError(f"{shown(root)} is not a CIFAR-10 python folder (missing {', '.join(missing)}); "
                        "extract cifar-10-python.tar.gz and pass that folder")
    xs, ys = [], []
    for p in train_files + [root / "test_batch"]:
        x, y = _read_cifar_batch(p)
        xs.append(x)
        ys.append(y)
    meta = root / "batches.meta"
    names = (_cifar_names(meta) if meta.exists() else None) or tuple(f"class {i}" for i in range(10))
    images = torch.from_numpy(np.concatenate(xs))
    labels = torch.from_numpy(np.concatenate(ys))
    n_train = sum(len(y) for y in ys[:-1])
    train_idx, val_idx = _split_indices(n_train, val_fraction, seed)
    whole = TensorSplit(images, labels)
    splits = {"train": whole.subset(train_idx), "val": whole.subset(val_idx),
              "test": whole.subset(torch.arange(n_train, len(labels)))}
    return Dataset("CIFAR-10", f"cifar10:{path}", names, (3, 32, 32), (3, 32, 32), _stats(images[:n_train]),
                   splits)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last bytes of every complete PNG
JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
MIN_IMAGE_BYTES = 64  # below this a PNG or JPEG cannot hold its headers; head and tail would overlap


def _decode(path: str) -> torch.Tensor | None:
    """Pixels of one image as 3×H×W uint8, or None when the file cannot be decoded."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            rgb = img if img.mode == "RGB" else img.convert("RGB")  # convert() would copy an RGB image
            return torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1)
    except Exception:  # noqa: BLE001 - PIL plugins raise many types on bad data; a bad file must not kill a worker
        return None


def unreadable_reason(path: str) -> str | None:
    """Why an image file cannot be used ("empty file", "truncated: …", "not an image"), or None if it looks whole.

    The check must stay cheap, since it runs on every file when a folder is opened: PNG and JPEG (nearly
    every dataset) are accepted from their first and last bytes alone: a complete PNG ends with its IEND
    chunk, a complete JPEG with the EOI marker, and a cut-off copy or download lacks them, which PIL's
    `verify()` does not notice for JPEG. Files that fail this test (including PNG/JPEG with trailing bytes)
    are decoded in full before being refused; other formats get PIL's header parse and `verify()`. What
    passes here yet cannot be decoded (a garbled middle) is dropped from its batch by the loader.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO named x.png must not hang us
        try:
            size = os.fstat(fd).st_size
            head = os.pread(fd, 16, 0)
            tail = os.pread(fd, 16, max(0, size - 16))
        finally:
            os.close(fd)
    except OSError as exc:
        return _reason(exc.strerror or exc)
    if size == 0:
        return "empty file"
    if size >= MIN_IMAGE_BYTES:
        if head.startswith(PNG_SIGNATURE) and tail.endswith(PNG_END):
            return None
        if head.startswith(JPEG_START) and JPEG_END in tail:
            return None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            if head.startswith((PNG_SIGNATURE, JPEG_START)):
                img.load()  # no end marker: only a full decode can tell a truncated file from trailing bytes
            else:
                img.verify()
    except UnidentifiedImageError:
        if head.startswith((PNG_SIGNATURE, JPEG_START)):
            return f"truncated {'PNG' if head.startswith(PNG_SIGNATURE) else 'JPEG'} header"
        return "not an image"
    except Exception as exc:  # noqa: BLE001 - see _decode
        return _reason(exc)
    return None


class _FolderImages(torch.utils.data.Dataset):
    """Image files with labels, decoded lazily; an item that cannot be decoded is None (the loader drops it)."""

    def __init__(self, samples: Sequence[tuple[str, int]]):
        self.samples = list(samples)
        self.transform = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        x = _decode(path)
        if x is None:
            return None
        return (self.transform(x) if self.transform else x), label

    def targets(self) -> np.ndarray:
        """Labels of every listed image."""
        return np.array([s[1] for s in self.samples], dtype=np.int64)


def _list_dir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError as exc:
        raise UserError(f"cannot read folder {shown(path)}: {_reason(exc.strerror or exc)}; "
                        "fix its permissions") from None


def _raise_walk_error(exc: OSError) -> None:
    raise UserError(f"cannot read folder {shown(exc.filename)}: {_reason(exc.strerror or exc)}; "
                    "fix its permissions")


@dataclass
class _ScanLog:
    """What a folder scan met: image files seen and the damaged ones left out (path, reason)."""

    seen: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def warning(self, root: Path) -> tuple[str, ...]:
        """One line for Dataset.warnings, or none when nothing was skipped."""
        n = len(self.skipped)
        if not n:
            return ()
        return (f"skipped {n} damaged image file{'s' if n > 1 else ''} of {self.seen} in {shown(root)} "
                f"(first {shown(self.skipped[0][0])}: {self.skipped[0][1]})",)


def _class_folders(root: Path) -> list[str]:
    return sorted(e.name for e in _list_dir(root) if not e.name.startswith(".") and e.is_dir())


def _scan_classes(root: Path, log: _ScanLog, train: bool = True) -> tuple[list[str], list[tuple[str, int]]]:
    """Class folders under `root` and their readable images; checks that every class keeps one."""
    classes = _class_folders(root)
    if not classes:
        raise UserError(f"{shown(root)} has no class folders; expected PATH/<class>/<image>.png")
    samples, empty = [], []
    for label, name in enumerate(classes):
        found, first_bad = 0, None
        for dirpath, _, files in sorted(os.walk(root / name, onerror=_raise_walk_error)):
            for f in sorted(files):
                # Dot files are not images even with an image extension (macOS writes "._x.png" metadata).
                if f.startswith(".") or not f.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                path = os.path.join(dirpath, f)
                log.seen += 1
                reason = unreadable_reason(path)
                if reason is None:
                    samples.append((path, label))
                    found += 1
                else:
                    log.skipped.append((path, reason))
                    first_bad = first_bad or (path, reason)
        if not found:
            empty.append((root / name, first_bad))
    if train and len(samples) < 3:
        damaged = f" ({len(log.skipped)} damaged, first {shown(log.skipped[0][0])})" if log.skipped else ""
        raise UserError(f"{shown(root)} holds fewer than 3 images in class sub-folders{damaged}; "
                        "expected PATH/<class>/<image>.png")
    if train and len(classes) < 2:
        raise UserError(f"{shown(root)} needs at least two class folders; found {len(classes)}")
    if empty:
        folder, bad = empty[0]
        if bad:
            raise UserError(f"class folder {shown(folder)} has no readable image (first damaged {shown(bad[0])}: "
                            f"{bad[1]}); replace the files or remove the folder")
        raise UserError(f"class folder {shown(folder)} holds no images; add images or remove the folder")
    return classes, samples


def load_image_folder(path: Path, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
                      input_shape: Shape | None = None) -> Dataset:
    """An ImageFolder tree: either train/ with val/ and/or test/, or one folder split by seed.

    Damaged image files are left out and counted in `Dataset.warnings` (see `unreadable_reason`).
    """
    root = _folder(Path(path), "an image folder")
    log = _ScanLog()
    sub = {name: root / name for name in ("train", "val", "test") if (root / name).is_dir()}
    if "train" in sub and len(sub) > 1:
        classes, train = _scan_classes(sub["train"], log)
        splits = {"train": train}
        for name in ("val", "test"):
            if name in sub:
                c = _class_folders(sub[name])
                if c != classes:
                    raise UserError(f"{shown(sub[name])} has other class folders than {shown(sub['train'])}; "
                                    "make them match")
                splits[name] = _scan_classes(sub[name], log, train=False)[1]
        if "val" not in splits:
            splits["val"] = splits["test"]
        if "test" not in splits:
            splits["test"] = splits["val"]
    else:
        # A lone train/ folder holds the class folders: split it by seed (not one class named "train").
        base = sub["train"] if _class_folders(root) == ["train"] else root
        classes, samples = _scan_classes(base, log)
        perm = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
        n_test = max(1, int(len(samples) * test_fraction))
        n_val = max(1, int(len(samples) * val_fraction))
        pick = lambda ids: [samples[i] for i in sorted(ids)]  # noqa: E731 - tiny local helper
        splits = {"test": pick(perm[:n_test]), "val": pick(perm[n_test:n_test + n_val]),
                  "train": pick(perm[n_test + n_val:])}
    if not splits["train"]:
        raise UserError(f"{shown(root)} has no training images; expected PATH/<class>/<image>.png")
    native = _native_shape(splits["train"])
    side = min(max(native[1], native[2]), 224)
    shape = tuple(input_shape) if input_shape else (native[0], side, side)
    folder = {k: _FolderImages(v) for k, v in splits.items()}
    norm = _folder_stats(folder["train"], shape)
    return Dataset(root.name, f"imagefolder:{path}", tuple(classes), native, shape, norm, folder, kind="folder",
                   warnings=log.warning(root))


def _native_shape(samples: Sequence[tuple[str, int]]) -> Shape:
    """Channels and size of the first training image that opens (grey images give one channel)."""
    from PIL import Image

    for path, _ in samples[:50]:
        try:
            with Image.open(path) as first:
                channels = 1 if first.mode in ("L", "I", "I;16", "1") else 3
                return channels, first.size[1], first.size[0]
        except Exception:  # noqa: BLE001 - see _decode; the loader drops such files
            continue
    raise UserError(f"none of the first training images can be opened (first {shown(samples[0][0])}); "
                    "check the image files")


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


def _folder_stats(images: _FolderImages, shape: Shape, max_images: int = 500, chunk: int = 64) -> Normalization:
    """Per-channel mean/std of up to `max_images` evenly spaced training images, at the model's shape.

    Images of one size are converted in chunks (one resize call per chunk, not per image) and summed in
    float64, so memory stays bounded by `chunk` images whatever the folder holds.
    """
    step = max(1, len(images) // max_images)
    sums = torch.zeros(2, shape[0], dtype=torch.float64)  # Σx and Σx² per channel
    count = 0
    pending: dict[tuple[int, ...], list[torch.Tensor]] = {}

    def flush(size: tuple[int, ...]) -> None:
        nonlocal count
        x = convert_batch(torch.stack(pending.pop(size)).float().div_(255.0), shape).double()
        sums[0] += x.sum(dim=(0, 2, 3))
        sums[1] += x.square().sum(dim=(0, 2, 3))
        count += x.numel() // shape[0]

    for i in range(0, len(images), step):
        x = _decode(images.samples[i][0])
        if x is None:
            continue  # damaged inside: the loader drops it too
        size = tuple(x.shape[1:])
        pending.setdefault(size, []).append(x)
        if len(pending[size]) >= chunk:
            flush(size)
    for size in list(pending):
        flush(size)
    if count < 2:
        raise UserError(f"none of the sampled training images can be decoded (first {shown(images.samples[0][0])}); "
                        "check the image files")
    mean = sums[0] / count
    std = ((sums[1] - count * mean.square()) / (count - 1)).clamp_min(0).sqrt().clamp_min(1e-3)
    return Normalization(tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std))


def num_workers() -> int:
    """Loader workers: leave one core to the model on small machines."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def _collate_readable(batch: list):
    """default_collate over the items that decoded; None when none did (module level: workers pickle it)."""
    items = [item for item in batch if item is not None]
    return torch.utils.data.default_collate(items) if items else None


class _FolderLoader:
    """Batches of image files: a DataLoader whose batches leave out files that could not be decoded."""

    def __init__(self, loader: torch.utils.data.DataLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.loader:
            if batch is not None:
                yield batch


def _folder_loader(data, batch_size, shape, norm, shuffle, augment, seed, drop_last):
    view = _TransformedView(data, _FolderTransform(shape, norm, augment))
    return _FolderLoader(torch.utils.data.DataLoader(
        view, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers(),
        generator=torch.Generator().manual_seed(seed), persistent_workers=False, collate_fn=_collate_readable))


class _TransformedView(torch.utils.data.Dataset):
    """Applies a transform on top of a folder dataset without mutating it."""

    def __init__(self, data, transform):
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        item = self.data[i]
        if item is None:
            return None
        x, y = item
        return self.transform(x), y


def load_dataset(spec: str, *, input_shape: Shape | None = None, seed: int = 0) -> Dataset:
    """Parse a dataset spec (`fashion-mnist`, `imagefolder:PATH`, `cifar10:PATH`) and load it."""
    parsed = parse_dataset_spec(spec)
    path = Path(parsed.path) if parsed.path is not None else None
    if parsed.scheme == "fashion-mnist":
        data = load_fashion_mnist(path, seed=seed)
    elif parsed.scheme == "imagefolder":
        data = load_image_folder(path, seed=seed, input_shape=input_shape)
    else:
        data = load_cifar10(path, seed=seed)
    return data.adapted(input_shape) if input_shape else data
