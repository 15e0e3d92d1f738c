"""Writing models: PruneLab's own files (tensors, numbers and strings only), whole modules, ONNX, and the
standard files a deployment needs (a torch.export program, a traced TorchScript fallback, safetensors)."""
from __future__ import annotations

import io
import json
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

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


ONNX_OPSET = 17  # the default: read by every ONNX runtime in use today
ONNX_FALLBACK_OPSET = 18  # tried once when an operator has no form at the default (aten::col2im: F.fold, VOLO)


def export_onnx(model: nn.Module, input_shape: Shape, path: str | Path, opset: int | None = None,
                keep_batchnorm: bool = False, metadata: dict[str, str] | None = None) -> Path:
    """Export to ONNX with a dynamic batch axis and check the graph with onnx.checker.

    Without `opset`, ONNX_OPSET, and ONNX_FALLBACK_OPSET once if the exporter has an operator only there
    (`onnx_opset` reads back which). The exporter folds each BatchNorm into the convolution before it (right
    for deployment); the graph a student reads beside the layer table keeps them (`keep_batchnorm`), so every
    layer shows. `metadata` goes into the file's metadata_props (onnxruntime: `get_modelmeta().custom_metadata_map`)."""
    import onnx
    from torch.onnx.errors import UnsupportedOperatorError

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    try:
        buf = _export_bytes(model, input_shape, opset or ONNX_OPSET, keep_batchnorm)
    except UnsupportedOperatorError:
        if opset is not None:
            raise
        buf = _export_bytes(model, input_shape, ONNX_FALLBACK_OPSET, keep_batchnorm)
    proto = onnx.load_from_string(buf.getvalue())
    if keep_batchnorm:
        _inline_identities(proto.graph)
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    with atomic_files(path) as (tmp,):
        tmp.write_bytes(proto.SerializeToString() if keep_batchnorm or metadata else buf.getvalue())
    return path


def onnx_opset(path: str | Path) -> int:
    """The default-domain opset an ONNX file was written for."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return next(entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx"))


def _export_bytes(model: nn.Module, input_shape: Shape, opset: int, keep_batchnorm: bool) -> io.BytesIO:
    dummy = torch.zeros(1, *input_shape)
    buf = io.BytesIO()
    # The TorchScript-based exporter is deprecated but needs no extra tracing machinery and handles
    # pruned (irregular-width) models reliably; silence its notice so users see only real problems.
    # nn.MultiheadAttention's eval fast path is a fused op with no ONNX form (ViT failed to export)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    if opset >= ONNX_FALLBACK_OPSET:  # for this export only: no process-wide change to torch's exporter
        from torch.onnx.symbolic_helper import parse_args

        torch.onnx.register_custom_op_symbolic("aten::col2im", parse_args("v", "v", "v", "is", "is", "is")(_col2im),
                                               opset)
    torch.onnx.register_custom_op_symbolic("aten::rms_norm", _rms_norm, opset)
    torch.onnx.register_custom_op_symbolic("aten::unfold", _unfold, opset)
    torch.onnx.register_custom_op_symbolic("aten::adaptive_avg_pool2d", _adaptive_avg_pool2d, opset)
    # The exporter hands a forward's defaults to the trace as inputs, where a bool arrives as a tensor (timm's
    # Eva: `is_causal`, which scaled_dot_product_attention refuses): for the export the forward takes x alone.
    # (a TorchScript module's forward has no defaults to hand and cannot be replaced)
    scripted = isinstance(model, torch.jit.ScriptModule)
    own_forward, forward = model.__dict__.get("forward"), model.forward
    if not scripted:
        model.forward = lambda x: forward(x)
    try:
        with torch.no_grad(), warnings.catch_warnings(), _native_stdout_muted():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (dummy,), buf, input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset,
                              dynamo=False, do_constant_folding=not keep_batchnorm,
                              training=torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        if opset >= ONNX_FALLBACK_OPSET:
            torch.onnx.unregister_custom_op_symbolic("aten::col2im", opset)
        torch.onnx.unregister_custom_op_symbolic("aten::rms_norm", opset)
        torch.onnx.unregister_custom_op_symbolic("aten::unfold", opset)
        torch.onnx.unregister_custom_op_symbolic("aten::adaptive_avg_pool2d", opset)
        if not scripted and own_forward is None:
            del model.forward
        elif not scripted:
            model.forward = own_forward
    return buf


@contextmanager
def _native_stdout_muted() -> Iterator[None]:
    """The exporter's C++ log is always on (torch's switch tests a function, not its value), so an operator it
    cannot convert dumps the whole graph on the process's stdout, burying a command's output; mute file
    descriptor 1 while it runs (the error itself still comes back as the exception)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _col2im(g, x, output_size, kernel_size, dilation, padding, stride):
    """aten::col2im (F.fold) as ONNX Col2Im. Torch's own symbolic needs the output size as a constant, but
    a model that folds back to its input's height and width (VOLO) traces it as a list of sizes; and it
    writes the pads as [p0, p0, p1, p1] where ONNX wants the begins then the ends."""
    def one_d(value):
        node = value.node()
        if node.kind() != "prim::ListConstruct":
            return value
        axis = g.op("Constant", value_t=torch.tensor([0]))
        return g.op("Concat", *(g.op("Unsqueeze", v, axis) for v in node.inputs()), axis_i=0)

    return g.op("Col2Im", x, one_d(output_size), one_d(kernel_size), dilations_i=dilation,
                pads_i=list(padding) * 2, strides_i=stride)


def _rms_norm(g, x, normalized_shape, weight, eps):
    """aten::rms_norm (torch's RMSNorm, timm's RmsNorm: Gemma4's norms) in operators every opset has: ONNX has
    RMSNormalization only from opset 23. Without `eps`, torch takes the float32 machine epsilon."""
    from torch.onnx import symbolic_helper

    axes = list(range(-len(symbolic_helper._get_const(normalized_shape, "is", "normalized_shape")), 0))
    eps = torch.finfo(torch.float32).eps if symbolic_helper._is_none(eps) else \
        symbolic_helper._get_const(eps, "f", "eps")
    square = g.op("Mul", x, x)
    if g.opset >= 18:  # axes became an input
        mean = g.op("ReduceMean", square, g.op("Constant", value_t=torch.tensor(axes)), keepdims_i=1)
    else:
        mean = g.op("ReduceMean", square, axes_i=axes, keepdims_i=1)
    scale = g.op("Sqrt", g.op("Add", mean, g.op("Constant", value_t=torch.tensor(eps, dtype=torch.float32))))
    out = g.op("Div", x, scale)
    return out if symbolic_helper._is_none(weight) else g.op("Mul", out, weight)


def _unfold(g, x, dimension, size, step):
    """Tensor.unfold (timm's HaloAttn windows) as one Gather of the windows' indices, computed from the input's
    shape at run time: torch's symbolic needs the dimension's size as a constant, which the second of two
    unfolds does not have ("input size not accessible")."""
    from torch.onnx import symbolic_helper

    rank = symbolic_helper._get_tensor_rank(x)
    if rank is None:
        return symbolic_helper._unimplemented("Unfold", "input rank not accessible")
    dimension, size, step = (symbolic_helper._get_const(v, "i", n) for v, n in
                             ((dimension, "dimension"), (size, "size"), (step, "step")))
    dimension %= rank

    def const(value):
        return g.op("Constant", value_t=torch.tensor(value, dtype=torch.int64))

    length = g.op("Gather", g.op("Shape", x), const(dimension), axis_i=0)
    starts = g.op("Range", const(0), g.op("Sub", length, const(size - 1)), const(step))
    index = g.op("Add", symbolic_helper._unsqueeze_helper(g, starts, [1]), const(list(range(size))))
    out = g.op("Gather", x, index, axis_i=dimension)  # (..., windows, size, ...): the window last, as torch's
    return g.op("Transpose", out, perm_i=[*range(dimension + 1), *range(dimension + 2, rank + 1), dimension + 1])


def _adaptive_avg_pool2d(g, x, output_size):
    """F.adaptive_avg_pool2d as torch exports it where it can (a global or an evenly dividing average pool);
    else (bins that do not divide the input: CSATv2's 7 × 7 spatial attention) as two matrix products with
    pooling matrices built from the input's shape at run time, row i averaging positions
    floor(i·size/bins) to ceil((i + 1)·size/bins) - 1, as torch's bins do."""
    from torch.onnx import symbolic_helper, symbolic_opset9
    from torch.onnx.errors import SymbolicValueError

    try:
        return symbolic_opset9.adaptive_avg_pool2d(g, x, output_size)
    except SymbolicValueError:
        pass
    rank = symbolic_helper._get_tensor_rank(x)
    bins = symbolic_helper._get_const(output_size, "is", "output_size")
    if rank is None or any(b is None for b in bins):
        return symbolic_helper._unimplemented("adaptive_avg_pool2d", "input rank or output size not accessible")
    floats = symbolic_helper.cast_pytorch_to_onnx["Float"]

    def const(value):
        return g.op("Constant", value_t=torch.tensor(value, dtype=torch.int64))

    def column(v):
        return symbolic_helper._unsqueeze_helper(g, v, [1])

    def pooling(axis: int, count: int):  # (count, size)
        size = g.op("Gather", g.op("Shape", x), const(axis), axis_i=0)
        i = const(list(range(count)))
        start = g.op("Div", g.op("Mul", i, size), const(count))
        end = g.op("Div", g.op("Add", g.op("Mul", g.op("Add", i, const(1)), size), const(count - 1)), const(count))
        position = symbolic_helper._unsqueeze_helper(g, g.op("Range", const(0), size, const(1)), [0])
        inside = g.op("And", g.op("Not", g.op("Less", position, column(start))), g.op("Less", position, column(end)))
        return g.op("Div", g.op("Cast", inside, to_i=floats), column(g.op("Cast", g.op("Sub", end, start), to_i=floats)))

    rows = g.op("MatMul", pooling(rank - 2, bins[0]), x)
    return g.op("MatMul", rows, g.op("Transpose", pooling(rank - 1, bins[1]), perm_i=[1, 0]))


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


def onnx_runner(path: str | Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ONNX file as a function of a batch, run in onnxruntime on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def check_onnx(path: str | Path, model: nn.Module, batches) -> dict:
    """Run the ONNX file in onnxruntime next to PyTorch on the same batches; returns both top-1s."""
    return compare_runs(model, {"onnx": onnx_runner(path)}, batches)["onnx"]


def compare_runs(model: nn.Module, runners: dict[str, Callable], batches) -> dict[str, dict]:
    """Each runner (an exported copy of `model`) next to PyTorch on the same labelled batches, in one pass:
    per runner the images, both top-1s, the share of equal predictions and the largest logit difference."""
    model = model.eval()
    stats = {name: {"agree": 0, "correct": 0, "diff": 0.0} for name in runners}
    torch_correct = total = 0
    with torch.inference_mode():
        for x, y in batches:
            ours = model(x)
            torch_correct += int((ours.argmax(1) == y).sum())
            total += len(y)
            for name, run in runners.items():
                theirs = run(x)
                s = stats[name]
                s["diff"] = max(s["diff"], float((ours - theirs).abs().max()))
                s["correct"] += int((theirs.argmax(1) == y).sum())
                s["agree"] += int((ours.argmax(1) == theirs.argmax(1)).sum())
    total = max(1, total)
    return {name: {"images": total, "torch_top1": torch_correct / total, f"{name}_top1": s["correct"] / total,
                   "agreement": s["agree"] / total, "max_abs_diff": s["diff"]} for name, s in stats.items()}


# ----------------------------------------------------------------------------- deployment files

EXAMPLE_BATCH = 2  # exported with batch 2, so the batch is not specialised to 1; checked at 1 and 3
MAX_BATCH = 4096


def _check_batches(model: nn.Module, run: Callable, input_shape: Shape) -> None:
    """Raise when `run` does not give `model`'s outputs at batch 1 and 3 (a batch baked into the file)."""
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for batch in (1, 3):
            x = torch.randn(batch, *input_shape, generator=generator)
            ours, theirs = model(x), run(x)
            if tuple(theirs.shape) != tuple(ours.shape):
                raise RuntimeError(f"batch {batch} gives outputs of shape {tuple(theirs.shape)}, not "
                                   f"{tuple(ours.shape)}")
            diff = float((ours - theirs).abs().max())
            if not diff <= 1e-4 * (1.0 + float(ours.abs().max())):
                raise RuntimeError(f"batch {batch} gives outputs {diff:.2g} away from the model's")


def export_program(model: nn.Module, input_shape: Shape, path: str | Path) -> Callable:
    """Write a torch.export program of `model` for inference with a dynamic batch, loadable with
    `torch.export.load(path).module()` alone; checked after a reload, which it returns (a callable)."""
    from torch.export import Dim

    model = model.eval()
    example = torch.zeros(EXAMPLE_BATCH, *input_shape)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: Dim("batch", min=1, max=MAX_BATCH)},))
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    _check_batches(model, loaded, input_shape)
    return loaded


def trace_torchscript(model: nn.Module, input_shape: Shape, path: str | Path) -> Callable:
    """Write a traced TorchScript copy of `model` (the fallback where torch.export fails); checked after a
    reload at other batch sizes, which it returns."""
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings are checked below by running other batch sizes
        traced = torch.jit.trace(model, torch.zeros(EXAMPLE_BATCH, *input_shape), check_trace=False)
    torch.jit.save(traced, str(path))
    loaded = torch.jit.load(str(path)).eval()  # our own file, written a moment ago
    _check_batches(model, loaded, input_shape)
    return loaded


def write_safetensors(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """The model's state_dict as safetensors (tensors only; a tensor shared by two names is stored under each)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    path = Path(path)
    path.write_bytes(save(state, metadata=metadata))  # save_file would make the file private (mode 600)
    return path
