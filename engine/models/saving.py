"""Writing models: PruneLab's own files (tensors, numbers and strings only), whole modules, ONNX."""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from engine.data import Shape
from engine.errors import UserError
from engine.outputs import atomic_files

from .bundle import ModelBundle
from .weights import pruned_state

FORMAT = "prunelab-model"
FORMAT_VERSION = 1


def _plain(obj: Any) -> Any:
    """JSON-like copy (tuples to lists) so the file loads with weights_only=True."""
    return json.loads(json.dumps(obj, default=str))


def save_model(bundle: ModelBundle, path: str | Path, pruned: bool = False) -> Path:
    """Write a model file that loads with weights_only=True (architecture name + tensors + metadata)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if bundle.arch in ("module", "torchscript"):
        raise UserError("models loaded from pickled modules or TorchScript are saved with save_full_module")
    state = pruned_state(bundle.model) if pruned else bundle.model.state_dict()
    payload = {
        "format": FORMAT, "version": FORMAT_VERSION, "arch": bundle.arch,
        "arch_kwargs": _plain(bundle.arch_kwargs), "pruned": bool(pruned),
        "input_shape": list(bundle.input_shape) if bundle.input_shape else None,
        "num_classes": bundle.num_classes,
        "norm": {"mean": list(bundle.norm.mean), "std": list(bundle.norm.std)} if bundle.norm else None,
        "class_names": list(bundle.class_names) if bundle.class_names else None,
        "meta": _plain(bundle.meta), "state": state,
    }
    with atomic_files(path) as (tmp,):  # a crash never leaves half a model file
        torch.save(payload, tmp)
    return path


def save_full_module(bundle: ModelBundle, path: str | Path) -> Path:
    """Pickle the whole module (loads anywhere our code is importable, but only with trust)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = bundle.model
    model.prunelab_meta = _plain(bundle.meta)  # travels with the module
    torch.save(model, path)
    return path


def export_onnx(model: nn.Module, input_shape: Shape, path: str | Path, opset: int = 17,
                keep_batchnorm: bool = False) -> Path:
    """Export to ONNX with a dynamic batch axis and check the graph with onnx.checker.

    The exporter folds each BatchNorm into the convolution before it (right for deployment); the graph
    a student reads beside the layer table keeps them (`keep_batchnorm`), so every layer shows."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    dummy = torch.zeros(1, *input_shape)
    buf = io.BytesIO()
    # The TorchScript-based exporter is deprecated but needs no extra tracing machinery and handles
    # pruned (irregular-width) models reliably; silence its notice so users see only real problems.
    # nn.MultiheadAttention's eval fast path is a fused op with no ONNX form (ViT failed to export)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (dummy,), buf, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                              dynamo=False, do_constant_folding=not keep_batchnorm,
                              training=torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    proto = onnx.load_from_string(buf.getvalue())
    if keep_batchnorm:
        _inline_identities(proto.graph)
    onnx.checker.check_model(proto)
    with atomic_files(path) as (tmp,):
        tmp.write_bytes(proto.SerializeToString() if keep_batchnorm else buf.getvalue())
    return path


def _inline_identities(graph) -> None:
    """Replace each Identity of a stored tensor by a copy of the tensor under the Identity's name: the
    exporter shares equal tensors (an untrained model's BatchNorm statistics) through Identity nodes,
    which a graph viewer draws as boxes of their own between the layers."""
    import onnx

    stored = {t.name: t for t in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in stored:
            copy = onnx.TensorProto()
            copy.CopyFrom(stored[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def check_onnx(path: str | Path, model: nn.Module, batches) -> dict:
    """Run the ONNX file in onnxruntime next to PyTorch on the same batches; returns both top-1s."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model = model.eval()
    agree = torch_correct = onnx_correct = total = 0
    max_diff = 0.0
    with torch.inference_mode():
        for x, y in batches:
            ours = model(x)
            theirs = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
            max_diff = max(max_diff, float((ours - theirs).abs().max()))
            torch_correct += int((ours.argmax(1) == y).sum())
            onnx_correct += int((theirs.argmax(1) == y).sum())
            agree += int((ours.argmax(1) == theirs.argmax(1)).sum())
            total += len(y)
    total = max(1, total)
    return {"images": total, "torch_top1": torch_correct / total, "onnx_top1": onnx_correct / total,
            "agreement": agree / total, "max_abs_diff": max_diff}
