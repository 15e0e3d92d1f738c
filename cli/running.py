"""Running a command: loading its inputs under the memory budget, the progress printer, notes held until the
work starts, the cancel token and JSON output. Shared by every command module (cli.main and those it registers)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

from engine.budget import call_guarded, guarded
from engine.checks import check_batch_memory
from engine.data import Dataset
from engine.events import CancelToken, Progress, drain
from engine.inputs import load_inputs, random_weights_note
from engine.models import ModelBundle
from engine.outputs import write_text_atomic

CANCEL = CancelToken()  # the token every command passes to its job


def device_for(name: str) -> str:
    """The device a command runs on (`cuda:N` kept), saying so when CUDA was asked for and is absent."""
    from engine.training import resolve_device

    dev, note = resolve_device(name)
    if note:
        print(f"note: {note}", file=sys.stderr)
    return str(dev)


def resolve(args: argparse.Namespace) -> tuple[ModelBundle, Dataset]:
    """Load the dataset and model named by the flags and make them fit each other, under the same memory
    budget as the job that follows (a file or folder can ask for more than the machine has)."""
    return call_guarded(lambda: _resolve(args), getattr(args, "memory_limit", None), LOAD_HINT)


LOAD_HINT = ", a smaller model or images"


def _resolve(args: argparse.Namespace) -> tuple[ModelBundle, Dataset]:
    printer = ProgressPrinter(quiet=getattr(args, "quiet", False))
    # torchvision:NAME and timm:NAME take channels, size and classes from the data; untrained ones from --seed
    inputs = load_inputs(args.model, args.data, weights=args.weights, model_code=args.model_code,
                         model_kwargs=args.model_kwargs, trust=args.trust, input_shape=args.input_shape,
                         partial_weights=args.partial_weights, seed=getattr(args, "seed", 0) or 0, mean=args.mean,
                         std=args.std, progress=lambda ev: ev.total and printer(ev))  # listing has no total yet
    bundle = inputs.bundle
    for line in getattr(inputs.raw, "warnings", ()):
        hold(f"warning: {line}")
    weights = bundle.meta.get("weights")
    if weights and (weights["missing"] or weights["unexpected"] or weights["misshaped"]):
        from engine.models import WeightsFit

        fit = WeightsFit(**{k: tuple(v) if isinstance(v, list) else v for k, v in weights.items()})
        hold(f"note: weights from {args.weights or args.model}: {fit.summary()}")
    if bundle.meta.get("untrained"):  # a figure from random weights looks like a result unless we say so
        hold(f"note: {untrained_note(args.model, getattr(args, 'seed', 0) or 0, args.command)}")
    check_batch_memory(bundle.model, bundle.input_shape, args.batch_size, getattr(args, "device", "cpu") or "cpu")
    return bundle, inputs.data


HELD: list[str] = []  # notes and warnings about the inputs, printed once the work starts: a refusal stays one line


def hold(line: str) -> None:
    """A line for stderr, shown when the work starts (or the command ends well), dropped when it fails."""
    HELD.append(line)


def show_held() -> None:
    """Print the held lines now."""
    while HELD:
        print(HELD.pop(0), file=sys.stderr)


def untrained_note(model: str, seed: int, command: str | None) -> str:
    """The warning for a named architecture without --weights: its figures come from random weights."""
    verb = {"prune": "prune", "evaluate": "evaluate", "sensitivity": "scan", "explain": "explain"}.get(command or "",
                                                                                                       "use")
    return random_weights_note(model, seed, fix=f"pass --weights FILE to {verb} your trained model")


# ----------------------------------------------------------------------------- output helpers

class ProgressPrinter:
    """Progress events on stderr: a tqdm bar per phase on a terminal; in a log, a plain line every 5 s and
    at the end of each phase that took 2 s or more (a bar redrawn with carriage returns would fill a log)."""

    def __init__(self, stream=None, quiet: bool = False):
        self.stream, self.quiet = stream or sys.stderr, quiet  # looked up now, so redirection works
        self.tty = self.stream.isatty()
        self.bar = None
        self.key: tuple | None = None
        self.last = self.started = 0.0

    def __call__(self, event) -> None:
        if self.quiet or not isinstance(event, Progress):
            return
        if self.tty:
            self._draw(event)
            return
        now, final = time.monotonic(), event.done >= event.total
        if self.key != (event.phase, event.total):
            self.key, self.started = (event.phase, event.total), now
        if now - self.started < 2:
            return  # a phase that ends within 2 s gets no line: a log keeps what took time
        if final or now - self.last >= 5:
            self.last = now
            eta = f", ETA {event.eta_s:.0f} s" if event.eta_s is not None and not final else ""
            self.stream.write(f"{event.phase:>10} {event.fraction:4.0%} {event.message}{eta}\n")
            self.stream.flush()

    def _draw(self, event: Progress) -> None:
        from tqdm import tqdm

        if self.key != (event.phase, event.total) or self.bar is None or event.done < self.bar.n:
            self.close()
            self.bar = tqdm(total=event.total, desc=f"{event.phase:>10}", file=self.stream, leave=True,
                            mininterval=0.1, ncols=110, bar_format="{desc} |{bar:24}| {percentage:3.0f}%{postfix}")
            self.key = (event.phase, event.total)
        self.bar.set_postfix_str(event.message[:60], refresh=False)
        self.bar.update(event.done - self.bar.n)
        if event.done >= event.total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_events(events, printer: Callable | None = None, on_event: Callable | None = None,
               limit: int | None = None, hint: str = ""):
    """Drain an engine generator under the memory budget `limit` (bytes), printing progress; returns the last event."""
    def both(event) -> None:
        show_held()
        if printer:
            printer(event)
        if on_event:
            on_event(event)

    return drain(guarded(events, limit, hint), both)


def write_json(path: str | Path, obj: dict) -> None:
    """Write JSON whole or not at all."""
    write_text_atomic(path, json.dumps(obj, indent=2))
