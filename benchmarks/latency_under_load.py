"""Speed-up under load: the paired (interleaved) speed-up of l2 at 0.5 on the demo, measured quiet and then
with a busy process on every core, must stay within 25 % of the quiet figure.

Run: .venv/bin/python benchmarks/latency_under_load.py [--model demo:resnet] [--ratio 0.5]
For contrast it also prints the old way: the original timed on the quiet machine, the pruned model
minutes later on the loaded one, each with torch's default threads.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data import load_dataset  # noqa: E402
from engine.events import result_of  # noqa: E402
from engine.timing import (PairedSpeedup, machine_load, measure_latency, measure_paired_speedup,  # noqa: E402
                            usable_cores)
from engine.models import DemoResNet, ModelBundle, load_model  # noqa: E402
from engine.config import PruneConfig  # noqa: E402
from engine.pruning import run_pruning  # noqa: E402

TOLERANCE = 0.25


def _spin() -> None:
    """A busy process: pure Python, no torch, until terminated."""
    n = 0
    while True:
        n += 1


def load(src: str) -> ModelBundle:
    """The demo model, or an untrained one of the same architecture when weights are missing."""
    try:
        return load_model(src)
    except Exception as exc:  # still useful on a fresh checkout
        print(f"note: {exc}; using an untrained DemoResNet")
        return ModelBundle(DemoResNet().eval(), "untrained", "demo:resnet", (1, 28, 28), 10)


def show(label: str, p: PairedSpeedup) -> None:
    """One line per batch size, then the machine's state and the note."""
    for r in p.batches:
        print(f"{label}: batch {r.batch}: speed-up {r.median:.3f}x (interval {r.low:.3f}-{r.high:.3f}, "
              f"{r.rounds} rounds), original {r.a_ms:.3f} ms, pruned {r.b_ms:.3f} ms, "
              f"spread {r.a_spread:.0%}/{r.b_spread:.0%}")
    s, e = p.load_start, p.load_end
    print(f"{label}: {p.threads} threads; other work on {s.other_busy:.1f}/{e.other_busy:.1f} of {s.cores} cores "
          f"(start/end), load average {s.load_avg}/{e.load_avg}; "
          + (p.note if p.noisy else "quiet by our measure"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="demo:resnet")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs-per-round", type=int, default=5)
    parser.add_argument("--threads", type=int, help="default: what other work leaves free")
    parser.add_argument("--busy", type=int, default=usable_cores(), help="busy processes (default: one per core)")
    args = parser.parse_args()

    bundle = load(args.model)
    data = load_dataset("fashion-mnist")
    shape = bundle.input_shape or data.input_shape
    cfg = PruneConfig(method="l2", pruning_ratio=args.ratio, eval_limit=512, measure_speed=False)
    result = result_of(run_pruning(bundle, data, cfg))
    done = result.run
    original, pruned = bundle.model.eval(), result.bundle.model.eval()
    print(f"l2 at {args.ratio}: MACs {done.speedups()['macs']:.2f}x lower, top-1 {done.before.top1:.2%} -> "
          f"{done.after.top1:.2%}")
    sizes = (1, args.batch_size)
    measure = dict(batch_sizes=sizes, rounds=args.rounds, runs_per_round=args.runs_per_round, threads=args.threads,
                   names=("original", "pruned"))

    old_threads = torch.get_num_threads()
    print(f"machine before the quiet measurement: {machine_load()}")
    quiet = measure_paired_speedup(original, pruned, shape, **measure)
    show("quiet ", quiet)
    separate_before = measure_latency(original, shape, sizes, threads=old_threads)

    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    workers = [ctx.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for w in workers:
        w.start()
    try:
        time.sleep(1.0)  # let them settle on every core
        print(f"started {args.busy} busy processes; machine now: {machine_load()}")
        loaded = measure_paired_speedup(original, pruned, shape, **measure)
        show("loaded", loaded)
        separate_after = measure_latency(pruned, shape, sizes, threads=old_threads)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.join()

    ok = True
    for q, ld in zip(quiet.batches, loaded.batches):
        change = ld.median / q.median - 1
        within = abs(change) <= TOLERANCE
        ok &= within
        b = str(q.batch)
        old = separate_before[b]["median"] / separate_after[b]["median"]
        print(f"SUMMARY batch {q.batch}: paired speed-up quiet {q.median:.3f}x, loaded {ld.median:.3f}x, "
              f"loaded/quiet {ld.median / q.median:.3f} ({change:+.1%}, target within {TOLERANCE:.0%}) "
              f"{'PASS' if within else 'FAIL'}; the old way (original quiet, pruned loaded, {old_threads} threads): "
              f"{old:.3f}x")
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
