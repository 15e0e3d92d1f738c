"""The runtimes a model is timed on: PyTorch itself, or onnxruntime on its ONNX export.

An onnxruntime session is wrapped as a module (`OrtModel`), so every timing loop of engine.timing (paired
rounds, comparison rounds) times it exactly as it times a PyTorch model.
"""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from engine.data import Shape
from engine.errors import Cancelled, UserError, first_line

from engine.config import RUNTIMES

TORCH, ONNXRUNTIME = RUNTIMES
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def check_runtime(runtime: str, device: str) -> None:
    """Refuse a runtime or device this machine cannot run, in one line, before any work."""
    if runtime not in RUNTIMES:
        raise UserError(f"unknown runtime {runtime!r}; pick one of {', '.join(RUNTIMES)}")
    if device not in ORT_PROVIDERS:
        raise UserError(f"unknown device {device!r}; pick cpu or cuda")
    if device == "cuda" and runtime == TORCH and not torch.cuda.is_available():
        raise UserError("--device cuda: PyTorch sees no CUDA GPU on this machine; use --device cpu")
    if runtime == ONNXRUNTIME:
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("--runtime onnxruntime: onnxruntime is not installed (pip install onnxruntime); "
                            "or use --runtime torch") from None
        if ORT_PROVIDERS[device] not in ort.get_available_providers():
            raise UserError(f"--runtime onnxruntime --device {device}: this onnxruntime has no "
                            f"{ORT_PROVIDERS[device]} (it has {', '.join(ort.get_available_providers())}); "
                            "use --device cpu or --runtime torch")


def ort_session(source, threads: int | None, device: str = "cpu", basic: bool = False,
                profile_prefix: str | None = None):
    """An onnxruntime session on `source` (a path or serialised bytes) with a fixed intra-op thread count.
    `basic` keeps graph optimisation to the level where each node keeps its layer's name (the per-layer
    profile needs that; deployment uses every optimisation).

    Its threads sleep between runs instead of spinning: every session here is timed beside another (the
    original and the pruned model in paired rounds, a layer at eight widths), and a spinning pool kept both
    cores of a 2-core machine busy while the other session ran (the demo's paired ratio at batch 64: 95 %
    interval 0.40-0.74 spinning, 0.39-0.42 not). A lone deployed session that spins may be faster at
    batch 1 than these figures."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if basic:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(source if isinstance(source, bytes) else str(source), options,
                                providers=[ORT_PROVIDERS[device]])


class ExportFailed(UserError):
    """The model has no ONNX form, so onnxruntime cannot time it."""


class OrtModel(nn.Module):
    """An onnxruntime session as a module: timing code calls it like a PyTorch model."""

    def __init__(self, session) -> None:
        super().__init__()
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: np.ascontiguousarray(x.detach().cpu().numpy())})[0]
        return torch.from_numpy(out)


@contextmanager
def onnx_file(model: nn.Module, input_shape: Shape) -> Iterator[Path]:
    """`model` exported to ONNX (as deployed: BatchNorm folded) in a temporary folder removed afterwards."""
    from engine.models.saving import export_onnx

    folder = Path(tempfile.mkdtemp(prefix="prunelab-ort-"))
    try:
        try:
            path = export_onnx(copy_on_cpu(model), input_shape, folder / "model.onnx")
        except (UserError, Cancelled):
            raise
        except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways; said in one line
            raise ExportFailed(f"the model does not export to ONNX ({first_line(exc, with_type=True, limit=160)}), "
                               "so onnxruntime cannot run it; use --runtime torch") from exc
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def copy_on_cpu(model: nn.Module) -> nn.Module:
    """The model itself when it is on the CPU, else a CPU copy (the exporter traces on the CPU)."""
    first = next(model.parameters(), None)
    if first is None or first.device.type == "cpu":
        return model
    import copy

    return copy.deepcopy(model).cpu()


@contextmanager
def on_runtime(model: nn.Module, input_shape: Shape, runtime: str, threads: int | None,
               device: str = "cpu") -> Iterator[nn.Module]:
    """`model` as `runtime` runs it: the model itself for torch, an OrtModel of its export for onnxruntime."""
    if runtime == TORCH:
        yield model
        return
    with onnx_file(model, input_shape) as path:
        yield OrtModel(ort_session(path, threads, device))
