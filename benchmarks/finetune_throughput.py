"""Fine-tuning throughput: where the time of a distillation fine-tuning step goes, and today's pipeline
(`TrainConfig(legacy_pipeline=True)`) against the fast one, measured interleaved in one process. The fast
one computes in `--precision` (default auto, as `prune`: bfloat16 where the processor has it natively).

Workloads: the ResNet demo on Fashion-MNIST, and an untrained torchvision:resnet18 on a folder of 2 000
random 256×256 RGB JPEGs (made in a temporary folder, removed at the end) at 224×224. Each student is the
model pruned by l2 at 0.5 (round_to 8); the teacher is the unpruned model, as in `prune --distill`.

Run: .venv/bin/python benchmarks/finetune_throughput.py [--workloads demo,resnet18] [--rounds 3]
     [--batches 8] [--profile-batches 4] [--json out.json]
The machine may be busy: both pipelines alternate batch runs (order swapped every round), the median of
the rounds is reported with the load average before and after. The fast pipeline trains on the cores other
work leaves free (`engine.training.StepThreads`), today's on torch's default of one thread per core: on a
busy machine much of the difference is that, on a quiet one none of it.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import PruneConfig  # noqa: E402
from engine.data.cache import cached  # noqa: E402
from engine.data.loading import FolderTransform, decode  # noqa: E402
from engine.data.tensors import convert_batch, random_crop_flip  # noqa: E402
from engine.events import CancelToken, drain  # noqa: E402
from engine.inputs import load_inputs  # noqa: E402
from engine.pruners import make_pruner  # noqa: E402
from engine.timing import fixed_threads  # noqa: E402
from engine.training import (StepThreads, TrainConfig, _optimizer, compute_dtype,  # noqa: E402
                             distillation_loss, inference_teacher, quick_top1, teacher_logits, train)

STAGES = ("decode", "resize", "augment", "teacher forward", "student forward", "student backward", "optimiser")


def make_folder(root: Path, images: int = 2000, classes: int = 10, side: int = 256) -> Path:
    """`images` RGB JPEGs of `side`² in `classes` class folders: smooth random colour fields with noise
    (so they compress like photos, not like flat colour)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(images):
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        low = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((side, side), Image.BICUBIC)
        pixels = np.asarray(low, dtype=np.int16) + rng.integers(-12, 13, (side, side, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return root


def pruned(model: torch.nn.Module, data, shape) -> torch.nn.Module:
    """`model` pruned by l2 at 0.5 with round_to 8, through the engine's own pruner."""
    cfg = PruneConfig(method="l2", pruning_ratio=0.5, round_to=8)
    student, cancel = copy.deepcopy(model).eval(), CancelToken()
    pruner = make_pruner(student, cfg.validate(), cfg, torch.zeros(1, *shape), data.num_classes, 1, cancel)
    drain(pruner.calibrate(data, torch.device("cpu"), cancel))
    drain(pruner.step(1, cancel))
    pruner.finish()
    for p in student.parameters():
        p.requires_grad_(True)
    return student


def workload(name: str, folder: Path | None) -> dict:
    """Teacher, student, data and batch size of one workload."""
    if name == "demo":
        inputs, batch = load_inputs("demo:resnet", "fashion-mnist"), 128
    else:
        inputs, batch = load_inputs("torchvision:resnet18", f"imagefolder:{folder}", input_shape=(3, 224, 224)), 32
    teacher = inputs.bundle.model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    shape = inputs.bundle.input_shape or inputs.data.input_shape
    return {"name": name, "teacher": teacher, "student": pruned(teacher, inputs.data, shape), "data": inputs.data,
            "batch": batch}


class Clock:
    """Seconds spent per stage."""

    def __init__(self) -> None:
        self.spent = dict.fromkeys(STAGES, 0.0)

    def __call__(self, stage: str, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.spent[stage] += time.perf_counter() - t0
        return out


def _legacy_batch(w: dict, plan: list, clock: Clock):
    """One batch as today's loader makes it, each stage timed (folder: per image, as its workers do)."""
    data = w["data"]
    if data.kind == "folder":
        transform = FolderTransform(tuple(data.input_shape), data.norm, data.flip)
        xs, ys = [], []
        for i, seed in plan:
            path, label = data.splits["train"].samples[i]
            raw = clock("decode", decode, path, transform.shape[1:])
            x = clock("resize", lambda r: convert_batch(r[None].float().div_(255.0), transform.shape), raw)
            x = clock("augment", lambda v, s: (random_crop_flip(v, torch.Generator().manual_seed(s), pad=transform.pad,
                                                                flip=transform.flip)[0] - transform.mean) / transform.std,
                      x, seed)
            xs.append(x)
            ys.append(label)
        return clock("augment", torch.stack, xs), torch.tensor(ys)
    split, norm = data.splits["train"], data.norm.adapted(data.input_shape[0])
    idx = split.indices[torch.tensor([i for i, _ in plan])]
    x = clock("resize", lambda: convert_batch(split.images[idx].float().div_(255.0), data.input_shape))
    mean, std = torch.tensor(norm.mean).view(1, -1, 1, 1), torch.tensor(norm.std).view(1, -1, 1, 1)
    g = torch.Generator().manual_seed(plan[0][1])
    x = clock("augment", lambda: (random_crop_flip(x, g, flip=data.flip) - mean) / std)
    return x, split.labels[idx]


def _fast_batch(loader_iter, clock: Clock):
    """One batch from the cache (the slice is counted as resizing's successor, shifts and flips as augmentation)."""
    return clock("augment", next, loader_iter)


def profile(w: dict, batches: int, fast: bool, cache=None, precision: str = "fp32") -> dict:
    """Seconds per stage over `batches` distillation steps, in this thread (no loader workers), on the
    threads each pipeline's `train` would use."""
    with fixed_threads(None):
        StepThreads(enabled=fast).update()
        return _profile(w, batches, fast, cache, precision)


def _profile(w: dict, batches: int, fast: bool, cache=None, precision: str = "fp32") -> dict:
    cfg = TrainConfig(batch_size=w["batch"], lr=0.01, legacy_pipeline=not fast)
    student = copy.deepcopy(w["student"]).train()
    layout = torch.channels_last if fast else None
    if fast:
        student.to(memory_format=layout)
    teacher = inference_teacher(w["teacher"], layout) if fast else w["teacher"]
    opt = _optimizer(student, cfg)
    dtype = compute_dtype(precision, torch.device("cpu"), student, w["data"].input_shape, w["batch"]) if fast else None
    clock = Clock()
    n = w["data"].split_size("train")
    gen = torch.Generator().manual_seed(0)
    loader_iter = None
    if fast:
        source = cache if cache is not None else w["data"]
        loader_iter = iter(source.loader("train", w["batch"], shuffle=True, augment=True, seed=0, drop_last=True))
    t0 = time.perf_counter()
    for _ in range(batches):
        if fast:
            x, y = _fast_batch(loader_iter, clock)
        else:
            order = torch.randperm(n, generator=gen)[:w["batch"]].tolist()
            seeds = torch.randint(0, 2**31 - 1, (len(order),), generator=gen).tolist()
            x, y = _legacy_batch(w, list(zip(order, seeds)), clock)
        if layout is not None:
            x = clock("augment", lambda: x.contiguous(memory_format=layout))
        soft = clock("teacher forward", teacher_logits, teacher, x, not fast, dtype)

        def forward():
            with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
                out = student(x).float()
            return 0.3 * F.cross_entropy(out, y) + 0.7 * distillation_loss(out, soft, 4.0)

        loss = clock("student forward", forward)
        clock("student backward", loss.backward)
        clock("optimiser", lambda: (opt.step(), opt.zero_grad(set_to_none=True)))
    total = time.perf_counter() - t0
    return {"seconds": total, "images_per_s": batches * w["batch"] / total, "stages": clock.spent}


def cpu_seconds() -> float:
    """CPU time of this process and its live children (today's loader decodes in worker processes): on a busy
    machine a pipeline with more processes gets more of the CPU, which wall time alone would credit to it."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for proc in (me, *me.children(recursive=True)):
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def timed_run(w: dict, data, legacy: bool, batches: int, seed: int,
              precision: str = "fp32") -> tuple[float, float, torch.nn.Module]:
    """Wall and CPU seconds of `train` over `batches` distillation batches, and the student it trained."""
    student = copy.deepcopy(w["student"])
    cfg = TrainConfig(epochs=1, batch_size=w["batch"], lr=0.01, schedule="cosine", max_batches=batches, seed=seed,
                      validate=False, legacy_pipeline=legacy, precision=precision)
    t0, c0 = time.perf_counter(), cpu_seconds()
    drain(train(student, data, cfg, teacher=w["teacher"]))
    return time.perf_counter() - t0, cpu_seconds() - c0, student


def interleaved(w: dict, rounds: int, batches: int, cache, top1_images: int = 500, precision: str = "fp32") -> dict:
    """images/s of both pipelines, alternating (a warm-up pair first, not counted)."""
    ips = {"legacy": [], "fast": []}
    per_cpu = {"legacy": [], "fast": []}
    fast_data = cache if cache is not None else w["data"]
    students = {}
    for r in range(rounds + 1):
        order = ("legacy", "fast") if r % 2 == 0 else ("fast", "legacy")
        for which in order:
            seconds, cpu, students[which] = timed_run(w, w["data"] if which == "legacy" else fast_data,
                                                      which == "legacy", batches, seed=r, precision=precision)
            if r:
                ips[which].append(batches * w["batch"] / seconds)
                per_cpu[which].append(batches * w["batch"] / cpu)
            print(f"  round {r}{' (warm-up)' if not r else ''} {which}: {batches * w['batch'] / seconds:.2f} images/s, "
                  f"{batches * w['batch'] / cpu:.2f} images per CPU-second", flush=True)
    same = max(float((a - b).abs().max()) for a, b in zip(students["legacy"].state_dict().values(),
                                                           students["fast"].state_dict().values())
               if a.is_floating_point())
    top1 = {k: quick_top1(m, w["data"], "val", limit=top1_images) for k, m in students.items()} if top1_images else {}
    med = {k: statistics.median(v) for k, v in ips.items()}
    med_cpu = {k: statistics.median(v) for k, v in per_cpu.items()}
    return {"images_per_s": ips, "median": med, "speedup": med["fast"] / med["legacy"],
            "images_per_cpu_s": per_cpu, "median_per_cpu_s": med_cpu, "cpu_speedup": med_cpu["fast"] / med_cpu["legacy"],
            "max_weight_difference": same, "top1_val500": top1}


def print_profile(name: str, legacy: dict, fast: dict) -> None:
    print(f"\n{name}: share of a distillation step's time (single thread of control, no loader workers)")
    print(f"  {'stage':<18} {'today s':>9} {'today %':>8} {'fast s':>9} {'fast %':>8}")
    for stage in STAGES:
        a, b = legacy["stages"][stage], fast["stages"][stage]
        print(f"  {stage:<18} {a:9.2f} {100 * a / legacy['seconds']:7.1f}% {b:9.2f} {100 * b / fast['seconds']:7.1f}%")
    print(f"  {'total':<18} {legacy['seconds']:9.2f} {'':8} {fast['seconds']:9.2f}")
    print(f"  images/s: today {legacy['images_per_s']:.1f}, fast {fast['images_per_s']:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="demo,resnet18")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=8, help="batches per timed run")
    ap.add_argument("--profile-batches", type=int, default=4)
    ap.add_argument("--images", type=int, default=2000, help="images in the resnet18 workload's folder")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--no-profile", action="store_true", help="only the interleaved runs")
    ap.add_argument("--top1-images", type=int, default=500, help="validation images for the top-1 check (0: none)")
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                    help="the fast pipeline's fine-tuning precision (auto: as `prune` does by default)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the temporary folder is removed
    results = {"load_before": os.getloadavg(), "threads": torch.get_num_threads(), "precision": args.precision}
    tmp = Path(tempfile.mkdtemp(prefix="prunelab-finetune-bench-"))
    try:
        for name in args.workloads.split(","):
            folder = make_folder(tmp / "photos", args.images) if name == "resnet18" else None
            w = workload(name, folder)
            cache, cache_s = None, 0.0
            if w["data"].kind == "folder":
                t0 = time.perf_counter()
                cache = cached(w["data"], ("train",))
                cache_s = time.perf_counter() - t0
                print(f"{name}: cached {w['data'].split_size('train')} training images in {cache_s:.1f} s "
                      f"({'file' if cache.cache.on_disk else 'memory'})", flush=True)
            legacy = fast = None
            if not args.no_profile:
                legacy = profile(w, args.profile_batches, fast=False)
                fast = profile(w, args.profile_batches, fast=True, cache=cache, precision=args.precision)
                print_profile(name, legacy, fast)
            print(f"{name}: interleaved runs of {args.batches} batches of {w['batch']}", flush=True)
            inter = interleaved(w, args.rounds, args.batches, cache, args.top1_images, args.precision)
            computes_in = compute_dtype(args.precision, torch.device("cpu"), w["student"], w["data"].input_shape,
                                        w["batch"]) or torch.float32
            print(f"{name}: the fast pipeline computed in {computes_in}", flush=True)
            n = w["data"].split_size("train")
            epoch_fast = n / (n / inter["median"]["fast"] + cache_s)  # the cache built once, in a one-epoch run
            print(f"{name}: median images/s today {inter['median']['legacy']:.1f}, fast {inter['median']['fast']:.1f} "
                  f"(×{inter['speedup']:.2f}); per CPU-second ×{inter['cpu_speedup']:.2f}; with the cache's build in a one-epoch run ×"
                  f"{epoch_fast / inter['median']['legacy']:.2f}; top-1 ({args.top1_images} val) {inter['top1_val500']}; "
                  f"largest weight difference {inter['max_weight_difference']:.2e}", flush=True)
            results[name] = {"profile": {"today": legacy, "fast": fast}, "cache_seconds": cache_s,
                             "train_images": n, "computes_in": str(computes_in), **inter, "one_epoch_speedup": epoch_fast / inter["median"]["legacy"]}
            if cache is not None:
                cache.close()
            w["data"].close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["load_after"] = os.getloadavg()
    print(f"load average before {results['load_before']}, after {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
