"""Fitting a dataset to a model: input shape, channels, normalisation and the class count.

Shared by the command line, plans and the GUI, so a model and a dataset are matched the same way
everywhere; the checks run a single image through the model, before any real work. `load_inputs` is
the one "load the data and the model, then fit them" sequence every front end and plan runs. A `ModelRecipe`
is what the Open model dialog collects (file, architecture, shape, normalisation, trust), and
`check_recipe` is the background check it shows before the user accepts.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Generator, Iterator, Sequence

import torch

from engine.checks import check_input_shape, check_normalization
from engine.data import Dataset, Normalization, Shape, load_dataset_events
from engine.errors import UserError, first_line
from engine.events import CancelToken, Progress, result_of
from engine.models import ModelBundle, load_model
from engine.sources import NAMED, DataSource, ModelKind, ModelSource

# Normalisation presets: the statistics a model was trained with, when the file does not record them.
NORM_PRESETS: dict[str, Normalization] = {
    "imagenet": Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar10": Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "mnist": Normalization((0.1307,), (0.3081,)),
    "fashion-mnist": Normalization((0.2860,), (0.3530,)),
}
NORM_TITLES = {
    "auto": "as the model file records it, else the dataset's statistics",
    "dataset": "statistics of the chosen dataset", "imagenet": "ImageNet", "cifar10": "CIFAR-10",
    "mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "custom": "custom mean and std",
}


def preset_norm(name: str, data: Dataset, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The (mean, std) a preset stands for, to pass to `fit_data`; (None, None) keeps the model's or the data's."""
    if name == "auto":
        return (tuple(mean), tuple(std)) if mean and std else (None, None)
    if name == "dataset":
        return data.norm.mean, data.norm.std
    if name == "custom":
        if not (mean and std):
            raise UserError("the custom normalisation needs a mean and a std, one value per channel")
        return tuple(mean), tuple(std)
    if name not in NORM_PRESETS:
        raise UserError(f"unknown normalisation preset {name!r}; valid: {', '.join(NORM_TITLES)}")
    return NORM_PRESETS[name].mean, NORM_PRESETS[name].std


def fit_data(bundle: ModelBundle, data: Dataset, mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None) -> Dataset:
    """Convert the data to the model's input shape and normalisation and check the class count."""
    shape = bundle.input_shape or data.input_shape
    check_input_shape(tuple(shape))
    bundle.input_shape = tuple(shape)
    norm = bundle.norm or data.norm
    if mean or std:
        if not (mean and std) or len(mean) != len(std):
            raise UserError("--mean and --std must be given together with one value per channel")
        check_normalization(mean, std, "--std values")
        norm = Normalization(tuple(mean), tuple(std))
    elif bundle.norm:  # a model file's own: refused as the flags are, with the flags as the way out
        check_normalization(bundle.norm.mean, bundle.norm.std, f"{bundle.source}: its stored normalisation's std",
                            "; give your own mean and std instead (--mean/--std, or Normalisation in the Open model "
                            "dialog)")
    if len(norm.mean) not in (1, shape[0]):
        raise UserError(f"normalisation has {len(norm.mean)} channels but the model takes {shape[0]}; "
                        "pass --mean/--std with one value per channel")
    fitted = data.adapted(shape, norm)
    try:
        with torch.no_grad():
            out = bundle.model.eval()(torch.zeros(1, *shape))
    except Exception as exc:  # any shape error from arbitrary user models
        raise UserError(f"the model does not accept inputs of shape {shape}: {first_line(exc)}; "
                        "pass --input-shape C,H,W") from exc
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise UserError(f"the model outputs {tuple(out.shape[1:])} scores but {data.name} has "
                        f"{data.num_classes} classes; use a model trained for this dataset")
    bundle.num_classes = data.num_classes
    bundle.class_names = bundle.class_names or data.class_names
    return fitted


def random_weights_note(model: str, seed: int, missing: str = "--weights",
                        fix: str = "pass --weights FILE to use your trained model") -> str:
    """The warning for a named architecture without weights: a figure from random weights looks like a
    result, and a ranking of methods on it like advice, unless it is said (CLI, plans, store, report, GUI)."""
    return f"{model} has no {missing}: its weights are random (seed {seed}), so its accuracy means nothing; {fix}"


def model_for_data(src: str, data: Dataset, *, weights: str | None = None, model_code: str | None = None,
                   model_kwargs: dict | None = None, trust: bool = False, input_shape: Shape | None = None,
                   partial_weights: bool = False, seed: int = 0) -> ModelBundle:
    """Load a model for `data`. `torchvision:NAME` and `timm:NAME` take channels, size and class count from
    the data unless `input_shape` says otherwise (first convolution and head adapted only where they
    differ); untrained weights are drawn from `seed`, so the same command gives the same baseline."""
    return load_model(src, weights=weights, model_code=model_code, model_kwargs=model_kwargs, trust=trust,
                      input_shape=input_shape, num_classes=data.num_classes, partial_weights=partial_weights,
                      seed=seed, default_shape=data.input_shape)


@dataclass(frozen=True)
class Inputs:
    """A model and a dataset fitted to each other."""

    bundle: ModelBundle
    data: Dataset  # converted to the model's input shape and normalisation
    raw: Dataset  # as loaded (with `input_shape`, at that shape), before fitting


def load_inputs_events(model: ModelSource | str | ModelBundle, data: DataSource | str | Dataset, *,
                       weights: str | None = None, model_code: str | None = None, model_kwargs: dict | None = None,
                       trust: bool = False, input_shape: Shape | None = None, partial_weights: bool = False,
                       seed: int = 0, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                       norm: str = "auto") -> Generator[Progress, None, Inputs]:
    """Load the data, then the model for it, then fit them: Progress while a folder is scanned, returns Inputs.

    `model` and `data` may be loaded already (a bundle sent to a Ray worker, the window's dataset); `norm`
    is a NORM_TITLES preset (the Open model dialog's), `mean`/`std` the flags' own values.
    """
    if isinstance(data, Dataset):
        raw = data
        if input_shape:
            check_input_shape(tuple(input_shape))
            raw = data.adapted(tuple(input_shape))
    else:
        raw = yield from load_dataset_events(str(data), input_shape=input_shape, seed=seed)
    bundle = model if isinstance(model, ModelBundle) else model_for_data(
        str(model), raw, weights=weights, model_code=model_code, model_kwargs=model_kwargs, trust=trust,
        input_shape=input_shape, partial_weights=partial_weights, seed=seed)
    if norm != "auto":  # "auto" passes the flags on as they are, so a lone --mean is refused by fit_data
        mean, std = preset_norm(norm, raw, mean, std)
    return Inputs(bundle, fit_data(bundle, raw, mean, std), raw)


def load_inputs(model: ModelSource | str | ModelBundle, data: DataSource | str | Dataset, *,
                progress: Callable[[Progress], Any] | None = None, **options: Any) -> Inputs:
    """`load_inputs_events` run to its end; `progress` sees each Progress event."""
    return result_of(load_inputs_events(model, data, **options), progress)


@dataclass(frozen=True)
class ModelRecipe:
    """How to open a model again without asking: kept with the file in the recent-files list.

    `file` None with a named `arch` is a new untrained architecture; `arch` names the architecture of a
    weights-only file (`torchvision:NAME`, `timm:NAME`, `PATH.py:Class`), None when the file knows it.
    """

    file: str | None = None
    arch: str | None = None
    model_kwargs: dict = field(default_factory=dict, hash=False)
    input_shape: tuple[int, int, int] | None = None
    norm: str = "auto"  # a key of NORM_TITLES
    mean: tuple[float, ...] | None = None  # for norm "custom"
    std: tuple[float, ...] | None = None
    trust: bool = False
    partial_weights: bool = False

    def to_json(self) -> dict:
        """Plain JSON values."""
        obj = asdict(self)
        for key in ("input_shape", "mean", "std"):
            obj[key] = list(obj[key]) if obj[key] is not None else None
        return obj

    @classmethod
    def from_json(cls, obj: Any) -> "ModelRecipe":
        """A recipe from `to_json`'s output; anything else is a UserError (a damaged recent-files entry)."""
        if not isinstance(obj, dict) or set(obj) - set(cls.__dataclass_fields__):
            raise UserError("the remembered model recipe is damaged; open the model again")
        try:
            tuples = {k: tuple(obj[k]) for k in ("input_shape", "mean", "std") if obj.get(k) is not None}
            recipe = cls(**{**obj, **tuples})
        except TypeError as exc:
            raise UserError(f"the remembered model recipe is damaged ({exc}); open the model again") from None
        if not isinstance(recipe.model_kwargs, dict) or recipe.norm not in NORM_TITLES:
            raise UserError("the remembered model recipe is damaged; open the model again")
        return recipe

    def load_args(self) -> dict:
        """Arguments for `load_inputs`."""
        source = ModelSource.parse(self.arch) if self.arch else None
        arch = source.name if source is not None and source.kind is ModelKind.CODE else self.arch
        if self.file is None:
            if source is None or source.kind not in NAMED:
                raise UserError("a new untrained model needs an architecture: torchvision:NAME or timm:NAME")
            src, code = arch, None
        else:
            src, code = self.file, arch
        return {"model": src, "model_code": code, "model_kwargs": dict(self.model_kwargs) or None,
                "trust": self.trust, "input_shape": self.input_shape, "partial_weights": self.partial_weights,
                "norm": self.norm, "mean": self.mean, "std": self.std}


def open_recipe(recipe: ModelRecipe, data: Dataset, seed: int = 0) -> tuple[ModelBundle, Dataset]:
    """The model a recipe describes, fitted to `data` (the data converted to its shape and normalisation)."""
    inputs = load_inputs(data=data, seed=seed, **recipe.load_args())
    return inputs.bundle, inputs.data


@dataclass(frozen=True)
class RecipeChecked:
    """The Open model dialog's check, in plain values: what matched, what ran, how well it does."""

    arch: str
    untrained: bool
    tensors_filled: int | None  # None: the file was a whole model, nothing to match
    tensors_total: int | None
    unmatched: tuple[str, ...]  # names of the tensors that did not fit ("name [file] vs [model]" for shapes)
    forward_ok: bool
    input_shape: tuple[int, ...]
    norm_mean: tuple[float, ...]
    norm_std: tuple[float, ...]
    output_classes: int
    dataset_classes: int
    top1: float
    images: int
    params: int
    macs: int
    seconds: float
    notes: tuple[str, ...] = ()


def check_recipe(recipe: ModelRecipe, data: Dataset, limit: int = 500, seed: int = 0, batch_size: int = 50,
                 cancel: CancelToken | None = None) -> Iterator[Progress | RecipeChecked]:
    """Open the recipe's model on `data` and check it: Progress events, then one RecipeChecked.

    Bad input (a file that does not fit, a model that does not run on this data) is a UserError in plain
    words; nothing of the loaded model outlives the check.
    """
    from engine.metrics import count_macs, count_params

    start = time.perf_counter()
    yield Progress("check", 0, 4, "loading the model")
    bundle, fitted = open_recipe(recipe, data, seed)
    weights = bundle.meta.get("weights") or {}
    unmatched = tuple(weights.get("missing", ())) + tuple(weights.get("unexpected", ())) + \
        tuple(weights.get("misshaped", ()))
    notes = [f"{bundle.arch} is untrained: its weights are random (seed {seed})"] if bundle.meta.get("untrained") \
        else []
    if bundle.meta.get("arch_from"):
        notes.append(f"architecture {bundle.arch} {bundle.meta['arch_from']}")
    yield Progress("check", 1, 4, "a forward pass")
    with torch.no_grad():
        outputs = int(bundle.model.eval()(torch.zeros(1, *bundle.input_shape)).shape[1])  # fit_data ran one already
    shown = min(limit, fitted.split_size("val"))
    correct = done = 0
    with torch.no_grad():
        for x, y in fitted.loader("val", batch_size, limit=shown):
            if cancel:
                cancel.check()
            correct += int((bundle.model(x).argmax(1) == y).sum())
            done += len(y)
            yield Progress("top-1", done, max(1, shown), f"top-1 on {shown} validation images")
    yield Progress("check", 3, 4, "parameters and MACs")
    macs = 0 if bundle.scripted else count_macs(bundle.model, bundle.input_shape)
    yield RecipeChecked(
        arch=bundle.arch, untrained=bool(bundle.meta.get("untrained")),
        tensors_filled=weights.get("filled"), tensors_total=weights.get("total"), unmatched=unmatched,
        forward_ok=True, input_shape=tuple(bundle.input_shape), norm_mean=tuple(fitted.norm.mean),
        norm_std=tuple(fitted.norm.std), output_classes=outputs, dataset_classes=data.num_classes,
        top1=correct / max(1, done), images=done, params=count_params(bundle.model), macs=macs,
        seconds=time.perf_counter() - start, notes=tuple(notes))
