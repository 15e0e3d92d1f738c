"""Headless command line: `python main.py <command>` (commands, flags and exit codes: the README's Command line section)."""
from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Sequence

import torch

from engine import __version__, versions
from engine.budget import BudgetExceeded
from engine.data import load_dataset
from engine.errors import Cancelled, UserError, resource_error
from engine.events import EpochDone
from engine.metrics import Metrics, evaluate
from engine.models import DEMO_ARCHS, DEMO_TITLES, ModelBundle, build_arch, demo_card, save_model
from engine.outputs import atomic_files, check_output_dir, check_output_file, unblock_signals
from engine.paths import log_dir
from engine.units import fmt_count

from cli.args import (ARCH_HELP, add_batch_size_arg, add_data_arg, add_data_args, add_device_arg, add_model_args,
                      add_quiet_arg, add_seed_arg)
from cli.running import (CANCEL, HELD, ProgressPrinter, device_for, resolve, run_events, show_held,  # noqa: F401
                         untrained_note, write_json)
from cli.summary import metrics_table
from cli.types import count, finite, shape

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_CANCELLED = 0, 1, 2, 130


# ----------------------------------------------------------------------------- commands

def cmd_models(args: argparse.Namespace) -> int:
    """List the built-in models with their accuracy."""
    print(f"{'model':<14} {'architecture':<30} {'params':>9} {'top-1':>8}  trained with")
    for name in DEMO_ARCHS:
        card = demo_card(name)
        acc = card.get("metrics", {}).get("top1")
        params = card.get("metrics", {}).get("params")
        print(f"{'demo:' + name:<14} {DEMO_TITLES[name]:<30} {fmt_count(params) if params else '-':>9} "
              f"{f'{acc * 100:.2f} %' if acc is not None else 'untrained':>8}  {card.get('command', '-')}")
    print("\nAlso: torchvision:NAME (e.g. torchvision:resnet18, adapted to the dataset) and model files "
          "(state_dict + --model-code, or a whole module with --trust).")
    return EXIT_OK


def _latency_threads(metrics: Metrics) -> str:
    """', latency on N threads' as recorded with the CPU latency; empty on GPU or without latency."""
    recorded = [v.get("threads") for v in metrics.latency_ms.values() if v.get("threads")]
    return f", latency on {recorded[0]} threads" if recorded else ""


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a model and print (and optionally save) all metrics."""
    if args.json:
        check_output_file(args.json, flag="--json")
    bundle, data = resolve(args)
    device = device_for(args.device)
    done = run_events(evaluate(bundle.model, data, device=device, batch_size=args.batch_size, threads=args.threads,
                               limit=args.eval_limit, speed=args.measure_speed, cancel=CANCEL),
                      ProgressPrinter(quiet=args.quiet), limit=args.memory_limit)
    metrics: Metrics = done.metrics
    print(f"{args.model} on {data.name} test set ({metrics.samples} images), device {device}"
          f"{_latency_threads(metrics)}")
    print(metrics_table({"value": metrics}))
    if args.json:
        write_json(args.json, {"model": args.model, "dataset": args.data, "device": device,
                               "metrics": metrics.to_json()})
        print(f"wrote {args.json}")
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    """Train an architecture on a dataset and save it with a JSON card."""
    from engine.training import TrainConfig, seed_everything, train

    if args.epochs <= 0 or args.lr <= 0:
        raise UserError(f"--epochs and --lr must be above 0, got {args.epochs:g} and {args.lr:g}")
    out = check_output_file(args.out, flag="--out", suffixes=(".pt", ".pth"))
    check_output_file(out.with_suffix(".json"), flag="--out")
    data = load_dataset(args.data, input_shape=args.input_shape, seed=args.seed)
    seed_everything(args.seed)
    arch = args.model if ":" in args.model else f"demo:{args.model}"
    model = build_arch(arch, data.input_shape[0], data.num_classes)
    check_output_file(out, 2 * sum(p.numel() * p.element_size() for p in model.parameters()), flag="--out")
    device = device_for(args.device)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                      optimizer=args.optimizer, weight_decay=args.weight_decay, seed=args.seed, device=device,
                      label_smoothing=args.label_smoothing, augment=not args.no_augment)
    printer = ProgressPrinter(quiet=args.quiet)
    start = time.time()

    def report(event) -> None:
        if isinstance(event, EpochDone):
            print(f"epoch {event.epoch}/{event.epochs}: loss {event.train_loss:.4f}, train top-1 "
                  f"{event.train_top1:.2%}, val top-1 {event.val_top1:.2%}", flush=True)

    run_events(train(model, data, cfg, CANCEL), printer, report)
    train_s = time.time() - start
    model = model.cpu().eval()
    done = run_events(evaluate(model, data, device="cpu", batch_size=64, speed=False, cancel=CANCEL), printer)
    metrics: Metrics = done.metrics
    command = "python main.py train " + " ".join(shlex.quote(a) for a in args.argv)
    card = {
        "name": arch, "architecture": type(model).__name__, "dataset": data.name, "dataset_spec": args.data,
        "input_shape": list(data.input_shape), "classes": list(data.class_names),
        "normalization": {"mean": list(data.norm.mean), "std": list(data.norm.std)},
        "metrics": {"top1": metrics.top1, "top5": metrics.top5, "f1_macro": metrics.f1_macro,
                    "params": metrics.params, "macs": metrics.macs},
        "training": {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                     "schedule": args.schedule, "optimizer": args.optimizer, "weight_decay": args.weight_decay,
                     "label_smoothing": args.label_smoothing, "augment": not args.no_augment,
                     "seconds": round(train_s, 1), "threads": torch.get_num_threads(),
                     "machine": f"{platform.machine()} {platform.processor() or ''}".strip()},
        "command": command, "seed": args.seed,
        "versions": versions(),
    }
    bundle = ModelBundle(model, args.out, arch, data.input_shape, data.num_classes, data.norm, data.class_names,
                         meta={"card": card})
    with atomic_files(out, out.with_suffix(".json")) as (model_tmp, card_tmp):  # the pair lands together
        save_model(bundle, model_tmp)
        card_tmp.write_text(json.dumps(card, indent=2))
    print(f"test top-1 {metrics.top1:.2%}, F1 {metrics.f1_macro:.2%}; trained in {train_s / 60:.1f} min")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return EXIT_OK


def cmd_methods(args: argparse.Namespace) -> int:
    """Print every registered pruning method with its teaching text."""
    from engine.methods import all_methods

    for family in ("structured", "unstructured"):
        methods = all_methods(family)
        print(f"== {family} ({methods[0].ratio_meaning if methods else ''}) ==\n")
        for m in methods:
            print(f"{m.name}")
            for line in m.explain().splitlines():
                print(f"    {line}")
            print()
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    """Prune a model, print before/after, save the model and its ONNX export."""
    from engine.pruning import RunDone, StepDone, run_pruning

    from cli.options import config_from_args
    from cli.summary import accuracy_change, amount_line, latency_summary, paired_rows

    cfg = config_from_args(args)
    method = cfg.validate()
    out = Path(args.out) if args.out else Path("runs") / f"{method.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_output_dir(out)
    if args.json:
        check_output_file(args.json, flag="--json")
    bundle, data = resolve(args)  # run_pruning checks the rest (layers, memory) before measuring anything
    # model.pt, model.pt2, model.onnx and weights.safetensors each hold every weight once; the rest is small
    check_output_dir(out, 4 * sum(p.numel() * p.element_size() for p in bundle.model.parameters()) + 2 ** 20)
    printer = ProgressPrinter(quiet=args.quiet)

    def report(event) -> None:
        if isinstance(event, StepDone):
            m = event.metrics
            label = "original" if event.step == 0 else f"step {event.step}/{event.steps}"
            extra = f", pruned in {event.prune_seconds:.2f} s" if event.step else ""
            print(f"{label}: top-1 {m.top1:.2%}, params {fmt_count(m.params)}, MACs {fmt_count(m.macs)}"
                  f"{extra}", flush=True)

    done: RunDone = run_events(run_pruning(bundle, data, cfg, CANCEL, out_dir=out), printer, report,
                               limit=args.memory_limit, hint=", leave large layers alone (--ignore NAME)")
    print(f"\n{amount_line(method, cfg)}")
    print(metrics_table({"before": done.before, "after": done.after}, paired_rows(done)))
    sp = done.speedups()
    summary = f"MACs {sp['macs']:.2f}x lower, parameters {sp['params']:.2f}x lower, compressed size " \
              f"{sp['compressed']:.2f}x smaller"
    print(summary + "; " + accuracy_change(done.before, done.after))
    for line in latency_summary(done):
        print(line)
    print(f"pruning took {done.prune_seconds:.2f} s, the whole run {done.seconds:.1f} s")
    for note in done.notes:
        print(f"note: {note}")
    for kind, path in done.files.items():
        print(f"wrote {kind}: {path}")
    if args.json:
        write_json(args.json, done.to_json())
        print(f"wrote {args.json}")
    return EXIT_OK


def add_prune_args(p: argparse.ArgumentParser) -> None:
    """Flags of the prune command: model and data, then one flag per PruneConfig option."""
    from cli.options import add_config_flags
    from engine.methods import REGISTRY

    add_model_args(p)
    add_data_args(p, device=False, batch_size=False)
    add_config_flags(p, method_help=f"; one of: {', '.join(REGISTRY)} (see `methods`)")
    p.add_argument("--out", metavar="DIR",
                   help="the folder for the pruned model: model.pt2 and model.onnx that load without PruneLab, "
                        "weights.safetensors, model.json, a README.md card and model.pt (default runs/METHOD-TIME; "
                        "docs/deploy.md)")
    p.add_argument("--json", metavar="FILE", help="write before/after metrics, every step and the speed-ups as JSON")
    add_quiet_arg(p)
    p.set_defaults(func=cmd_prune)


# ----------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    parser = _OneLineParser(prog="python main.py", description=(
        "PruneLab: prune trained image classifiers and compare the methods. "
        "Without a command, the desktop application starts."))
    parser.add_argument("--version", action="version", version=f"PruneLab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)

    p = sub.add_parser("models", help="built-in models with their accuracy")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train an architecture (the demo models are made with this)")
    p.add_argument("--model", required=True, metavar="ARCH", help=ARCH_HELP)
    add_data_arg(p)
    p.add_argument("--epochs", type=finite, required=True, metavar="N", help="passes over the training set")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="the model file (.pt); its card (training figures, the command) goes beside it as .json")
    add_seed_arg(p, "seed for weights and data order (same seed, same model)")
    p.add_argument("--lr", type=finite, default=0.1, help="peak learning rate (default 0.1)")
    add_batch_size_arg(p, 128)
    p.add_argument("--schedule", default="onecycle", choices=("onecycle", "cosine", "constant"),
                   help="learning-rate schedule (default onecycle)")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"), help="optimizer (default sgd)")
    p.add_argument("--weight-decay", type=finite, default=5e-4, metavar="W", help="weight decay (default 5e-4)")
    p.add_argument("--label-smoothing", type=finite, default=0.0, metavar="S",
                   help="label smoothing, 0 to 1 (default 0)")
    p.add_argument("--no-augment", action="store_true", help="no random shifts and flips")
    p.add_argument("--input-shape", type=shape, metavar="C,H,W",
                   help="convert the images to this shape (default: the dataset's own)")
    add_device_arg(p)
    add_quiet_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, precision/recall/F1, size, MACs, latency, memory")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--threads", type=count, metavar="N",
                   help="CPU threads for latency (default: the cores other work leaves free)")
    from cli.options import add_config_flag

    add_config_flag(p, "eval_limit")
    add_config_flag(p, "measure_speed")
    p.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    add_quiet_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("methods", help="pruning methods with their teaching descriptions")
    p.set_defaults(func=cmd_methods)

    add_prune_args(sub.add_parser("prune", help="prune a model, recover, evaluate, save (see `methods`)"))

    from cli.experiments import register as register_experiments

    register_experiments(sub)  # sensitivity, sweep, report
    from cli.explain import register as register_explain

    register_explain(sub)  # explain: the Teach tab's facts as JSON
    from cli.profile import register as register_profile

    register_profile(sub)  # profile: where the time goes
    return parser


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors are bad input: one line naming the problem and where to look (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"error: {message}; see `{self.prog} --help`\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 done, 2 bad input, 130 cancelled, 1 a bug)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return int(exc.code or 0)
    args.argv = argv[1:]
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_OK
    unblock_signals()  # Ctrl-C cancels even when the parent left it blocked (masks are inherited)
    previous = _terminate_as_cancel()
    _warnings_to_log()
    HELD.clear()  # (main() may run more than once in a process: tests, the catalogue)
    try:
        code = int(args.func(args) or EXIT_OK)
        show_held()
        return code
    except UserError as exc:
        HELD.clear()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (Cancelled, KeyboardInterrupt):
        print("\ncancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except (Exception, BudgetExceeded) as exc:  # noqa: BLE001 - out of memory is the machine's limit; else a bug
        explained = resource_error(exc)
        if explained is not None:
            print(f"error: {explained}", file=sys.stderr)
            return EXIT_BAD_INPUT
        where = _log_traceback(exc)
        print(f"error: internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
              f"this is a bug in PruneLab, please report it with {where}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _warnings_to_log() -> None:
    """Python warnings from the libraries (PIL's palette and size warnings, torch-pruning's, the ONNX
    exporter's) go to the log file: on the terminal the user sees PruneLab's own lines only."""
    logging.captureWarnings(True)
    logger = logging.getLogger("py.warnings")
    logger.propagate = False
    if not logger.handlers:
        handler = _LogFile(log_dir() / "cli-warnings.log", delay=True, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)


class _LogFile(logging.FileHandler):
    """A log file whose folder is made when the first line comes (and a line that cannot be written is lost,
    never printed)."""

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()

    def handleError(self, record: logging.LogRecord) -> None:
        pass


def _terminate_as_cancel():
    """Let SIGTERM unwind like Ctrl-C, so partial outputs are removed on the way out."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (tests calling main() from a worker): leave signals alone
        return None


def _log_traceback(exc: Exception) -> str:
    """Write the traceback to the log folder; returns where it went (or the hint to rerun)."""
    try:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "cli-errors.log"
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(sys.argv)}\n")
            fh.write("".join(traceback.format_exception(exc)) + "\n")
        return f"the traceback in {path}"
    except OSError:
        logging.getLogger(__name__).debug("could not write the error log", exc_info=True)
        return "the command you ran"
