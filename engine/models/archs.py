"""Architectures by name: the demo zoo, torchvision, timm and the user's own Python class.

Named architectures are built untrained (never downloaded: weights come from the user's file) for
the data's channels and class count; `adapted_layers` names the layers that were changed for it.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch.nn as nn

from engine.errors import UserError, first_line
from engine.sources import ModelKind, ModelSource, split_code

from .zoo import DEMO_ARCHS

ARCH_HELP = "demo:resnet, demo:vgg, torchvision:NAME, timm:NAME or code:PATH.py:Class"


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first 2-D convolution (the one that sees the image's channels)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    return None


def last_linear(model: nn.Module) -> str | None:
    """Name of the last Linear layer (the classifier head, in every torchvision and timm classifier)."""
    found = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return found[-1] if found else None


def adapted_layers(model: nn.Module) -> tuple[str, ...]:
    """Layers whose shape depends on the data (first convolution, head): a file's weights for them may not fit."""
    found = first_conv(model)
    return tuple(n for n in (found[0] if found else None, last_linear(model)) if n)


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent = model
    *path, last = name.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


@functools.lru_cache(maxsize=None)
def torchvision_names() -> tuple[str, ...]:
    """Every torchvision image classification architecture."""
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


@functools.lru_cache(maxsize=None)
def timm_names() -> tuple[str, ...]:
    """Every timm architecture (names only; nothing is downloaded)."""
    import timm

    return tuple(timm.list_models())


def list_architectures(query: str = "", limit: int | None = None) -> list[str]:
    """Architecture names for a searchable list: `torchvision:NAME` then `timm:NAME`, filtered by `query`."""
    words = query.lower().split()
    names = [f"torchvision:{n}" for n in torchvision_names()] + [f"timm:{n}" for n in timm_names()]
    found = [n for n in names if all(w in n.lower() for w in words)]
    return found[:limit] if limit else found


def _torchvision_model(name: str, in_channels: int, num_classes: int, kwargs: dict) -> nn.Module:
    import torchvision

    if name not in torchvision_names():
        close = [n for n in torchvision_names() if name[:4].lower() in n][:8] or list(torchvision_names()[:12])
        raise UserError(f"unknown torchvision architecture {name!r}; try one of: {', '.join(close)}, ...")
    try:
        with warnings.catch_warnings():  # googlenet/inception warn about a future change of their init
            warnings.simplefilter("ignore", FutureWarning)
            model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except AssertionError as exc:  # ViT: the input size is not a multiple of the patch size
        size = kwargs.get("image_size") or kwargs.get("input_size") or 224
        raise UserError(f"torchvision:{name} cannot take {size}-pixel inputs ({first_line(exc)}): it needs a side "
                        "its patch size divides, e.g. --input-shape C,224,224") from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"torchvision:{name} could not be built with {kwargs or 'its defaults'}: "
                        f"{first_line(exc)}") from exc
    found = first_conv(model)
    if found and found[1].in_channels != in_channels:  # adapted only when the data differs
        cname, conv = found
        _set_module(model, cname, nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                            conv.padding, conv.dilation, conv.groups, conv.bias is not None))
    return model


def check_timm_name(name: str) -> None:
    """Refuse an unknown timm architecture, or a known one with a pretrained tag (NAME.TAG) timm does not have."""
    import timm

    if not timm.is_model(name):
        close = [n for n in timm_names() if name[:4].lower() in n][:8]
        raise UserError(f"unknown timm architecture {name!r}" + (f"; similar: {', '.join(close)}" if close else
                                                                 "; see `timm.list_models()`"))
    base, _, tag = name.partition(".")
    if tag and name not in timm.list_pretrained(f"{base}.*"):
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{base}.*")][:6]
        raise UserError(f"timm:{base} has no pretrained tag {tag!r}" + (f" (its tags: {', '.join(tags)})" if tags
                                                                       else "") + f"; use timm:{base}")


def _timm_model(name: str, in_channels: int, num_classes: int, kwargs: dict) -> nn.Module:
    import timm

    check_timm_name(name)
    try:  # pretrained=False: never download, the weights come from the user's file
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
        raise UserError(f"timm:{name} could not be built with {kwargs or 'its defaults'}: "
                        f"{first_line(exc)}") from exc


def size_kwargs(arch: str, shape: tuple[int, int, int]) -> dict:
    """Constructor arguments a transformer needs for an input size other than its default (CNNs need none)."""
    source = ModelSource.parse(arch)
    kind, name = source.kind, source.name
    size = [int(shape[1]), int(shape[2])]
    if kind is ModelKind.TORCHVISION and name.startswith("vit_") and size != [224, 224]:
        return {"image_size": size[0]}
    if kind is ModelKind.TORCHVISION and name.startswith("maxvit") and size != [224, 224]:
        return {"input_size": size}
    if kind is ModelKind.TIMM:
        import timm
        import torch

        check_timm_name(name)

        with torch.device("meta"):  # a probe without memory or time: what size was it made for?
            probe = timm.create_model(name, pretrained=False)
        default = list((getattr(probe, "pretrained_cfg", None) or {}).get("input_size", (3, *size))[1:])
        if default != size and hasattr(probe, "patch_embed"):
            return {"img_size": size}
    return {}


def _import_class(code: str) -> type:
    """Import `PATH.py:ClassName`; this runs the user's own Python file, which they named explicitly."""
    path, cls = split_code(code)
    if not path.endswith(".py"):
        raise UserError(f"--model-code must look like PATH.py:ClassName, got {code!r}")
    file = Path(path)
    if not file.exists():
        raise UserError(f"model code file {file} does not exist; pass --model-code PATH.py:ClassName")
    if not file.is_file():
        raise UserError(f"model code {file} is not a file; pass --model-code PATH.py:ClassName")
    module, name = _exec_user_file(file)
    found = getattr(module, cls, None)
    if found is None:
        raise UserError(f"{file} defines no class {cls!r}; its nn.Module classes: "
                        f"{', '.join(_module_classes(module, name)) or 'none'}")
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise UserError(f"{cls} in {file} is not an nn.Module subclass ({type(found).__name__}); "
                        "name the model's class in --model-code PATH.py:ClassName")
    return found


def _exec_user_file(file: Path):
    spec = importlib.util.spec_from_file_location(f"prunelab_user_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    argv = sys.argv
    sys.argv = [str(file)]  # a script that parses its command line at import must not see ours
    chatter = io.StringIO()  # what the file prints at import (argparse's usage, say) would break our one line
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            spec.loader.exec_module(module)
    except SystemExit as exc:
        raise UserError(f"{file} called sys.exit({exc.code!r}) while being imported (a script, or one that parses "
                        "its command line); move that code under `if __name__ == '__main__':`") from None
    except Exception as exc:  # the user's file: report any failure plainly
        raise UserError(f"importing {file} failed: {first_line(exc, with_type=True)}") from exc
    finally:
        sys.argv = argv
    return module, spec.name


def _module_classes(module, name: str) -> list[str]:
    return sorted(n for n, v in vars(module).items()
                  if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == name)


def code_classes(path: str | Path) -> list[str]:
    """The nn.Module classes a Python file defines (for the dialog's list); this imports, so runs, the file."""
    file = Path(path)
    if not file.is_file() or file.suffix != ".py":
        raise UserError(f"{file} is not a Python file; choose the .py file that defines the model's class")
    module, name = _exec_user_file(file)
    return _module_classes(module, name)


MAX_KWARGS_CHARS = 10_000
MAX_KWARGS_DEPTH = 4


def check_model_kwargs(kwargs: Any, where: str = "--model-kwargs") -> dict:
    """Constructor arguments must be a small, shallow JSON object of plain values."""
    if not isinstance(kwargs, dict):
        raise UserError(f"{where} must be a JSON object, e.g. '{{\"width\": 32}}'")

    def depth(v: Any, level: int) -> None:
        if level > MAX_KWARGS_DEPTH:
            raise UserError(f"{where} is nested more than {MAX_KWARGS_DEPTH} levels deep; pass plain values")
        if isinstance(v, dict):
            for item in v.values():
                depth(item, level + 1)
        elif isinstance(v, (list, tuple)):
            for item in v:
                depth(item, level + 1)

    depth(kwargs, 1)
    if len(json.dumps(kwargs, default=str)) > MAX_KWARGS_CHARS:
        raise UserError(f"{where} is longer than {MAX_KWARGS_CHARS} characters; pass only the constructor's arguments")
    return kwargs


def build_arch(arch: str, in_channels: int = 1, num_classes: int = 10, kwargs: dict | None = None) -> nn.Module:
    """Instantiate an untrained architecture: `demo:NAME`, `torchvision:NAME`, `timm:NAME` or `code:PATH.py:Class`.

    A named architecture is first built on the meta device (shapes, no memory) and refused when its weights
    alone would pass the memory budget, so arguments asking for huge layers cost nothing."""
    if ModelSource.architecture(arch, DEMO_ARCHS).kind in (ModelKind.DEMO, ModelKind.TORCHVISION, ModelKind.TIMM):
        import torch

        from engine.budget import check_fits
        from engine.units import fmt_count

        try:
            with torch.device("meta"):
                probe = _build(arch, in_channels, num_classes, kwargs)
        except NotImplementedError:
            # Constructors that compute their widths from tensor data (RegNet) cannot run on the meta device:
            # build for real and check what was built; the job's memory budget still bounds the build itself.
            probe = None
        model = probe if probe is not None else _build(arch, in_channels, num_classes, kwargs)
        tensors = [*model.parameters(), *model.buffers()]
        params = sum(t.numel() for t in model.parameters())
        check_fits(sum(t.numel() * t.element_size() for t in tensors),
                   f"{arch} with {dict(kwargs or {}) or 'its defaults'} ({fmt_count(params)} parameters)")
        del tensors
        if probe is None:
            return model
        del probe, model
    return _build(arch, in_channels, num_classes, kwargs)


def _build(arch: str, in_channels: int, num_classes: int, kwargs: dict | None) -> nn.Module:
    kwargs = dict(kwargs or {})
    source = ModelSource.architecture(arch, DEMO_ARCHS)
    kind, name = source.kind, source.name
    if kind is ModelKind.DEMO:
        if name not in DEMO_ARCHS:
            raise UserError(f"unknown demo model {name!r}; valid: {', '.join('demo:' + n for n in DEMO_ARCHS)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        try:
            return DEMO_ARCHS[name](in_channels=in_channels, num_classes=num_classes, **kwargs)
        except (TypeError, ValueError, RuntimeError) as exc:  # arguments from an edited file: name them
            raise UserError(f"demo:{name} could not be built with {kwargs or 'its defaults'}: "
                            f"{first_line(exc)}") from None
    if kind is ModelKind.TORCHVISION and name:
        return _torchvision_model(name, in_channels, num_classes, check_model_kwargs(kwargs))
    if kind is ModelKind.TIMM and name:
        return _timm_model(name, in_channels, num_classes, check_model_kwargs(kwargs))
    if kind is ModelKind.CODE and name:
        cls = _import_class(name)
        check_model_kwargs(kwargs)
        try:
            return cls(**kwargs)
        except SystemExit as exc:
            raise UserError(f"building {name} called sys.exit({exc.code!r}); fix the class's constructor") from None
        except TypeError as exc:
            raise UserError(f"{name} could not be built with {kwargs}: {exc}; pass --model-kwargs JSON") from exc
        except Exception as exc:  # the user's constructor: report any failure plainly
            raise UserError(f"building {name} failed: {first_line(exc, with_type=True)}") from exc
    raise UserError(f"unknown architecture {arch!r}; use {ARCH_HELP}")
