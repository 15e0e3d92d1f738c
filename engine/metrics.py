"""Measurement: quality and size, and `evaluate`, which adds speed and memory (engine/timing.py) — the
numbers every comparison relies on."""
from __future__ import annotations

import copy
import io
import zlib
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch
import torch.nn as nn

from engine.data import Dataset, Shape
from engine.errors import UserError
from engine.events import CancelToken, EvalDone, Eta, Progress, relay
from engine.timing import measure_latency, measure_peak_memory
from engine.units import wilson_interval


@dataclass
class Metrics:
    """All figures of one model on one dataset and device (`to_json` is the form `--json` writes)."""

    top1: float = 0.0
    top5: float = 0.0
    precision_macro: float = 0.0
    recall_macro: float = 0.0
    f1_macro: float = 0.0
    params: int = 0
    nonzero_params: int = 0
    macs: int = 0
    size_bytes: int = 0
    compressed_bytes: int = 0
    latency_ms: dict = field(default_factory=dict)
    throughput_ips: float = 0.0
    peak_memory_bytes: int = 0
    per_class: dict = field(default_factory=dict)
    confusion: np.ndarray | None = None
    device: str = "cpu"
    samples: int = 0  # the images evaluated: every interval rests on this count
    f1_ci: tuple[float, float] | None = field(default=None, repr=False)  # computed once (a bootstrap)

    KEYS = ("top1", "top5", "precision_macro", "recall_macro", "f1_macro", "params", "nonzero_params", "macs",
            "size_bytes", "compressed_bytes", "latency_ms", "throughput_ips", "peak_memory_bytes")
    INTERVALS = {"top1": "top1_interval", "top5": "top5_interval", "f1_macro": "f1_interval"}  # JSON names

    @property
    def sparsity(self) -> float:
        """Share of parameters that are exactly zero."""
        return 1.0 - self.nonzero_params / self.params if self.params else 0.0

    def latency(self, batch: int | str | None = None, stat: str = "median") -> float:
        """Latency in ms at a batch size (default: the largest measured)."""
        if not self.latency_ms:
            return 0.0
        key = str(batch) if batch is not None else max(self.latency_ms, key=int)
        return float(self.latency_ms.get(key, {}).get(stat, 0.0))

    def interval(self, key: str) -> tuple[float, float] | None:
        """The 95 % interval of `top1`, `top5` or `f1_macro` from the images evaluated (None: count unknown).

        Top-1 and top-5: Wilson's interval of a proportion; macro-F1: `macro_f1_interval`."""
        if self.samples <= 0:
            return None
        if key == "f1_macro":
            if self.f1_ci is None:
                self.f1_ci = macro_f1_interval(self.confusion, self.f1_macro, self.samples)
            return self.f1_ci
        return wilson_interval(getattr(self, key), self.samples)

    def figure_text(self, key: str) -> str:
        """'93.60 % (95 % CI 91.9–95.0, 1,000 images)': the figure with its interval, as every view shows it."""
        text = f"{getattr(self, key) * 100:.2f} %"
        ci = self.interval(key)
        return text if ci is None else f"{text} ({interval_words(ci, self.samples)})"

    def interval_columns(self) -> dict:
        """`eval_images` and each accuracy's 95 % interval as CSV columns (`top1_interval_low`, …; empty when the
        image count is unknown): one naming for the store's, the report's and the window's CSV."""
        row: dict = {"eval_images": self.samples or ""}
        for key, name in self.INTERVALS.items():
            low, high = self.interval(key) or ("", "")
            row[f"{name}_low"], row[f"{name}_high"] = low, high
        return row

    def to_json(self, detail: bool = True) -> dict:
        """The metrics object of `evaluate --json` (README): the figures, `eval_images` and each accuracy's
        95 % interval, plus per-class figures (with `eval_images` again) and the confusion matrix when `detail`."""
        out = {k: getattr(self, k) for k in self.KEYS}
        if self.samples > 0:
            out["eval_images"] = self.samples
            out.update({name: [round(v, 6) for v in self.interval(key)] for key, name in self.INTERVALS.items()})
        if detail:
            out["per_class"] = dict(self.per_class, eval_images=self.samples) if self.per_class else self.per_class
            out["confusion"] = self.confusion.tolist() if self.confusion is not None else None
        return out

    @classmethod
    def from_json(cls, obj: dict) -> "Metrics":
        """Inverse of to_json; JSON written before the intervals existed gets them from its image count."""
        m = cls(**{k: obj[k] for k in cls.KEYS if k in obj})
        m.per_class = {k: v for k, v in (obj.get("per_class") or {}).items() if k != "eval_images"}
        if obj.get("confusion") is not None:
            m.confusion = np.asarray(obj["confusion"], dtype=np.int64)
        m.samples = int(obj.get("eval_images") or obj.get("samples") or 0)
        if obj.get("f1_interval"):
            m.f1_ci = tuple(float(v) for v in obj["f1_interval"])
        return m


def interval_words(ci: tuple[float, float], n: int) -> str:
    """'95 % CI 91.9–95.0, 1,000 images' for an interval of rates in [0, 1]."""
    return f"95 % CI {ci[0] * 100:.1f}–{ci[1] * 100:.1f}, {n:,} image{'s' if n != 1 else ''}"


F1_BOOTSTRAP_REPS = 1000
F1_BOOTSTRAP_SEED = 0
F1_BOOTSTRAP_WORK = 5_000_000  # resamples × matrix cells: about a second; many classes get fewer resamples


def macro_f1_interval(confusion: np.ndarray | None, f1: float, n: int,
                      reps: int = F1_BOOTSTRAP_REPS, seed: int = F1_BOOTSTRAP_SEED) -> tuple[float, float]:
    """95 % interval of macro-F1: a seeded bootstrap over the `n` evaluated images (percentiles 2.5 and 97.5).

    Resampling the images is resampling the confusion matrix's cells (a multinomial over its non-empty
    cells), so no prediction needs to be kept; with very many non-empty cells fewer resamples are drawn
    (at least 100), to keep it near a second. Where the resamples cannot vary (every image right) or
    there is no confusion matrix, Wilson's interval of the F1 as a proportion of `n` images stands in, so
    a perfect score on 60 images still shows its width.
    """
    if n <= 0:
        return 0.0, 1.0
    if confusion is None or int(np.asarray(confusion).sum()) != n:
        return wilson_interval(f1, n)
    c = np.asarray(confusion, dtype=np.int64)
    k = c.shape[0]
    rows, cols = np.nonzero(c)
    p = c[rows, cols] / n
    reps = max(100, min(reps, F1_BOOTSTRAP_WORK // len(rows)))  # thousands of classes: a narrow interval anyway
    diag = rows == cols
    rng = np.random.Generator(np.random.PCG64(seed))
    scores = []
    for start in range(0, reps, 100):  # in chunks: reps × cells counts stay small for many classes
        draws = rng.multinomial(n, p, size=min(100, reps - start)).astype(np.float64)
        b = len(draws)
        offset = (np.arange(b) * k)[:, None]

        def per_class(index: np.ndarray, weights: np.ndarray) -> np.ndarray:
            flat = (offset + index[None, :]).ravel()
            return np.bincount(flat, weights=weights.ravel(), minlength=b * k).reshape(b, k)

        tp = per_class(rows[diag], draws[:, diag])
        both = per_class(rows, draws) + per_class(cols, draws)  # actual + predicted
        f1s = np.divide(2.0 * tp, both, out=np.zeros(tp.shape), where=both > 0)  # = 2PR/(P+R), 0 without a hit
        scores.append(f1s.mean(1))
    scores = np.concatenate(scores)
    low, high = (float(v) for v in np.percentile(scores, [2.5, 97.5]))
    if high - low < 1e-12:
        return wilson_interval(f1, n)
    return min(low, f1), max(high, f1)


# ----------------------------------------------------------------------------- quality

def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    idx = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_scores(confusion: np.ndarray) -> dict:
    """Per-class and macro precision, recall and F1 (a class never predicted scores 0, as zero_division=0)."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    predicted, actual = c.sum(0), c.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
        "support": actual.astype(int).tolist(),
        "precision_macro": float(precision.mean()), "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()), "top1": float(tp.sum() / c.sum()) if c.sum() else 0.0,
    }


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, k: int) -> int:
    """How many labels are among the k highest logits."""
    k = min(k, logits.shape[1])
    return int((logits.topk(k, 1).indices == labels[:, None]).any(1).sum())


def evaluate_quality(model: nn.Module, data: Dataset, split: str = "test", device: str = "cpu",
                     batch_size: int = 256, limit: int | None = None,
                     cancel: CancelToken | None = None) -> Iterator:
    """Yield Progress per batch, then a dict with top-1/5, macro scores and the confusion matrix."""
    cancel = cancel or CancelToken()
    dev = torch.device(device)
    model.eval()
    loader = data.loader(split, batch_size, limit=limit)
    total, eta = len(loader), Eta(len(loader))
    preds, labels, top5 = [], [], 0
    with torch.inference_mode():
        for i, (x, y) in enumerate(loader):
            cancel.check()
            logits = model(x.to(dev, non_blocking=True)).float().cpu()
            if not bool(torch.isfinite(logits).all()):  # argmax of NaN is class 0: a score that means nothing
                raise UserError(f"the model's outputs on {split} batch {i + 1} of {total} are not finite (NaN or Inf), "
                                "so its accuracy would mean nothing; a layer overflows or its weights diverged "
                                "(fine-tuning: lower the learning rate)")
            preds.append(logits.argmax(1).numpy())
            labels.append(y.numpy())
            top5 += topk_correct(logits, y, 5)
            yield Progress("evaluate", i + 1, total, f"{split} batch {i + 1}/{total}", eta(i + 1))
    y_true, y_pred = np.concatenate(labels), np.concatenate(preds)
    conf = confusion_matrix(y_true, y_pred, data.num_classes)
    scores = classification_scores(conf)
    scores["top5"] = top5 / max(1, len(y_true))
    scores["confusion"] = conf
    scores["samples"] = int(len(y_true))
    yield scores


# ----------------------------------------------------------------------------- size

def _effective_params(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """Parameters as the forward pass sees them (masked weights while torch pruning masks are attached)."""
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if pname.endswith("_orig"):
                p = getattr(module, pname[:-5])
                pname = pname[:-5]
            yield f"{mname}.{pname}" if mname else pname, p


def count_params(model: nn.Module) -> int:
    """Number of parameters."""
    return sum(p.numel() for _, p in _effective_params(model))


def count_nonzero(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero."""
    return sum(int(torch.count_nonzero(p.detach())) for _, p in _effective_params(model))


def count_macs(model: nn.Module, input_shape: Shape, device: str = "cpu") -> int:
    """Multiply-accumulates of one forward pass at batch 1 (torch-pruning's counter)."""
    import torch_pruning as tp

    if isinstance(model, torch.jit.ScriptModule):
        return 0
    try:  # the counter deep-copies what it is given: a shape-only copy costs nothing (vit_l_16's was 1.2 GB)
        with torch.no_grad():
            macs, _ = tp.utils.count_ops_and_params(shape_copy(model).eval(),
                                                    torch.zeros(1, *input_shape, device="meta"))
        return int(macs)
    except Exception:  # noqa: BLE001 - an operation without a shape-only kernel: count on the weights
        pass
    example = torch.zeros(1, *input_shape, device=device)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, _ = tp.utils.count_ops_and_params(model, example)
    model.train(was_training)
    return int(macs)


def shape_copy(model: nn.Module) -> nn.Module:
    """A copy of `model` whose weights and buffers are shapes only (PyTorch's meta device): no memory,
    and a forward pass computes nothing but shapes."""
    memo: dict = {}
    for t in [*model.parameters(), *model.buffers()]:
        empty = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(empty, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else empty
    return copy.deepcopy(model, memo)


def _state(model: nn.Module) -> dict:
    """The model's weights as they are saved (masks folded in)."""
    state = {name: p.detach().cpu() for name, p in _effective_params(model)}
    state.update({n: b.detach().cpu() for n, b in model.named_buffers() if not n.endswith("_mask")})
    return state


COMPRESS_CHUNK = 1 << 20


def size_on_disk(model: nn.Module) -> tuple[int, int]:
    """(bytes of the saved weights, bytes after zlib compression, where zeros cost almost nothing).

    Level 1: zeros still cost almost nothing, and ResNet-50's 100 MB compress in about a second instead of
    eight (loading a large model waited on it). In 1 MiB pieces: one `zlib.compress` call on 100 MB held
    the GIL long enough to freeze the GUI's event loop for 70 ms and more; the size is the same."""
    sink = _Measured()
    torch.save(_state(model), sink)  # streamed: a large model's file is never held in memory whole
    return sink.size, sink.compressed + len(sink.packer.flush())


class _Measured(io.RawIOBase):
    """A file that keeps nothing: it counts what is written and compresses it as it comes."""

    def __init__(self) -> None:
        super().__init__()
        self.size = self.compressed = 0
        self.packer = zlib.compressobj(1)

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        for i in range(0, len(view), COMPRESS_CHUNK):
            self.compressed += len(self.packer.compress(view[i:i + COMPRESS_CHUNK]))
        self.size += len(view)
        return len(view)


# ----------------------------------------------------------------------------- all together

def evaluate(model: nn.Module, data: Dataset, *, device: str = "cpu", batch_size: int = 64,
             split: str = "test", limit: int | None = None, speed: bool = True, threads: int | None = None,
             repeats: int = 30, cancel: CancelToken | None = None) -> Iterator:
    """Measure everything: yields Progress events, then EvalDone(Metrics)."""
    cancel = cancel or CancelToken()
    model = model.to(device).eval()
    scores = yield from relay(evaluate_quality(model, data, split, device, max(batch_size, 128), limit, cancel))
    yield Progress("measure", 0, 3, "size and MACs")
    m = Metrics(device=device)
    for key in ("top1", "top5", "precision_macro", "recall_macro", "f1_macro"):
        setattr(m, key, float(scores[key]))
    m.per_class = {k: scores[k] for k in ("precision", "recall", "f1", "support")}
    m.per_class["names"] = list(data.class_names)
    m.confusion, m.samples = scores["confusion"], scores["samples"]
    m.interval("f1_macro")  # the bootstrap once, here, rather than in whichever view asks first
    m.params, m.nonzero_params = count_params(model), count_nonzero(model)
    m.macs = count_macs(model, data.input_shape, device)
    m.size_bytes, m.compressed_bytes = size_on_disk(model)
    if speed:
        cancel.check()
        yield Progress("measure", 1, 3, "latency")
        sizes = (1,) if batch_size == 1 else (1, batch_size)
        m.latency_ms = measure_latency(model, data.input_shape, sizes, device, threads=threads, repeats=repeats,
                                       cancel=cancel)
        m.throughput_ips = round(batch_size / (m.latency(batch_size) / 1000.0), 2) if m.latency(batch_size) else 0.0
        cancel.check()
        yield Progress("measure", 2, 3, "memory")
        m.peak_memory_bytes = measure_peak_memory(model, data.input_shape, batch_size, device)
    yield Progress("measure", 3, 3, "done")
    yield EvalDone(m)
