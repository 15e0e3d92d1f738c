"""Evaluation throughput: our engine (evaluate_quality over data.loader) against a bare PyTorch loop.

The bare loop runs the same model over tensors built beforehand from the same loader, so it measures
the forward passes alone; the engine also converts and normalises each batch on the fly, computes
top-5 and the confusion matrix, and yields progress events. Target: engine ≥ 0.9 × bare loop.

    .venv/bin/python benchmarks/evaluate.py [--limit N] [--batch-size N] [--repeats N] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.data import load_dataset  # noqa: E402
from engine.metrics import evaluate_quality  # noqa: E402
from engine.models import DemoResNet, demo_path, load_model  # noqa: E402

TARGET = 0.9


def engine_pass(model: torch.nn.Module, data, batch_size: int, limit: int) -> tuple[float, float]:
    """(seconds, top-1) of one evaluate_quality run over the loader."""
    start = time.perf_counter()
    result = None
    for result in evaluate_quality(model, data, "test", "cpu", batch_size, limit):
        pass
    return time.perf_counter() - start, float(result["top1"])


def bare_pass(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    """(seconds, top-1) of the plainest loop: forward, argmax, count."""
    start = time.perf_counter()
    correct = seen = 0
    with torch.inference_mode():
        for x, y in batches:
            correct += int((model(x).argmax(1) == y).sum())
            seen += len(y)
    return time.perf_counter() - start, correct / max(1, seen)


def main(argv: list[str] | None = None) -> int:
    """Run both loops `repeats` times, interleaved, and print images/s and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=2000, help="test images per pass (default 2000)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_dataset("fashion-mnist")
    if demo_path("resnet").exists():
        bundle = load_model("demo:resnet")
        model, which = bundle.model, f"demo:resnet ({demo_path('resnet')})"
        data = data.adapted(bundle.input_shape, bundle.norm)
    else:
        torch.manual_seed(0)  # the same untrained weights every run
        model, which = DemoResNet().eval(), "untrained DemoResNet (resources/models/demo_resnet.pt not found)"
    model.eval()
    limit = min(args.limit, data.split_size("test"))
    batches = list(data.loader("test", args.batch_size, limit=limit))  # the same tensors the engine makes

    print("PruneLab evaluation benchmark")
    print(f"model:   {which}")
    print(f"data:    {data.name} test split, first {limit} images, batch {args.batch_size}, "
          f"cpu, {torch.get_num_threads()} threads, median of {args.repeats}")

    bare_pass(model, batches[:2])  # warm-up: first-call allocations and kernel selection
    engine_times, bare_times, tops = [], [], set()
    for _ in range(args.repeats):  # interleaved, so background load hits both alike
        t, top1 = engine_pass(model, data, args.batch_size, limit)
        engine_times.append(t)
        tops.add(round(top1, 6))
        t, top1 = bare_pass(model, batches)
        bare_times.append(t)
        tops.add(round(top1, 6))
    if len(tops) != 1:
        print(f"error: the loops disagree on top-1 ({sorted(tops)}); they did not see the same data",
              file=sys.stderr)
        return 1
    engine_ips = limit / statistics.median(engine_times)
    bare_ips = limit / statistics.median(bare_times)
    ratio = engine_ips / bare_ips
    print(f"engine:  {engine_ips:9.1f} images/s   (evaluate_quality over data.loader; "
          f"runs {', '.join(f'{t:.2f}' for t in engine_times)} s)")
    print(f"bare:    {bare_ips:9.1f} images/s   (model over pre-built tensors; "
          f"runs {', '.join(f'{t:.2f}' for t in bare_times)} s)")
    verdict = "OK" if ratio >= TARGET else "BELOW TARGET"
    print(f"SUMMARY evaluate: engine {engine_ips:.0f} img/s vs bare {bare_ips:.0f} img/s, "
          f"ratio {ratio:.3f} (target >= {TARGET}) {verdict}; top-1 {tops.pop():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
