"""Models: the built-in demo zoo, torchvision architectures, user checkpoints; save, load, ONNX export.

Our own model files hold only tensors, numbers and strings, so they load with
`torch.load(weights_only=True)`; a pruned model is stored as its parent architecture plus
torch-pruning's record of the changed layer shapes, and rebuilt on load. A whole pickled module
(which runs code when unpickled) is loaded only when the caller says the file is trusted.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import pickle
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from engine.data import Normalization, Shape
from engine.errors import NeedsTrust, UserError
from engine.outputs import atomic_files
from resources import resource_path

FORMAT = "prunelab-model"
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- demo zoo

class BasicBlock(nn.Module):
    """Two 3×3 convolutions with an identity (or 1×1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class DemoResNet(nn.Module):
    """A small residual network for 28×28 images (three stages, widths doubling)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, ...] = (32, 64, 128),
                 blocks: tuple[int, ...] = (1, 1, 1)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stage = []
            for b in range(n):
                stage.append(BasicBlock(cin, w, 2 if (i > 0 and b == 0) else 1))
                cin = w
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class DemoVGG(nn.Module):
    """A plain VGG-style CNN: conv-BN-ReLU blocks, max pooling, a two-layer classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 cfg: tuple = (32, 32, "M", 64, 64, "M", 128, 128, "M"), hidden: int = 256):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(3)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * 9, hidden), nn.BatchNorm1d(hidden),
                                        nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


DEMO_ARCHS: dict[str, Callable[..., nn.Module]] = {"resnet": DemoResNet, "vgg": DemoVGG}
DEMO_TITLES = {"resnet": "Residual CNN (ResNet-style)", "vgg": "Plain CNN (VGG-style)"}


# ----------------------------------------------------------------------------- bundle

@dataclass
class ModelBundle:
    """A loaded model with what is needed to feed and describe it."""

    model: nn.Module
    source: str
    arch: str  # "demo:resnet", "torchvision:resnet18", "code:FILE.py:Class", "module", "torchscript"
    input_shape: Shape | None
    num_classes: int | None
    norm: Normalization | None = None
    class_names: tuple[str, ...] | None = None
    arch_kwargs: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def scripted(self) -> bool:
        """TorchScript models can be evaluated but not structurally pruned."""
        return isinstance(self.model, torch.jit.ScriptModule)

    def require_prunable(self) -> None:
        """Raise a clear error for models that cannot be pruned structurally."""
        if self.scripted:
            raise UserError(f"{self.source} is a TorchScript file: it can be evaluated but not pruned; "
                            "load the eager model (state_dict with --model-code) instead")

    def copy(self) -> "ModelBundle":
        """A deep copy, so pruning never touches the loaded original."""
        return ModelBundle(copy.deepcopy(self.model), self.source, self.arch, self.input_shape, self.num_classes,
                           self.norm, self.class_names, dict(self.arch_kwargs), copy.deepcopy(self.meta))


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    return None


def _last_linear(model: nn.Module) -> str | None:
    found = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return found[-1] if found else None


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent = model
    *path, last = name.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


def _torchvision_model(name: str, in_channels: int, num_classes: int) -> nn.Module:
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except (ValueError, KeyError) as exc:
        valid = ", ".join(sorted(torchvision.models.list_models(torchvision.models))[:12])
        raise UserError(f"unknown torchvision architecture {name!r}; try one of: {valid}, ...") from exc
    found = _first_conv(model)
    if found and found[1].in_channels != in_channels:
        cname, conv = found
        _set_module(model, cname, nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                            conv.padding, conv.dilation, conv.groups, conv.bias is not None))
    return model


def _import_class(code: str) -> type:
    """Import `PATH.py:ClassName`; this runs the user's own Python file, which they named explicitly."""
    path, sep, cls = code.rpartition(":")
    if not sep or not path.endswith(".py"):
        raise UserError(f"--model-code must look like PATH.py:ClassName, got {code!r}")
    file = Path(path)
    if not file.exists():
        raise UserError(f"model code file {file} does not exist; pass --model-code PATH.py:ClassName")
    if not file.is_file():
        raise UserError(f"model code {file} is not a file; pass --model-code PATH.py:ClassName")
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
        raise UserError(f"importing {file} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    finally:
        sys.argv = argv
    found = getattr(module, cls, None)
    if found is None:
        classes = sorted(n for n, v in vars(module).items()
                         if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == spec.name)
        raise UserError(f"{file} defines no class {cls!r}; its nn.Module classes: {', '.join(classes) or 'none'}")
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise UserError(f"{cls} in {file} is not an nn.Module subclass ({type(found).__name__}); "
                        "name the model's class in --model-code PATH.py:ClassName")
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


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
    """Instantiate an architecture by name: `demo:NAME`, `torchvision:NAME` or `code:PATH.py:Class`."""
    kwargs = dict(kwargs or {})
    kind, _, name = arch.partition(":")
    if kind == "demo" or (not name and kind in DEMO_ARCHS):
        name = name or kind
        if name not in DEMO_ARCHS:
            raise UserError(f"unknown demo model {name!r}; valid: {', '.join('demo:' + n for n in DEMO_ARCHS)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
        return DEMO_ARCHS[name](in_channels=in_channels, num_classes=num_classes, **kwargs)
    if kind == "torchvision" and name:
        return _torchvision_model(name, in_channels, num_classes)
    if kind == "code" and name:
        cls = _import_class(name)
        check_model_kwargs(kwargs)
        try:
            return cls(**kwargs)
        except SystemExit as exc:
            raise UserError(f"building {name} called sys.exit({exc.code!r}); fix the class's constructor") from None
        except TypeError as exc:
            raise UserError(f"{name} could not be built with {kwargs}: {exc}; pass --model-kwargs JSON") from exc
        except Exception as exc:  # the user's constructor: report any failure plainly
            raise UserError(f"building {name} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
    raise UserError(f"unknown architecture {arch!r}; use demo:resnet, demo:vgg or torchvision:NAME")


# ----------------------------------------------------------------------------- save / load

def _plain(obj: Any) -> Any:
    """JSON-like copy (tuples to lists) so the file loads with weights_only=True."""
    return json.loads(json.dumps(obj, default=str))


def save_model(bundle: ModelBundle, path: str | Path, pruned: bool = False) -> Path:
    """Write a model file that loads with weights_only=True (architecture name + tensors + metadata)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if bundle.arch in ("module", "torchscript"):
        raise UserError("models loaded from pickled modules or TorchScript are saved with save_full_module")
    state = pruned_state(bundle.model) if pruned else bundle.model.state_dict()
    payload = {
        "format": FORMAT, "version": FORMAT_VERSION, "arch": bundle.arch,
        "arch_kwargs": _plain(bundle.arch_kwargs), "pruned": bool(pruned),
        "input_shape": list(bundle.input_shape) if bundle.input_shape else None,
        "num_classes": bundle.num_classes,
        "norm": {"mean": list(bundle.norm.mean), "std": list(bundle.norm.std)} if bundle.norm else None,
        "class_names": list(bundle.class_names) if bundle.class_names else None,
        "meta": _plain(bundle.meta), "state": state,
    }
    with atomic_files(path) as (tmp,):  # a crash never leaves half a model file
        torch.save(payload, tmp)
    return path


def save_full_module(bundle: ModelBundle, path: str | Path) -> Path:
    """Pickle the whole module (loads anywhere our code is importable, but only with trust)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = bundle.model
    model.prunelab_meta = _plain(bundle.meta)  # travels with the module
    torch.save(model, path)
    return path


def sniff(path: Path) -> str:
    """What a file is, from its first bytes and (for ZIP archives) its member names, without loading it.

    One of: "empty", "torchscript", "torch" (torch.save's ZIP format), "pickle" (a legacy or plain
    pickle), "onnx", "zip" (some other archive), "damaged" (a cut or corrupt archive) or "unknown".
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


def _state_dict_in(obj: Any) -> dict | None:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if obj and all(isinstance(k, str) for k in obj) and all(torch.is_tensor(v) for v in obj.values()):
            return obj
    return None


@dataclass(frozen=True)
class WeightsFit:
    """How a state_dict matched an architecture: what was filled and what was not."""

    filled: int
    total: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    misshaped: tuple[str, ...]  # "name [file shape] vs [model shape]"

    def summary(self) -> str:
        """One line: the counts, with the first few names of each kind."""
        parts = [f"filled {self.filled} of {self.total} tensors"]
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("wrong shape", self.misshaped)):
            if names:
                shown = ", ".join(names[:3]) + (f", … ({len(names)} in all)" if len(names) > 3 else "")
                parts.append(f"{label}: {shown}")
        return "; ".join(parts)

    def to_json(self) -> dict:
        """Plain dict for the model's metadata."""
        return {"filled": self.filled, "total": self.total, "missing": list(self.missing),
                "unexpected": list(self.unexpected), "misshaped": list(self.misshaped)}


def _best_prefix(state: dict, own: dict) -> dict:
    """Strip `module.` (DataParallel/DDP) or `model.` (Lightning) when that makes more keys match."""
    best, hits = state, sum(k in own for k in state)
    for prefix in ("module.", "model.", "module.model.", "model.module."):
        stripped = {k.removeprefix(prefix): v for k, v in state.items()}
        found = sum(k in own for k in stripped)
        if found > hits:
            best, hits = stripped, found
    return best


def fit_weights(model: nn.Module, state: dict) -> tuple[dict, WeightsFit]:
    """The part of `state` that fits `model`, and a record of what did not."""
    own = model.state_dict()
    state = _best_prefix(state, own)
    fits = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    misshaped = tuple(f"{k} {list(v.shape)} vs {list(own[k].shape)}" for k, v in state.items()
                      if k in own and k not in fits)
    missing = tuple(k for k in own if k not in state)
    unexpected = tuple(k for k in state if k not in own)
    return fits, WeightsFit(len(fits), len(own), missing, unexpected, misshaped)


def _load_state(model: nn.Module, state: dict, source: str, partial: bool = False,
                adapted: tuple[str, ...] = ()) -> WeightsFit:
    """Load what fits; refuse (unless `partial`) when under half of the model's tensors would be filled.

    `adapted` names layers PruneLab rebuilt for the data (first convolution, head): their weights are
    expected not to fit and never count against the file.
    """
    fits, report = fit_weights(model, state)
    expected = sum(1 for k in model.state_dict() if not k.startswith(tuple(a + "." for a in adapted)))
    if not partial and report.filled * 2 < max(1, expected):
        raise UserError(f"the weights in {source} do not fit the architecture ({report.summary()}); check the "
                        "architecture (--model-code/--model-kwargs, torchvision:NAME), or pass --partial-weights "
                        "to load them anyway")
    model.load_state_dict(fits, strict=False)
    return report


SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
               "normalized_shape")


def pruned_state(model: nn.Module) -> dict:
    """Weights plus the layer sizes that pruning changed; tensors, ints and tuples only."""
    attrs = {}
    for name, m in model.named_modules():
        found = {k: getattr(m, k) for k in SHAPE_ATTRS if isinstance(getattr(m, k, None), (int, tuple))}
        if found:
            attrs[name] = found
    return {"tensors": model.state_dict(), "attrs": attrs}


def apply_pruned_state(model: nn.Module, state: dict) -> nn.Module:
    """Shrink a freshly built architecture to the recorded sizes, then load the weights."""
    modules = dict(model.named_modules())
    for name, found in state["attrs"].items():
        if name in modules:
            for key, value in found.items():
                setattr(modules[name], key, tuple(value) if isinstance(value, list) else value)
    own = model.state_dict()
    for key, tensor in state["tensors"].items():
        if key in own and own[key].shape != tensor.shape:
            owner, _, leaf = key.rpartition(".")
            module = modules[owner]
            if leaf in module._parameters:
                module._parameters[leaf] = nn.Parameter(torch.empty_like(tensor))
            elif leaf in module._buffers:
                module._buffers[leaf] = torch.empty_like(tensor)
    model.load_state_dict(state["tensors"])
    return model


def _from_payload(payload: dict, source: str, model_code: str | None, trust: bool) -> ModelBundle:
    arch = payload["arch"]
    shape = tuple(payload["input_shape"]) if payload.get("input_shape") else None
    num_classes = payload.get("num_classes") or 10
    if arch.startswith("code:"):
        if model_code:
            arch = f"code:{model_code}"
        elif not trust:
            raise NeedsTrust(f"{source} was built from user code ({arch[5:]}); pass --model-code PATH.py:ClassName "
                             "to rebuild it, or --trust to import the recorded file (runs its code)", "code")
    model = build_arch(arch, shape[0] if shape else 1, num_classes, payload.get("arch_kwargs"))
    if payload.get("pruned"):
        apply_pruned_state(model, payload["state"])
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


def demo_path(name: str) -> Path:
    """Path of a built-in demo model's weights."""
    return resource_path("models", f"demo_{name}.pt")


def demo_card(name: str) -> dict:
    """The JSON card of a built-in model (empty if not trained yet)."""
    path = resource_path("models", f"demo_{name}.json")
    return json.loads(path.read_text()) if path.exists() else {}


def load_model(src: str, *, weights: str | None = None, model_code: str | None = None,
               model_kwargs: dict | None = None, trust: bool = False, input_shape: Shape | None = None,
               num_classes: int | None = None, partial_weights: bool = False) -> ModelBundle:
    """Load a model from a source spec (docs/cli.md): demo:NAME, torchvision:NAME or a FILE.

    Files that hold code (TorchScript, pickled modules) load only with `trust`; weights that fill
    under half of the architecture are refused unless `partial_weights`.
    """
    kind, _, name = src.partition(":")
    if kind == "demo":
        if name not in DEMO_ARCHS:
            raise UserError(f"unknown demo model {src!r}; valid: {', '.join('demo:' + n for n in DEMO_ARCHS)}")
        path = demo_path(name)
        if not path.exists():
            raise UserError(f"demo weights {path} are missing; train them with "
                            f"`python main.py train --model demo:{name} --data fashion-mnist --out {path}`")
        bundle = load_model(str(path))
        bundle.source = src
        return bundle
    shape = tuple(input_shape) if input_shape else None
    if kind == "torchvision" and name:
        channels = shape[0] if shape else 1
        model = build_arch(src, channels, num_classes or 10)
        meta = {}
        if weights:
            wpath = Path(weights)
            if not wpath.is_file():
                raise UserError(f"--weights {weights} does not exist or is not a file; name a state_dict file")
            state = _state_dict_in(_read_weights(wpath))
            if state is None:
                raise UserError(f"{weights} holds no state_dict; pass a file saved with torch.save(model.state_dict())")
            first, head = _first_conv(model), _last_linear(model)
            adapted = tuple(n for n in (first[0] if first else None, head) if n)
            report = _load_state(model, state, weights, partial_weights, adapted)
            meta["weights"] = report.to_json()
        return ModelBundle(model.eval(), src, src, shape, num_classes or 10, meta=meta)

    path = Path(src)
    if not path.exists():
        raise UserError(f"model {src!r} not found; use demo:resnet, demo:vgg, torchvision:NAME or an existing file")
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
    if kind == "torchscript":
        if not trust:
            raise NeedsTrust(f"{path} is a TorchScript archive: it carries its own code, which runs while it loads "
                             "and can change files. Pass --trust only if you trust where it came from, or save a "
                             "state_dict instead", "torchscript")
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # a corrupt archive of any kind
            raise UserError(f"{path} is a damaged TorchScript archive: {str(exc).splitlines()[0]}") from exc
        return ModelBundle(model.eval(), src, "torchscript", shape, num_classes, meta={"torchscript": True})
    try:
        obj = _safe_load(path)
    except _NeedsTrust as exc:
        if not trust:
            raise NeedsTrust(f"{path} holds a pickled Python object ({exc}); unpickling it can run any code. "
                             "Pass --trust only if you trust where it came from, or save a state_dict instead",
                             "pickle") from None
        obj = _trusted_load(path)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        bundle = _from_payload(obj, src, model_code, trust)
        if shape:
            bundle.input_shape = shape
        return bundle
    if isinstance(obj, nn.Module):
        meta = getattr(obj, "prunelab_meta", {}) or {}
        return ModelBundle(obj.eval(), src, "module", shape or _shape_from_meta(meta), num_classes, meta=meta)
    state = _state_dict_in(obj)
    if state is None:
        raise UserError(f"{path} holds neither a model nor a state_dict; save one with torch.save(model.state_dict())")
    if not model_code:
        raise UserError(f"{path} holds only weights (a state_dict); pass --model-code PATH.py:ClassName "
                        "(and --model-kwargs JSON) so the architecture can be built")
    arch = f"code:{model_code}"
    model = build_arch(arch, kwargs=model_kwargs)
    report = _load_state(model, state, src, partial_weights)
    return ModelBundle(model.eval(), src, arch, shape, num_classes, arch_kwargs=dict(model_kwargs or {}),
                       meta={"weights": report.to_json()})


def _read_weights(path: Path) -> Any:
    """A weights file for --weights: tensors only, never code."""
    kind = sniff(path)
    if kind not in ("torch", "pickle"):
        what = UNREADABLE.get(kind, ("is a TorchScript archive (code, not only weights)",))[0]
        raise UserError(f"--weights {path} {what}; pass a state_dict saved with torch.save(model.state_dict())")
    try:
        return _safe_load(path)
    except _NeedsTrust as exc:
        raise UserError(f"--weights {path} holds a pickled Python object ({exc}), not only tensors; save "
                        "model.state_dict() instead") from None


def _shape_from_meta(meta: dict) -> Shape | None:
    shape = meta.get("input_shape")
    return tuple(shape) if shape else None


class _NeedsTrust(Exception):
    """The file needs full unpickling (it holds Python objects, not just tensors)."""


def _safe_load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():
            # A garbled header reads as an odd pickle protocol; the error below says it better.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = str(exc)
        if "Unsupported global" in detail or "weights_only" in detail.lower():
            glob = detail.split("GLOBAL", 1)[-1].split()[0] if "GLOBAL" in detail else "a Python object"
            raise _NeedsTrust(glob.strip(" .,")) from None
        raise UserError(f"{path} is not a readable PyTorch file: {detail.splitlines()[0]}") from exc
    except Exception as exc:  # noqa: BLE001 - a garbled pickle fails anywhere inside the (safe) unpickler
        first = str(exc).splitlines()[0] if str(exc) else "corrupt"
        raise UserError(f"{path} is not a readable PyTorch file ({type(exc).__name__}: {first}); "
                        "re-save it with torch.save") from exc


def _trusted_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # arbitrary unpickling errors: report, never crash
        raise UserError(f"{path} could not be unpickled even with --trust: {type(exc).__name__}: {exc}") from exc


def export_onnx(model: nn.Module, input_shape: Shape, path: str | Path, opset: int = 17) -> Path:
    """Export to ONNX with a dynamic batch axis and check the graph with onnx.checker."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.zeros(1, *input_shape)
    buf = io.BytesIO()
    # The TorchScript-based exporter is deprecated but needs no extra tracing machinery and handles
    # pruned (irregular-width) models reliably; silence its notice so users see only real problems.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (dummy,), buf, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                          dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto)
    with atomic_files(path) as (tmp,):
        tmp.write_bytes(buf.getvalue())
    return path


def check_onnx(path: str | Path, model: nn.Module, batches) -> dict:
    """Run the ONNX file in onnxruntime next to PyTorch on the same batches; returns both top-1s."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = model.eval()
    agree = torch_correct = onnx_correct = total = 0
    max_diff = 0.0
    with torch.inference_mode():
        for x, y in batches:
            ours = model(x)
            theirs = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
            max_diff = max(max_diff, float((ours - theirs).abs().max()))
            torch_correct += int((ours.argmax(1) == y).sum())
            onnx_correct += int((theirs.argmax(1) == y).sum())
            agree += int((ours.argmax(1) == theirs.argmax(1)).sum())
            total += len(y)
    total = max(1, total)
    return {"images": total, "torch_top1": torch_correct / total, "onnx_top1": onnx_correct / total,
            "agreement": agree / total, "max_abs_diff": max_diff}
