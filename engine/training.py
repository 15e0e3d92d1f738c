"""Training and fine-tuning as a generator of events (optionally with knowledge distillation).

Fine-tuning spends the CPU on the model: an image folder is decoded and resized once per run into a
uint8 cache (`engine.data.cache`, the same batches as the uncached loader; a pruning run's steps share one,
`one_cache_per_run`), the teacher runs in inference mode as a BatchNorm-folded copy, torch uses the cores
other work leaves free (`StepThreads`), the optimiser updates all parameters in one fused kernel, and
the forward passes compute in bfloat16 where the processor does so natively (`TrainConfig.precision`,
`compute_dtype`; `prune --precision`, auto by default).
`TrainConfig.legacy_pipeline` keeps the pipeline before these changes (uncached loader, plain teacher and
optimiser, torch's own thread count), for the benchmark that compares them
(`benchmarks/finetune_throughput.py`).
"""
from __future__ import annotations

import contextlib
import functools
import math
import random
import time
from dataclasses import dataclass
from typing import Callable, Generator, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.data import Dataset
from engine.data.cache import CachedDataset, RunCache, cached_events
from engine.errors import UserError
from engine.events import CancelToken, EpochDone, Eta, Progress, TrainDone
from engine.timing import fixed_threads, free_threads, machine_load

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")
PRECISIONS = ("auto", "bf16", "fp32")  # fine-tuning's arithmetic (compute_dtype)
THREADS_EVERY_S = 30.0  # how often fine-tuning re-reads the cores other work leaves free


@dataclass(frozen=True)
class TrainConfig:
    """How to train or fine-tune; `max_batches` caps each epoch (a batch budget)."""

    epochs: float = 10
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    schedule: str = "onecycle"
    augment: bool = True
    label_smoothing: float = 0.0
    warmup: float = 0.0  # share of the steps the learning rate climbs linearly first (cosine and constant)
    max_batches: int | None = None
    distill_temperature: float = 2.0
    distill_weight: float = 0.7
    seed: int = 0
    device: str = "cpu"
    validate: bool = True
    legacy_pipeline: bool = False  # the pipeline before the cache and the fast step (benchmarks compare them)
    precision: str = "fp32"  # one of PRECISIONS: the arithmetic of the forward passes (compute_dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch so runs repeat."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def resolve_device(name: str) -> tuple[torch.device, str]:
    """The torch device for `name`, with a note when CUDA was asked for but is absent."""
    if name.startswith("cuda"):
        if torch.cuda.is_available():
            return torch.device(name), ""
        return torch.device("cpu"), "CUDA is not available on this machine; running on the CPU instead"
    if name != "cpu":
        raise UserError(f"unknown device {name!r}; use cpu or cuda")
    return torch.device("cpu"), ""


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 in hardware: a CUDA GPU that supports it, or a CPU with AVX-512 BF16
    or AMX. Elsewhere torch emulates it, slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return any(getattr(torch.cpu, probe, lambda: False)()
               for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


# The least work per training batch (multiply-accumulates of the forward pass) for which bfloat16 pays on a
# CPU: on this project's 2-core AMD EPYC (AVX-512 BF16) a training step of the ResNet demo took 0.68× float32's
# time at batch 8 (0.3 G) and the pruned demos' 0.61-0.63× at batch 128 (1.0-1.2 G), while the tests' 0.65 M-MAC
# model at batch 32 (0.02 G) took 0.97× and the suite's short runs were slower for the casts.
BF16_MIN_MACS_PER_BATCH = 2e8


def bfloat16_pays(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> bool:
    """Whether bfloat16 should speed up training `model` on a CPU that has it: dense convolutions only
    (MobileNetV2's depthwise ones made its step 1.56× slower than float32) and enough work per batch."""
    from engine.metrics import count_macs

    if any(isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 for m in model.modules()):
        return False
    return count_macs(model, tuple(input_shape)) * batch_size >= BF16_MIN_MACS_PER_BATCH


def compute_dtype(precision: str, device: torch.device, model: nn.Module | None = None,
                  input_shape: tuple[int, ...] | None = None, batch_size: int = 1) -> torch.dtype | None:
    """What fine-tuning's forward passes compute in under autocast; None: float32 throughout.

    bfloat16 keeps float32's range, so no loss scaling is needed, and the weights, gradients and optimiser
    stay float32: on this project's 2-core AMD EPYC (AVX-512 BF16) a pruned resnet18's training step at
    224×224 and the teacher's forward pass took about half the time (benchmarks/finetune_throughput.py).
    `auto` takes it where the device has it natively and, on a CPU, where `model` (at `input_shape`, in
    batches of `batch_size`) is one it pays for (bfloat16_pays)."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if not native_bfloat16(device):
        if precision == "bf16":
            raise UserError(f"this {'GPU' if device.type == 'cuda' else 'processor'} does not compute bfloat16 "
                            "natively (torch would emulate it, slower than float32); use --precision auto or fp32")
        return None
    if precision == "auto" and device.type == "cpu" and model is not None and input_shape is not None \
            and not bfloat16_pays(model, input_shape, batch_size):
        return None
    return torch.bfloat16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton's soft-target loss, scaled by T² so gradients keep their size."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1),
                    reduction="batchmean") * t * t


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on BatchNorm and biases: standard practice, and it keeps BN scales meaningful for pruning.
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # One fused kernel over all parameters rather than a Python loop over them: the same arithmetic.
    fast = {} if cfg.legacy_pipeline else {"fused": True}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, **fast)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **fast)
    raise UserError(f"unknown optimizer {cfg.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def _lr_at(cfg: TrainConfig, step: int, total: int) -> float:
    frac = step / max(1, total)
    if cfg.warmup > 0 and cfg.schedule != "onecycle":  # one-cycle has its own warm-up
        if frac < cfg.warmup:
            return cfg.lr * (0.1 + 0.9 * frac / cfg.warmup)
        frac = (frac - cfg.warmup) / (1 - cfg.warmup)
    if cfg.schedule == "onecycle":
        warm = 0.15
        if frac < warm:
            return cfg.lr * (0.1 + 0.9 * frac / warm)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (frac - warm) / (1 - warm)))
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * frac))
    if cfg.schedule == "constant":
        return cfg.lr
    raise UserError(f"unknown schedule {cfg.schedule!r}; valid: {', '.join(SCHEDULES)}")


@torch.no_grad()
def quick_top1(model: nn.Module, data: Dataset, split: str = "val", device: torch.device | str = "cpu",
               limit: int | None = None, batch_size: int = 256, cancel: CancelToken | None = None) -> float:
    """Top-1 accuracy on a split (or its stratified `limit`-image sample), without the full metric set."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in data.loader(split, batch_size, limit=limit):
        if cancel:
            cancel.check()
        out = model(x.to(device))
        correct += int((out.argmax(1).cpu() == y).sum())
        total += len(y)
    model.train(was_training)
    return correct / max(1, total)


def _batches_per_epoch(data: Dataset, cfg: TrainConfig) -> tuple[int, int]:
    """(batch size, batches per epoch); a small dataset still fine-tunes: the batch shrinks to what the
    split holds."""
    images = data.split_size("train")
    if images < 2:
        raise UserError(f"the training split holds {images} image(s): fine-tuning needs at least 2 (BatchNorm "
                        "needs a batch); add training images or turn fine-tuning off")
    batch_size = min(cfg.batch_size, images)
    batches = len(data.loader("train", batch_size, drop_last=True))
    if cfg.max_batches:
        batches = min(batches, cfg.max_batches)
    return batch_size, batches


def inference_teacher(teacher: nn.Module, layout: torch.memory_format | None = None) -> nn.Module:
    """A copy of the (eval-mode) teacher with BatchNorm folded into the convolutions before it, in `layout`,
    for inference only: the same outputs up to rounding, one pass over memory fewer per layer. The teacher
    itself, unchanged, where the folding cannot trace it."""
    from torch.fx.experimental.optimization import fuse

    try:
        folded = fuse(teacher.eval())  # copies; the original is timed later unchanged
    except Exception:  # noqa: BLE001 - not traceable by torch.fx (data-dependent control flow): unfolded
        return teacher
    return folded.to(memory_format=layout) if layout is not None else folded


def teacher_logits(teacher: nn.Module, x: torch.Tensor, legacy: bool = False,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """The teacher's outputs for a batch (float32), recorded by no autograd graph; computed in `dtype`."""
    if legacy:
        with torch.no_grad():
            return teacher(x)
    with torch.inference_mode(), _autocast(x.device, dtype):
        out = teacher(x)
    return out.float().clone()  # an ordinary tensor again: the loss's backward may keep it


def _step(model: nn.Module, opt, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, teacher: nn.Module | None,
          regularizer: Callable[[nn.Module], None] | None,
          dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step (with the teacher's soft targets when distilling); returns outputs and loss.
    The forward passes compute in `dtype`; the losses in float32."""
    with _autocast(x.device, dtype):
        out = model(x)
    out = out.float()
    loss = F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)
    if teacher is not None:
        soft = teacher_logits(teacher, x, cfg.legacy_pipeline, dtype)
        w = cfg.distill_weight
        loss = (1 - w) * loss + w * distillation_loss(out, soft, cfg.distill_temperature)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if regularizer is not None:
        regularizer(model)
    opt.step()
    return out, loss


class StepThreads:
    """torch's thread count for training steps: the cores other work leaves free (at most the count set when
    training began), re-read every THREADS_EVERY_S. A thread beyond the free cores waits at every barrier of
    every layer while the OS runs the other job: on 2 cores at load 33 a demo distillation batch took 11 s of
    wall time with 2 threads and 1.1-2 s with 1 (benchmarks/finetune_throughput.py)."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.most, self.due = enabled, torch.get_num_threads(), 0.0

    def update(self) -> None:
        """Set the thread count if it is time to look again."""
        if not self.enabled or time.monotonic() < self.due:
            return
        load = machine_load(0.1)
        torch.set_num_threads(free_threads(load.cores, load.other_busy, self.most))
        self.due = time.monotonic() + THREADS_EVERY_S


def one_cache_per_run(run: Callable[..., Generator]) -> Callable[..., Generator]:
    """Wrap a run generator `run(bundle, data, ...)` so that every `train()` in it shares one image cache of a
    folder `data` (decoded once per run, not once per step), removed when the run ends, fails or is closed."""

    @functools.wraps(run)
    def wrapped(bundle, data: Dataset, *args, **kw) -> Generator:
        if data.kind != "folder":
            return (yield from run(bundle, data, *args, **kw))
        with RunCache(data) as shared:
            return (yield from run(bundle, shared, *args, **kw))

    return wrapped


def train(model: nn.Module, data: Dataset, cfg: TrainConfig, cancel: CancelToken | None = None,
          teacher: nn.Module | None = None, regularizer: Callable[[nn.Module], None] | None = None,
          phase: str = "train") -> Iterator:
    """Train `model` in place, yielding Progress, one EpochDone per epoch, then TrainDone.

    `teacher` turns on knowledge distillation; `regularizer` is called after each backward pass
    (e.g. the L1 penalty on BatchNorm scales of Network Slimming).
    """
    if cfg.epochs <= 0:
        raise UserError(f"epochs must be positive, got {cfg.epochs}")
    cancel = cancel or CancelToken()
    device, _ = resolve_device(cfg.device)
    batch_size, batches = _batches_per_epoch(data, cfg)
    cache = None  # built here, removed here; a RunCache's belongs to its run
    if not cfg.legacy_pipeline and data.kind == "folder" and not isinstance(data, CachedDataset):
        splits = ("train", "val") if cfg.validate else ("train",)
        if isinstance(data, RunCache):
            data = yield from data.cached_events(splits, cancel, phase)
        else:
            data = cache = yield from cached_events(data, splits, cancel, phase)
    # Channels-last convolutions train faster on CPUs (oneDNN's native layout); the weights go back after.
    layout = torch.channels_last if not cfg.legacy_pipeline and len(data.input_shape) == 3 else None
    try:
        with fixed_threads(None):  # torch's thread count is restored after
            if layout is not None:
                model.to(memory_format=layout)
            return (yield from _train(model, data, cfg, cancel, teacher, regularizer, phase, device, batch_size,
                                      batches, layout))
    finally:
        if layout is not None:
            model.to(memory_format=torch.contiguous_format)
        if cache is not None:
            cache.close()


def _train(model: nn.Module, data: Dataset, cfg: TrainConfig, cancel: CancelToken, teacher: nn.Module | None,
           regularizer, phase: str, device: torch.device, batch_size: int, batches: int,
           layout: torch.memory_format | None) -> Iterator:
    """The epochs of `train`, once the data is cached and the threads set."""
    seed_everything(cfg.seed)
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
        if not cfg.legacy_pipeline:
            teacher = inference_teacher(teacher, layout)
    opt = _optimizer(model, cfg)
    dtype = None if cfg.legacy_pipeline else compute_dtype(cfg.precision, device, model, data.input_shape, batch_size)
    whole = int(math.ceil(cfg.epochs))
    total = max(1, int(round(cfg.epochs * batches)))
    eta = Eta(total)
    threads = StepThreads(enabled=not cfg.legacy_pipeline and device.type == "cpu")
    step, history, lr = 0, [], cfg.lr
    for epoch in range(whole):
        loader = data.loader("train", batch_size, shuffle=True, augment=cfg.augment, seed=cfg.seed + epoch,
                             drop_last=True)
        loss_sum = correct = seen = 0.0
        for i, (x, y) in enumerate(loader):
            if i >= batches or step >= total:
                break
            cancel.check()
            threads.update()
            lr = _lr_at(cfg, step, total)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if layout is not None:
                x = x.contiguous(memory_format=layout)
            out, loss = _step(model, opt, x, y, cfg, teacher, regularizer, dtype)
            step += 1
            loss_sum += float(loss.detach()) * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            if step % 10 == 0 or step == total:
                yield Progress(phase, step, total, f"epoch {epoch + 1}/{whole} loss {loss_sum / seen:.3f}", eta(step))
        val = quick_top1(model, data, "val", device, cancel=cancel) if cfg.validate else None
        model.train()
        done = EpochDone(epoch + 1, whole, loss_sum / max(1, seen), correct / max(1, seen), val, lr)
        history.append(done)
        yield done
    model.eval()
    yield TrainDone(tuple(history), "bfloat16" if dtype == torch.bfloat16 else "float32")
