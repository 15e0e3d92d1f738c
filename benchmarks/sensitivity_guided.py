"""Sensitivity-guided against uniform per-layer ratios, at the same MACs, with the same recovery.

For each target ratio: prune uniformly, and prune with the per-layer ratios proposed from a sensitivity
scan (with and without BatchNorm re-estimation inside the scan, and with each group's ratio kept
within 0.2 of the target); recover each the same way (BN
re-estimation, then a short fine-tune) and evaluate on the whole test set. Prints MACs, top-1 and the
difference guided − uniform in points.

Run: .venv/bin/python benchmarks/sensitivity_guided.py [--ratios 0.3 0.5 0.7] [--finetune-batches 100]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data import load_fashion_mnist  # noqa: E402
from engine.models import load_model  # noqa: E402
from engine.config import PruneConfig  # noqa: E402
from engine.pruning import RunDone, run_pruning  # noqa: E402
from engine.sensitivity import propose_layer_ratios, scan  # noqa: E402


def last(events):
    out = None
    for out in events:
        pass
    return out


def run(bundle, data, ratio: float, layer_ratios: dict | None, args) -> RunDone:
    cfg = PruneConfig(method=args.method, pruning_ratio=ratio, layer_ratios=layer_ratios or {},
                      bn_recalibrate=True, finetune_batches=args.finetune_batches or None,
                      finetune_epochs=1.0 if args.finetune_batches else 0.0, finetune_lr=args.lr,
                      measure_speed=False, seed=args.seed)
    return last(run_pruning(bundle, data, cfg))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo:resnet")
    parser.add_argument("--method", default="l2")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--finetune-batches", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--scan-limit", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = load_fashion_mnist()
    bundle = load_model(args.model)
    data = data.adapted(bundle.input_shape, bundle.norm)
    print(f"{args.model}, {args.method}, recovery: BN re-estimation + {args.finetune_batches} fine-tune batches, "
          f"evaluated on the whole test set; {args.threads} threads")
    scans = {}
    for bn in (False, True):
        t0 = time.perf_counter()
        scans[bn] = last(scan(bundle, data, method=args.method, limit=args.scan_limit, bn_recalibrate=bn))
        print(f"scan{' with BN re-estimation' if bn else ''}: {time.perf_counter() - t0:.0f} s")

    print(f"\n{'ratio':>5}  {'variant':<16} {'MACs M':>8} {'pruned %':>9} {'BN %':>7} {'final %':>8} {'vs uniform':>10}")
    for ratio in args.ratios:
        uniform = run(bundle, data, ratio, None, args)
        rows = [("uniform", uniform)]
        for name, bn, shift in (("guided", False, None), ("guided BN", True, None),
                                ("guided BN ±0.2", True, 0.2)):
            proposal = propose_layer_ratios(scans[bn], ratio, bundle, max_shift=shift)
            rows.append((name, run(bundle, data, ratio, proposal.layer_ratios, args)))
        for name, done in rows:
            step = done.steps[-1]
            diff = 100 * (done.after.top1 - uniform.after.top1)
            print(f"{ratio:>5g}  {name:<16} {done.after.macs / 1e6:>8.2f} {100 * (step.top1_after_prune or 0):>9.2f} "
                  f"{100 * (step.top1_after_bn or 0):>7.2f} {100 * done.after.top1:>8.2f} "
                  f"{'' if name == 'uniform' else f'{diff:+.2f} pt':>10}", flush=True)


if __name__ == "__main__":
    main()
