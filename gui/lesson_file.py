"""The lesson file format: a title, then steps with text, a question, its answer, and `show_me` actions from the
small fixed vocabulary in ACTIONS (resources/lessons/*.toml, or a teacher's own file).

A file is checked whole when it is opened, so a typo is reported as one line naming the file, the step and the
key, never in the middle of a class. No Qt here: gui/lesson.py shows a lesson and applies its actions.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from engine.errors import UserError
from engine.methods import REGISTRY
from engine.models import DEMO_ARCHS
from resources import resource_path

LESSON_DIR = resource_path("lessons")
TABS = ("Network", "Live plots", "Weights", "Results", "Experiment", "Teach")
VIEWS = ("why", "criteria", "group", "maps")  # the Teach tab's views, in their order
POINTS = ("run", "explain", "show_image", "run_plan", "scan")  # buttons "Show me" can point at
PANEL_OPTIONS = ("scope", "steps", "bn_recalibrate", "finetune_epochs", "distill", "measure_speed", "round_to",
                 "max_layer_ratio")
PLAN_OPTIONS = ("bn_recalibrate", "bn_batches", "finetune_batches", "eval_limit", "measure_speed")  # the Experiment tab's fields



def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where} must be non-empty text")
    return value.strip()


def _choice(choices: tuple[str, ...]) -> Callable[[Any, str], Any]:
    def check(value: Any, where: str) -> Any:
        if value not in choices:
            raise UserError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
        return value
    return check


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{where} must be true or false, got {value!r}")
    return value


def _ratio(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.05 <= value <= 0.95:
        raise UserError(f"{where} must be a number from 0.05 to 0.95 (the ratio slider's range), got {value!r}")
    return float(value)


def _index(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{where} must be a whole number of 0 or more, got {value!r}")
    return value


def _method(value: Any, where: str) -> str:
    if not isinstance(value, str) or value not in REGISTRY:
        raise UserError(f"{where} must name a method: {', '.join(REGISTRY)}; got {value!r}")
    return value


def _config_values(allowed: tuple[str, ...]) -> Callable[[Any, str], dict]:
    """A table of PruneConfig options, each checked by PruneConfig itself."""
    def check(value: Any, where: str) -> dict:
        from engine.config import PruneConfig, default_of

        if not isinstance(value, dict):
            raise UserError(f"{where} must be a table such as {{ {allowed[0]} = ... }}")
        for name, v in value.items():
            if name not in allowed:
                raise UserError(f"{where}: {name!r} is not an option here; use {', '.join(allowed)}")
            if isinstance(default_of(name), bool) != isinstance(v, bool):
                raise UserError(f"{where}.{name} has the wrong type: {v!r}")
        try:
            PruneConfig(**value).validate()
        except (UserError, TypeError) as exc:
            raise UserError(f"{where}: {exc}") from None
        return dict(value)
    return check


def _experiment(value: Any, where: str) -> dict:
    if not isinstance(value, dict) or not set(value) <= {"methods", "ratios", "save_models", *PLAN_OPTIONS}:
        raise UserError(f"{where} must be a table with methods, ratios, {', '.join(PLAN_OPTIONS)}, save_models")
    for name in value.get("methods", []) if isinstance(value.get("methods", []), list) else [None]:
        _method(name, f"{where}.methods")
    ratios = value.get("ratios", [])
    if not isinstance(ratios, list) or any(isinstance(r, bool) or not isinstance(r, (int, float))
                                           or not 0 < r < 1 for r in ratios):
        raise UserError(f"{where}.ratios must be a list of numbers between 0 and 1, got {ratios!r}")
    if "bn_recalibrate" in value:
        _flag(value["bn_recalibrate"], f"{where}.bn_recalibrate")
    for name in ("bn_batches", "finetune_batches", "eval_limit"):
        if name in value:
            _index(value[name], f"{where}.{name}")
    for name in ("measure_speed", "save_models"):
        if name in value:
            _flag(value[name], f"{where}.{name}")
    return dict(value)


# The show_me vocabulary: key -> its check. Applied in this order by LessonPanel.show_me.
ACTIONS: dict[str, Callable[[Any, str], Any]] = {
    "load": _choice(tuple(f"demo:{name}" for name in DEMO_ARCHS)),
    "method": _method, "ratio": _ratio, "options": _config_values(PANEL_OPTIONS),
    "tab": _choice(TABS), "view": _choice(VIEWS),
    "layer": _text, "image": _index, "experiment": _experiment,
    "explain": _flag, "point": _choice(POINTS),
}
STEP_KEYS = ("title", "text", "show_me", "question", "answer")
LESSON_KEYS = ("title", "intro", "minutes", "steps")


@dataclass(frozen=True)
class Step:
    """One step of a lesson."""

    title: str
    text: str  # Markdown
    show_me: dict = field(default_factory=dict)
    question: str = ""
    answer: str = ""


@dataclass(frozen=True)
class Lesson:
    """A lesson file, checked."""

    title: str
    steps: tuple[Step, ...]
    intro: str = ""
    minutes: int | None = None
    path: Path | None = None


def _step(raw: Any, where: str) -> Step:
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a table ([[steps]])")
    unknown = set(raw) - set(STEP_KEYS)
    if unknown:
        raise UserError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}; a step has {', '.join(STEP_KEYS)}")
    show_me = raw.get("show_me", {})
    if not isinstance(show_me, dict):
        raise UserError(f"{where}.show_me must be a table such as {{ tab = \"Teach\", layer = \"layer2.0.conv1\" }}")
    checked = {}
    for key, value in show_me.items():
        if key not in ACTIONS:
            raise UserError(f"{where}.show_me: unknown action {key!r}; the actions are {', '.join(ACTIONS)}")
        checked[key] = ACTIONS[key](value, f"{where}.show_me.{key}")
    question = _text(raw["question"], f"{where}.question") if "question" in raw else ""
    if question and "answer" not in raw:
        raise UserError(f"{where} asks a question but gives no answer")
    answer = _text(raw["answer"], f"{where}.answer") if "answer" in raw else ""
    return Step(_text(raw.get("title"), f"{where}.title"), _text(raw.get("text"), f"{where}.text"), checked,
                question, answer)


def parse_lesson(text: str, name: str = "lesson") -> Lesson:
    """A lesson from TOML text; a bad one raises UserError naming `name`, the step and the key."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{name} is not valid TOML: {exc}") from None
    try:
        unknown = set(raw) - set(LESSON_KEYS)
        if unknown:
            raise UserError(f"unknown key(s) {', '.join(sorted(unknown))}; a lesson has {', '.join(LESSON_KEYS)}")
        steps = raw.get("steps")
        if not isinstance(steps, list) or not steps:
            raise UserError("it has no steps; add [[steps]] tables with title and text")
        minutes = raw.get("minutes")
        if minutes is not None:
            _index(minutes, "minutes")
        return Lesson(_text(raw.get("title"), "title"), tuple(_step(s, f"step {i + 1}") for i, s in enumerate(steps)),
                      raw["intro"].strip() if isinstance(raw.get("intro"), str) else "", minutes)
    except UserError as exc:
        raise UserError(f"{name}: {exc}") from None


def load_lesson(path: str | Path) -> Lesson:
    """Read and check a lesson file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read the lesson {path}: {getattr(exc, 'strerror', None) or exc}") from None
    lesson = parse_lesson(text, path.name)
    return Lesson(lesson.title, lesson.steps, lesson.intro, lesson.minutes, path)


def builtin_lessons() -> list[Path]:
    """The lesson files shipped with PruneLab."""
    return sorted(LESSON_DIR.glob("*.toml")) if LESSON_DIR.is_dir() else []
