"""The example plan run here and on a Ray instance of this machine's cores: both wall times and Ray's overhead.

    python benchmarks/ray_sweep.py                       # the whole examples/plan.toml
    python benchmarks/ray_sweep.py --methods l1,l2 --ratios 0.3,0.5 --no-speed --finetune 10 --eval-limit 1000

Ray's overhead per run is the time from a run's submission to its result arriving at the driver, less the
run's own time measured on the worker (connecting, the model through the object store, worker start-up,
the dataset loaded on the worker, the result and model files sent back). The target is under 2 s a run.
Each executor writes to its own fresh store, so nothing is skipped.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.experiments import (PlanDone, PlanProgress, PlanRunDone, PlanRunStarted, ResultStore,  # noqa: E402
                                load_inputs, load_plan, run_plan)


def sweep(plan, store: Path, bundle, data) -> tuple[float, PlanDone, list[float]]:
    """Run the plan; wall seconds, the PlanDone and, per run, submission-to-arrival less the run's own time."""
    start = time.perf_counter()
    sent: dict[str, float] = {}
    overhead = []
    done = None
    for ev in run_plan(plan, ResultStore(store), bundle=bundle, data=data):
        if isinstance(ev, PlanProgress) and not isinstance(ev, PlanRunStarted) and ev.index:
            sent[ev.key] = time.perf_counter()
        elif isinstance(ev, PlanRunDone) and not ev.skipped:
            overhead.append(time.perf_counter() - sent[ev.result.key] - ev.result.seconds)
        elif isinstance(ev, PlanDone):
            done = ev
    return time.perf_counter() - start, done, overhead


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", default=str(ROOT / "examples" / "plan.toml"))
    p.add_argument("--methods", help="only these methods (comma-separated)")
    p.add_argument("--ratios", help="only these ratios (comma-separated)")
    p.add_argument("--finetune", type=int, help="fine-tuning batches instead of the plan's")
    p.add_argument("--no-speed", action="store_true", help="skip latency measurements (much quicker)")
    p.add_argument("--eval-limit", type=int, help="evaluate on the first N test images (default: the plan's)")
    args = p.parse_args()
    plan = load_plan(args.plan)
    if args.methods:
        plan.methods = tuple(args.methods.split(","))
    if args.ratios:
        plan.ratios = tuple(float(r) for r in args.ratios.split(","))
    if args.no_speed:
        plan.prune = dict(plan.prune, measure_speed=False)
    if args.eval_limit:
        plan.prune = dict(plan.prune, eval_limit=args.eval_limit)
    if args.finetune is not None:
        plan.recoveries = tuple(type(r)(r.name, dict(r.options, finetune_batches=args.finetune))
                                for r in plan.recoveries)
    plan.save_models = True
    runs = len(plan.configs())
    cores = os.cpu_count() or 1
    bundle, data = load_inputs(plan)
    print(f"plan {plan.name}: {runs} runs of {plan.model} on {plan.data}; {cores} cores", flush=True)
    import torch

    # Ray gives each run cpus_per_run threads (OMP_NUM_THREADS); the local sweep gets as many, since fine-tuning's
    # float sums depend on the thread count and the figures are compared below.
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        plan.executor = "local"
        local_s, local_done, _ = sweep(plan, Path(tmp) / "local" / "s.sqlite", bundle, data)
        print(f"local (1 thread): {local_s:.1f} s ({local_s / runs:.1f} s a run, one at a time)", flush=True)
        plan.executor, plan.address, plan.cpus_per_run = "ray", None, 1.0
        ray_s, ray_done, overhead = sweep(plan, Path(tmp) / "ray" / "s.sqlite", bundle, data)
        same = all((a.metrics.top1, a.metrics.params, a.metrics.macs) == (b.metrics.top1, b.metrics.params,
                                                                        b.metrics.macs)
                   for a, b in zip(sorted(local_done.results, key=lambda r: r.key),
                                   sorted(ray_done.results, key=lambda r: r.key)))
    print(f"ray (a local instance, {cores} CPUs, 1 per run): {ray_s:.1f} s, {local_s / ray_s:.2f}× faster")
    slots = min(cores, runs)  # the first wave also starts Ray's worker processes (each imports PyTorch)
    later = overhead[slots:] or overhead
    print(f"Ray's overhead per run (submission to result, less the run itself; target < 2 s): "
          f"{', '.join(f'{o:.2f}' for o in overhead)} s in finishing order; median {statistics.median(overhead):.2f} s, "
          f"{statistics.median(later):.2f} s once the workers are up")
    print(f"same accuracy, parameters and MACs on both executors: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
