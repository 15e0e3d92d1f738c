"""Loading a model from a source spec: the demo zoo, an architecture by name, or a file of any kind.

A file that holds only weights (a state_dict, a training checkpoint, a .safetensors file) needs an
architecture: `torchvision:NAME`, `timm:NAME` or the user's `PATH.py:Class` (`model_code`), unless the
checkpoint records a name we know. Files that carry code load only with `trust`.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from engine.data import Normalization, Shape
from engine.budget import BudgetError
from engine.errors import NeedsArchitecture, NeedsTrust, UserError, first_line
from engine.sources import NAMED, ModelKind, ModelSource

from .archs import adapted_layers, build_arch, size_kwargs
from .bundle import ModelBundle
from .files import (UNREADABLE, _NeedsTrust, _safe_load, _trusted_load, check_payload, find_state_dict,
                    read_safetensors, read_weights, recorded_arch, sniff)
from .saving import FORMAT
from .weights import _load_state, apply_pruned_state
from .zoo import DEMO_ARCHS, demo_path

@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Initialise weights from `seed` (same seed, same untrained model) without disturbing the caller's RNG."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def load_model(src: str, *, weights: str | None = None, model_code: str | None = None,
               model_kwargs: dict | None = None, trust: bool = False, input_shape: Shape | None = None,
               num_classes: int | None = None, partial_weights: bool = False, seed: int | None = None,
               default_shape: Shape | None = None) -> ModelBundle:
    """Load a model from a source spec (README, "Your own model"): demo:NAME, torchvision:NAME, timm:NAME or a FILE.

    Files that hold code (TorchScript, pickled modules) load only with `trust`; weights that fill
    under half of the architecture are refused unless `partial_weights`. `model_code` is the
    architecture of a weights-only FILE: `PATH.py:Class`, `torchvision:NAME` or `timm:NAME`.
    Architectures built by name take `input_shape`, else `default_shape` (the data's), else one
    channel; untrained weights are drawn from `seed` when it is given. Weights that are not finite
    numbers are refused here, so every front end and plan says so before any figure is made.
    """
    bundle = _load(src, weights, model_code, model_kwargs, trust, input_shape, num_classes, partial_weights, seed,
                   default_shape)
    check_finite(bundle.model, weights or src)
    return bundle


def _open_bound(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """Where `tensor`, a buffer, is an open clamp bound: -inf in a `*min` buffer, +inf in a `*max` one
    (timm's clipped linears clamp by them; ±inf there is "no clamp" by design). The other infinity
    there (+inf as a minimum clamps everything to +inf) and NaN stay corruption."""
    leaf = name.rsplit(".", 1)[-1].lower()
    if leaf.endswith("min"):
        return tensor == float("-inf")
    if leaf.endswith("max"):
        return tensor == float("inf")
    return torch.zeros_like(tensor, dtype=torch.bool)


def check_finite(model: nn.Module, source: str) -> None:
    """Refuse a model with one NaN or Inf in a parameter or buffer: it evaluates to arbitrary classes
    (argmax of NaN logits is class 0, a perfect score on images of class 0) and prunes to NaN. Only a
    buffer's open clamp bound may be infinite (`_open_bound`); a parameter never is."""
    for kind, named in (("weight", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, tensor in named:
            if not tensor.is_floating_point():
                continue
            bad = ~torch.isfinite(tensor)
            if kind == "buffer" and bool(bad.any()):
                bad &= ~_open_bound(name, tensor)
            if bool(bad.any()):
                what = "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
                raise UserError(f"{source}: {kind} {name} holds {int(bad.sum())} value(s) that are not finite ({what}), "
                                "so every figure of this model would be meaningless; load a model whose weights are "
                                "finite numbers (the file is damaged, or its training diverged)")


def _load(src: str, weights: str | None, model_code: str | None, model_kwargs: dict | None, trust: bool,
          input_shape: Shape | None, num_classes: int | None, partial_weights: bool, seed: int | None,
          default_shape: Shape | None) -> ModelBundle:
    source = ModelSource.parse(src)
    name = source.name
    if source.is_demo:
        if name not in DEMO_ARCHS:
            raise UserError(f"unknown demo model {src!r}; valid: {', '.join('demo:' + n for n in DEMO_ARCHS)}")
        path = demo_path(name)
        if not path.exists():
            raise UserError(f"demo weights {path} are missing; train them with "
                            f"`python main.py train --model demo:{name} --data fashion-mnist --out {path}`")
        bundle = _load(str(path), None, None, None, False, None, None, False, None, None)
        bundle.source = src
        return bundle
    shape = tuple(input_shape) if input_shape else None
    named_shape = shape or (tuple(default_shape) if default_shape else None)
    if source.is_named:
        state = None
        if weights:
            wpath = Path(weights)
            if not wpath.is_file():
                raise UserError(f"--weights {weights} does not exist or is not a file; name a state_dict file")
            state = find_state_dict(read_weights(wpath))[0]
            if state is None:
                raise UserError(f"{weights} holds no state_dict; pass a file saved with torch.save(model.state_dict())")
        with seeded(seed):
            return _named(src, src, named_shape, num_classes, model_kwargs, state, weights or src, partial_weights)
    with seeded(seed):
        return _load_file(src, model_code, model_kwargs, trust, shape, num_classes, partial_weights, named_shape)


def _named(arch: str, source: str, shape: Shape | None, num_classes: int | None, kwargs: dict | None,
           state: dict | None, weights_source: str, partial: bool) -> ModelBundle:
    """A torchvision/timm architecture for `shape` and `num_classes`, filled with `state` where it fits."""
    kwargs = {**(size_kwargs(arch, shape) if shape else {}), **(kwargs or {})}  # the user's own arguments win
    model = build_arch(arch, shape[0] if shape else 1, num_classes or 10, kwargs)
    meta: dict[str, Any] = {}
    if state is not None:
        meta["weights"] = _load_state(model, state, weights_source, partial, adapted_layers(model)).to_json()
        meta["weights_file"] = weights_source  # the original's identity in exported model cards
    else:
        meta["untrained"] = True
    return ModelBundle(model.eval(), source, arch, shape, num_classes or 10, arch_kwargs=dict(kwargs or {}),
                       meta=meta)


def _checked_path(src: str) -> tuple[Path, str]:
    path = Path(src)
    if not path.exists():
        raise UserError(f"model {src!r} not found; use demo:resnet, demo:vgg, torchvision:NAME, timm:NAME "
                        "or an existing file")
    if path.is_dir():
        raise UserError(f"model {src} is a folder; name the model file inside it")
    if not path.is_file():
        raise UserError(f"model {src} is not a regular file (a pipe or device); name a model file")
    try:
        kind = sniff(path)
    except OSError as exc:
        raise UserError(f"model {src} cannot be read ({exc.strerror}); check its permissions") from None
    if kind in UNREADABLE:
        what, fix = UNREADABLE[kind]
        raise UserError(f"{path} {what}; {fix}")
    return path, kind


def _load_file(src: str, model_code: str | None, model_kwargs: dict | None, trust: bool, shape: Shape | None,
               num_classes: int | None, partial_weights: bool, named_shape: Shape | None) -> ModelBundle:
    path, kind = _checked_path(src)
    if kind == "torchscript":
        if not trust:
            raise NeedsTrust(f"{path} is a TorchScript archive: it carries its own code, which runs while it loads "
                             "and can change files. Pass --trust only if you trust where it came from, or save a "
                             "state_dict instead", "torchscript")
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # a corrupt archive of any kind
            raise UserError(f"{path} is a damaged TorchScript archive: {first_line(exc)}") from exc
        return ModelBundle(model.eval(), src, "torchscript", shape, num_classes, meta={"torchscript": True})
    file_meta: dict = {}
    if kind == "safetensors":
        obj, file_meta = read_safetensors(path)
    else:
        obj = _read_object(path, trust)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        bundle = _from_payload(obj, src, model_code, trust)
        if shape:
            bundle.input_shape = shape
        return bundle
    if isinstance(obj, nn.Module):
        meta = getattr(obj, "prunelab_meta", {}) or {}
        return ModelBundle(obj.eval(), src, "module", shape or _shape_from_meta(meta), num_classes, meta=meta)
    state, _ = find_state_dict(obj)
    if state is None:
        raise UserError(f"{path} holds neither a model nor a state_dict; save one with torch.save(model.state_dict())")
    arch = model_code or recorded_arch(obj, file_meta)
    if not arch:
        raise NeedsArchitecture(f"{path} holds only weights (a state_dict); name its architecture: torchvision:NAME or "
                        "timm:NAME (--weights FILE with --model ARCH), or --model-code PATH.py:ClassName "
                        "(and --model-kwargs JSON)")
    if ModelSource.parse(arch).kind in NAMED:
        try:
            bundle = _named(arch, src, named_shape, num_classes, model_kwargs, state, src, partial_weights)
        except UserError as exc:
            if model_code:
                raise
            raise UserError(f"{exc} (the architecture {arch} recorded in {path}; if it is another one, name it "
                            "with --model-code)") from None
        if not model_code:
            bundle.meta["arch_from"] = "recorded in the file"
        return bundle
    arch = f"code:{arch}"
    model = build_arch(arch, kwargs=model_kwargs)
    report = _load_state(model, state, src, partial_weights)
    return ModelBundle(model.eval(), src, arch, shape, num_classes, arch_kwargs=dict(model_kwargs or {}),
                       meta={"weights": report.to_json()})


def _read_object(path: Path, trust: bool) -> Any:
    try:
        return _safe_load(path)
    except _NeedsTrust as exc:
        if not trust:
            raise NeedsTrust(f"{path} holds a pickled Python object ({exc}); unpickling it can run any code. "
                             "Pass --trust only if you trust where it came from, or save a state_dict instead",
                             "pickle") from None
        return _trusted_load(path)


def _from_payload(payload: dict, source: str, model_code: str | None, trust: bool) -> ModelBundle:
    check_payload(payload, source)
    arch = payload["arch"]
    shape = tuple(payload["input_shape"]) if payload.get("input_shape") else None
    num_classes = payload.get("num_classes") or 10
    recorded = ModelSource.parse(arch)
    if recorded.kind is ModelKind.CODE:
        if model_code:
            arch = str(ModelSource(ModelKind.CODE, model_code))
        elif not trust:
            raise NeedsTrust(f"{source} was built from user code ({recorded.name}); pass --model-code PATH.py:ClassName "
                             "to rebuild it, or --trust to import the recorded file (runs its code)", "code")
    try:
        model = build_arch(arch, shape[0] if shape else 1, num_classes, payload.get("arch_kwargs"))
    except NeedsTrust:
        raise
    except BudgetError as exc:  # the file asks for more memory than the limit: not necessarily an edit
        raise BudgetError(f"{source}: {exc}") from None
    except UserError as exc:
        raise UserError(f"{source}: {exc}; its architecture or arguments were edited: save the model again "
                        "from PruneLab") from None
    if payload.get("pruned"):
        apply_pruned_state(model, payload["state"], source)
    else:
        report = _load_state(model, payload["state"], source)
        if report.filled != report.total or report.unexpected:
            raise UserError(f"{source} does not match its recorded architecture {arch} ({report.summary()}); "
                            "it was changed after PruneLab saved it, or pass the --model-code it was built with")
    norm = payload.get("norm")
    return ModelBundle(model.eval(), source, arch, shape, num_classes,
                       Normalization(tuple(norm["mean"]), tuple(norm["std"])) if norm else None,
                       tuple(payload["class_names"]) if payload.get("class_names") else None,
                       payload.get("arch_kwargs") or {}, payload.get("meta") or {})


def _shape_from_meta(meta: dict) -> Shape | None:
    shape = meta.get("input_shape")
    return tuple(shape) if shape else None
