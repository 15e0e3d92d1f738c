"""Prune awkward torchvision classifiers with and without engine.architectures.prepare and check them.

    .venv/bin/python benchmarks/architectures_check.py [--models googlenet,regnet_x_400mf] [--no-onnx]

Untrained models (no weights), l2 importance, ratio 0.3, layer scope, round_to 8, one image. Prints,
per model and mode, the kept-parameter share and the problems check_pruned finds.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.architectures import prepare  # noqa: E402
from engine.verify import check_pruned  # noqa: E402

MODELS = {  # name -> (builder keyword arguments, image size)
    "googlenet": (dict(aux_logits=True, init_weights=False), 224),
    "inception_v3": (dict(aux_logits=True, init_weights=False), 299),
    "regnet_x_400mf": ({}, 224),
    "regnet_y_400mf": ({}, 224),
    "regnet_y_800mf": ({}, 224),
    "vit_b_16": ({}, 224),
    "resnet18": ({}, 224),
}
RATIO, ROUND_TO = 0.3, 8


def prune_once(name: str, with_prepare: bool, onnx: bool) -> tuple[float, list[str], float]:
    """(kept share, problems, seconds) for one model pruned with or without prepare."""
    import torch_pruning as tp

    kwargs, size = MODELS[name]
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    example = torch.randn(1, 3, size, size)
    start = time.perf_counter()
    params = sum(p.numel() for p in model.parameters())
    base = tp.pruner.MetaPruner
    extra: dict = {}
    prep = None
    if with_prepare:
        prep = prepare(model, example, ROUND_TO)
        base, extra = prep.pruner_class(base), prep.pruner_kwargs
        params -= prep.dropped_params
    original = copy.deepcopy(model)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1000][-1:]
    head_names = tuple(n for n, m in model.named_modules() if any(m is h for h in head))
    try:
        pruner = base(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=RATIO,
                      global_pruning=False, ignored_layers=head, round_to=ROUND_TO, **extra)
        pruner.step()
        notes = prep.after_step(model) if prep else []
    except Exception as exc:  # noqa: BLE001 - reported as a problem
        return float("nan"), [f"pruning fails ({type(exc).__name__}: {str(exc).splitlines()[0][:150]})"], 0.0
    kept = sum(p.numel() for p in model.parameters())
    problems = check_pruned(model, example, params, kept, RATIO, original=original, round_to=ROUND_TO,
                            units=prep.units if prep else None, ignored=head_names, onnx=onnx)
    del notes
    return kept / params, problems, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--no-onnx", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"{'model':16} {'prepare':8} {'kept':>6} {'s':>5}  problems")
    for name in args.models.split(","):
        for with_prepare in (False, True):
            share, problems, seconds = prune_once(name, with_prepare, not args.no_onnx)
            first = problems[0] if problems else "none"
            print(f"{name:16} {'yes' if with_prepare else 'no':8} {share:6.1%} {seconds:5.1f}  "
                  f"{len(problems)}: {first}", flush=True)
            for more in problems[1:4]:
                print(f"{'':38}{more}")
            if len(problems) > 4:
                print(f"{'':38}... {len(problems) - 4} more")


if __name__ == "__main__":
    main()
