"""How long the Teach tab waits for a layer's scores: every structured criterion on a 512-channel layer.

    .venv/bin/python benchmarks/explain_speed.py [--runs 5] [--layer layer4.1.conv2] [--shape 3,224,224]

An untrained torchvision ResNet-18 (no download) fitted to Fashion-MNIST converted to the given input
shape (grey expanded to RGB, resized like the app does), scored the way the Teach tab's Explain job
scores it (`engine.explain`: one traced session shared by the criteria, layer scope, the default options).
Per criterion, in interleaved runs (the order rotates each run, so load drifts hit every criterion alike):

- cold: nothing cached (copy, trace, calibrate, score): the first Explain of a model;
- warm: the session was traced by another criterion's call first (what the Explain job reuses);
- again: the same criterion a second time (calibration gradients kept): another Explain of the layer, e.g.
  after changing the method in the Prune panel.

Also the whole Explain job (`explain_layer`: every criterion and the couplings), cold and again with another
method. Medians over the runs; the 1-minute load average is printed before and after, since other work on
the machine slows every figure.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.config import PruneConfig  # noqa: E402
from engine.data import load_dataset  # noqa: E402
from engine.events import result_of  # noqa: E402
from engine.explain import explain_layer, iter_channel_scores  # noqa: E402
from engine.explain import scores as explain_scores  # noqa: E402
from engine.inputs import model_for_data  # noqa: E402
from engine.methods import STRUCTURED, all_methods  # noqa: E402


def timed(fn) -> float:
    """Seconds one call of `fn` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    """Time every criterion cold, warm and again; print medians and the load average."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--layer", default="layer4.1.conv2")
    parser.add_argument("--shape", default="3,224,224", help="C,H,W the model takes")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    data = load_dataset("fashion-mnist").adapted(shape)
    bundle = model_for_data("torchvision:resnet18", data, input_shape=shape)
    cfg = PruneConfig()  # the Prune panel's defaults: layer scope, ratio 0.5, 4 calibration batches
    methods = [m.name for m in all_methods(STRUCTURED)]

    def score(method: str) -> None:
        result_of(iter_channel_scores(bundle.model, args.layer, method, data, bundle.input_shape,
                                      bundle.num_classes, replace(cfg, method=method)))

    def forget() -> None:
        explain_scores._LAST.clear()

    load_before = os.getloadavg()[0]
    print(f"torch threads {__import__('torch').get_num_threads()}, cores {os.cpu_count()}, layer {args.layer}, "
          f"input {shape}, load average (1 min) {load_before:.2f}", flush=True)
    times: dict[str, dict[str, list[float]]] = {m: {"cold": [], "warm": [], "again": []} for m in methods}
    whole: dict[str, list[float]] = {"cold": [], "again": []}
    for run in range(args.runs):
        order = methods[run % len(methods):] + methods[:run % len(methods)]
        for i, method in enumerate(order):
            forget()
            times[method]["cold"].append(timed(lambda: score(method)))
            forget()
            score(order[i - 1])  # another criterion traces the session
            times[method]["warm"].append(timed(lambda: score(method)))
            times[method]["again"].append(timed(lambda: score(method)))
        forget()
        whole["cold"].append(timed(lambda: result_of(explain_layer(
            bundle.model, args.layer, replace(cfg, method="l2"), data, bundle.input_shape, bundle.num_classes)))
        )
        whole["again"].append(timed(lambda: result_of(explain_layer(
            bundle.model, args.layer, replace(cfg, method="taylor"), data, bundle.input_shape, bundle.num_classes)))
        )
        print(f"run {run + 1} of {args.runs} done, load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"\nmedian of {args.runs} runs, seconds")
    print(f"{'criterion':<10} {'cold':>8} {'warm':>8} {'again':>8}")
    for method in methods:
        row = [statistics.median(times[method][k]) for k in ("cold", "warm", "again")]
        print(f"{method:<10} " + " ".join(f"{v:8.3f}" for v in row))
    print(f"{'Explain':<10} {statistics.median(whole['cold']):8.3f} {'':>8} {statistics.median(whole['again']):8.3f}"
          "   (every criterion and the couplings)")
    print(f"load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")


if __name__ == "__main__":
    main()
