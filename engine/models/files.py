"""Model files: what a file is (from its bytes, never by running it) and reading its tensors safely.

Only `torch.load(weights_only=True)` and the safetensors library ever read a file nobody vouched
for; pickled objects and TorchScript carry code and need the caller's trust (see loading.py).
"""
from __future__ import annotations

import argparse
import pickle
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from engine.errors import UserError, first_line
from engine.sources import NAMED, ModelSource

# Where training scripts keep the weights inside a checkpoint dict, in order of preference
# (PyTorch Lightning: state_dict; tutorials: model_state_dict, model, net; EMA copies last).
STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "ema", "state_dict_ema", "model_ema")


def sniff(path: Path) -> str:
    """What a file is, from its first bytes and (for ZIP archives) its member names, without loading it.

    One of: "empty", "torchscript", "torch" (torch.save's ZIP format), "pickle" (a legacy or plain
    pickle), "safetensors", "onnx", "zip" (some other archive), "damaged" (a cut or corrupt archive)
    or "unknown".
    """
    with open(path, "rb") as fh:
        head = fh.read(16)
    if not head:
        return "empty"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return "damaged"  # starts like an archive (torch.save's format) but its directory is missing
        if any(n.split("/", 1)[-1].startswith("code/") or n.endswith("/constants.pkl") for n in names):
            return "torchscript"
        if any(n.endswith("data.pkl") for n in names):
            return "torch"
        return "zip"
    if head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle PROTO opcode: legacy torch.save or plain pickle
        return "pickle"
    if _looks_like_safetensors(path, head):
        return "safetensors"
    if path.suffix.lower() == ".onnx" or _looks_like_onnx(path, head):
        return "onnx"
    return "unknown"


# What each kind of file that is not a readable PyTorch file is called, and what to do instead.
UNREADABLE = {
    "empty": ("is empty (0 bytes): not a PyTorch file", "save the model again with torch.save"),
    "onnx": ("is an ONNX model: PruneLab prunes PyTorch models", "load the PyTorch original"),
    "damaged": ("is a damaged archive (cut short or corrupt): not a PyTorch file that can be read",
                "copy or save the model again"),
    "zip": ("is a ZIP archive but not a PyTorch file", "choose a file saved with torch.save"),
    "unknown": ("is damaged or not a PyTorch file", "choose a file saved with torch.save"),
}


def _looks_like_safetensors(path: Path, head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then a JSON header."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (size,) = struct.unpack("<Q", head[:8])
    return 2 <= size <= path.stat().st_size - 8


def _looks_like_onnx(path: Path, head: bytes) -> bool:
    """ONNX models are protobufs starting with ir_version (field 1, varint); confirm by parsing."""
    if head[0] != 0x08:
        return False
    try:
        import onnx

        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - anything onnx cannot parse is not an ONNX model
        return False
    return len(proto.graph.node) > 0


def _is_state(obj: Any) -> bool:
    return (isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) for k in obj)
            and all(torch.is_tensor(v) for v in obj.values()))


def _tensors_of(obj: Any) -> dict | None:
    """The tensors of a state_dict, which may carry a few other entries (Lightning and others keep counters or
    flags there); None when `obj` is not mostly named tensors."""
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) for k in obj):
        return None
    tensors = {k: v for k, v in obj.items() if torch.is_tensor(v)}
    return tensors if tensors and len(tensors) * 10 >= len(obj) * 9 else None


def find_state_dict(obj: Any) -> tuple[dict | None, str]:
    """The state_dict in a loaded object and the checkpoint key holding it ("" when the object is one)."""
    if not isinstance(obj, dict):
        return None, ""
    for key in STATE_KEYS:
        if (found := _tensors_of(obj.get(key))) is not None:
            return found, key
    found = _tensors_of(obj)
    return (found, "") if found is not None else (None, "")


def _state_dict_in(obj: Any) -> dict | None:
    return find_state_dict(obj)[0]


# Plain attribute holders training scripts leave in checkpoints (Lightning's hyper_parameters often hold the
# script's argparse.Namespace); rebuilding one only sets attributes, so reading it needs no trust.
SAFE_GLOBALS = [argparse.Namespace]


class _NeedsTrust(Exception):
    """The file needs full unpickling (it holds Python objects, not just tensors)."""


def check_archive(path: Path) -> None:
    """Refuse a torch.save archive whose records would unpack to more than the memory budget, from the sizes
    its directory records (torch's reader allocates each record at that size), before anything is inflated."""
    from engine.budget import check_fits
    from engine.units import fmt_bytes

    try:
        with zipfile.ZipFile(path) as zf:
            records = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not an archive: torch.load says what it is
    total = sum(r.file_size for r in records)
    biggest = max(records, key=lambda r: r.file_size, default=None)
    if biggest is not None:
        check_fits(total, f"{path} ({fmt_bytes(path.stat().st_size)} on disk; its record {biggest.filename} "
                          f"unpacks to {fmt_bytes(biggest.file_size)})")


def _safe_load(path: Path) -> Any:
    check_archive(path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(SAFE_GLOBALS):
            # A garbled header reads as an odd pickle protocol; the error below says it better.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc)
        if "Unsupported global" in detail or "weights_only" in detail.lower():
            glob = detail.split("GLOBAL", 1)[-1].split()[0] if "GLOBAL" in detail else "a Python object"
            raise _NeedsTrust(glob.strip(" .,")) from None
        raise UserError(f"{path} is not a readable PyTorch file: {first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - a garbled pickle fails anywhere inside the (safe) unpickler
        first = first_line(exc) if str(exc).strip() else "corrupt"
        raise UserError(f"{path} is not a readable PyTorch file ({type(exc).__name__}: {first}); "
                        "re-save it with torch.save") from exc


def _trusted_load(path: Path) -> Any:
    check_archive(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # arbitrary unpickling errors: report, never crash
        raise UserError(f"{path} could not be unpickled even with --trust: {type(exc).__name__}: {exc}") from exc


def read_safetensors(path: Path) -> tuple[dict, dict]:
    """Tensors and the string metadata of a .safetensors file (no pickle involved)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        return load_file(str(path), device="cpu"), meta
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is a damaged .safetensors file ({first_line(exc)}); copy or save it again") from exc


def read_weights(path: Path, flag: str = "--weights") -> Any:
    """A weights file (state_dict, checkpoint dict or .safetensors): tensors only, never code."""
    kind = sniff(path)
    if kind == "safetensors":
        return read_safetensors(path)[0]
    if kind not in ("torch", "pickle"):
        what = UNREADABLE.get(kind, ("is a TorchScript archive (code, not only weights)",))[0]
        raise UserError(f"{flag} {path} {what}; pass a state_dict saved with torch.save(model.state_dict())")
    try:
        return _safe_load(path)
    except _NeedsTrust as exc:
        raise UserError(f"{flag} {path} holds a pickled Python object ({exc}), not only tensors; save "
                        "model.state_dict() instead") from None


def recorded_arch(obj: Any, meta: dict | None = None) -> str | None:
    """An architecture name a checkpoint records about itself (timm's train.py: `arch`), if it is one we know."""
    from .archs import timm_names, torchvision_names

    found: list[str] = []
    for source in (meta or {}, obj if isinstance(obj, dict) else {},
                   obj.get("hyper_parameters", {}) if isinstance(obj, dict) else {}):
        if isinstance(source, dict):
            found += [v for k in ("arch", "architecture", "model_name", "model") if isinstance(v := source.get(k), str)]
    for name in found:
        if ModelSource.parse(name).kind in NAMED:
            return name
        if name in torchvision_names():
            return f"torchvision:{name}"
        if name in timm_names():
            return f"timm:{name}"
    return None


def state_summary(state: dict) -> dict:
    """Counts for people: tensors, parameters and the output size of the last matrix (the head, usually)."""
    heads = [v for k, v in state.items() if k.endswith("weight") and v.ndim == 2]
    return {"tensors": len(state), "values": int(sum(v.numel() for v in state.values())),
            "head_outputs": int(heads[-1].shape[0]) if heads else None}



MAX_CLASSES = 1_000_000
MAX_SIDE = 100_000


def _count(value: Any, top: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= top


def check_payload(payload: dict, source: str) -> None:
    """The fields of a PruneLab model file, checked before anything is built from them: the file is a plain
    dict anyone can edit, and a missing or mistyped field must be named, not fail deep inside a constructor."""
    def bad(name: str, what: str) -> UserError:
        return UserError(f"{source} is a PruneLab model file whose '{name}' {what}; it was edited or damaged: "
                         "save the model again from PruneLab")

    arch = payload.get("arch")
    if not isinstance(arch, str) or not arch.strip():
        raise bad("arch", "is missing" if arch is None else f"is a {type(arch).__name__}, not an architecture name")
    shape = payload.get("input_shape")
    if shape is not None and not (isinstance(shape, (list, tuple)) and len(shape) == 3
                                  and all(_count(v, MAX_SIDE) for v in shape)):
        raise bad("input_shape", f"is {shape!r:.60}, not three positive sizes C, H, W")
    classes = payload.get("num_classes")
    if classes is not None and not _count(classes, MAX_CLASSES):
        raise bad("num_classes", f"is {classes!r:.40}, not a class count between 1 and {MAX_CLASSES}")
    if not isinstance(payload.get("arch_kwargs") or {}, dict):
        raise bad("arch_kwargs", f"is a {type(payload['arch_kwargs']).__name__}, not the architecture's arguments")
    norm = payload.get("norm")
    if norm is not None and not (isinstance(norm, dict) and all(
            isinstance(norm.get(k), (list, tuple)) and all(isinstance(v, (int, float)) for v in norm[k])
            for k in ("mean", "std"))):
        raise bad("norm", "is not a mean and std per channel")
    names = payload.get("class_names")
    if names is not None and not (isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names)):
        raise bad("class_names", "is not a list of names")
    state = payload.get("state")
    if not payload.get("pruned"):
        if not _is_state(state):
            raise bad("state", f"is a {type(state).__name__}, not a state_dict of named tensors")
        return
    if not isinstance(state, dict) or not _is_state(state.get("tensors")):
        raise bad("state", "lacks the pruned model's tensors")
    attrs = state.get("attrs")
    if not isinstance(attrs, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and all(
                isinstance(a, str) and (_count(n, 1 << 24) or (isinstance(n, (list, tuple)) and all(
                    _count(i, 1 << 24) for i in n))) for a, n in v.items()) for k, v in attrs.items()):
        raise bad("state", "lacks the pruned layers' sizes (attrs: layer -> {size name: number})")
