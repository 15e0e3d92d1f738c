"""Plan files: every value of [prune], [[recovery]], [criteria] and [sensitivity] is checked when the plan is
read (type, finiteness, then PruneConfig.validate() ranges), with the key named; property tests show the
parser answers any value with a plan or a one-line UserError, never another exception."""
from __future__ import annotations

import json
import math
import typing

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.errors import UserError
from engine.experiments import (CRITERION_KEYS, PLAN_SECTIONS, RECOVERY_KEYS, Plan, check_typed, parse_plan)
from engine.config import PruneConfig

BASE = "[model]\nsource = \"demo:resnet\"\n[sweep]\nmethods = [\"l2\"]\nratios = [0.5]\n"
PRUNE_HINTS = typing.get_type_hints(PruneConfig)


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert message and len(message.splitlines()) == 1 and message.strip() == message, repr(message)
    return message


def toml_value(value) -> str:
    """A Python value written as TOML (inline tables and arrays; nan and inf as TOML spells them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def wrong_values(hint) -> list:
    """Values of the wrong type (or not finite) for a PruneConfig annotation."""
    origin = typing.get_origin(hint)
    base = [a for a in typing.get_args(hint) if a is not type(None)][0] if origin else hint
    return {bool: ["yes", 1, 0.0], int: ["many", 2.5, True, [1]], float: ["fast", float("nan"), float("inf"), False],
            str: [3, True, ["a"]], tuple: ["fc", [1, 2], {"a": 1}]}[base]


PRUNE_CASES = [(key, v) for key in sorted(PLAN_SECTIONS["prune"]) for v in wrong_values(PRUNE_HINTS[key])]
RECOVERY_CASES = [(key, v) for key in sorted(RECOVERY_KEYS - {"name"}) for v in wrong_values(PRUNE_HINTS[key])[:2]]


@pytest.mark.parametrize("key, value", PRUNE_CASES, ids=[f"{k}={v!r}" for k, v in PRUNE_CASES])
def test_prune_values_are_type_checked_naming_the_key(key, value):
    with pytest.raises(UserError) as err:
        parse_plan(BASE + f"[prune]\n{key} = {toml_value(value)}\n")
    assert one_line(err.value).startswith(f"[prune] {key} must be")


@pytest.mark.parametrize("key, value", RECOVERY_CASES, ids=[f"{k}={v!r}" for k, v in RECOVERY_CASES])
def test_recovery_values_are_type_checked_naming_the_key(key, value):
    text = BASE + "[[recovery]]\nname = \"ok\"\nbn_recalibrate = true\n[[recovery]]\nname = \"bad\"\n"
    with pytest.raises(UserError) as err:
        parse_plan(text + f"{key} = {toml_value(value)}\n")
    assert one_line(err.value).startswith(f"[[recovery]] #2 {key} must be")


CRITERIA_CASES = [("accuracy", "weight", "heavy"), ("accuracy", "weight", float("nan")),
                  ("accuracy", "max_drop", float("inf")), ("accuracy", "max_drop", True),
                  ("latency", "max_value", [1]), ("latency", "min_speedup", float("-inf")),
                  ("size", "min_value", "small"), ("size", "unit", 5), ("size", "direction", 1),
                  ("fast", "metric", 7), ("fast", "metric", ["latency_ms"])]


@pytest.mark.parametrize("name, key, value", CRITERIA_CASES)
def test_criteria_values_are_type_checked_naming_the_key(name, key, value):
    with pytest.raises(UserError) as err:
        parse_plan(BASE + f"[criteria.{name}]\n{key} = {toml_value(value)}\n")
    assert one_line(err.value).startswith(f"[criteria.{name}] {key} must be")


SENSITIVITY_CASES = [("ratios", "some", "ratios"), ("ratios", [0.5, float("nan")], "ratios"),
                     ("ratios", [1.5], "ratios"), ("limit", "all", "limit"), ("limit", 2.5, "limit"),
                     ("limit", 0, "limit"), ("method", 3, "method"), ("method", "nope", "method"),
                     ("method", "magnitude-global", "method"), ("bn_recalibrate", "yes", "bn_recalibrate")]


@pytest.mark.parametrize("key, value, named", SENSITIVITY_CASES)
def test_sensitivity_values_are_checked_naming_the_key(key, value, named):
    with pytest.raises(UserError) as err:
        parse_plan(BASE + f"[sensitivity]\n{key} = {toml_value(value)}\n")
    assert one_line(err.value).startswith(f"[sensitivity] {named}")


@pytest.mark.parametrize("snippet, named", [
    ("[prune]\nbatch_size = 0", r"\[prune\] batch_size must be a whole number of at least 1"),
    ("[prune]\nmax_layer_ratio = 1.5", r"\[prune\] max_layer_ratio must be in \(0, 1\]"),
    ("[prune]\nsteps = 1000", r"\[prune\] steps must be between 1 and 100"),
    ("[prune]\nscope = \"everywhere\"", r"\[prune\] scope must be one of layer, global"),
    ("[prune]\noptimizer = \"adam\"", r"\[prune\] optimizer must be one of sgd, adamw"),
    ("[[recovery]]\ndistill = true", "distillation needs fine-tuning"),
    ("[[recovery]]\nfinetune_lr = 0.0\nfinetune_batches = 5", r"finetune_lr must be above 0"),
])
def test_ranges_are_checked_when_the_plan_is_read(snippet, named):
    """PruneConfig.validate() runs on every run's configuration at parse time, before any work."""
    with pytest.raises(UserError, match=named) as err:
        parse_plan(BASE + snippet + "\n")
    one_line(err.value)


@pytest.mark.parametrize("snippet, named", [
    ("[sweep]\nmethods = [\"l2\"]\nratios = [nan]", "ratios"),
    ("[sweep]\nmethods = [\"l2\"]\nratios = [0.5]\ntarget_speedups = [inf]", "target_speedups"),
    ("[sweep]\nmethods = [\"l2\"]\nratios = [0.5]\n[model]\nsource = \"demo:resnet\"\nstd = [0.3, 0.0]", "std"),
    ("[sweep]\nmethods = [\"l2\"]\nratios = [0.5]\n[model]\nsource = \"demo:resnet\"\nmean = [-inf]", "mean"),
])
def test_non_finite_numbers_are_refused_everywhere(snippet, named):
    text = snippet if "[model]" in snippet else "[model]\nsource = \"demo:resnet\"\n" + snippet
    with pytest.raises(UserError, match=named) as err:
        parse_plan(text + "\n")
    one_line(err.value)


def test_good_values_pass_and_keep_their_types():
    plan = parse_plan(BASE + "[prune]\nignored_layers = [\"fc\"]\nfinetune_epochs = 1\neval_limit = 100\n"
                      "[[recovery]]\nname = \"bn\"\nbn_recalibrate = true\n"
                      "[criteria.accuracy]\nmax_drop = 2\n[sensitivity]\nlimit = 64\nratios = [0.5]\n")
    assert plan.prune == {"ignored_layers": ("fc",), "finetune_epochs": 1, "eval_limit": 100}
    assert isinstance(plan.prune["finetune_epochs"], int)  # 1 stays 1: run keys of existing stores are kept
    cfg, rec = plan.configs()[0]
    assert cfg.ignored_layers == ("fc",) and rec.name == "bn" and cfg.bn_recalibrate
    assert plan.sensitivity == {"limit": 64, "ratios": [0.5]}
    assert next(c for c in plan.criteria if c.name == "accuracy").max_drop == 2


def test_check_typed_follows_the_annotations():
    assert check_typed(None, int | None, "x") is None
    assert check_typed(3, int | None, "x") == 3
    assert check_typed([0.1, 2], typing.Sequence[float], "x") == [0.1, 2]
    with pytest.raises(UserError, match="finite"):
        check_typed(float("nan"), float | None, "x")
    with pytest.raises(UserError, match="a list of finite numbers"):
        check_typed("0.5", typing.Sequence[float], "x")


# ----------------------------------------------------------------------------- property tests

SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
SCALARS = (st.booleans() | st.integers(-2 ** 63, 2 ** 63 - 1) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=20) | st.sampled_from(["l1", "l2", "sgd", "cpu", "cuda", "layer", "global", "top1",
                                                    "min", "max", "fc", "~x/y", ""]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3), max_leaves=8)
# Plausible values, so the property also reaches the range checks and the successful parses.
NICE = (st.integers(0, 200) | st.floats(0, 2) | st.booleans() | st.lists(st.floats(0, 1), max_size=3)
        | st.sampled_from(["l2", "sgd", "adamw", "cpu", "layer", "global", "fc", "top1", "latency_ms"]))
SECTION_KEYS = {
    "prune": sorted(PLAN_SECTIONS["prune"]),
    "recovery": sorted(RECOVERY_KEYS),
    "sensitivity": sorted(PLAN_SECTIONS["sensitivity"]),
    "criteria": sorted(CRITERION_KEYS),
    "sweep": sorted(PLAN_SECTIONS["sweep"]),
    "plan": sorted(PLAN_SECTIONS["plan"]),
}


def plan_text(section: str, entries: dict) -> str:
    body = "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in entries.items())
    header = {"recovery": "[[recovery]]", "criteria": "[criteria.accuracy]"}.get(section, f"[{section}]")
    base = BASE if section != "sweep" else "[model]\nsource = \"demo:resnet\"\n"
    if section == "plan":
        base = base.replace("[model]", "[plan]\n" + body + "[model]")
        return base
    return base + header + "\n" + body


def conforms(value, hint) -> bool:
    """An independent reading of an annotation: is `value` of that type (finite when a number)?"""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is not None and type(None) in typing.get_args(hint):
        return value is None or conforms(value, args[0])
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return type(value) is int
    if hint is float:
        return type(value) in (int, float) and math.isfinite(value)
    if hint is str:
        return type(value) is str
    if hint is tuple:
        return type(value) is tuple and all(type(v) is str for v in value)
    return True


def check_parse(text: str) -> None:
    """The property: a one-line UserError, or a plan whose every run configuration has well-typed values."""
    try:
        plan = parse_plan(text)
    except UserError as exc:
        one_line(exc)
        return
    assert isinstance(plan, Plan)
    for cfg, _ in plan.configs():
        bad = {k: getattr(cfg, k) for k in PRUNE_HINTS if not conforms(getattr(cfg, k), PRUNE_HINTS[k])}
        assert not bad, f"accepted ill-typed options {bad}"
    for c in plan.criteria:
        assert all(conforms(getattr(c, k), h) for k, h in typing.get_type_hints(type(c)).items()), c


@st.composite
def section_entries(draw, values=VALUES):
    section = draw(st.sampled_from(sorted(SECTION_KEYS)))
    keys = draw(st.lists(st.sampled_from(SECTION_KEYS[section]) | st.text(min_size=1, max_size=6),
                         min_size=1, max_size=4, unique=True))
    return section, {k: draw(values) for k in keys}


@SETTINGS
@given(section_entries())
@example(("prune", {"finetune_batches": "many"}))
@example(("recovery", {"finetune_epochs": float("nan")}))
@example(("plan", {"store": "~nosuchuser-prunelab/x"}))
@example(("plan", {"out_dir": "a\x00b"}))
@example(("criteria", {"metric": ["top1"]}))
@example(("sensitivity", {"ratios": {"a": 1}}))
def test_any_value_parses_or_is_a_one_line_user_error(entry):
    check_parse(plan_text(*entry))


@SETTINGS
@given(section_entries(NICE))
def test_plausible_values_parse_or_are_a_one_line_user_error(entry):
    check_parse(plan_text(*entry))
