"""Fitting a dataset to a model: input shape, channels, normalisation and the class count.

Shared by the command line, plans and the GUI, so a model and a dataset are matched the same way
everywhere; the checks run a single image through the model, before any real work.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from engine.checks import check_input_shape
from engine.data import Dataset, Normalization
from engine.errors import UserError
from engine.models import ModelBundle


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
        if any(not math.isfinite(v) for v in (*mean, *std)) or min(std) <= 0:
            raise UserError(f"--std values must be above 0 and all values finite (got mean {list(mean)}, std "
                            f"{list(std)}); a zero std would divide every pixel by zero")
        norm = Normalization(tuple(mean), tuple(std))
    if len(norm.mean) not in (1, shape[0]):
        raise UserError(f"normalisation has {len(norm.mean)} channels but the model takes {shape[0]}; "
                        "pass --mean/--std with one value per channel")
    fitted = data.adapted(shape, norm)
    try:
        with torch.no_grad():
            out = bundle.model.eval()(torch.zeros(1, *shape))
    except Exception as exc:  # any shape error from arbitrary user models
        raise UserError(f"the model does not accept inputs of shape {shape}: {str(exc).splitlines()[0]}; "
                        "pass --input-shape C,H,W") from exc
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise UserError(f"the model outputs {tuple(out.shape[1:])} scores but {data.name} has "
                        f"{data.num_classes} classes; use a model trained for this dataset")
    bundle.num_classes = data.num_classes
    bundle.class_names = bundle.class_names or data.class_names
    return fitted
