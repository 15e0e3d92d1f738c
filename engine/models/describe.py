"""Describing a model file before loading it: its kind, its tensors and, where the keys make it obvious,
its architecture. Nothing from the file runs: code-carrying files are only named."""
from __future__ import annotations

import functools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.errors import UserError

from .archs import torchvision_names
from .files import (UNREADABLE, _NeedsTrust, _safe_load, find_state_dict, read_safetensors, recorded_arch, sniff,
                    state_summary)
from .saving import FORMAT


@dataclass(frozen=True)
class FileInfo:
    """What a model file holds, in plain values (for the Open model dialog and `describe`)."""

    path: str
    kind: str  # "prunelab", "state_dict", "checkpoint", "safetensors", "torchscript" or "pickle"
    summary: str  # one line for people
    needs_trust: bool = False  # holds code: loads only with the user's trust
    needs_arch: bool = False  # holds only weights: an architecture must be named
    tensors: int | None = None
    values: int | None = None  # numbers in all tensors (parameters and buffers)
    container: str = ""  # the checkpoint key that held the state_dict
    arch: str | None = None  # recorded in the file, or guessed from its keys
    arch_source: str = ""  # "recorded" or "guessed"
    head_outputs: int | None = None  # rows of the last matrix: the class count, usually
    input_shape: tuple[int, ...] | None = None


def describe_file(path: str | Path, guess: bool = True) -> FileInfo:
    """What `path` is and holds, read without running any code from it; unreadable files raise UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} is not a file; choose a model file")
    kind = sniff(path)
    if kind in UNREADABLE:
        what, fix = UNREADABLE[kind]
        raise UserError(f"{path} {what}; {fix}")
    if kind == "torchscript":
        return FileInfo(str(path), "torchscript", "a TorchScript archive: it carries code, which runs when it loads",
                        needs_trust=True)
    meta: dict = {}
    if kind == "safetensors":
        obj, meta = read_safetensors(path)
    else:
        try:
            obj = _safe_load(path)
        except _NeedsTrust as exc:
            return FileInfo(str(path), "pickle", f"a pickled Python object ({exc}): unpickling it can run code",
                            needs_trust=True)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        state = obj["state"]["tensors"] if obj.get("pruned") else obj["state"]
        counts = state_summary(state)
        shape = tuple(obj["input_shape"]) if obj.get("input_shape") else None
        return FileInfo(str(path), "prunelab", f"a PruneLab model ({obj['arch']}"
                        f"{', pruned' if obj.get('pruned') else ''}), {counts['tensors']} tensors", arch=obj["arch"],
                        arch_source="recorded", tensors=counts["tensors"], values=counts["values"],
                        head_outputs=obj.get("num_classes"), input_shape=shape)
    state, container = find_state_dict(obj)
    if state is None:
        raise UserError(f"{path} holds neither a model nor a state_dict; save one with torch.save(model.state_dict())")
    counts = state_summary(state)
    arch, source = recorded_arch(obj, meta), "recorded"
    if arch is None and guess:
        arch, source = guess_arch(state), "guessed"
    file_kind = "safetensors" if kind == "safetensors" else ("checkpoint" if container else "state_dict")
    where = f" under '{container}'" if container else ""
    text = {"safetensors": "a .safetensors file", "checkpoint": "a training checkpoint",
            "state_dict": "a state_dict"}[file_kind]
    summary = f"{text}: {counts['tensors']} tensors{where}, weights only"
    if arch:
        summary += f"; architecture {arch} ({source})"
    return FileInfo(str(path), file_kind, summary, needs_arch=True, tensors=counts["tensors"],
                    values=counts["values"], container=container, arch=arch, arch_source=source if arch else "",
                    head_outputs=counts["head_outputs"])


def _strip(state: dict) -> dict:
    """Keys without the wrappers training code adds (DataParallel, Lightning, torch.compile)."""
    for prefix in ("module.", "model.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


@functools.lru_cache(maxsize=None)
def _signature(name: str) -> dict[str, tuple[int, ...]] | None:
    """Key names and shapes of an untrained torchvision model, built on the meta device (no memory, no time)."""
    import torchvision

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torchvision.models.get_model(name, weights=None)
    except Exception:  # noqa: BLE001 - a few builders compute on tensors and cannot run on meta
        return None
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _family(name: str) -> str:
    return re.match(r"[a-z]+", name).group(0)


def guess_arch(state: dict) -> str | None:
    """The torchvision architecture whose layer names and shapes match `state` (head and stem may differ)."""
    state = _strip(state)
    tops = {k.split(".", 1)[0] for k in state}
    families: dict[str, list[str]] = {}
    for name in torchvision_names():
        families.setdefault(_family(name), []).append(name)
    best, best_score = None, 0
    for members in families.values():
        probe = next((s for s in map(_signature, members) if s is not None), None)
        if probe is None or {k.split(".", 1)[0] for k in probe} != tops:
            continue  # another family: its top-level layers differ
        for name in members:
            sig = _signature(name)
            if sig is None or set(sig) != set(state):
                continue
            score = sum(sig[k] == tuple(v.shape) for k, v in state.items())
            if score > best_score:
                best, best_score = name, score
    return f"torchvision:{best}" if best and best_score >= len(state) - 6 else None
