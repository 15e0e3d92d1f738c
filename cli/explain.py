"""The `explain` command: the Teach tab's facts for one layer, headless, as JSON.

Per method the scores it actually used (the group's score for DepGraph methods), each channel's rank
and the cut set at the ratio; the Jaccard matrix of the cut sets; the layers coupled to this one with
the reason; with --image, per-channel activation statistics for one test image.
"""
from __future__ import annotations

import argparse
import difflib
from dataclasses import asdict, dataclass
from typing import Any, Generator

import torch.nn as nn

from engine.errors import UserError


@dataclass(frozen=True)
class _Result:
    """The return value of an engine generator, carried out as its last event (drain keeps the last one)."""

    value: Any


def _returning(events: Generator) -> Generator:
    value = yield from events
    yield _Result(value)


def _method_names(text: str | None) -> list[str]:
    """The structured methods to compare: the list given, or every structured criterion of the registry."""
    from engine.methods import STRUCTURED, all_methods, get_method

    if text is None:
        return [m.name for m in all_methods(STRUCTURED)]
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise UserError(f"--methods takes comma-separated method names such as l1,l2,random, got {text!r}")
    structured = [m.name for m in all_methods(STRUCTURED)]  # the ones that score channels
    for name in names:
        method = get_method(name)  # an unknown name lists the valid ones
        if name in structured:
            continue
        why = ("is unstructured (it zeroes single weights, not channels)" if not method.structured else
               "scores nothing (you tick its channels in the Teach tab)")
        raise UserError(f"--methods: {name} {why}, so it has no channel scores; pick from {', '.join(structured)}")
    return list(dict.fromkeys(names))


def check_layer(model: nn.Module, layer: str) -> None:
    """`layer` must be a convolution or linear layer of `model`; the message names the valid ones."""
    from engine.layers import prunable_layers

    names = [n for n, _ in prunable_layers(model)]
    if layer in names:
        return
    close = difflib.get_close_matches(layer, names, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    shown = ", ".join(names[:8]) + (f", … ({len(names)} in all)" if len(names) > 8 else "")
    what = "is not a convolution or linear layer" if layer in dict(model.named_modules()) else "does not exist"
    raise UserError(f"--layer: {layer!r} {what} in this model; {hint}layer names are {shown} "
                    "(see the layer table or `python main.py evaluate`)")


def cmd_explain(args: argparse.Namespace) -> int:
    """Score one layer with each method, list its couplings, and write the facts as JSON."""
    from cli.running import CANCEL, ProgressPrinter, resolve, run_events, write_json
    from engine.config import PruneConfig
    from engine.explain import (Explanation, activation_stats, coupling, explain_image, iter_criteria,
                                test_image)
    from engine.outputs import check_output_file

    check_output_file(args.json, flag="--json")
    methods = _method_names(args.methods)
    cfg = PruneConfig(method=methods[0], pruning_ratio=args.ratio, round_to=args.round_to or None,
                      calibration_batches=args.calibration_batches, device=args.device, seed=args.seed,
                      bn_recalibrate=False, measure_speed=False)
    cfg.validate()
    if args.image is not None and args.image < 0:
        raise UserError(f"--image must be 0 or more (a test image's index), got {args.image}")
    bundle, data = resolve(args)
    check_layer(bundle.model, args.layer)
    if args.image is not None:
        test_image(data, args.image)  # a missing image is refused before the scoring, not after
    printer = ProgressPrinter(quiet=args.quiet)
    shape, classes = bundle.input_shape, bundle.num_classes
    criteria = run_events(_returning(iter_criteria(bundle.model, args.layer, data, shape, classes, cfg, args.ratio,
                                                   methods, CANCEL)), printer, limit=args.memory_limit).value
    group = coupling(bundle.model, shape, args.layer)
    explained = Explanation(args.layer, methods[0], criteria.scores[methods[0]], criteria, group)
    out = explained.to_json()
    out["ratio"] = args.ratio
    for name, scores in criteria.scores.items():
        out["methods"][name]["tied"] = list(scores.tied)
    for entry, c in zip(out["group"], group):
        entry.update(kind=c.kind, side=c.side)
    if args.image is not None:
        image = run_events(_returning(explain_image(bundle.model, args.layer, cfg, data, args.image, shape, classes,
                                                    CANCEL)), printer, limit=args.memory_limit).value
        out["activations"] = activation_stats(image.maps, image.cut)
        out["image"] = {"index": image.index, "label": image.label, "label_name": image.label_name,
                        "method": methods[0],
                        "original": [asdict(p) for p in image.original],
                        "pruned": [asdict(p) for p in image.pruned]}
    _summary(out, args.layer)
    write_json(args.json, out)
    print(f"wrote {args.json}")
    return 0


def _summary(out: dict, layer: str) -> None:
    """A few lines for a person: what each method cuts, and what the layer is tied to."""
    print(f"{layer} at ratio {out['ratio']:g}:")
    width = max(len(name) for name in out["methods"])
    for name, m in out["methods"].items():
        cut = m["cut"]
        shown = ", ".join(map(str, cut[:12])) + (", …" if len(cut) > 12 else "")
        print(f"  {name.ljust(width)}  cuts {len(cut)} of {len(m['scores'])}: {shown or 'nothing'}")
    if out["group"]:
        print("coupled layers (they lose the same channels):")
        for g in out["group"]:
            print(f"  {g['layer']}: {g['reason']}")
    else:
        print("no coupled layers")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the explain command to the main parser."""
    from cli.args import add_data_args, add_model_args, add_quiet_arg, add_seed_arg
    from cli.types import at_least, finite
    from engine.config import default_of

    ratio, round_to, batches = (default_of(n) for n in ("pruning_ratio", "round_to", "calibration_batches"))
    p = sub.add_parser("explain", help="why each channel of a layer goes: every method's scores, cut sets, their "
                                       "overlap, the coupled layers (the Teach tab, as JSON)")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--layer", required=True, metavar="NAME", help="the convolution or linear layer to explain")
    p.add_argument("--methods", metavar="M1,M2,..",
                   help="structured methods to compare (default: every structured method; see `methods`)")
    p.add_argument("--ratio", type=finite, default=ratio, metavar="R",
                   help=f"share of channels each method removes (default {ratio:g})")
    p.add_argument("--round-to", type=at_least(0), default=round_to, metavar="N",
                   help=f"keep channel counts multiples of N, as a run does (default {round_to}; 0 or 1 = exact "
                        "counts)")
    p.add_argument("--calibration-batches", type=at_least(1), default=batches, metavar="N",
                   help=f"training batches for Taylor and Hessian scores (default {batches})")
    p.add_argument("--image", type=int, metavar="N",
                   help="also write per-channel activation statistics for test image N (and its top-5 before and "
                        "after pruning with the first method)")
    add_seed_arg(p)
    p.add_argument("--json", required=True, metavar="FILE", help="where to write the facts")
    add_quiet_arg(p)
    p.set_defaults(func=cmd_explain)
