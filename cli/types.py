"""argparse value types: each parses one flag's text or refuses it with a usage error naming the value."""
from __future__ import annotations

import argparse
import json
import math
import os
import re
from typing import Callable

from engine.budget import parse_limit
from engine.data.common import parse_dataset_spec, shown
from engine.errors import UserError
from engine.models import check_model_kwargs
from engine.units import parse_numbers


def shape(text: str) -> tuple[int, int, int]:
    try:
        parts = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input-shape must be C,H,W integers, got {text!r}") from None
    if len(parts) != 3 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"--input-shape must be three positive integers C,H,W, got {text!r}")
    return parts


def device(text: str) -> str:
    """argparse type: cpu, cuda or cuda:N, as PruneConfig's device option says (prune's own flag is checked there)."""
    from engine.config import DEVICE_PATTERN, options

    if not re.fullmatch(DEVICE_PATTERN, text):
        raise argparse.ArgumentTypeError(f"--device must be {options()['device'].bounds_text()}, got {text!r}")
    return text


def finite(text: str) -> float:
    """argparse type: a finite number (nan and inf are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number of at least `minimum`."""
    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, got {text!r}")
        return value

    return whole


count = at_least(1)


def floats(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated finite numbers."""
    try:
        if any(not part.strip() for part in text.split(",")):
            raise UserError("an empty entry")
        return parse_numbers(text, "the list")
    except UserError:
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, got {text!r}") from None


def json_obj(text: str) -> dict:
    if len(text) > 10_000:
        raise argparse.ArgumentTypeError("--model-kwargs is longer than 10000 characters; pass only the "
                                         "constructor's arguments")
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise argparse.ArgumentTypeError(f"--model-kwargs is not valid JSON: {str(exc)[:80]}") from None
    try:
        return check_model_kwargs(obj)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def memory_limit(text: str) -> int:
    """argparse type: a memory budget such as 8G, 1500M or 70% (of this machine), in bytes."""
    try:
        return parse_limit(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resources(text: str) -> float:
    """A Ray resource count: 0 or more, fractions allowed (0.5 GPU shares a GPU between two runs)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, got {text!r}") from None
    if not 0 <= value < 1e6:
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, got {text!r}")
    return value


def _spec_for_folder(path: str) -> str:
    """The dataset spec a folder most likely is, from the files the loaders look for."""
    for root in (path, os.path.join(path, "cifar-10-batches-py")):
        if os.path.isfile(os.path.join(root, "data_batch_1")):
            return f"cifar10:{path}"
    if any(os.path.isfile(os.path.join(path, f"train-images-idx3-ubyte{ext}")) for ext in ("", ".gz")):
        return f"fashion-mnist:{path}"
    return f"imagefolder:{path}"


def data_spec(text: str) -> str:
    """argparse type: a dataset spec, left for the loader to check, except a bare path, which gets the spec it
    needs as a suggestion (every dataset is a folder, so a file gets the specs and what they hold)."""
    try:
        parse_dataset_spec(text)
        return text
    except UserError:
        if not os.path.exists(text):
            return text  # the loader's own message lists the valid specs
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{shown(text)} is a folder without a dataset type; "
                                         f"try --data {shown(_spec_for_folder(text))}")
    raise argparse.ArgumentTypeError(f"{shown(text)} is a file, but every dataset is a folder: imagefolder:DIR "
                                     "(a sub-folder of images per class), cifar10:DIR (CIFAR-10's python batches) "
                                     "or fashion-mnist:DIR (its idx files); extract an archive first")
