"""Coverage: prune every torchvision classifier and the smallest model of every timm family, untrained.

    nice -n 10 .venv/bin/python benchmarks/coverage.py --json docs/coverage.json   # all; writes docs/coverage.md
    .venv/bin/python benchmarks/coverage.py --only resnet18,timm:vit_tiny_patch16_224
    .venv/bin/python benchmarks/coverage.py --families nfnet,tiny_vit --resume docs/coverage.json --json docs/coverage.json

A timm family is a module of `timm.models` (`timm.list_models(module=...)`); its smallest model by parameter
count (built on the meta device, `test_*` models left out) is listed in benchmarks/timm_families.json, which
`--refresh-families` rewrites (it builds every timm model: minutes). Families that are not classifiers or do
not fit the budget are listed in EXCLUDED with the reason. With --resume, the models not run again (pruned
there, or outside --families/--only) keep their rows, so a run of a few families updates the whole table.

Each model goes through what a user gets: an ImageFolder (a few dozen synthetic RGB images, 10 classes),
`engine.inputs.model_for_data` (channels, size and classes from the data), `engine.pruning.run_pruning`
(l2 at ratio 0.3, layer scope, round_to 8, no BatchNorm re-estimation, a few evaluation images, no
latency), then `engine.verify.check_pruned` (eval and train forward, one optimiser step, ONNX
export, kept-parameter share). A failing check is a failed row. A model refused before any work is
tried unstructured (magnitude-global) to show that path still works. Every model runs in its own
process (a crash or a leak stays there) under the memory budget of `engine.budget` and a time limit;
the peak resident memory comes from the kernel's accounting of the finished child.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATIO, ROUND_TO, EVAL_IMAGES = 0.3, 8, 4
CLASSES, PER_CLASS, IMAGE_SIDE = 10, 4, 64  # 40 images: 32 train, 4 validation, 4 test
TARGET = 0.95  # share of the torchvision list that must prune
TORCH_PRUNING_REPORTS = "77 of 85"  # torch-pruning's own benchmark of torchvision classifiers
TRANSFORMERS = ("vit", "deit", "swin", "maxvit", "levit", "efficientformer")  # fixed-size models: 224
FAMILIES = ROOT / "benchmarks" / "timm_families.json"  # timm module -> its smallest model (see the docstring)
# Families left out of the run, with the reason (said in docs/coverage.md).
# Peak memory of a run by parameter count, from the measured rows (ViT-H/14: 630M parameters, 15.8 GiB;
# ViT-L/16: 303M, 8.5 GiB): a timm model expected over the budget is deferred with the reason, not started.
BASE_BYTES, BYTES_PER_PARAM = 2 ** 30, 28
EXCLUDED = {
    "vision_transformer_sam": "Segment Anything's image encoder: a segmentation backbone without a classifier",
    "hieradet_sam2": "Segment Anything 2's image encoder: a segmentation backbone without a classifier",
}


def expected_peak(spec: str) -> int | None:
    """Bytes a timm model's run is expected to need, from its parameter count in the families table."""
    source, _, name = spec.partition(":")
    if source != "timm":
        return None
    params = next((row["params"] for row in json.loads(FAMILIES.read_text()).values() if row["model"] == name), None)
    return None if params is None else BASE_BYTES + BYTES_PER_PARAM * params


def timm_families() -> dict[str, str]:
    """timm module -> the smallest model of it, excluded families left out."""
    table = json.loads(FAMILIES.read_text())
    return {family: row["model"] for family, row in table.items() if family not in EXCLUDED}


def refresh_families() -> dict[str, dict]:
    """Rebuild benchmarks/timm_families.json from the installed timm (every model on the meta device)."""
    import timm
    import torch
    from timm.models import list_modules

    table: dict[str, dict] = {}
    for module in list_modules():
        for name in timm.list_models(module=module):
            if name.startswith("test_"):  # timm's own tiny test configurations, not a family's model
                continue
            try:
                with torch.device("meta"):
                    params = sum(p.numel() for p in timm.create_model(name, pretrained=False).parameters())
            except Exception as exc:  # noqa: BLE001 - a model that cannot be built is said, not fatal
                print(f"{name}: {_first_line(exc)}", file=sys.stderr)
                continue
            if module not in table or params < table[module]["params"]:
                table[module] = {"model": name, "params": params}
    FAMILIES.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
    return table


def input_sizes(spec: str) -> list[int]:
    """Sizes to try, natural first: 64 for convolutional networks (larger when 64 is too small), 224 for
    the transformers, 299 for Inception v3."""
    source, _, name = spec.partition(":")
    if name == "inception_v3":
        return [299]
    side = 224
    if source == "timm":  # then the size the model was made for (240, 256, 331...), when none above fits
        import timm

        side = timm.get_pretrained_cfg(name).input_size[-1] if timm.get_pretrained_cfg(name) else 224
    if any(name.startswith(t) for t in TRANSFORMERS):
        return sorted({224, side})  # MaxViT's windows need 256 where it was made for 256
    return sorted({64, 128, 224, side}) if source == "timm" else [64, 128, 224]


def model_list(use_timm: bool) -> list[tuple[str, str]]:
    """(category, spec) for every model of the run."""
    import torchvision

    rows = [("torchvision", f"torchvision:{n}") for n in torchvision.models.list_models(module=torchvision.models)]
    if use_timm:
        rows += [(f"timm {family}", f"timm:{name}") for family, name in timm_families().items()]
    return rows


def write_dataset(root: Path) -> Path:
    """A small RGB ImageFolder: each class a colour and a stripe direction, plus noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, IMAGE_SIDE)
    for c in range(CLASSES):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = np.array([(c * 37) % 256, (c * 91) % 256, (c * 53) % 256], dtype=float)
        stripes = np.sin(2 * np.pi * (3 + c % 4) * (ramp[:, None] if c % 2 else ramp[None, :]))
        for i in range(PER_CLASS):
            img = colour * (0.6 + 0.3 * stripes[..., None]) + rng.normal(0, 20, (IMAGE_SIDE, IMAGE_SIDE, 3))
            Image.fromarray(img.clip(0, 255).astype("uint8")).save(folder / f"{i}.png")
    return root


# ----------------------------------------------------------------------------- the child process

def _first_line(exc: BaseException) -> str:
    from engine.errors import first_line

    return first_line(exc, with_type=True, limit=400)


def _under_budget(fn, limit: int):
    """Call `fn` under the memory budget (guarded watches a generator, so wrap the call in one)."""
    from engine.budget import guarded

    def work():
        yield fn()

    return next(iter(guarded(work(), limit)))


def _load(spec: str, folder: Path, limit: int, row: dict):
    """The model and the data fitted to it, at the first size the model accepts (as the CLI resolves them)."""
    from engine.data import load_dataset
    from engine.errors import UserError
    from engine.inputs import fit_data, model_for_data

    sizes = input_sizes(spec)
    for size in sizes:
        shape = None if size == IMAGE_SIDE else (3, size, size)
        data = load_dataset(f"imagefolder:{folder}", input_shape=shape)
        try:
            bundle = _under_budget(lambda: model_for_data(spec, data, input_shape=shape, seed=0), limit)
            fitted = _under_budget(lambda: fit_data(bundle, data), limit)
            small = _pooling_too_small(bundle.model, bundle.input_shape) if size != sizes[-1] else ""
        except UserError as exc:
            # a model built for one size refuses others, or refuses the size argument itself (TinyViT, PVT-v2)
            if not ("does not accept inputs" in str(exc) or "img_size" in str(exc)) or size == sizes[-1]:
                raise
            small = _first_line(exc)[:120]
        if small:
            row.setdefault("notes", []).append(f"{size}×{size} is too small ({small})")
            continue
        row["input"] = "×".join(map(str, bundle.input_shape))
        return bundle, fitted
    raise AssertionError("unreachable")


def _pooling_too_small(model, shape) -> str:
    """Why this input is too small for the ONNX export ('' when it is not): an adaptive max pooling layer
    whose input is not a multiple of its output. (Average pooling exports whatever the sizes since
    engine.models.saving writes it as pooling matrices: AlexNet and VGG pool to 6×6 or 7×7 whatever they get.)"""
    import torch
    import torch.nn.functional as F

    found: list[str] = []
    names = ("adaptive_max_pool2d",)
    saved = {name: getattr(F, name) for name in names}

    def watching(name):  # the functions, not the modules: timm's VGG head calls them directly
        def pool(x, output_size, *args, **kwargs):
            out = saved[name](x, output_size, *args, **kwargs)
            y = out[0] if isinstance(out, tuple) else out
            got, want = tuple(x.shape[-2:]), tuple(y.shape[-2:])
            if any(g % w for g, w in zip(got, want)):
                found.append(f"{name} from {got[0]}×{got[1]} to {want[0]}×{want[1]}, which the ONNX export cannot "
                             "express")
            return out
        return pool

    try:
        for name in names:
            setattr(F, name, watching(name))
        with torch.no_grad():
            model.eval()(torch.zeros(1, *shape))
    finally:
        for name, fn in saved.items():
            setattr(F, name, fn)
    return found[0] if found else ""


def _prune(bundle, data, cfg, limit: int, captured: list, kept: list, row: dict) -> bool:
    """Run the engine's pipeline; False (and row filled) when it refused before any work."""
    from engine.budget import BudgetError, guarded
    from engine.errors import UserError
    from engine.pruning import RunDone, run_pruning

    started = False
    events = guarded(run_pruning(bundle, data, cfg), limit)
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as end:  # the run's return value: the pruned bundle
                kept.append(end.value.bundle)
                break
            # the run says it is tracing the graph before it does; a refusal there is still before any work
            started = started or getattr(event, "phase", None) != "prune" or getattr(event, "done", 1) != 0
            if isinstance(event, RunDone):
                row.update(params=[event.before.params, event.after.params], macs=[event.before.macs, event.after.macs],
                           nonzero=[event.before.nonzero_params, event.after.nonzero_params],
                           run_notes=list(event.notes))
    except UserError as exc:
        if started or isinstance(exc, BudgetError):  # a memory stop is no refusal
            raise
        row.update(status="refused", reason=_first_line(exc).partition(": ")[2])
        return False
    return True


def _check(bundle, captured: list, limit: int, row: dict) -> list[str]:
    """check_pruned on the pruned model, with the pruner's own record of sizes and rounding units."""
    import torch

    from engine.verify import check_pruned

    pruner = captured[-1]
    model = bundle.model.eval()
    example = torch.randn(1, *bundle.input_shape, generator=torch.Generator().manual_seed(0))
    ignored = tuple(n for n, m in model.named_modules() if m in pruner.pruner.ignored_layers)
    after = sum(p.numel() for p in model.parameters())
    row["kept_share"] = after / pruner.params_before
    return _under_budget(lambda: check_pruned(
        model, example, pruner.params_before, after, RATIO, original=pruner.sizes_before, round_to=ROUND_TO,
        units=pruner.prep.units, ignored=ignored, onnx=True), limit)


def child(spec: str, folder: Path, limit: int) -> dict:
    """Prune one model; the row the parent records."""
    import torch

    import engine.pruning as pruning
    from engine.budget import BudgetError
    from engine.config import PruneConfig

    torch.manual_seed(0)
    row: dict = {"status": "failed"}
    cfg = PruneConfig(method="l2", pruning_ratio=RATIO, scope="layer", round_to=ROUND_TO, bn_recalibrate=False,
                      eval_limit=EVAL_IMAGES, batch_size=EVAL_IMAGES, measure_speed=False, seed=0)
    captured: list = []
    make = pruning.make_pruner

    def keeping(*args, **kwargs):  # the same pruner, kept for the share check's sizes and rounding units
        captured.append(make(*args, **kwargs))
        return captured[-1]

    pruning.make_pruner = keeping
    try:
        bundle, data = _load(spec, folder, limit, row)
        kept: list = []
        if not _prune(bundle, data, cfg, limit, captured, kept, row):
            row["unstructured"] = _unstructured(bundle, data, cfg, limit)
            return row
        row["problems"] = problems = _check(kept[0], captured, limit, row)
        if problems:
            row["reason"] = "check_pruned: " + "; ".join(problems)
        else:
            row["status"] = "pruned"
    except BudgetError as exc:  # needs more than the budget here: deferred, not failed
        row.update(status="deferred", reason=f"stopped at the memory budget: {exc}")
    except BaseException as exc:  # noqa: BLE001 - every failure is a row with its reason
        row["reason"] = _first_line(exc)
        row["trace"] = traceback.format_exc()[-20000:]
    return row


def _unstructured(bundle, data, cfg, limit: int) -> str:
    """Prune a refused model unstructured (magnitude-global, fewer images): what still works."""
    from engine.budget import guarded
    from engine.pruning import RunDone, run_pruning

    reduced = replace(cfg, method="magnitude-global", eval_limit=2, batch_size=2)
    try:
        for event in guarded(run_pruning(bundle, data, reduced), limit):
            if isinstance(event, RunDone):
                zero = 1 - event.after.nonzero_params / event.before.nonzero_params
                return f"works: magnitude-global at {RATIO} zeroed {zero:.0%} of the parameters"
    except BaseException as exc:  # noqa: BLE001
        return f"fails too: {_first_line(exc)}"
    return "fails too: no result"


# ----------------------------------------------------------------------------- the parent

def selected(parser: argparse.ArgumentParser, planned: list[tuple[str, str]], args) -> list[tuple[str, str]]:
    """The models of `planned` that --only and --families name (all without either); a name not in the list
    is an error."""
    if not (args.only or args.families):
        return planned
    wanted = {w if ":" in w else f"torchvision:{w}" for w in args.only.split(",") if w}
    families = {f"timm {f}" for f in args.families.split(",") if f}
    unknown = sorted(wanted - {s for _, s in planned}) + sorted(f[5:] for f in families - {c for c, _ in planned})
    if unknown:
        parser.error(f"not in the list: {', '.join(unknown)} (timm families: {', '.join(timm_families())})")
    return [(c, s) for c, s in planned if s in wanted or c in families]


def run_one(spec: str, category: str, folder: Path, args: argparse.Namespace) -> dict:
    """One model in a child process: its row plus seconds, peak RSS and the load average at its start (or a
    deferred row, not started, when it is expected to need more than the budget)."""
    need = expected_peak(spec)
    if need is not None and need > args.limit:
        return {"status": "deferred", "model": spec, "category": category, "seconds": 0.0, "peak_rss": 0,
                "load": round(os.getloadavg()[0], 2), "within_budget": True,
                "reason": f"expected to need about {need / 2 ** 30:.0f} GiB ({BYTES_PER_PARAM} bytes per parameter "
                          f"measured on the largest models), over this run's budget of {args.limit / 2 ** 30:.0f} GiB "
                          "(--memory-limit)"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", spec, "--data", str(folder),
           "--memory-limit", str(args.limit)]
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 1) // args.jobs)))
    load = os.getloadavg()[0]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, text=True, env=env, start_new_session=True)
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > args.timeout and not timed_out:
                os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: only what it started
                timed_out = True
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        lines = [x for x in out.read().splitlines() if x.startswith("RESULT ")]
        stderr = err.read()
    if lines:
        row = json.loads(lines[-1][7:])
    elif timed_out:
        row = {"status": "failed", "reason": f"over the time limit of {args.timeout:.0f} s"}
    else:
        tail = [x for x in stderr.strip().splitlines() if x.strip()]
        row = {"status": "failed", "reason": f"the process died (exit {proc.returncode}): "
                                             f"{tail[-1][:300] if tail else 'no message'}",
               "trace": stderr[-3000:]}
    peak = usage.ru_maxrss * 1024
    row.update(model=spec, category=category, seconds=round(seconds, 1), peak_rss=peak, load=round(load, 2),
               within_budget=peak <= args.limit * 1.05)  # sampled every few ms: one allocation may pass it
    return row


def count(n: float) -> str:
    """12.3M, 456K."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def summary(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Per category group (torchvision, timm): how many pruned, were refused, failed."""
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        group = out.setdefault(row["category"].split()[0], {"pruned": 0, "refused": 0, "failed": 0, "deferred": 0})
        group[row["status"]] += 1
    return out


def table(rows: list[dict]) -> list[str]:
    """The Markdown table, one row per model."""
    lines = ["| model | family | input | parameters | MACs | s | peak RSS | result |",
             "|---|---|---|---|---|---:|---:|---|"]
    for r in rows:
        params = f"{count(r['params'][0])} → {count(r['params'][1])}" if r.get("params") else ""
        macs = f"{count(r['macs'][0])} → {count(r['macs'][1])}" if r.get("macs") else ""
        family = r["category"].partition(" ")[2] or "torchvision"
        result = r["status"] + (f" ({r['kept_share']:.0%} kept)" if r["status"] == "pruned" else "")
        peak = f"{r['peak_rss'] / 2 ** 30:.2f} GiB" + ("" if r["within_budget"] else " OVER")
        lines.append(f"| {r['model'].partition(':')[2]} | {family} | {r.get('input', '')} | {params} | {macs} | "
                     f"{r['seconds']:.0f} | {peak} | {result} |")
    return lines


def machine(rows: list[dict], jobs: int) -> str:
    """Cores, CPU, memory and whether other work shared the machine."""
    import psutil
    import torch

    cpu = next((x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    loads = [r["load"] for r in rows if r.get("load") is not None] or [0.0]  # rows from before loads were kept have none
    text = (f"{os.cpu_count()} cores ({cpu}), {psutil.virtual_memory().total / 2 ** 30:.0f} GiB memory, "
            f"{'CUDA available but unused' if torch.cuda.is_available() else 'CPU only'}; {jobs} model(s) at a "
            f"time. 1-minute load average at each model's start: mean {sum(loads) / len(loads):.1f}, max "
            f"{max(loads):.1f}")
    if max(loads) > jobs + 0.5:
        text += " — other jobs were running on the machine, so the seconds are longer than on a quiet one"
    return text + "."


def markdown(rows: list[dict], args: argparse.Namespace, command: str, started: str, planned: int) -> str:
    """docs/coverage.md (`planned` models in the run; fewer rows: the run is still going or was stopped)."""
    groups = summary(rows)
    tv = groups.get("torchvision", {})
    n_tv = sum(tv.values())
    out = ["# Coverage: which architectures PruneLab prunes", "",
           f"Written by `benchmarks/coverage.py` (do not edit by hand). Command: `{command}`; started {started}.", "",
           f"Machine: {machine(rows, args.jobs)}", "",
           *([f"Rows of models this run did not run again come from the earlier run in `{args.resume}` (their "
              "seconds and load are that run's).", ""] if args.resume else []),
           *([f"**Partial: {len(rows)} of {planned} models measured** (the others were not run yet, or the run "
              "was still going or was stopped; the summary counts only these).", ""] if len(rows) < planned else []),
           f"Every model untrained (no downloads), built by `engine.inputs.model_for_data` for a synthetic RGB "
           f"ImageFolder of {CLASSES * PER_CLASS} images in {CLASSES} classes, then pruned by "
           f"`engine.pruning.run_pruning`: l2, ratio {RATIO}, layer scope, round_to {ROUND_TO}, no BatchNorm "
           f"re-estimation, {EVAL_IMAGES} evaluation images, no latency. Each pruned model then passes "
           "`engine.verify.check_pruned` (eval and train forward, one optimiser step, ONNX export, "
           "kept-parameter share against the ratio) or its row fails. Each model runs in its own process under a "
           f"memory budget of {args.limit / 2 ** 30:.1f} GiB and a time limit of {args.timeout:.0f} s; peak RSS is "
           "the child's own high-water mark. Inputs: 64×64 for convolutional networks (larger when 64 is too "
           "small), 224 for the transformers, 299 for Inception v3; timm: the smallest variant of each family.", "",
           "## Summary", ""]
    for name, g in groups.items():
        total = sum(g.values())
        out.append(f"- {name}: {g['pruned']} of {total} prune ({g['pruned'] / total:.0%}), {g['refused']} refused "
                   f"before any work, {g['failed']} fail" +
                   (f", {g['deferred']} deferred (over the memory budget)." if g["deferred"] else "."))
    if n_tv and len(rows) == planned:  # a target is judged on the whole list only
        share = tv["pruned"] / n_tv
        out.append(f"- Target: at least {TARGET:.0%} of the torchvision list prunes — "
                   f"{'met' if share >= TARGET else 'not met'} ({share:.1%}); torch-pruning reports "
                   f"{TORCH_PRUNING_REPORTS}.")
    out += ["", "## Every model", "", *table(rows), ""]
    refused = [r for r in rows if r["status"] == "refused"]
    if refused:
        out += ["## Refused before any work", ""]
        out += [f"- **{r['model']}**: {r['reason']} Unstructured pruning {r.get('unstructured', '')}." for r in refused]
        out.append("")
    deferred = [r for r in rows if r["status"] == "deferred"]
    if deferred:
        out += ["## Deferred (over the memory budget: not started, or stopped at it)", ""]
        out += [f"- **{r['model']}**: {r['reason']}." for r in deferred]
        out.append("")
    slowest = sorted((r for r in rows if r["seconds"]), key=lambda r: -r["seconds"])[:10]  # those that ran
    out += ["## Slowest ten", ""]
    out += [f"- {r['model']}: {r['seconds']:.0f} s, peak {r['peak_rss'] / 2 ** 30:.2f} GiB, {r['status']} "
            f"(load {r['load'] if r.get('load') is not None else '?'} at its start)" for r in slowest]
    out.append("")
    failed = [r for r in rows if r["status"] == "failed"]
    out += ["## Failures", ""]
    out += [f"- **{r['model']}** ({r.get('input', '?')}): {r.get('reason', '')}" for r in failed] or ["None."]
    out += ["", "## timm families left out", ""]
    out += [f"- {family}: {reason}." for family, reason in EXCLUDED.items()]
    noted = [r for r in rows if r.get("notes")]
    if noted:
        out += ["", "## Input sizes above the natural one", ""]
        out += [f"- {r['model']}: {'; '.join(r['notes'])}" for r in noted]
    return "\n".join(out) + "\n"


def print_row(row: dict) -> None:
    """One line per finished model."""
    params = f"{count(row['params'][0])}→{count(row['params'][1])}" if row.get("params") else ""
    message = row.get("reason", "") if row["status"] != "pruned" else f"{row['kept_share']:.0%} kept"
    print(f"{row['model']:<44} {row.get('input', ''):>11} {params:>15} {row['seconds']:6.0f}s "
          f"{row['peak_rss'] / 2 ** 30:5.2f}G {row['status']:<8} {message[:160]}", flush=True)


def kept_rows(previous: list[dict], planned: list, chosen: list, again: bool = False) -> list[dict]:
    """The rows of an earlier run that a resumed run keeps: still planned, and either outside this run's
    choice or pruned there (unless `again`), under the family's name as it is now."""
    category = {s: c for c, s in planned}
    names = {s for _, s in chosen}
    return [dict(r, category=category[r["model"]]) for r in previous
            if r["model"] in category and (r["model"] not in names or (r["status"] == "pruned" and not again))]


def main() -> int:
    """Run every model (or --only) and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated names (resnet18, timm:resnet10t)")
    parser.add_argument("--families", default="", help="comma-separated timm families (modules: nfnet,tiny_vit)")
    parser.add_argument("--refresh-families", action="store_true",
                        help=f"rewrite {FAMILIES.relative_to(ROOT)} from the installed timm, then stop")
    parser.add_argument("--timm", action=argparse.BooleanOptionalAction, default=True, help="include timm families")
    parser.add_argument("--jobs", type=int, default=1, help="models at a time (default 1)")
    parser.add_argument("--out", default=None, help="Markdown output (default docs/coverage.md; none with --only)")
    parser.add_argument("--json", default="", help="also write the rows as JSON (after every model)")
    parser.add_argument("--memory-limit", default="8G", help="budget per model (engine.budget; default 8G)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per model (default 600)")
    parser.add_argument("--resume", default="", help="rows of an earlier run (its --json): models that pruned there, "
                                                      "and those outside --only/--families, keep their rows; the rest "
                                                      "run again")
    parser.add_argument("--again", action="store_true",
                        help="with --resume, run the --only/--families models again even where they pruned (a change "
                             "may have moved their figures)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from engine.budget import parse_limit

    args.limit = parse_limit(args.memory_limit)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, Path(args.data), args.limit)), flush=True)
        return 0
    if args.refresh_families:
        print(f"{len(refresh_families())} timm families written to {FAMILIES}")
        return 0
    planned = model_list(args.timm)
    models = selected(parser, planned, args)
    partial = len(models) < len(planned)
    out = args.out if args.out is not None else ("" if partial and not args.resume else str(ROOT / "docs" / "coverage.md"))
    command = "python " + " ".join([Path(sys.argv[0]).as_posix().replace(str(ROOT) + "/", ""), *sys.argv[1:]])
    started = time.strftime("%Y-%m-%d %H:%M")
    rows: list[dict] = []
    if args.resume:
        rows = kept_rows(json.loads(Path(args.resume).read_text()), planned, models, args.again)
        done = {r["model"] for r in rows}
        models = [(c, s) for c, s in models if s not in done]
        print(f"resuming: {len(rows)} rows kept from {args.resume}, {len(models)} models to run", flush=True)
        total = len(planned)
    else:
        total = len(models)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        folder = write_dataset(Path(tmp) / "coverage")
        futures = [pool.submit(run_one, spec, category, folder, args) for category, spec in models]
        position = {s: i for i, (_, s) in enumerate(planned)}
        for future in futures:
            rows.append(future.result())
            print_row(rows[-1])
            rows.sort(key=lambda r: position[r["model"]])
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=1))
            if out:  # after every model, so a stopped run still leaves what it measured
                Path(out).write_text(markdown(rows, args, command, started, total))
    groups = summary(rows)
    for name, g in groups.items():
        print(f"{name}: {g['pruned']} of {sum(g.values())} prune, {g['refused']} refused, {g['failed']} fail, "
              f"{g['deferred']} deferred")
    tv = groups.get("torchvision", {})
    ok = not tv or tv["pruned"] / sum(tv.values()) >= TARGET
    print(f"torchvision target {TARGET:.0%}: {'met' if ok else 'not met'} (torch-pruning reports "
          f"{TORCH_PRUNING_REPORTS})")
    if out:
        print(f"wrote {out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
