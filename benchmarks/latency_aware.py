"""A measured latency target, uniform against latency-aware allocation (#27).

For each model, runtime and batch size: ask for 0.5× the original's latency, once with the uniform allocation
and once with the latency-aware one, with BatchNorm re-estimation as the only recovery. By default the target
is a speed-up (`--target-latency-speedup 2`): the search and the end's check both read the pruned copy against
the original in the same interleaved rounds. With `--target ms` it is `--target-latency` at 0.5× the
original's time measured alone before the run (a load that changes after that moves the target). Per row: the target, the pruned model's latency measured against the original in paired
rounds (median and 95 % interval), whether it lands within ±10 % of the target, MACs, top-1 after the
BatchNorm re-estimation (with its interval; untrained torchvision models are at chance, so their top-1 is
not a result) and the efficiency (latency gain ÷ MACs gain). With --same-macs, each latency-aware result is
also matched by a uniform run at the same MACs (`--target-speedup`), timed paired against the original.

"Within ±10 %" is judged twice: the pruned model's time in the end's rounds against the target in ms (with a
speed-up target: the original's time as the search read it, times the factor), and the paired ratio (the
pruned model's time over the original's in the end's interleaved rounds, against the factor), which load hits
on both sides alike.

With --recheck K, each row's pruned copy is timed K more times against the original by the end's protocol,
back to back: how far one fixed copy's reading moves on this machine, so a row outside ±10 % can be told
apart as a choice of channels that lands wrong (every re-check outside) or a reading the machine moves
across the band (re-checks on both sides).

The machine's load average is printed with every row: figures from a busy machine are noisy, say so.
With --json FILE, rows already in FILE are kept and skipped (--resume after a stop), and FILE is rewritten
after every row.

Run: .venv/bin/python benchmarks/latency_aware.py [--models demo:resnet ...] [--runtimes torch onnxruntime]
     [--batches 64 1] [--threads 2] [--eval-limit 2000] [--target speedup|ms] [--same-macs] [--recheck K]
     [--json FILE [--resume]]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import PruneConfig  # noqa: E402
from engine.events import drain, result_of  # noqa: E402
from engine.inputs import load_inputs  # noqa: E402
from engine.latency_target import iter_onnxruntime_speedup, latency_ms  # noqa: E402
from engine.pruning import RunDone, run_pruning  # noqa: E402
from engine.timing import measure_paired_speedup  # noqa: E402

DEFAULT_MODELS = ("demo:resnet", "demo:vgg", "torchvision:resnet18", "torchvision:mobilenet_v2")
SHAPE_64 = (3, 64, 64)  # torchvision models at 64×64 (Fashion-MNIST converted to 3 channels)


def load(model: str):
    """The model and Fashion-MNIST fitted to it (torchvision ones at 64×64 with random weights)."""
    shape = SHAPE_64 if model.startswith("torchvision:") else None
    inputs = load_inputs(model, "fashion-mnist", input_shape=shape)
    return inputs.bundle, inputs.data


def prune(bundle, data, args, keep=None, **options) -> RunDone:
    """The run's RunDone; with `keep` (a dict) also the pruned model under keep["model"]."""
    kw = dict(method=args.method, bn_recalibrate=True, bn_batches=args.bn_batches, measure_speed=False,
              eval_limit=args.eval_limit, threads=args.threads, pruning_ratio=None)
    if args.round_to is not None:
        kw["round_to"] = args.round_to
    kw.update(options)
    pruned = result_of(run_pruning(bundle, data, PruneConfig(**kw)))
    if keep is not None:
        keep["model"] = pruned.bundle.model
    return pruned.run


def recheck(bundle, pruned, runtime: str, batch: int, threads: int, times: int) -> list[float]:
    """The pruned model's paired ratio (its time over the original's) timed `times` more times, back to back,
    as the end's check times it: how far one fixed copy's reading moves on this machine."""
    original = bundle.model.eval()
    ratios = []
    for _ in range(times):
        if runtime == "onnxruntime":
            j = drain(iter_onnxruntime_speedup(original, pruned, bundle.input_shape, (batch,), "cpu", threads))
            speedup = j["per_batch"][str(batch)]["median"] if j else None
        else:
            speedup = measure_paired_speedup(original, pruned, bundle.input_shape, batch_sizes=(batch,),
                                             threads=threads).batches[0].median
        if speedup:
            ratios.append(round(1.0 / speedup, 4))
    return ratios


def recheck_words(r: dict) -> str:
    ratios, f = r["recheck_ratios"], r["factor"]
    inside = sum(abs(x - f) <= 0.1 * f for x in ratios)
    return (f"the same copy re-timed {len(ratios)} times: ratio {min(ratios):.3f}–{max(ratios):.3f} "
            f"(median {statistics.median(ratios):.3f}), within ±10 % in {inside} of {len(ratios)}")


def same_macs(bundle, data, args, runtime: str, batch: int, done: RunDone) -> dict:
    """Uniform pruning at the MACs the latency-aware run reached, timed paired against the original."""
    twin = prune(bundle, data, args, target_speedup=done.before.macs / done.after.macs, batch_size=batch,
                 measure_speed=True, latency_repeats=12)
    paired = twin.onnxruntime if runtime == "onnxruntime" else twin.paired
    p = paired["per_batch"][str(batch)] if paired else None
    return {"macs_m": round(twin.after.macs / 1e6, 3), "top1": round(twin.after.top1, 4),
            "speedup": p and p["median"], "low": p and p["low"], "high": p and p["high"]}


def same_macs_words(u: dict) -> str:
    if u["speedup"] is None:
        return "uniform at the same MACs: latency not measured"
    return (f"uniform at the same MACs ({u['macs_m']:.2f} M): {u['speedup']:.2f}x faster "
            f"({u['low']:.2f}–{u['high']:.2f}), top-1 {100 * u['top1']:.2f} %")


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def row_of(model: str, runtime: str, batch: int, allocation: str, original_ms: float | None, done: RunDone,
           factor: float) -> dict:
    t = done.latency_target or {}
    if original_ms is None:  # a speed-up target: the original as the end's paired rounds timed it
        original_ms = t.get("original_measured_ms") or 0.0
    b, a = done.before, done.after
    macs_gain = b.macs / a.macs if a.macs else 0.0
    latency_gain = (t.get("original_measured_ms") or 0.0) / t["measured_ms"] if t.get("measured_ms") else 0.0
    ci = a.interval("top1") if hasattr(a, "interval") else None
    return {"model": model, "runtime": runtime, "batch": batch, "allocation": allocation,
            "target_kind": "speedup" if t.get("speedup_target") else "ms",
            "original_ms": round(original_ms, 3), "target_ms": t.get("target_ms"),
            "measured_ms": t.get("measured_ms"), "low": t.get("low"), "high": t.get("high"),
            "within_10": abs(t["measured_ms"] - t["target_ms"]) <= 0.1 * t["target_ms"] if t.get("measured_ms") else None,
            "met": t.get("met"), "reachable": t.get("reachable"), "factor": factor,
            "paired_ratio": round(1.0 / t["speedup"], 4) if t.get("speedup") else None,
            "paired_ratio_ci": [round(1.0 / t["speedup_high"], 4), round(1.0 / t["speedup_low"], 4)]
            if t.get("speedup_low") else None,
            "within_10_paired": abs(1.0 / t["speedup"] - factor) <= 0.1 * factor if t.get("speedup") else None,
            "trials": len(t.get("trials") or ()), "rounds": t.get("rounds"), "search_ms": t.get("trial_ms"),
            "search_ratio": round(t["trial_ms"] / t["original_ms"], 4) if t.get("trial_ms") else None,
            "search": t.get("trials"),  # (knob, ms) of every copy the search timed
            "macs_m": round(a.macs / 1e6, 3), "macs_gain": round(macs_gain, 3), "latency_gain": round(latency_gain, 3),
            "efficiency": round(latency_gain / macs_gain, 3) if macs_gain else None,
            "top1": round(a.top1, 4), "top1_ci": [round(v, 4) for v in ci] if ci else None,
            "images": a.samples, "seconds": round(done.seconds, 1), "load_avg": load_avg(),
            "notes": [n for n in done.notes if "target" in n or "landed" in n or "channels back" in n]}


def show(r: dict) -> None:
    ci = f"{100 * r['top1_ci'][0]:.1f}–{100 * r['top1_ci'][1]:.1f}" if r.get("top1_ci") else "-"
    measured = (f"{r['measured_ms']:.3f} ({r['low']:.3f}–{r['high']:.3f})" if r.get("measured_ms") is not None
                else "not measured")
    paired = f"{r['paired_ratio']:.3f}" if r.get("paired_ratio") is not None else "-"
    print(f"{r['model']:<24} {r['runtime']:<11} {r['batch']:>5} {r['allocation']:<8} {r['original_ms']:>9.3f} "
          f"{r['target_ms']:>9.3f} {measured:>28} {str(r['within_10']):>6} {paired:>6} "
          f"{str(r.get('within_10_paired')):>6} {r['macs_m']:>8.2f} "
          f"{100 * r['top1']:>6.2f} {ci:>11} {r['efficiency'] or 0:>5.2f} {r['load_avg']:>5}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 1])
    parser.add_argument("--allocations", nargs="+", default=["uniform", "latency"])
    parser.add_argument("--factor", type=float, default=0.5, help="target = factor × the original's latency")
    parser.add_argument("--target", choices=("speedup", "ms"), default="speedup",
                        help="ask for 1/factor times faster (paired), or for factor × the original's lone time in ms")
    parser.add_argument("--method", default="l2")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-limit", type=int, default=2000)
    parser.add_argument("--bn-batches", type=int, default=20)
    parser.add_argument("--round-to", type=int, default=None,
                        help="channel rounding of the uniform allocation (default: the run's own); 1 gives exact "
                             "counts, so a small model's latency moves in small steps")
    parser.add_argument("--same-macs", action="store_true",
                        help="also run uniform at the MACs each latency-aware result reached (paired speed-up)")
    parser.add_argument("--recheck", type=int, default=0, metavar="K",
                        help="re-time each row's pruned copy K more times against the original by the end's "
                             "protocol: how much one fixed copy's reading moves on this machine")
    parser.add_argument("--json", help="write the rows as JSON (after every row)")
    parser.add_argument("--resume", action="store_true", help="keep the rows already in --json and skip them")
    args = parser.parse_args()
    out = Path(args.json) if args.json else None
    rows = json.loads(out.read_text()) if args.resume and out and out.exists() else []
    def key(r: dict) -> tuple:  # rows written before the target kind and factor were recorded: ms at 0.5
        return r["model"], r["runtime"], r["batch"], r["allocation"], r.get("target_kind", "ms"), r.get("factor", 0.5)

    done_keys = {key(r) for r in rows}
    torch.set_num_threads(args.threads)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {args.method}, BN re-estimation ({args.bn_batches} batches), "
          f"{args.threads} threads, top-1 on {args.eval_limit} test images, "
          f"round-to {args.round_to if args.round_to is not None else 'as the run'}, load average at start {load_avg()}")
    print(f"{'model':<24} {'runtime':<11} {'batch':>5} {'alloc':<8} {'orig ms':>9} {'target':>9} "
          f"{'measured ms (95 % interval)':>28} {'±10%':>6} {'paired':>6} {'±10%':>6} {'MACs M':>8} {'top-1':>6} {'top-1 CI':>11} "
          f"{'eff.':>5} {'load':>5}")
    for model in args.models:
        bundle, data = load(model)
        shape = bundle.input_shape
        for runtime in args.runtimes:
            for batch in args.batches:
                todo = [a for a in args.allocations
                        if (model, runtime, batch, a, args.target, args.factor) not in done_keys]
                if not todo:
                    continue
                original_ms, target = None, {"target_latency_speedup": 1.0 / args.factor}
                if args.target == "ms":
                    # the median of three timings: one alone (five rounds) once said 2.6 ms where the run's own
                    # rounds found 1.0, so the target was met by the unpruned model
                    original_ms = statistics.median(latency_ms(bundle.model.eval(), shape, batch, runtime, "cpu",
                                                               args.threads, None) for _ in range(3))
                    target = {"target_latency": args.factor * original_ms}
                for allocation in todo:
                    keep = {}
                    done = prune(bundle, data, args, keep=keep, runtime=runtime, allocation=allocation,
                                 batch_size=batch, **target)
                    row = row_of(model, runtime, batch, allocation, original_ms, done, args.factor)
                    rows.append(row)
                    show(row)
                    if args.recheck and row.get("paired_ratio"):
                        row["recheck_ratios"] = recheck(bundle, keep["model"], runtime, batch, args.threads,
                                                        args.recheck)
                        if row["recheck_ratios"]:
                            print(f"    {recheck_words(row)}", flush=True)
                    del keep
                    if args.same_macs and allocation == "latency" and done.after.macs < done.before.macs:
                        row["same_macs_uniform"] = same_macs(bundle, data, args, runtime, batch, done)
                        print(f"    {same_macs_words(row['same_macs_uniform'])}", flush=True)
                    if out:
                        out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
