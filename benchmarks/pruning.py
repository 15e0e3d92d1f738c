"""Pruning benchmark: our pipeline against plain torch-pruning and torch.nn.utils.prune, and the
speed-up efficiency (latency speed-up / MACs reduction) of every structured method.

Run: .venv/bin/python benchmarks/pruning.py [--model demo:resnet] [--repeats 5] [--cost-only]
Latencies of the models being compared are measured interleaved, in one process, so background
load affects both sides alike; so are the pruning times of section 1 (ours and plain alternate, round by
round, on the demo and on torchvision:resnet50 at 224×224 with random weights: nothing is downloaded).
On a loaded machine with few cores, --threads 1 gives the steadier ratio: with two threads every small tensor
operation of either side waits for a busy core, and the medians measure that wait (50× a quiet machine's time).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.nn.utils import prune as torch_prune

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data import load_fashion_mnist  # noqa: E402
from engine.events import result_of  # noqa: E402
from engine.layers import classifier_head, prunable_layers  # noqa: E402
from engine.methods import all_methods  # noqa: E402
from engine.metrics import count_macs, count_params, size_on_disk  # noqa: E402
from engine.timing import measure_latency, median_interval  # noqa: E402
from engine.data import Dataset  # noqa: E402
from engine.models import DemoResNet, ModelBundle, load_model  # noqa: E402
from engine.config import PruneConfig  # noqa: E402
from engine.pruning import run_pruning  # noqa: E402

SHAPE = (1, 28, 28)


def load(src: str) -> ModelBundle:
    """The demo model, or an untrained one of the same architecture when weights are missing."""
    try:
        return load_model(src)
    except Exception as exc:  # benchmark still runs on a fresh checkout
        print(f"note: {exc}; using an untrained DemoResNet")
        return ModelBundle(DemoResNet().eval(), "untrained", "demo:resnet", SHAPE, 10)


def plain_torch_pruning(model: nn.Module, ratio: float, round_to: int, shape: tuple[int, ...] = SHAPE,
                        classes: int = 10) -> tuple[nn.Module, float]:
    """What a user would write by hand: build the pruner, one step."""
    import torch_pruning as tp

    model = copy.deepcopy(model)
    t0 = time.perf_counter()
    head = dict(model.named_modules())[classifier_head(model, classes)]
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, *shape), importance=tp.importance.GroupMagnitudeImportance(p=2),
                                  pruning_ratio=ratio, ignored_layers=[head], round_to=round_to,
                                  max_pruning_ratio=0.9)
    pruner.step()
    return model, time.perf_counter() - t0


def ours(bundle: ModelBundle, data, method: str, ratio: float, round_to: int | None = 8, eval_limit: int = 64):
    """Our pipeline with evaluation cut to a minimum; returns (pruned model, pruning seconds)."""
    cfg = PruneConfig(method=method, pruning_ratio=ratio, round_to=round_to, eval_limit=eval_limit,
                      measure_speed=False)
    pruned = result_of(run_pruning(bundle, data, cfg))
    return pruned.bundle.model.eval(), pruned.run.prune_seconds


def resnet50_224(data: Dataset) -> tuple[ModelBundle, Dataset]:
    """torchvision's ResNet-50 at 224×224 with random weights (no download), and the data resized to it."""
    bundle = load_model("torchvision:resnet50", input_shape=(3, 224, 224), num_classes=10, seed=0)
    return bundle, data.adapted((3, 224, 224))


def pruning_cost(bundle: ModelBundle, data: Dataset, rounds: int, eval_limit: int = 64) -> dict:
    """Our pipeline's pruning time (prune_seconds: tracing, preflight, cut) against the plain script's, l2 0.5,
    round_to 8: the two alternate in every round (who goes first too), after one warm-up round of each;
    the ratio is taken round by round, its median with a distribution-free interval."""
    shape = tuple(bundle.input_shape or SHAPE)
    base = bundle.model.eval()
    ours_t, plain_t = [], []
    for i in range(rounds + 1):
        order = ("plain", "ours") if i % 2 else ("ours", "plain")
        for who in order:
            if who == "plain":
                pm, t = plain_torch_pruning(base, 0.5, 8, shape, bundle.num_classes or 10)
                plain_t.append(t)
            else:
                om, t = ours(bundle, data, "l2", 0.5, eval_limit=eval_limit)
                ours_t.append(t)
    ours_t, plain_t = ours_t[1:], plain_t[1:]  # the warm-up round
    ratios = [o / p for o, p in zip(ours_t, plain_t)]
    low, high, coverage = median_interval(ratios)
    same = (count_macs(pm, shape), count_params(pm)) == (count_macs(om, shape), count_params(om))
    return {"ours_ms": statistics.median(ours_t) * 1000, "plain_ms": statistics.median(plain_t) * 1000,
            "ratio": statistics.median(ratios), "low": low, "high": high, "coverage": coverage, "same": same,
            "macs": count_macs(om, shape), "params": count_params(om)}


def interleaved_latency(a: nn.Module, b: nn.Module, batch: int = 64, rounds: int = 3) -> tuple[float, float]:
    """Median batch latency of two models, measured alternately."""
    la, lb = [], []
    for _ in range(rounds):
        la.append(measure_latency(a, SHAPE, (batch,), repeats=15, min_seconds=0.3)[str(batch)]["median"])
        lb.append(measure_latency(b, SHAPE, (batch,), repeats=15, min_seconds=0.3)[str(batch)]["median"])
    return statistics.median(la), statistics.median(lb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="demo:resnet")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--cost-only", action="store_true", help="section 1 only (pruning's own cost)")
    parser.add_argument("--skip-resnet50", action="store_true", help="section 1 on the demo only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_fashion_mnist()
    bundle = load(args.model)
    base = bundle.model.eval()
    base_macs, base_params = count_macs(base, SHAPE), count_params(base)
    print(f"model {bundle.source}: {base_params} params, {base_macs / 1e6:.2f} M MACs, {args.threads} threads\n")

    print(f"1) what pruning costs: our pipeline vs a plain torch-pruning script (l2, ratio 0.5, round_to 8), "
          f"interleaved, median of {args.repeats} rounds; load average {os.getloadavg()[0]:.1f}")
    rows = [(bundle.source, lambda: (bundle, data), 64)]
    if not args.skip_resnet50:
        rows.append(("torchvision:resnet50@224", lambda: resnet50_224(data), 10))
    for name, make, limit in rows:
        row = pruning_cost(*make(), args.repeats, limit)
        print(f"   {name:<26} ours {row['ours_ms']:8.1f} ms  plain {row['plain_ms']:8.1f} ms  ratio "
              f"{row['ratio']:.2f} [{row['low']:.2f}, {row['high']:.2f}] ({row['coverage']:.0%} interval; "
              f"goal <= 2)  identical MACs and params: {row['same']} ({row['macs'] / 1e6:.1f} M MACs, "
              f"{row['params']} params)", flush=True)
    print(f"   load average at the end {os.getloadavg()[0]:.1f}\n")
    if args.cost_only:
        return
    om, _ = ours(bundle, data, "l2", 0.5)

    print("2) structured (l2 0.5) vs torch.nn.utils.prune at the same share of weights removed")
    share = 1 - count_params(om) / base_params
    um = copy.deepcopy(base)
    head = classifier_head(um, 10)
    targets = [(m, "weight") for n, m in prunable_layers(um) if n != head]
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=share)
    for m, name in targets:
        torch_prune.remove(m, name)
    lat_base, lat_struct = interleaved_latency(base, om)
    _, lat_unstr = interleaved_latency(base, um)
    print(f"   share of weights removed: {share:.1%}")
    print(f"   {'model':<14}{'latency b64':>14}{'size':>12}{'compressed':>12}{'MACs':>10}")
    for name, m, lat in (("original", base, lat_base), ("structured", om, lat_struct),
                         ("unstructured", um, lat_unstr)):
        size, comp = size_on_disk(m)
        print(f"   {name:<14}{lat:>11.2f} ms{size / 1024:>9.0f} KiB{comp / 1024:>9.0f} KiB"
              f"{count_macs(m, SHAPE) / 1e6:>8.2f} M")
    print(f"   structured latency speed-up {lat_base / lat_struct:.2f}x; unstructured {lat_base / lat_unstr:.2f}x "
          "(dense kernels do not skip zeros)\n")

    print("3) speed-up efficiency = latency speed-up (batch 64) / MACs reduction, per method and ratio")
    print(f"   {'method':<10}{'ratio':>6}{'MACs x':>9}{'latency x':>11}{'efficiency':>12}{'prune s':>9}")
    for method in all_methods("structured"):
        for ratio in (0.3, 0.5, 0.7):
            pm, secs = ours(bundle, data, method.name, ratio)
            macs_x = base_macs / count_macs(pm, SHAPE)
            lb, lp = interleaved_latency(base, pm, rounds=2)
            print(f"   {method.name:<10}{ratio:>6.1f}{macs_x:>9.2f}{lb / lp:>11.2f}{(lb / lp) / macs_x:>12.2f}"
                  f"{secs:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
