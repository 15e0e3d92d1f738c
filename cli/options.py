"""The prune command's option flags, generated from PruneConfig's field descriptions (engine.config)."""
from __future__ import annotations

import argparse
import typing
from dataclasses import fields
from typing import Any, Callable

from cli.types import at_least, finite
from engine.config import TARGET_FIELDS, PruneConfig, default_of, field_types, options
from engine.errors import UserError
from engine.recipes import PRESET_FIELDS, PRESETS, with_preset

# Which flags are required, and which pairs exclude each other, is the command's choice, not the config's.
REQUIRED = ("method",)
ONE_OF = TARGET_FIELDS


def _parse_type(name: str, hint: Any) -> Callable[[str], Any] | None:
    kinds = set(typing.get_args(hint) or (hint,)) - {type(None)}
    opt = options()[name]
    if kinds == {float}:
        return finite
    if kinds == {int}:
        # counts are checked while parsing; a bound such as round_to's is PruneConfig.validate's message
        return at_least(int(opt.low)) if opt.low is not None and opt.off is None else int
    return None


def _help(name: str) -> str:
    opt, default = options()[name], default_of(name)
    text = opt.flag_help or opt.help
    if opt.choices:
        text += f" ({' or '.join(map(str, opt.choices))})"
    if default not in (None, (), {}) and not isinstance(default, bool) and name not in REQUIRED + ONE_OF:
        text += f" (default {default:g})" if isinstance(default, float) else f" (default {default})"
    return text.replace("%", "%%")


def add_config_flags(p: argparse.ArgumentParser, method_help: str = "") -> None:
    """One flag per PruneConfig field that has one; dest is the field's name."""
    exclusive = p.add_mutually_exclusive_group(required=True)
    for f in fields(PruneConfig):
        if f.metadata["option"].flag:
            add_config_flag(exclusive if f.name in ONE_OF else p, f.name,
                            method_help if f.name == "method" else "")
    p.add_argument("--recovery", metavar="PRESET", help=(
        "a recovery recipe (recovery flags given beside it win): "
        + "; ".join(f"{name} = {_as_flags(pre.options)}: {pre.cost_words()}" for name, pre in PRESETS.items())
    ).replace("%", "%%"))


def _as_flags(values: dict) -> str:
    """PruneConfig values as the flags that set them."""
    opts = options()
    return " ".join(opts[k].flag if v is True else f"{opts[k].flag} {v:g}" for k, v in values.items()
                    if v is not False)


def add_config_flag(p: Any, name: str, extra_help: str = "") -> None:
    """The flag of one PruneConfig field on `p` (a parser or group; dest is the field's name), as prune has it;
    evaluate borrows a few, so they read the same in both commands."""
    opt, hint = options()[name], field_types()[name]
    kw: dict[str, Any] = {"dest": name, "help": _help(name) + extra_help}
    if hint is bool:
        kw.update(action="store_false" if opt.negated else "store_true", default=default_of(name))
    elif hint in (dict, tuple):
        kw.update(action="append", metavar=opt.metavar, default=None)
    else:
        kw.update(type=_parse_type(name, hint), metavar=opt.metavar,
                  default=None if name in ONE_OF + REQUIRED else default_of(name))
        if name in REQUIRED:
            kw["required"] = True
    if name in PRESET_FIELDS:  # absent unless given, so a --recovery preset fills only what was not given
        kw["default"] = argparse.SUPPRESS
    p.add_argument(opt.flag, **kw)


def _layer_ratios(items: list[str] | None) -> dict[str, float]:
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            raise UserError(f"--layer-ratio takes NAME=RATIO, got {item!r}") from None
        if not sep:
            raise UserError(f"--layer-ratio takes NAME=RATIO, got {item!r}")
    return out


def config_from_args(args: argparse.Namespace) -> PruneConfig:
    """The PruneConfig the parsed flags describe."""
    hints = field_types()
    values = {}
    for f in fields(PruneConfig):
        opt = f.metadata["option"]
        if not opt.flag or not hasattr(args, f.name):  # a preset's field not given: the preset's or the default
            continue
        value = getattr(args, f.name)
        if hints[f.name] is dict:
            value = _layer_ratios(value)
        elif hints[f.name] is tuple:
            value = tuple(value or ())
        elif opt.off is not None and value == opt.off:
            value = None
        values[f.name] = value
    return PruneConfig(**with_preset(getattr(args, "recovery", None), values))
