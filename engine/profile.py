"""Where the time goes: each prunable layer's measured time and share, everything else grouped, and per
layer the latency at a few output widths (a curve with the steps where a kernel changes).

Measured on the runtime the model will run on (engine.runtimes), in rounds with order-statistic intervals
(engine.timing), and cached per machine, runtime, device, threads, batch and input shape, so a second call
costs nothing. Only a quiet machine's figures are cached: one profile taken beside other work (the demo's
30 ms pass timed at 560 ms) steered every later latency allocation on that machine. The curves time each
layer alone: the next layer's input shrinks too when a layer is pruned, which the curve leaves out (the
latency target checks the whole model by measurement instead).
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from engine.data import Shape
from engine.errors import UserError
from engine.events import CancelToken, Progress
from engine.layers import prunable_layers
from engine.timing import (_sync, _warm_up, architecture_signature, default_threads, fixed_threads,
                           iter_comparison_round, machine_load, median_interval, noise_note, relative_spread)
from engine.runtimes import ONNXRUNTIME, TORCH, OrtModel, check_runtime, onnx_file, ort_session

CACHE_VERSION = 4  # bump when the measurement changes, so older cached figures are not reused (3: noisy ones
# were cached; 4: onnxruntime sessions no longer spin)
WIDTH_POINTS = 8  # widths per curve: k/8 of the layer's output channels, k = 1..8


@dataclass(frozen=True)
class LayerTime:
    """One prunable layer's time per pass (ms, median over rounds with its interval) and share of the whole."""

    name: str
    kind: str
    out_channels: int
    ms: float
    low: float
    high: float
    share: float


@dataclass(frozen=True)
class WidthCurve:
    """A layer timed alone at several output widths (ms, median over rounds with intervals)."""

    name: str
    widths: tuple[int, ...]
    ms: tuple[float, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]

    def at(self, width: float) -> float:
        """The time at `width`, interpolated between the measured widths (flat beyond them)."""
        return float(np.interp(width, self.widths, self.ms))

    def snap(self, width: int, slack: float = 0.02) -> int:
        """The most channels that cost no more than `width` does: a measured width above `width` whose time
        is within `slack` of the time at `width` (a kernel's step), else `width` itself."""
        limit = self.at(width) * (1.0 + slack)
        best = width
        for w, ms in zip(self.widths, self.ms):
            if w > best and ms <= limit:
                best = w
        return best

    def steps(self, jump: float = 0.15) -> list[int]:
        """Widths where the time rises by more than `jump` of its value over the previous measured width
        (where a kernel changes), for the teaching text."""
        return [w for (w0, m0), (w, m) in zip(zip(self.widths, self.ms), zip(self.widths[1:], self.ms[1:]))
                if m0 > 0 and (m - m0) / m0 > jump * (w - w0) / max(1, w0) + jump]


@dataclass(frozen=True)
class Profile:
    """Where one forward pass spends its time on one runtime, device, thread count and batch."""

    runtime: str
    device: str
    threads: int
    batch: int
    input_shape: tuple[int, ...]
    total_ms: float
    total_low: float
    total_high: float
    layers: tuple[LayerTime, ...]
    other_ms: float  # everything that is not a prunable layer (normalisation, activations, pooling, adds)
    other_share: float
    curves: dict = field(default_factory=dict)  # layer name -> WidthCurve
    rounds: int = 0
    coverage: float = 0.0
    arch: str = ""
    machine: str = ""
    load_avg: float | None = None
    seconds: float = 0.0  # what measuring took
    cached: bool = False  # read from the cache rather than measured now
    deployed_ms: float | None = None  # onnxruntime with every graph optimisation (the profile's own pass keeps
    # each node's name, so it is timed with basic optimisation)
    note: str = ""  # 'noisy machine: ...' when other work or spread rounds make the figures unreliable

    def layer(self, name: str) -> LayerTime | None:
        """The figure of one layer, or None."""
        return next((t for t in self.layers if t.name == name), None)

    def to_json(self) -> dict:
        """Plain dict for JSON (and the cache)."""
        out = asdict(self)
        out["curves"] = {n: asdict(c) for n, c in self.curves.items()}
        out["input_shape"] = list(self.input_shape)
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "Profile":
        """The inverse of to_json."""
        obj = dict(obj)
        obj["layers"] = tuple(LayerTime(**t) for t in obj["layers"])
        obj["curves"] = {n: WidthCurve(**{k: tuple(v) if isinstance(v, list) else v for k, v in c.items()})
                         for n, c in obj.get("curves", {}).items()}
        obj["input_shape"] = tuple(obj["input_shape"])
        return cls(**obj)


# ----------------------------------------------------------------------------- cache

def machine_id() -> str:
    """This machine's name, processor and core count: figures measured elsewhere are not reused."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{platform.node()} | {cpu} | {os.cpu_count()} cores"


def runtime_version(runtime: str, device: str) -> str:
    """The runtime's version (and the GPU's name on CUDA): a new version can change every kernel."""
    if runtime == ONNXRUNTIME:
        import onnxruntime as ort

        version = f"onnxruntime {ort.__version__}"
    else:
        version = f"torch {torch.__version__}"
    if device == "cuda" and torch.cuda.is_available():
        version += f" {torch.cuda.get_device_name()}"
    return version


def cache_key(model: nn.Module, input_shape: Shape, batch: int, runtime: str, device: str, threads: int) -> str:
    """The digest a profile is cached under: machine, runtime and version, device, threads, batch, input
    shape and the architecture (weights do not change the time)."""
    text = json.dumps([CACHE_VERSION, machine_id(), runtime_version(runtime, device), device, threads, batch,
                       list(input_shape), architecture_signature(model)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def cache_path(key: str) -> Path:
    """Where the profile with `key` is kept."""
    from engine.paths import cache_dir

    return cache_dir() / "profiles" / f"{key}.json"


def load_cached(key: str) -> Profile | None:
    """The cached profile, or None (missing, or unreadable: then it is measured again)."""
    path = cache_path(key)
    try:
        return Profile.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def store(key: str, profile: Profile) -> None:
    """Write the profile to the cache whole or not at all; a cache that cannot be written is skipped."""
    from engine.outputs import write_text_atomic

    path = cache_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(profile.to_json()))
    except (OSError, UserError):
        pass


# ----------------------------------------------------------------------------- per-layer times

def _torch_layer_times(model: nn.Module, x: torch.Tensor, names: list[str], rounds: int, passes: int,
                       cancel: CancelToken) -> Iterator:
    """Per round, the pass with the smallest total and its prunable layers' times (forward hooks around
    each layer); also the input shape each layer saw. Yields Progress; returns (totals, per-layer, inputs)."""
    dev = x.device
    modules = dict(model.named_modules())
    spent: dict[str, float] = {}
    started: dict[str, float] = {}
    inputs: dict[str, tuple[int, ...]] = {}
    handles = []

    def pre(name):
        def hook(module, args):
            _sync(dev)
            started[name] = time.perf_counter()
        return hook

    def post(name):
        def hook(module, args, output):
            _sync(dev)
            spent[name] = spent.get(name, 0.0) + (time.perf_counter() - started[name]) * 1000.0
            if name not in inputs and args and isinstance(args[0], torch.Tensor):
                inputs[name] = tuple(args[0].shape)
        return hook

    totals: list[float] = []
    per_layer: dict[str, list[float]] = {n: [] for n in names}
    try:
        for name in names:
            handles.append(modules[name].register_forward_pre_hook(pre(name)))
            handles.append(modules[name].register_forward_hook(post(name)))
        _warm_up(model, x, dev, 2)
        for r in range(rounds):
            best = None
            for _ in range(passes):
                cancel.check()
                spent.clear()
                _sync(dev)
                t0 = time.perf_counter()
                model(x)
                _sync(dev)
                total = (time.perf_counter() - t0) * 1000.0
                if best is None or total < best[0]:
                    best = (total, dict(spent))
            totals.append(best[0])
            for n in names:
                per_layer[n].append(best[1].get(n, 0.0))
            yield Progress("profile", r + 1, rounds, f"timing each layer: round {r + 1}/{rounds}")
    finally:
        for h in handles:
            h.remove()
    return totals, per_layer, inputs


def module_of_node(node: str, modules: set[str]) -> str | None:
    """The module an onnxruntime node belongs to, from the exporter's scope path in its name
    ('/layer2/layer2.0/shortcut/shortcut.0/Conv' is layer2.0.shortcut.0: a component that starts with the
    one before it plus '.' replaces it)."""
    parts = [p for p in node.split("/") if p][:-1]
    full, prev = "", ""
    for part in parts:
        if prev and part.startswith(prev + "."):
            full = full[: len(full) - len(prev)] + part
        else:
            full = f"{full}.{part}" if full else part
        prev = part
    return full if full in modules else None


def _ort_layer_times(path: Path, x: torch.Tensor, names: list[str], threads: int, device: str, rounds: int,
                     passes: int, cancel: CancelToken) -> Iterator:
    """onnxruntime's own per-node profile, mapped back to layers; per round the pass with the smallest total.
    Yields Progress; returns (totals, per-layer times)."""
    import tempfile

    wanted = set(names)
    warm = 2
    with tempfile.TemporaryDirectory(prefix="prunelab-prof-") as tmp:
        session = ort_session(path, threads, device, basic=True, profile_prefix=str(Path(tmp) / "ort"))
        feed = {session.get_inputs()[0].name: x.cpu().numpy()}
        for r in range(warm + rounds * passes):
            cancel.check()
            session.run(None, feed)
            if r >= warm and (r - warm + 1) % passes == 0:
                yield Progress("profile", (r - warm + 1) // passes, rounds, "timing each layer in onnxruntime")
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    runs = runs[warm:]
    starts = [ts for ts, _ in runs]
    spent = [dict.fromkeys(names, 0.0) for _ in runs]
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        i = bisect.bisect_right(starts, e["ts"]) - 1
        if i < 0:
            continue
        module = module_of_node(e["name"][: -len("_kernel_time")], wanted)
        if module is not None:
            spent[i][module] += e["dur"] / 1000.0
    totals: list[float] = []
    per_layer: dict[str, list[float]] = {n: [] for n in names}
    for r in range(len(runs) // passes):
        chunk = range(r * passes, (r + 1) * passes)
        best = min(chunk, key=lambda i: runs[i][1])
        totals.append(runs[best][1] / 1000.0)
        for n in names:
            per_layer[n].append(spent[best][n])
    return totals, per_layer


# ----------------------------------------------------------------------------- width curves

class _Fixed(nn.Module):
    """A layer on its own input: the timing loops pass a dummy, since each width needs its own input shape."""

    def __init__(self, run, x) -> None:
        super().__init__()
        self.run, self.x = run, x

    def forward(self, _dummy):
        return self.run(self.x)


def curve_widths(channels: int, groups: int = 1) -> list[int]:
    """k/8 of `channels` for k = 1..8, as multiples of `groups`, without repeats."""
    step = max(1, groups)
    out = sorted({max(step, int(round(channels * k / WIDTH_POINTS / step)) * step) for k in range(1, WIDTH_POINTS + 1)})
    return [w for w in out if w <= channels]


def _conv_at(conv: nn.Conv2d, width: int) -> tuple[nn.Module, int, int]:
    """A convolution like `conv` with `width` outputs; a depthwise one keeps one group per channel, so its
    input narrows too. Returns (layer, input channels, groups)."""
    depthwise = conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1
    cin, groups = (width, width) if depthwise else (conv.in_channels, conv.groups)
    layer = nn.Conv2d(cin, width, conv.kernel_size, conv.stride, conv.padding, conv.dilation, groups,
                      bias=conv.bias is not None, padding_mode=conv.padding_mode)
    return layer, cin, groups


def _onnx_layer(layer: nn.Module, in_shape: tuple[int, ...]) -> bytes:
    """One convolution or linear layer as an ONNX graph (built directly: no exporter, milliseconds)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = layer.weight.detach().numpy()
    inits = [numpy_helper.from_array(w, "W")]
    inputs = ["input", "W"]
    if layer.bias is not None:
        inits.append(numpy_helper.from_array(layer.bias.detach().numpy(), "B"))
        inputs.append("B")
    if isinstance(layer, nn.Conv2d):
        if isinstance(layer.padding, str):
            pads = {"auto_pad": "SAME_UPPER" if layer.padding == "same" else "VALID"}
        else:
            pads = {"pads": [*layer.padding, *layer.padding]}
        nodes = [helper.make_node("Conv", inputs, ["out"], kernel_shape=list(layer.kernel_size),
                                  strides=list(layer.stride), dilations=list(layer.dilation), group=layer.groups,
                                  **pads)]
    elif len(in_shape) == 2:
        nodes = [helper.make_node("Gemm", inputs, ["out"], transB=1)]
    else:
        inits[0] = numpy_helper.from_array(np.ascontiguousarray(w.T), "W")
        nodes = [helper.make_node("MatMul", ["input", "W"], ["mm" if layer.bias is not None else "out"])]
        if layer.bias is not None:
            nodes.append(helper.make_node("Add", ["mm", "B"], ["out"]))
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_shape))],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = min(proto.ir_version, 9)
    return proto.SerializeToString()


def _curve_models(module: nn.Module, in_shape: tuple[int, ...], runtime: str, threads: int,
                  device: str) -> list[tuple[str, nn.Module]] | None:
    """(width, layer on its own input) for each curve width, or None for a layer without a curve."""
    dev = torch.device(device)
    if isinstance(module, nn.Conv2d) and len(in_shape) == 4:
        depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
        widths = curve_widths(module.out_channels, 1 if depthwise else module.groups)
        built = []
        for w in widths:
            layer, cin, _ = _conv_at(module, w)
            built.append((w, layer, (in_shape[0], cin, *in_shape[2:])))
    elif isinstance(module, nn.Linear):
        built = [(w, nn.Linear(module.in_features, w, bias=module.bias is not None), in_shape)
                 for w in curve_widths(module.out_features)]
    else:
        return None
    if len(built) < 2:
        return None
    out = []
    for w, layer, shape in built:
        layer = layer.eval()
        x = torch.randn(*shape)
        if runtime == ONNXRUNTIME:
            out.append((str(w), _Fixed(OrtModel(ort_session(_onnx_layer(layer, shape), threads, device)), x)))
        else:
            out.append((str(w), _Fixed(layer.to(dev), x.to(dev))))
    return out


# ----------------------------------------------------------------------------- the profile

def iter_profile(model: nn.Module, input_shape: Shape, batch: int = 64, runtime: str = TORCH, device: str = "cpu",
                 threads: int | None = None, rounds: int = 9, passes: int = 3, curves: bool = True,
                 use_cache: bool = True, cancel: CancelToken | None = None) -> Iterator:
    """Time each prunable layer of `model` and the rest on `runtime`; yields Progress, then a Profile.

    Each round runs `passes` forward passes and keeps the fastest (see iter_paired_speedup for why the
    fastest); a layer's figure is the median over rounds with its order-statistic interval. With `curves`,
    each layer is then timed alone at WIDTH_POINTS output widths, the widths round-robin in each round."""
    check_runtime(runtime, device)
    cancel = cancel or CancelToken()
    load = machine_load()
    if device == "cpu" and not threads:
        threads = default_threads(load)
    threads = int(threads or 0) if device == "cpu" else 0
    key = cache_key(model, input_shape, batch, runtime, device, threads)
    if use_cache:
        cached = load_cached(key)
        if cached is not None and not cached.note and (cached.curves or not curves):
            yield Progress("profile", 1, 1, "read from the cache")
            yield _replace(cached, cached=True)
            return
    start = time.perf_counter()
    dev = torch.device(device)
    first = next(model.parameters(), None)
    if first is not None and first.device != dev:  # the caller's model stays where it is
        import copy

        model = copy.deepcopy(model).to(dev)
    model = model.eval()
    layers = prunable_layers(model)
    names = [n for n, _ in layers]
    x = torch.randn(batch, *input_shape, device=dev)
    deployed = None
    with fixed_threads(threads or None), torch.inference_mode():
        inputs = yield from _torch_layer_times(model, x, names, 1, 1, cancel)  # shapes (and a warm-up)
        inputs = inputs[2]
        if runtime == ONNXRUNTIME:
            with onnx_file(model, input_shape) as path:
                totals, per_layer = yield from _ort_layer_times(path, x, names, threads, device, rounds, passes,
                                                                cancel)
                deployed = _deployed_ms(path, x, threads, device, rounds, passes, cancel)
        else:
            totals, per_layer, _ = yield from _torch_layer_times(model, x, names, rounds, passes, cancel)
        total_low, total_high, coverage = median_interval(totals)
        total = statistics.median(totals)
        times = []
        for name, module in layers:
            low, high, _ = median_interval(per_layer[name])
            med = statistics.median(per_layer[name])
            out = module.out_features if isinstance(module, nn.Linear) else module.out_channels
            times.append(LayerTime(name, type(module).__name__, out, round(med, 4), round(low, 4), round(high, 4),
                                   round(med / total, 4) if total > 0 else 0.0))
        # what the layers leave of the median pass (medians per layer, not per round: a round's interruption by
        # other work lands in one place only, and the shares should add up to the whole)
        other = max(0.0, total - sum(t.ms for t in times))
        found: dict[str, WidthCurve] = {}
        if curves:
            todo = [(n, m) for n, m in layers if n in inputs]
            for i, (name, module) in enumerate(todo):
                built = _curve_models(module, inputs[name], runtime, threads, device)
                if built is None:
                    continue
                done = None
                for ev in iter_comparison_round(built, (1,), 1, device, rounds=5, runs_per_round=2,
                                                round_seconds=0.0, warmup=2, threads=threads or None,
                                                cancel=cancel):
                    if isinstance(ev, Progress):
                        yield Progress("curves", i, len(todo), f"{name} at {len(built)} widths: {ev.message}")
                    else:
                        done = ev
                found[name] = WidthCurve(name, tuple(int(f.name) for f in done.figures),
                                         tuple(round(f.median_ms, 4) for f in done.figures),
                                         tuple(round(f.low_ms, 4) for f in done.figures),
                                         tuple(round(f.high_ms, 4) for f in done.figures))
    profile = Profile(runtime, device, threads, batch, tuple(input_shape), round(total, 4), round(total_low, 4),
                      round(total_high, 4), tuple(times), round(other, 4), round(other / total, 4) if total else 0.0,
                      found, len(totals), round(coverage, 4), architecture_signature(model), machine_id(),
                      load.load_avg, round(time.perf_counter() - start, 2), False,
                      None if deployed is None else round(deployed, 4),
                      noise_note({"the whole pass": relative_spread(totals)}, load.cores, load.other_busy,
                                 load.load_avg, threads) if device == "cpu" else "")
    if use_cache and not profile.note:  # figures from a busy machine are shown once, never served again
        store(key, profile)
    yield profile


def _deployed_ms(path: Path, x: torch.Tensor, threads: int, device: str, rounds: int, passes: int,
                 cancel: CancelToken) -> float:
    """The median over rounds of the fastest pass with every onnxruntime optimisation (as deployed)."""
    from engine.timing import _timed_runs

    run = OrtModel(ort_session(path, threads, device))
    _warm_up(run, x, torch.device("cpu"), 2)
    return statistics.median(min(_timed_runs(run, x, torch.device("cpu"), passes, cancel=cancel))
                             for _ in range(rounds))


def _replace(profile: Profile, **changes) -> Profile:
    from dataclasses import replace

    return replace(profile, **changes)


def profile_model(model: nn.Module, input_shape: Shape, **kwargs) -> Profile:
    """iter_profile without the Progress events."""
    from engine.events import drain

    return drain(iter_profile(model, input_shape, **kwargs))
