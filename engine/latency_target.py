"""Pruning for the machine it runs on: the onnxruntime figures of a run, and a measured latency target.

A latency target is met by measurement, not by a proxy: candidate models are pruned on copies and timed
on the runtime the user named, and the run's end checks the result against the original in paired rounds.
"""
from __future__ import annotations

from typing import Iterator

import torch.nn as nn

from engine.data import Shape
from engine.events import CancelToken, relay
from engine.runtimes import ExportFailed, OrtModel, check_runtime, onnx_file, ort_session
from engine.timing import default_threads, iter_paired_speedup


def iter_onnxruntime_speedup(original: nn.Module, pruned: nn.Module, input_shape: Shape, batch_sizes: tuple[int, ...],
                             device: str = "cpu", threads: int | None = None, rounds: int = 9,
                             runs_per_round: int = 3, notes: list[str] | None = None,
                             cancel: CancelToken | None = None) -> Iterator:
    """The original and the pruned model exported to ONNX and timed interleaved in onnxruntime (what most
    users deploy); yields Progress, then the PairedSpeedup's JSON, or None with a note in `notes` when
    either model does not export or onnxruntime cannot run on `device`."""
    notes = notes if notes is not None else []
    try:
        check_runtime("onnxruntime", device)
    except Exception as exc:  # noqa: BLE001 - a missing runtime is a note here, not a failed run
        notes.append(f"onnxruntime latency not measured: {exc}")
        yield None
        return
    if device == "cpu" and not threads:
        threads = default_threads()
    try:
        with onnx_file(original, input_shape) as path_a, onnx_file(pruned, input_shape) as path_b:
            a = OrtModel(ort_session(path_a, threads, device))
            b = OrtModel(ort_session(path_b, threads, device))
            done = yield from relay(iter_paired_speedup(a, b, input_shape, batch_sizes, "cpu", rounds=rounds,
                                                        runs_per_round=runs_per_round, threads=threads,
                                                        names=("original", "pruned"), cancel=cancel),
                                    "onnxruntime")
    except ExportFailed as exc:
        notes.append(f"onnxruntime latency not measured: {exc}")
        yield None
        return
    out = done.to_json()
    out["runtime"] = "onnxruntime"
    out["device"] = device
    yield out
