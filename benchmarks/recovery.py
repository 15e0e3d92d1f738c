"""Recovery recipes after pruning, measured: on the demo models at l2 0.5 (round_to 8), each recipe's
epochs of the training set (every phase that trains; not BatchNorm re-estimation's forward passes), wall
time, fine-tuning images per second (over the recovery phases, BatchNorm re-estimation and the quick checks
included), and top-1 with its 95 % interval, beside the unpruned baseline and the MACs reduction.

Run: .venv/bin/python benchmarks/recovery.py [--models demo:resnet,demo:vgg] [--recipes today,onecycle]
     [--json benchmarks/results/recovery.json] [--quick] [--seeds 0,1,2,3,4]
Resumable: the JSON is rewritten (atomically) after every row, and rows already in it are skipped.
`--quick` is a smoke run: a few batches per phase and 300 test images, so its figures say nothing about
the recipes.

Rows (every one distils from the unpruned model unless it says otherwise, and re-estimates BatchNorm):
today (the issue's command: 3 epochs, cosine, T=4, w=0.7), iterative (3 prune steps, 1 epoch each),
cosine with 10 % warm-up, one-cycle, distillation T=2/w=0.5 and T=8/w=0.9, label smoothing 0.1, no
distillation, and group-regularised sparse training before the cut (torch-pruning's GroupNormPruner:
1 epoch with `update_regularizer`/`regularize`, then the cut and 2 epochs of distillation); then
variations around the 10 % warm-up: learning rate 0.02 and 0.005, T=2/w=0.5, label smoothing 0.1, and
1 and 5 epochs; and one-cycle at 5 epochs; one-cycle with fine-tuning's forward passes in float32 and in
bfloat16 (`--precision`), run back to back; the quick and thorough presets in bfloat16; distillation alone
(weight 1.0); global scope at the same MACs; one-cycle for 10 epochs. Those rows fine-tuned on shifted and
flipped images (the default then; the JSON's rows without `seed`); run again, the same names now fine-tune on
the images as they are. Then, with several seeds (`--seeds`; the seeds' top-1 spread by up to 0.2 pt, as much
as many recipes differ): `default`, which fine-tunes on the images as they are, against `augment` (the
previous default), and `default` for 5 and for 1 epoch; at 5 epochs, twice the learning rate and
distillation alone (weight 1.0). Every row so far distils at T = 4 (BASE). Last, `t2`, `t2-5ep` and `t2-1ep`:
distillation at T = 2, the default now and in the presets (default, thorough, quick).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import PruneConfig  # noqa: E402
from engine.events import EvalDone, drain, result_of  # noqa: E402
from engine.inputs import load_inputs  # noqa: E402
from engine.layers import classifier_head  # noqa: E402
from engine.metrics import evaluate  # noqa: E402
from engine.pruning import run_pruning  # noqa: E402
from engine.training import TrainConfig, train  # noqa: E402

# T = 4: every row up to `t2` distilled at the default then, and keeps it when run again
BASE = dict(method="l2", pruning_ratio=0.5, round_to=8, bn_recalibrate=True, finetune_epochs=3.0, distill=True,
            distill_temperature=4.0, measure_speed=False)
RECIPES: dict[str, dict] = {
    "today": {},
    "quick-1ep": {"finetune_epochs": 1.0},
    "quick-1ep-onecycle": {"finetune_epochs": 1.0, "finetune_schedule": "onecycle"},
    "iterative-3x1": {"steps": 3, "finetune_epochs": 1.0},
    "cosine-warmup-0.1": {"warmup": 0.1},
    "onecycle": {"finetune_schedule": "onecycle"},
    "distill-T2-w0.5": {"distill_temperature": 2.0, "distill_weight": 0.5},
    "distill-T8-w0.9": {"distill_temperature": 8.0, "distill_weight": 0.9},
    "label-smoothing-0.1": {"label_smoothing": 0.1},
    "no-distill": {"distill": False},
    "group-reg-1+2": {"finetune_epochs": 2.0, "sparse_epochs": 1.0, "reg": 5e-4},
    "warmup-lr0.02": {"warmup": 0.1, "finetune_lr": 0.02},
    "warmup-lr0.005": {"warmup": 0.1, "finetune_lr": 0.005},
    "warmup-T2-w0.5": {"warmup": 0.1, "distill_temperature": 2.0, "distill_weight": 0.5},
    "warmup-ls0.1": {"warmup": 0.1, "label_smoothing": 0.1},
    "warmup-1ep": {"warmup": 0.1, "finetune_epochs": 1.0},
    "warmup-5ep": {"warmup": 0.1, "finetune_epochs": 5.0},
    "onecycle-5ep": {"finetune_schedule": "onecycle", "finetune_epochs": 5.0},
    "onecycle-fp32": {"finetune_schedule": "onecycle", "training_precision": "fp32"},
    "onecycle-bf16": {"finetune_schedule": "onecycle", "training_precision": "bf16"},
    "quick-1ep-onecycle-bf16": {"finetune_epochs": 1.0, "finetune_schedule": "onecycle", "training_precision": "bf16"},
    "onecycle-5ep-bf16": {"finetune_schedule": "onecycle", "finetune_epochs": 5.0, "training_precision": "bf16"},
    "onecycle-T4-w1.0": {"finetune_schedule": "onecycle", "distill_weight": 1.0},
    "global-same-macs": {"scope": "global", "pruning_ratio": None, "target_speedup": 3.94},
    "onecycle-10ep": {"finetune_schedule": "onecycle", "finetune_epochs": 10.0},
    # From here on, the default fine-tunes on the images as they are; the rows above shifted and flipped them
    "default": {},
    "augment": {"finetune_augment": True},
    "default-5ep": {"finetune_epochs": 5.0},
    "default-1ep": {"finetune_epochs": 1.0},
    "default-5ep-lr0.02": {"finetune_epochs": 5.0, "finetune_lr": 0.02},
    "default-5ep-w1.0": {"finetune_epochs": 5.0, "distill_weight": 1.0},
    # distillation at T = 2, the default now
    "t2": {"distill_temperature": 2.0},
    "t2-5ep": {"finetune_epochs": 5.0, "distill_temperature": 2.0},
    "t2-1ep": {"finetune_epochs": 1.0, "distill_temperature": 2.0},
}


def _write(path: Path, results: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)


def _sparse_cut(bundle, data, cfg: PruneConfig, epochs: float, reg: float, quick_batches: int | None):
    """Group-regularised sparse training of a copy, then the cut: returns (pruned bundle, images trained)."""
    import torch_pruning as tp

    work = bundle.copy()
    model = work.model.train()
    shape = bundle.input_shape or data.input_shape
    head = dict(model.named_modules())[classifier_head(model, data.num_classes)]
    pruner = tp.pruner.GroupNormPruner(model, torch.zeros(1, *shape), tp.importance.GroupMagnitudeImportance(p=2),
                                       reg=reg, pruning_ratio=cfg.pruning_ratio, round_to=cfg.round_to,
                                       ignored_layers=[head], max_pruning_ratio=cfg.max_layer_ratio)
    pruner.update_regularizer()
    tcfg = TrainConfig(epochs=epochs, lr=cfg.finetune_lr, schedule="cosine", max_batches=quick_batches,
                       seed=cfg.seed, validate=False)
    seen = [0]

    def penalty(m) -> None:
        seen[0] += 1
        pruner.regularize(m)

    drain(train(model, data, tcfg, regularizer=penalty))
    model.eval()
    pruner.step()
    return work, seen[0] * tcfg.batch_size


def recipe_config(overrides: dict, quick: bool) -> PruneConfig:
    """The run's PruneConfig (the sparse-training keys are the benchmark's own)."""
    cfg = PruneConfig(**{**BASE, **{k: v for k, v in overrides.items() if k not in ("sparse_epochs", "reg")}})
    if quick:
        cfg = replace(cfg, finetune_batches=3, bn_batches=2, eval_limit=300, finetune_epochs=1.0)
    return cfg


def run_row(name: str, overrides: dict, bundle, data, quick: bool, baseline, seed: int = 0) -> dict:
    """One recipe on one model with one seed, against the unpruned model's `baseline` metrics."""
    extra = {k: overrides[k] for k in ("sparse_epochs", "reg") if k in overrides}
    cfg = replace(recipe_config(overrides, quick), seed=seed)
    t0 = time.perf_counter()
    sparse_images = 0
    source, recover_only = bundle, False
    if extra:
        source, sparse_images = _sparse_cut(bundle, data, cfg, extra["sparse_epochs"], extra["reg"],
                                            3 if quick else None)
        recover_only = True
    pruned = result_of(run_pruning(source, data, cfg, baseline=baseline, recover_only=recover_only, teacher=bundle))
    run = pruned.run
    wall = time.perf_counter() - t0
    per_epoch = cfg.finetune_batches * 128 if cfg.finetune_batches else data.split_size("train")
    finetune_images = int(cfg.steps * cfg.finetune_epochs * per_epoch)
    train_seconds = sum(s.recover_seconds for s in run.steps[1:])
    images = finetune_images + sparse_images
    train_size = data.split_size("train")
    low, high = run.after.interval("top1") or (None, None)
    row = {"recipe": name, "config": {k: v for k, v in overrides.items()}, "epochs": images / train_size,
           "wall_seconds": wall, "images_per_s": finetune_images / train_seconds if train_seconds else None,
           "top1": run.after.top1, "top1_interval": [low, high], "baseline_top1": run.before.top1,
           "drop_pt": 100 * (run.before.top1 - run.after.top1), "macs_reduction": run.before.macs / max(1, run.after.macs),
           "eval_images": run.after.samples, "quick": quick, "seed": seed,
           "finetune_augment": cfg.finetune_augment, "distill_temperature": cfg.distill_temperature}
    return row


def seed_summary(rows: list[dict]) -> list[str]:
    """Per model and recipe run with several seeds: top-1's mean, standard deviation and range. The seeds'
    top-1 spread by up to 0.2 pt on the demos, as much as many recipes differ."""
    groups: dict[tuple, list[dict]] = {}
    for r in (r for r in rows if "seed" in r):
        groups.setdefault((r["model"], r["recipe"], r["quick"]), []).append(r)
    lines = []
    for (model, recipe, quick), runs in groups.items():
        if len(runs) < 2:
            continue
        top1 = [100 * r["top1"] for r in runs]
        drops = [r["drop_pt"] for r in runs]
        lines.append(f"{model} {recipe}{' (quick)' if quick else ''}: {len(runs)} seeds, top-1 mean "
                     f"{statistics.mean(top1):.2f} % (sd {statistics.stdev(top1):.2f}, {min(top1):.2f}-{max(top1):.2f}), "
                     f"change {-statistics.mean(drops):+.2f} pt")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo:resnet,demo:vgg")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/recovery.json"))
    ap.add_argument("--quick", action="store_true", help="a smoke run: a few batches, 300 test images")
    ap.add_argument("--seeds", default="0", help="seeds to run each recipe with, e.g. 0,1,2,3,4 (the summary gives "
                                                 "the mean and spread)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.json.read_text()) if args.json.exists() else {"rows": []}
    # rows from before --seeds have no seed: they fine-tuned on shifted, flipped images and never stand for a
    # seeded run of the same name now
    done = {(r["model"], r["recipe"], r["quick"], r.get("seed")) for r in results["rows"]}
    for model in args.models.split(","):
        inputs = load_inputs(model, "fashion-mnist")
        cfg = recipe_config({}, args.quick)
        baseline = next(ev for ev in evaluate(inputs.bundle.model, inputs.data, batch_size=cfg.batch_size,
                                              limit=cfg.eval_limit, speed=False)
                        if isinstance(ev, EvalDone)).metrics
        for name, seed in ((n, sd) for sd in seeds for n in args.recipes.split(",")):
            if (model, name, args.quick, seed) in done:
                print(f"{model} {name} seed {seed}: already in {args.json}, skipped")
                continue
            load = os.getloadavg()[0]
            row = run_row(name, RECIPES[name], inputs.bundle, inputs.data, args.quick, baseline, seed)
            row.update(model=model, load_avg_1m=load)
            results["rows"].append(row)
            _write(args.json, results)
            lo, hi = row["top1_interval"]
            print(f"{model} {name} seed {seed}: {row['epochs']:.2f} epochs, {row['wall_seconds']:.0f} s, "
                  f"{row['images_per_s'] or 0:.1f} images/s, top-1 {100 * row['top1']:.2f} % "
                  f"[{100 * lo:.2f}, {100 * hi:.2f}] (baseline {100 * row['baseline_top1']:.2f} %, "
                  f"{row['drop_pt']:+.2f} pt drop), {row['macs_reduction']:.2f}× fewer MACs, load {load:.1f}",
                  flush=True)
        inputs.data.close()
    print("\n".join(seed_summary(results["rows"])))


if __name__ == "__main__":
    main()
