"""The deployment set: what `prune --out`, the GUI's export and plans write, usable without PruneLab.

A folder holds the pruned model as standard files (a torch.export program, else a traced TorchScript
copy; ONNX with its preprocessing in `metadata_props`; the weights as safetensors with the pruned
layer widths), `model.json` with everything needed to feed the model and judge it, a plain-words
`README.md` card, and `model.pt`, PruneLab's own file for continuing work in PruneLab. The set is
written whole or not at all (`engine.outputs.atomic_dir`). docs/deploy.md is the user's guide.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch.nn as nn

from engine import __version__
from engine.data.tensors import GREY_WEIGHTS
from engine.models import (ModelBundle, compare_runs, demo_path, export_onnx, export_program, onnx_opset,
                           onnx_runner, pruned_state, save_full_module, save_model, trace_torchscript,
                           write_safetensors)
from engine.outputs import atomic_dir
from engine.sources import NAMED, ModelKind, ModelSource
from engine.units import fmt_count, wilson_interval

FORMAT = "prunelab-deploy"
FORMAT_VERSION = 1
PROGRAM, TORCHSCRIPT, ONNX, WEIGHTS, META, CARD = (
    "model.pt2", "model.ts", "model.onnx", "weights.safetensors", "model.json", "README.md")
INPUT_NAME, OUTPUT_NAME = "input", "logits"  # the ONNX graph's names (engine.models.saving.export_onnx)

# engine.data.tensors.resize_crop, in words and settings a user can reproduce
RESIZE_POLICY = {
    "policy": "cover-then-centre-crop", "interpolation": "bilinear", "antialias": True, "align_corners": False,
    "description": "scale the image, keeping its aspect ratio, so that it covers the input size (each side "
                   "rounded to the nearest pixel, never below the input size), then cut the input size from "
                   "the centre; an image already of the input size is left as it is",
}

# The card's helper for rebuilding from weights.safetensors; PruneLab runs the same text (`rebuild`).
REBUILD_CODE = '''\
import json
import torch
from safetensors.torch import load_file

def rebuild(model, folder):
    """Shrink a freshly built architecture to the pruned widths in model.json, then load weights.safetensors."""
    meta = json.load(open(f"{folder}/model.json"))
    modules = dict(model.named_modules())
    for name, widths in meta["layers"].items():
        for key, value in widths.items():
            setattr(modules[name], key, tuple(value) if isinstance(value, list) else value)
    state = load_file(f"{folder}/weights.safetensors")
    for key, tensor in state.items():
        owner, _, leaf = key.rpartition(".")
        module = modules[owner]
        if leaf in module._parameters:
            module._parameters[leaf] = torch.nn.Parameter(torch.empty_like(tensor))
        elif leaf in module._buffers:
            module._buffers[leaf] = torch.empty_like(tensor)
    model.load_state_dict(state)
    return model.eval()
'''
_space: dict = {}
exec(compile(REBUILD_CODE, "<engine.deploy.REBUILD_CODE>", "exec"), _space)  # our own constant text
rebuild: Callable[[nn.Module, str | Path], nn.Module] = _space["rebuild"]


# ----------------------------------------------------------------------------- what model.json says

def sha256_file(path: str | Path) -> str:
    """The file's sha256 as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_facts(path: str | Path | None) -> dict:
    if not path or not Path(path).is_file():
        return {"file": None, "sha256": None}
    return {"file": Path(path).name, "sha256": sha256_file(path)}


def original_identity(bundle: ModelBundle) -> dict:
    """The unpruned model's identity: its source, architecture, and the file (name, sha256) its weights came
    from (None for random weights); for user code, the code file too."""
    source, arch = ModelSource.parse(bundle.source), ModelSource.parse(bundle.arch)
    weights = demo_path(source.name) if source.is_demo else bundle.meta.get("weights_file") or (
        None if source.kind in NAMED else bundle.source)
    ident = {"source": bundle.source, "architecture": bundle.arch, **_file_facts(weights),
             "untrained": bool(bundle.meta.get("untrained"))}
    if arch.kind is ModelKind.CODE:
        code = _file_facts(arch.code_file)
        ident.update(code_file=code["file"], code_sha256=code["sha256"])
    return ident


def preprocessing(bundle: ModelBundle) -> dict:
    """How an image becomes the model's input: channels, the resize policy, scale, normalisation."""
    c, h, w = bundle.input_shape
    norm = bundle.norm.adapted(c) if bundle.norm else None
    pre = {"input_shape": [c, h, w], "layout": "NCHW", "dtype": "float32",
           "channel_order": "RGB" if c == 3 else "grey" if c == 1 else f"{c} channels",
           "scale": "pixel values / 255, so [0, 1]",
           "resize": {**RESIZE_POLICY, "size": [h, w]},
           "mean": list(norm.mean) if norm else None, "std": list(norm.std) if norm else None,
           "order": ["decode as RGB", "/ 255", "to the model's channels", "resize", "(x - mean) / std"]}
    if c == 1:
        pre["grey_from_rgb"] = list(GREY_WEIGHTS)
    return pre


def _interval(rate: float | None, n: int | None) -> list[float] | None:
    return [round(v, 4) for v in wilson_interval(rate, n)] if rate is not None and n else None


def figures(meta: dict) -> dict | None:
    """The measured figures of the run: top-1 with its 95 % interval and the images it was measured on,
    MACs, parameters, latency and the paired speed-up with batch and device (None: not measured)."""
    after, before = meta.get("metrics"), meta.get("baseline")
    if not after:
        return None
    ev = meta.get("evaluation") or {}
    n = ev.get("images")
    out = {"dataset": ev.get("dataset"), "split": ev.get("split"), "images": n, "device": ev.get("device"),
           "top1": after.get("top1"), "top1_interval_95": _interval(after.get("top1"), n),
           "macs": after.get("macs"), "params": after.get("params"), "nonzero_params": after.get("nonzero_params"),
           "latency_ms": {b: v.get("median") for b, v in (after.get("latency_ms") or {}).items()},
           "latency_threads": next((v.get("threads") for v in (after.get("latency_ms") or {}).values()), None)}
    if before:
        out["original"] = {"top1": before.get("top1"), "top1_interval_95": _interval(before.get("top1"), n),
                           "macs": before.get("macs"), "params": before.get("params"),
                           "latency_ms": {b: v.get("median") for b, v in (before.get("latency_ms") or {}).items()}}
    paired = meta.get("latency_speedup")
    out["speedup"] = None if not paired else {
        "latency": paired["median"], "interval": [paired["low"], paired["high"]], "coverage": paired["coverage"],
        "batch": paired["batch"], "device": paired["device"], "threads": paired.get("threads"),
        "rounds": paired["rounds"], "noisy": paired.get("noisy"), "note": paired.get("note")}
    return out


def pruning_facts(meta: dict, structured: bool) -> dict:
    """Method, family and ratio (or speed-up or latency target) of the run, with its whole configuration."""
    config = meta.get("config") or {}
    return {"method": meta.get("method"), "family": "structured" if structured else "unstructured",
            "ratio": config.get("pruning_ratio"), "target_speedup": config.get("target_speedup"),
            "target_latency_ms": config.get("target_latency"),
            "target_latency_speedup": config.get("target_latency_speedup"),
            "runtime": config.get("runtime") if config.get("target_latency") or config.get("target_latency_speedup")
            else None,
            "ratio_meaning": "share of channels removed" if structured else "share of weights set to zero",
            "config": config}


def onnx_metadata(meta: dict) -> dict[str, str]:
    """The ONNX file's metadata_props: the preprocessing, classes, method and ratio, as JSON text."""
    pre, pruning = meta["preprocessing"], meta["pruning"]
    props = {"input_shape": pre["input_shape"], "mean": pre["mean"], "std": pre["std"],
             "channel_order": pre["channel_order"], "scale": pre["scale"], "resize": pre["resize"],
             "class_names": meta["classes"], "pruning_method": pruning["method"], "pruning_family": pruning["family"],
             "pruning_ratio": pruning["ratio"], "target_speedup": pruning["target_speedup"],
             "target_latency_ms": pruning.get("target_latency_ms"),
             "target_latency_speedup": pruning.get("target_latency_speedup"), "prunelab_version": __version__}
    if "grey_from_rgb" in pre:
        props["grey_from_rgb"] = pre["grey_from_rgb"]
    return {k: json.dumps(v) for k, v in props.items()}


def _plain(obj):
    return json.loads(json.dumps(obj, default=str))


def build_hint(bundle: ModelBundle) -> str | None:
    """The Python expression that builds the unpruned architecture as PruneLab did (None: PruneLab's own code)."""
    arch = ModelSource.parse(bundle.arch)
    kind, name = arch.kind, arch.name
    kwargs = "".join(f", {k}={v!r}" for k, v in (bundle.arch_kwargs or {}).items())
    if kind is ModelKind.TORCHVISION:
        return f"torchvision.models.get_model({name!r}, weights=None, num_classes={bundle.num_classes}{kwargs})"
    if kind is ModelKind.TIMM:
        return (f"timm.create_model({name!r}, pretrained=False, num_classes={bundle.num_classes}, "
                f"in_chans={bundle.input_shape[0]}{kwargs})")
    if kind is ModelKind.CODE:
        return f"{arch.code_class}({kwargs[2:]})"  # the class from the file named in `original`
    return None


def describe(bundle: ModelBundle, structured: bool) -> dict:
    """model.json without the file list and checks: what the model is, how to feed it, how it did."""
    meta = dict(bundle.meta)
    c, h, w = bundle.input_shape
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "prunelab_version": __version__,
        **meta,
        "architecture": bundle.arch, "module_class": type(bundle.model).__name__,
        "architecture_kwargs": _plain(bundle.arch_kwargs), "build": build_hint(bundle),
        "input": {"name": INPUT_NAME, "shape": ["batch", c, h, w], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", bundle.num_classes],
                   "meaning": "one score (logit) per class, in the order of `classes`; softmax gives probabilities"},
        "preprocessing": preprocessing(bundle),
        "classes": list(bundle.class_names) if bundle.class_names else [str(i) for i in range(bundle.num_classes)],
        "figures": figures(meta),
        "pruning": pruning_facts(meta, structured),
        "original": meta.get("original") or original_identity(bundle),
        "layers": _plain(pruned_state(bundle.model)["attrs"]),
    }


# ----------------------------------------------------------------------------- writing the set

def _why(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}"


def _program(model: nn.Module, shape, tmp: Path, names: dict, runners: dict, notes: list[str]) -> dict:
    """model.pt2, else model.ts; what was written and why the other failed."""
    facts: dict = {"file": None}
    try:
        runners["program"] = export_program(model, shape, tmp / PROGRAM)
        names["program"] = PROGRAM
        return {"file": PROGRAM, "kind": "torch.export", "load": f"torch.export.load('{PROGRAM}').module()"}
    except Exception as exc:  # noqa: BLE001 - some architectures do not export; TorchScript may still work
        (tmp / PROGRAM).unlink(missing_ok=True)
        facts["export_error"] = _why(exc)
    try:
        runners["torchscript"] = trace_torchscript(model, shape, tmp / TORCHSCRIPT)
        names["torchscript"] = TORCHSCRIPT
        notes.append(f"torch.export failed ({facts['export_error']}); wrote a traced TorchScript copy, {TORCHSCRIPT}")
        return {**facts, "file": TORCHSCRIPT, "kind": "torchscript (traced)",
                "load": f"torch.jit.load('{TORCHSCRIPT}')"}
    except Exception as exc:  # noqa: BLE001 - both failing is said in the card and the notes
        (tmp / TORCHSCRIPT).unlink(missing_ok=True)
        facts["trace_error"] = _why(exc)
    notes.append(f"neither torch.export ({facts['export_error']}) nor TorchScript tracing ({facts['trace_error']}) "
                 f"worked, so there is no {PROGRAM}; use {ONNX} or rebuild from {WEIGHTS}")
    return facts


def save_outputs(bundle: ModelBundle, out_dir: Path, structured: bool, check_batches=None,
                 notes: list[str] | None = None) -> dict[str, str]:
    """Write the deployment set into `out_dir` (whole or not at all); returns the final path of each file.

    An export that fails is a note (appended to `notes`) and a line of the card, not a failure: the
    other files are still written. With `check_batches`, every exported copy is run next to PyTorch on
    them and the agreement recorded in model.json (`checks`); without, only the batch sizes are checked.
    """
    out_dir = Path(out_dir)
    notes = notes if notes is not None else []
    model = bundle.model.cpu().eval()
    shape = tuple(bundle.input_shape)
    names: dict[str, str] = {}
    runners: dict[str, Callable] = {}
    meta = describe(bundle, structured)
    with atomic_dir(out_dir) as tmp:
        if bundle.arch == "module":
            save_full_module(bundle, tmp / "model_full.pt")
            names["model"] = "model_full.pt"
        else:
            save_model(bundle, tmp / "model.pt", pruned=structured)
            names["model"] = "model.pt"
        meta["program"] = _program(model, shape, tmp, names, runners, notes)
        try:
            export_onnx(model, shape, tmp / ONNX, metadata=onnx_metadata(meta))
            names["onnx"] = ONNX
            meta["onnx_opset"] = onnx_opset(tmp / ONNX)  # the default, or the fallback a layer needed
            runners["onnx"] = onnx_runner(tmp / ONNX)
        except Exception as exc:  # noqa: BLE001 - some layers have no ONNX form; the model itself is fine
            text = f"ONNX export failed ({_why(exc)}); the PyTorch model was saved, only {ONNX} is missing"
            meta["onnx_error"] = text
            notes.append(text)
        write_safetensors(model, tmp / WEIGHTS, {"format": "pt", "layers": f"{META}: layers"})
        names["weights"] = WEIGHTS
        if check_batches is not None and runners:
            meta["checks"] = compare_runs(model, runners, check_batches)
            if "onnx" in meta["checks"]:
                meta["onnx_check"] = meta["checks"]["onnx"]
        names["meta"], names["card"] = META, CARD
        meta["files"] = {kind: name for kind, name in names.items()}
        meta["notes"] = list(notes)
        (tmp / META).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
        (tmp / CARD).write_text(model_card(meta), encoding="utf-8")
    return {kind: str(out_dir / name) for kind, name in names.items()}


# ----------------------------------------------------------------------------- the card

def _pct(v: float | None) -> str:
    return "not measured" if v is None else f"{100 * v:.2f} %"


def _figure_lines(meta: dict) -> list[str]:
    fig = meta.get("figures")
    if not fig:
        return ["No figures were measured for this export."]
    lines = []
    n, orig = fig.get("images"), fig.get("original") or {}
    where = f"the first {n} images" if n else "images"
    where = f"{n} {fig.get('split') or 'test'} images of {fig.get('dataset') or 'the dataset'}" if n else where
    for label, f in (("pruned", fig), ("original", orig)):
        if not f:
            continue
        ci = f.get("top1_interval_95")
        interval = f" (95 % interval {100 * ci[0]:.1f}–{100 * ci[1]:.1f} %)" if ci else ""
        lines.append(f"- Top-1 accuracy, {label}: {_pct(f.get('top1'))}{interval}, on {where}.")
    if fig.get("params"):
        lines.append(f"- Parameters: {fmt_count(fig['params'])}" + (f" (original {fmt_count(orig['params'])})"
                                                                   if orig.get("params") else "") + ".")
    if fig.get("macs"):
        lines.append(f"- Multiply-accumulates per image: {fmt_count(fig['macs'])}"
                     + (f" (original {fmt_count(orig['macs'])})" if orig.get("macs") else "") + ".")
    for batch, ms in (fig.get("latency_ms") or {}).items():
        threads = f", {fig['latency_threads']} CPU threads" if fig.get("latency_threads") else ""
        before = (orig.get("latency_ms") or {}).get(batch)
        lines.append(f"- Latency at batch {batch} on {fig.get('device') or 'the device'}{threads}: {ms:.3g} ms"
                     + (f" (original {before:.3g} ms)" if before else "") + ".")
    sp = fig.get("speedup")
    if sp:
        threads = f", {sp['threads']} threads" if sp.get("threads") else ""
        lines.append(f"- Speed-up, original and pruned timed in turn: {sp['latency']:.2f}x (interval "
                     f"{sp['interval'][0]:.2f}–{sp['interval'][1]:.2f}, {sp['rounds']} rounds) "
                     f"at batch {sp['batch']} "
                     f"on {sp['device']}{threads}." + (f" {sp['note']}" if sp.get("noisy") and sp.get("note") else ""))
    return lines


def model_card(meta: dict) -> str:
    """README.md of the set: what the model is, what was removed, the figures, how to load and run each file."""
    pre, pruning, original, program = meta["preprocessing"], meta["pruning"], meta["original"], meta["program"]
    c, h, w = pre["input_shape"]
    classes = meta["classes"]
    shown = ", ".join(classes[:20]) + (f", … ({len(classes)} in all)" if len(classes) > 20 else "")
    ratio = (f"{100 * pruning['ratio']:g} % ({pruning['ratio_meaning']})" if pruning.get("ratio") is not None else
             f"a {pruning['target_speedup']}x target" if pruning.get("target_speedup") else
             f"a target latency of {pruning['target_latency_ms']:g} ms on {pruning['runtime']}"
             if pruning.get("target_latency_ms") else
             f"a target of {pruning['target_latency_speedup']:g}x lower latency on {pruning['runtime']}"
             if pruning.get("target_latency_speedup") else "")
    weights_from = (f"`{original['file']}` (sha256 {original['sha256']})" if original.get("file") else
                    "random weights (no weights file)" if original.get("untrained") else "no file")
    removed = ("Whole channels were removed, so the layers are narrower and dense kernels run faster."
               if pruning["family"] == "structured" else
               "Single weights were set to zero; every layer keeps its shape, so it runs no faster on dense "
               "kernels (the files compress better).")
    lines = [
        f"# Pruned {meta['architecture']}", "",
        f"An image classifier for {len(classes)} classes ({shown}), made by PruneLab {meta['prunelab_version']} "
        f"from `{original['source']}` (weights: {weights_from}) with the `{pruning['method']}` method"
        + (f" at {ratio}" if ratio else "") + f". {removed}", "",
        "## Figures", "", *_figure_lines(meta), "",
        *(["The original had random weights (no weights file), so these accuracies mean nothing.", ""]
          if original.get("untrained") else []),
        "## Input", "",
        f"A float32 batch of shape (N, {c}, {h}, {w}), channels {pre['channel_order']}: decode the image as RGB, "
        "divide by 255" + (f", make it grey as {pre['grey_from_rgb'][0]}·R + {pre['grey_from_rgb'][1]}·G + "
           f"{pre['grey_from_rgb'][2]}·B" if "grey_from_rgb" in pre else "")
        + f", resize ({pre['resize']['description']}; bilinear with antialiasing), then subtract "
        f"the mean {pre['mean']} and divide by the std {pre['std']} per channel. The output is one score per class "
        "in the order of `classes` in model.json.", "",
        "## Files", "",
    ]
    if program.get("file") == PROGRAM:
        lines.append(f"- `{PROGRAM}`: the model as a torch.export program (any batch size); needs only PyTorch.")
    elif program.get("file") == TORCHSCRIPT:
        lines.append(f"- `{TORCHSCRIPT}`: the model traced to TorchScript, because torch.export failed: "
                     f"{program['export_error']}.")
    else:
        lines.append(f"- No PyTorch program: torch.export failed ({program.get('export_error')}) and so did "
                     f"TorchScript tracing ({program.get('trace_error')}). Use `{ONNX}` or rebuild from `{WEIGHTS}`.")
    lines.append(f"- `{ONNX}`: the same model for onnxruntime and other runtimes; its metadata holds the input "
                 "shape, mean, std, resize policy and class names." if "onnx" in meta["files"] else
                 f"- No `{ONNX}`: {meta.get('onnx_error')}.")
    lines += [f"- `{WEIGHTS}`: the weights alone; `layers` in `{META}` lists the pruned widths to rebuild the "
              "architecture from its code (below).",
              f"- `{META}`: preprocessing, classes, shapes, figures, the pruning settings and the original's identity.",
              f"- `{meta['files']['model']}`: PruneLab's own file, to continue in PruneLab (prune further, fine-tune, "
              "compare); it loads only in PruneLab.", ""]
    checks = meta.get("checks") or {}
    if checks:
        lines += ["Checked when written: " + "; ".join(
            f"{name} agrees with PyTorch on {100 * c_['agreement']:.1f} % of {c_['images']} images (largest "
            f"logit difference {c_['max_abs_diff']:.1g})" for name, c_ in checks.items()) + ".", ""]
    lines += ["## Run it", "", "Preprocessing, shared by the examples below (torch, numpy, Pillow):", "", "```python",
              PREPROCESS_CODE.rstrip(), "```", ""]
    if program.get("file") == PROGRAM:
        lines += ["With PyTorch:", "", "```python", "import torch",
                  f"model = torch.export.load('{PROGRAM}').module()",
                  "with torch.no_grad():", "    scores = model(preprocess('image.jpg'))",
                  "print(meta['classes'][scores.argmax(1).item()])", "```", ""]
    elif program.get("file") == TORCHSCRIPT:
        lines += ["With PyTorch:", "", "```python", "import torch", f"model = torch.jit.load('{TORCHSCRIPT}')",
                  "with torch.no_grad():", "    scores = model(preprocess('image.jpg'))",
                  "print(meta['classes'][scores.argmax(1).item()])", "```", ""]
    if "onnx" in meta["files"]:
        lines += ["With onnxruntime:", "", "```python", "import onnxruntime as ort",
                  f"session = ort.InferenceSession('{ONNX}', providers=['CPUExecutionProvider'])",
                  f"scores = session.run(None, {{'{INPUT_NAME}': preprocess('image.jpg').numpy()}})[0]",
                  "print(meta['classes'][scores.argmax(1)[0]])", "```", ""]
    build = meta.get("build")
    lines += (["From the weights, with the architecture's own code (`rebuild` gives every layer the pruned width "
               "and the weights' shapes, a first convolution adapted to the channels included):", "", "```python",
               REBUILD_CODE.rstrip(), "", *_import_line(meta), f"model = rebuild({build}, '.')", "```", ""]
              if build else
              [f"`{WEIGHTS}` fits PruneLab's own {meta['architecture']} network; use the files above.", ""])
    lines += ["Where to run it and what speed-up to expect: PruneLab's docs/deploy.md.", ""]
    return "\n".join(lines)


def _import_line(meta: dict) -> list[str]:
    arch = ModelSource.parse(meta["architecture"])
    if arch.kind is ModelKind.CODE:
        return [f"# {arch.code_class}: your class, from {meta['original'].get('code_file')}"]
    return [f"import {arch.kind}"]


# The card's preprocessing: engine.data's decode, convert_batch and normalisation, with model.json's values.
PREPROCESS_CODE = '''\
import json, math
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

meta = json.load(open("model.json"))
pre = meta["preprocessing"]

def preprocess(path):
    """One image file as a 1×C×H×W batch, as the model was evaluated."""
    rgb = np.array(Image.open(path).convert("RGB"), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    c, h, w = pre["input_shape"]
    if c == 1:
        x = (x * torch.tensor(pre["grey_from_rgb"]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    ih, iw = x.shape[2:]
    if (ih, iw) != (h, w):
        scale = max(h / ih, w / iw)
        nh, nw = max(h, math.floor(ih * scale + 0.5)), max(w, math.floor(iw * scale + 0.5))
        if (nh, nw) != (ih, iw):
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (nh - h) // 2, (nw - w) // 2
        x = x[:, :, top:top + h, left:left + w]
    mean = torch.tensor(pre["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(pre["std"]).view(1, -1, 1, 1)
    return (x - mean) / std
'''
