"""Plan values checked against the type annotations of what consumes them."""
from __future__ import annotations

import math
from typing import Any

from engine.errors import UserError
from engine.units import check_numbers
from engine.methods import get_method
from engine.config import check_value, field_types


def _expect(value: Any, kind: type | tuple, where: str, hint: str) -> Any:
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise UserError(f"{where} must be {hint}, got {value!r}")
    if not isinstance(value, kind):
        raise UserError(f"{where} must be {hint}, got {value!r}")
    return value


def _numbers(value: Any, where: str, low: float, high: float | None, hint: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value]
    _expect(value, list, where, f"a list of numbers ({hint})")
    return check_numbers(value, where, low, high, hint)


# ----------------------------------------------------------------------------- typed values

# A plan's values are checked against the annotations of what consumes them (PruneConfig for [prune] and
# [[recovery]], Criterion for [criteria.NAME], sensitivity.scan for [sensitivity]), so a new option is
# checked without a second list here; ranges are then PruneConfig.validate()'s and Criterion's own.
_WORDS = {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string",
          tuple: "a list of layer names", dict: "a table"}


def _shown(value: Any) -> str:
    """A value for a one-line message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _key_name(key: str) -> str:
    """A key as typed, or its repr when it holds spaces or control characters."""
    return key if key and key.isprintable() and " " not in key else repr(key)


def _type_words(hint: Any) -> str:
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_words(a) for a in args if a is not type(None))
    if origin is not None and args and origin not in (dict, tuple):
        plural = {float: "finite numbers", int: "whole numbers", str: "strings", bool: "true/false values"}
        return f"a list of {plural.get(args[0], 'values')}"
    return _WORDS.get(origin or hint, getattr(hint, "__name__", str(hint)))


def check_typed(value: Any, hint: Any, where: str) -> Any:
    """`value` (from TOML or the GUI) checked against a type annotation; raises a UserError naming `where`.

    Numbers must be finite; booleans are not numbers; lists become tuples for tuple fields. Numbers keep
    their TOML type (1 stays 1, not 1.0), so run keys stay as they were.
    """
    import collections.abc
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in args:
            if option is type(None):
                continue
            try:
                return check_typed(value, option, where)
            except UserError as exc:
                if "finite" in str(exc) and isinstance(value, float):
                    raise
        raise UserError(f"{where} must be {_type_words(hint)}, got {_shown(value)}")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is float and number and not math.isfinite(value):
        raise UserError(f"{where} must be a finite number, got {value}")
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = number
    elif hint is str:
        ok = isinstance(value, str)
    elif hint is tuple or origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise UserError(f"{where} must be {_WORDS[tuple]}, e.g. [\"layer1.0.conv1\"], got {_shown(value)}")
        return tuple(value)
    elif hint is dict or origin is dict:
        ok = isinstance(value, dict)
    elif origin in (list, collections.abc.Sequence) and args:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where} must be {_type_words(hint)}, got {_shown(value)}")
        return [check_typed(v, args[0], where) for v in value]
    else:
        ok = True  # an annotation the plan format has no value for: left to the consumer's own checks
    if not ok:
        raise UserError(f"{where} must be {_type_words(hint)}, got {_shown(value)}")
    return value


def check_prune_options(table: dict, where: str) -> dict:
    """[prune] or [[recovery]] options, each checked against PruneConfig's annotation and bounds of that field."""
    hints = field_types()
    out = {}
    for key, value in table.items():
        value = check_typed(value, hints[key], f"{where} {key}")
        out[key] = check_value(key, value, hints[key], f"{where} {key}")
    return out


def check_sensitivity_options(table: dict, where: str = "[sensitivity]") -> dict:
    """[sensitivity] options, checked against the annotations of sensitivity.scan, then their ranges."""
    import typing

    from engine.sensitivity import scan

    hints = typing.get_type_hints(scan)
    out = {}
    for key, value in table.items():
        if key == "ratios":
            value = list(_numbers(value, f"{where} ratios", 0.0, 1.0, "between 0 and 1 (exclusive)"))
        else:
            value = check_typed(value, hints[key], f"{where} {key}")
        if key == "limit" and value is not None and value < 1:
            raise UserError(f"{where} limit must be a number of validation images of at least 1, got {value}")
        if key == "method":
            try:
                method = get_method(value)
            except UserError as exc:
                raise UserError(f"{where} method: {exc}") from None
            if not method.structured:
                raise UserError(f"{where} method must be a structured method (the scan removes channels), "
                                f"got {value!r}")
        out[key] = value
    return out
