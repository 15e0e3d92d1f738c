"""CIFAR-10 'python version' folders, read with an unpickler that runs no code."""
from __future__ import annotations

import io
import math
import pickle
import pickletools
from pathlib import Path

import numpy as np
import torch

from engine.data.common import _folder, _reason, shown
from engine.data.dataset import Dataset
from engine.data.tensors import TensorSplit, _split_indices, _stats
from engine.errors import UserError

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
MAX_BATCH_BYTES = 256 << 20  # a CIFAR-10 batch is about 30 MiB
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


def _check_opcodes(data: bytes) -> None:
    """Refuse what would make the C unpickler allocate far more than the file holds, before it runs: a memo
    index far past the entries stored so far (its memo table grows to the index; a few bytes asked for 11 GiB)
    and a length past the end of the file (it allocates the length before reading)."""
    puts = 0
    try:
        for op, arg, pos in pickletools.genops(io.BytesIO(data)):
            if op.name in _MEMO_PUTS:
                if not isinstance(arg, int) or arg > puts + 1024:
                    raise pickle.UnpicklingError(f"damaged pickle: memo index {shown(repr(arg), 20)} at byte {pos}")
                puts += 1
            elif op.name == "FRAME" and isinstance(arg, int) and arg > len(data) - pos:
                raise pickle.UnpicklingError(f"damaged pickle: a frame of {arg} bytes at byte {pos} runs past "
                                             f"the end of the file")
    except ValueError as exc:  # genops read a length past the end, or an unknown opcode
        raise pickle.UnpicklingError(f"damaged pickle: {_reason(exc)}") from None


def _read_cifar_pickle(path: Path):
    """Unpickle one CIFAR file with numpy-only globals; any failure is a UserError naming the file."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_BATCH_BYTES:
            raise UserError(f"{shown(path)} is {size >> 20} MiB, too large for a CIFAR-10 batch (about 30 MiB); "
                            f"{CIFAR_FIX}")
        data = Path(path).read_bytes()
        _check_opcodes(data)
        return _unwrapped(_NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load())
    except UserError:
        raise
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
