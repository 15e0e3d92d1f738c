"""Latency repeatability: the same model measured several times must agree within 10 %.

Run on a quiet machine: .venv/bin/python benchmarks/latency.py [--model demo:resnet] [--rounds 5]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.timing import measure_latency  # noqa: E402
from engine.models import DemoResNet, ModelBundle, load_model  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="demo:resnet")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="default: torch's")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    try:
        bundle = load_model(args.model)
    except Exception as exc:  # still useful on a fresh checkout
        print(f"note: {exc}; using an untrained DemoResNet")
        bundle = ModelBundle(DemoResNet().eval(), "untrained", "demo:resnet", (1, 28, 28), 10)
    shape = bundle.input_shape or (1, 28, 28)
    rows = {str(b): [] for b in (1, args.batch_size)}
    for r in range(args.rounds):
        result = measure_latency(bundle.model, shape, (1, args.batch_size), threads=args.threads)
        for key in rows:
            rows[key].append(result[key]["median"])
        print(f"round {r + 1}: " + ", ".join(f"batch {k}: {result[k]['median']:.3f} ms (p95 "
                                             f"{result[k]['p95']:.3f}, {result[k]['runs']} runs, {result[k]['threads']} threads)"
                                             for k in rows))
    for key, values in rows.items():
        spread = max(values) / min(values) - 1
        verdict = "OK" if spread <= 0.10 else "above target (is the machine busy?)"
        print(f"SUMMARY latency batch {key}: medians {min(values):.3f}-{max(values):.3f} ms over {args.rounds} "
              f"rounds, spread {spread:.1%} (target <= 10 %) {verdict}")


if __name__ == "__main__":
    main()
