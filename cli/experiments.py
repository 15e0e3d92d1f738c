"""The `sensitivity`, `sweep` and `report` commands, registered into cli.main's parser."""
from __future__ import annotations

import argparse
import time

from cli import types
from engine.errors import UserError


def _ratios(text: str) -> tuple[float, ...]:
    parts = [part for part in text.split(",") if part.strip()]
    values = types.floats(",".join(parts)) if parts else ()
    if not values or any(not 0.0 < v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"--ratios must be numbers between 0 and 1 (exclusive), got {text!r}")
    return values


def _connect_timeout(text: str) -> float:
    value = types.finite(text)
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"--connect-timeout must be above 0 and at most 600 seconds, got {text!r}")
    return value


# ----------------------------------------------------------------------------- sensitivity

def cmd_sensitivity(args: argparse.Namespace) -> int:
    """Prune each layer group alone at several ratios and print the accuracy drop table."""
    from cli.running import CANCEL, ProgressPrinter, resolve, run_events, write_json
    from engine.units import fmt_count
    from engine.sensitivity import SensitivityDone, propose_layer_ratios, scan

    from engine.experiments import inspect_store_file
    from engine.outputs import check_output_file

    if args.json:
        check_output_file(args.json, flag="--json")
    if args.store:
        inspect_store_file(args.store)  # a foreign file is refused before the scan, and left untouched
        check_output_file(args.store, flag="--store")
    if args.target_ratio is not None and not 0.0 < args.target_ratio < 1.0:
        raise UserError(f"--target-ratio must be between 0 and 1 (exclusive), got {args.target_ratio:g}")
    bundle, data = resolve(args)
    bundle.require_prunable()
    limit = None if args.limit == 0 else args.limit
    done: SensitivityDone = run_events(
        scan(bundle, data, args.ratios, method=args.method, limit=limit, cancel=CANCEL,
             bn_recalibrate=args.bn_recalibrate, device=args.device),
        ProgressPrinter(quiet=args.quiet), limit=args.memory_limit)
    heads = [f"{r:.0%}".rjust(7) for r in done.ratios]
    print(f"{args.model} on {data.name} ({done.split} split, {limit or 'all'} images, method {done.method}): "
          f"baseline top-1 {done.baseline_top1:.2%}; accuracy drop in points when one group is pruned alone")
    width = max(len(g.name) for g in done.groups)
    print(f"{'group (root layer)'.ljust(width)} {'ch':>4} " + " ".join(heads) + "   mean  layers")
    for g in sorted(done.groups, key=lambda g: -g.score):
        print(f"{g.name.ljust(width)} {g.channels:>4} " + " ".join(f"{d:7.2f}" for d in g.drops)
              + f" {g.score:6.2f}  {', '.join(g.layers)}")
    print(f"scan took {done.seconds:.1f} s ({len(done.groups)} groups × {len(done.ratios)} ratios)")
    payload = done.to_json()
    if args.target_ratio:
        p = propose_layer_ratios(done, args.target_ratio, bundle)
        print(f"\nsensitivity-guided ratios for a uniform {args.target_ratio:g} (summed drop {p.estimated_drop:.2f} pt): "
              f"MACs {fmt_count(p.macs)} vs uniform {fmt_count(p.uniform_macs)} (original {fmt_count(p.base_macs)})")
        for name, r in p.group_ratios.items():
            print(f"  {name}: {r:.3f}")
        print("use them with: prune ... " + " ".join(f"--layer-ratio {n}={r:g}" for n, r in p.layer_ratios.items()))
        payload["proposal"] = {"target_ratio": args.target_ratio, "layer_ratios": p.layer_ratios,
                               "macs": p.macs, "uniform_macs": p.uniform_macs, "estimated_drop": p.estimated_drop}
    if args.store:
        from engine.experiments import ResultStore
        from engine.sensitivity import scan_key

        key = scan_key({"source": args.model}, args.data, {"ratios": list(args.ratios), "limit": limit,
                                                          "method": args.method,
                                                          "bn_recalibrate": args.bn_recalibrate})
        ResultStore(args.store).put_sensitivity(key, dict(payload, key=key))
        print(f"stored in {args.store}")
    if args.json:
        write_json(args.json, payload)
        print(f"wrote {args.json}")
    return 0


# ----------------------------------------------------------------------------- sweep

def ranking_table(ranking) -> str:
    """The ranking as plain text: rank, run, score, each criterion's value, broken constraints."""
    crit = list(ranking.criteria)
    head = ["#", "run", "score"] + [f"{c.name} ({c.unit})" for c in crit] + ["constraints"]
    base = ranking.baseline
    rows = [["-", "original", "-"] + [_fmt(ranking.baseline_values.get(c.name)) + (_interval(base, c) if base else "")
                                      for c in crit] + [""]]
    for e in ranking.entries:  # '1=': tied with the leader within the evaluation's noise
        rows.append([ranking.rank_text(e), e.result.label, f"{e.score:.3f}"]
                    + [_fmt(e.values.get(c.name)) + _interval(e.result, c) for c in crit]
                    + [("ok" if e.feasible else "BROKEN: " + "; ".join(e.violations)) + e.noise_text])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _interval(result, criterion) -> str:
    """' [low–high]' after an accuracy (its 95 % interval from the images evaluated) or a latency a comparison
    round measured (its 95 % interval), else ''."""
    accuracy = result.metrics.interval(criterion.metric) if criterion.metric in result.metrics.INTERVALS else None
    if accuracy is not None:
        return f" [{accuracy[0] * 100:.1f}–{accuracy[1] * 100:.1f}]"
    if criterion.metric != "latency_ms" or not result.metrics.latency(stat="high"):
        return ""
    return f" [{_fmt(result.metrics.latency(stat='low'))}–{_fmt(result.metrics.latency(stat='high'))}]"


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run every pending run of a plan, storing each as it finishes; print the ranking."""
    from cli.running import CANCEL, ProgressPrinter
    from engine.experiments import (PlanDone, PlanProgress, PlanRunDone, PlanRunFailed, PlanRunStarted, PlanWaiting,
                                    ResultStore, inspect_store_file, load_inputs, load_plan, run_plan,
                                    same_arch_text)

    plan = load_plan(args.plan)
    plan.trust = args.trust
    _executor_flags(plan, args)
    if args.report:  # checked before any run starts, not after an hour of them
        from engine.report import check_report_path

        check_report_path(args.report, flag="--report")
    store_path = plan.resolved_store(args.store)
    inspect_store_file(store_path)  # refuses a foreign file, untouched, before anything is loaded
    plan.check_outputs(store_path)
    if plan.executor == "ray":  # the cluster answers before anything is loaded or created (no store, no baseline)
        from engine.experiments.executors import connect

        connect(plan.address, args.connect_timeout)
    from cli.running import LOAD_HINT
    from engine.budget import call_guarded

    # a model or dataset that cannot load (or fit the memory limit) leaves no new store behind
    bundle, data = call_guarded(lambda: load_inputs(plan), args.memory_limit or plan.memory_limit, LOAD_HINT)
    if bundle.meta.get("untrained"):  # said first, and again in the recommendation
        from engine.experiments.runner import untrained_extra

        print(f"note: {untrained_extra(plan, bundle)['untrained']}", flush=True)
    store = ResultStore(store_path)
    where = "" if plan.executor == "local" else f"; runs on Ray ({plan.address or 'started here'})"
    print(f"plan {plan.name!r}: {len(plan.methods)} methods × {len(plan.ratios) + len(plan.target_speedups)} "
          f"targets × {len(plan.recoveries)} recovery settings"
          + (" + sensitivity-guided runs" if plan.sensitivity_guided else "") + f"; store {store.path}{where}", flush=True)
    printer = ProgressPrinter(quiet=args.quiet)
    start = time.time()
    done = None
    for ev in run_plan(plan, store, CANCEL, bundle=bundle, data=data, memory_limit=args.memory_limit):
        printer(ev)
        if isinstance(ev, PlanWaiting):  # runs another sweep on this store is computing
            print(ev.message, flush=True)
        elif isinstance(ev, PlanRunStarted):  # a Ray worker picked the run up
            print(f"[{ev.index}/{ev.total}] {ev.message}; in flight: {len(ev.running)}", flush=True)
        elif isinstance(ev, PlanRunFailed):
            print(f"[{ev.index}/{ev.total}] {ev.label}: failed, not stored ({ev.message})", flush=True)
        elif isinstance(ev, PlanProgress) and ev.index:
            print(f"[{ev.index}/{ev.total}] {ev.label} ({ev.key})", flush=True)
        elif isinstance(ev, PlanRunDone):
            r, m = ev.result, ev.result.metrics
            state = "already stored" if ev.skipped else f"stored, {r.seconds:.1f} s, RSS {ev.rss_bytes / 2**20:.0f} MiB"
            if ev.shared:
                state = f"stored by process {r.extra.get('pid', '?')}"
            lat = f", latency {m.latency():.2f} ms" if m.latency() else ""
            lat += f" ({same_arch_text(r)})" if same_arch_text(r) else ""
            print(f"[{ev.index}/{ev.total}] {r.label}: top-1 {m.top1:.2%}, MACs {m.macs / 1e6:.2f} M{lat} "
                  f"({state})", flush=True)
        elif isinstance(ev, PlanDone):
            done = ev
    shared = f", {done.shared} computed by another process" if done.shared else ""
    print(f"\n{done.ran} runs done, {done.skipped} already stored{shared}, {time.time() - start:.1f} s; "
          f"store {done.store}")
    print(ranking_table(done.ranking))
    images = {e.result.metrics.samples for e in done.ranking.entries if e.result.metrics.samples}
    if images:
        print(f"accuracies in [brackets]: 95 % intervals from the {', '.join(f'{n:,}' for n in sorted(images))} "
              "evaluation images (Wilson; macro-F1 bootstrapped); '=' after a rank marks a run tied with the first")
    if done.latency_source:
        print(done.latency_source)
    print("\n" + done.ranking.recommendation)
    if args.report:
        from engine.report import write_report

        html, csv = write_report(store, args.report, plan_name=plan.name)
        print(f"wrote {html} and {csv}")
    if done.failed:
        raise UserError(f"{len(done.failed)} run(s) reached the memory limit and were not stored (first: "
                        f"{done.failed[0]}); the others are stored, and a re-run retries only these")
    return 0


def _executor_flags(plan, args: argparse.Namespace) -> None:
    """--executor, --address, --cpus-per-run and --gpus-per-run override the plan's [plan] keys."""
    if args.executor:
        plan.executor = args.executor
    if args.address is not None:
        if not args.address.strip():
            raise UserError('--address is empty; give HOST:PORT of the Ray head, or "auto"')
        plan.address = args.address
        if not args.executor:
            plan.executor = "ray"  # an address only means something to Ray
    for name in ("cpus_per_run", "gpus_per_run"):
        value = getattr(args, name)
        if value is not None:
            setattr(plan, name, value)
    if plan.executor != "ray" and (args.address or args.cpus_per_run is not None or args.gpus_per_run is not None):
        raise UserError("--address, --cpus-per-run and --gpus-per-run need --executor ray")
    if plan.cpus_per_run == 0 and plan.gpus_per_run == 0:
        raise UserError("--cpus-per-run and --gpus-per-run are both 0; each run needs at least one of them")


# ----------------------------------------------------------------------------- report

def cmd_report(args: argparse.Namespace) -> int:
    """Write the self-contained HTML report and the CSV of all runs from a result store, or (--session) the
    session report of `prune --json` files."""
    from engine.experiments import ResultStore
    from engine.report import check_report_path, write_report

    if (args.store is None) == (args.session is None):
        raise UserError("give exactly one of --store PATH (an experiment's result store) or --session FILE... "
                        "(`prune --json` files, or folders of them)")
    if args.session is not None:
        from engine.report.session import check_session_path, load_session, write_session_report

        check_session_path(args.out)
        print(f"wrote {write_session_report(load_session(args.session), args.out)}")
        return 0
    out = check_report_path(args.out, flag="--out")
    html, csv = write_report(ResultStore(args.store, read_only=True), out, plan_name=args.plan)
    print(f"wrote {html} and {csv}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the experiment commands to the main parser."""
    from cli.args import (add_data_args, add_memory_arg, add_model_args, add_quiet_arg, add_seed_arg,
                          add_trust_arg)
    from cli.types import at_least, finite
    from engine.experiments.executors import CONNECT_TIMEOUT_S

    p = sub.add_parser("sensitivity", help="per-layer sensitivity: prune each layer group alone, measure the drop")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--ratios", type=_ratios, default=(0.1, 0.3, 0.5, 0.7, 0.9), metavar="R1,R2,..",
                   help="pruning ratios to try per group (default 0.1,0.3,0.5,0.7,0.9)")
    p.add_argument("--method", default="l2", help="structured method that picks the channels (default l2)")
    p.add_argument("--limit", type=at_least(0), default=1000, metavar="N",
                   help="validation images per evaluation, a stratified seeded sample (default 1000; 0 = the "
                        "whole split)")
    p.add_argument("--bn-recalibrate", action=argparse.BooleanOptionalAction, default=True,
                   help="re-estimate BatchNorm statistics after each cut (default; --no-bn-recalibrate to skip)")
    p.add_argument("--target-ratio", type=finite, metavar="R",
                   help="also propose per-layer ratios with the MACs of uniform pruning at R")
    add_seed_arg(p)
    p.add_argument("--store", metavar="PATH", help="also keep the scan in a result store (for reports)")
    p.add_argument("--json", metavar="FILE", help="write the curves as JSON")
    add_quiet_arg(p)
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("sweep", help="run an experiment plan (methods × ratios × recovery) from a TOML file")
    p.add_argument("plan", metavar="PLAN.toml", help="the plan (see examples/plan.toml)")
    p.add_argument("--store", metavar="PATH", help="result store (default: the plan's, else the user data folder)")
    p.add_argument("--report", metavar="FILE.html", help="write the HTML report (and CSV) when done; checked "
                   "before the first run")
    add_memory_arg(p, "run", plan_default=True)
    add_trust_arg(p)
    p.add_argument("--executor", choices=("local", "ray"),
                   help="where the runs execute: local (this process, one at a time; the default) or ray (a Ray "
                        "cluster, several at once; this machine keeps the store). Default: the plan's [plan] executor")
    p.add_argument("--address", metavar="HOST:PORT|auto",
                   help="the Ray cluster's head (`ray start --head` prints it), or auto for the one on this machine; "
                        "default: start a Ray instance here (see docs/cluster.md)")
    p.add_argument("--connect-timeout", type=_connect_timeout, default=CONNECT_TIMEOUT_S, metavar="S",
                   help=f"seconds to wait for the Ray head to answer before giving up (default {CONNECT_TIMEOUT_S:g})")
    p.add_argument("--cpus-per-run", type=types.resources, metavar="N", help="CPUs each run asks Ray for (default 1)")
    p.add_argument("--gpus-per-run", type=types.resources, metavar="N", help="GPUs each run asks Ray for (default 0)")
    add_quiet_arg(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="write a self-contained HTML report and a CSV from a result store, or a "
                       "session report of single runs")
    p.add_argument("--store", metavar="PATH",
                   help="the result store written by `sweep` (opened read-only: never changed)")
    p.add_argument("--session", nargs="+", metavar="FILE",
                   help="instead of --store: a session report of single runs, one HTML file (no CSV) from the files "
                        "`prune --json FILE` wrote, or folders of them (every *.json, by name), in the order given")
    p.add_argument("--out", required=True, metavar="FILE.html", help="the HTML file (with --store, FILE.csv is "
                   "written beside it)")
    p.add_argument("--plan", metavar="NAME", help="which plan of the store (default: the most recent)")
    p.set_defaults(func=cmd_report)


