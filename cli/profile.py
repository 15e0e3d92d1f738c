"""The `profile` command: where a model's time goes on this machine, layer by layer, and how each layer's
time changes with its width (engine.profile)."""
from __future__ import annotations

import argparse


def profile_lines(profile) -> list[str]:
    """The table a person reads: each prunable layer's time, interval, share and its width curve."""
    where = f"{profile.threads} thread{'s' if profile.threads != 1 else ''}" if profile.threads else profile.device
    shape = "×".join(map(str, profile.input_shape))
    how = ("read from the cache (measured earlier on this machine)" if profile.cached
           else f"measured in {profile.seconds:.1f} s")
    level = 95 if profile.coverage >= 0.95 else int(100 * profile.coverage)
    lines = [f"{profile.runtime} on {profile.device}, {where}, batch {profile.batch}, input {shape}: {how}",
             f"one pass {profile.total_ms:.3f} ms ({level} % interval {profile.total_low:.3f}–{profile.total_high:.3f}, "
             f"{profile.rounds} rounds, fastest of the round's passes)"]
    if profile.deployed_ms is not None:
        lines.append(f"with every onnxruntime optimisation (as deployed) {profile.deployed_ms:.3f} ms; the layers below "
                     "come from onnxruntime's own profile at basic optimisation, where each node keeps its layer's name")
    width = max([len(t.name) for t in profile.layers] + [len("everything else")])
    lines.append(f"{'layer'.ljust(width)}  {'type':<7} {'out':>5} {'ms':>9} {'interval':>19} {'share':>6}  "
                 "ms at k/8 of the channels")
    for t in sorted(profile.layers, key=lambda t: -t.ms):
        curve = profile.curves.get(t.name)
        shown = "  ".join(f"{w}:{ms:.3g}" for w, ms in zip(curve.widths, curve.ms)) if curve else ""
        lines.append(f"{t.name.ljust(width)}  {t.kind:<7} {t.out_channels:>5} {t.ms:>9.4f} "
                     f"{f'{t.low:.4f}–{t.high:.4f}':>19} {t.share:>6.1%}  {shown}")
    lines.append(f"{'everything else'.ljust(width)}  {'':<7} {'':>5} {profile.other_ms:>9.4f} {'':>19} "
                 f"{profile.other_share:>6.1%}  (normalisation, activations, pooling, additions)")
    if profile.note:
        lines.append(f"note: {profile.note} (compare figures measured on a quiet machine only)")
    steps = {t.name: profile.curves[t.name].steps() for t in profile.layers if t.name in profile.curves}
    stepped = [f"{n} (at {', '.join(map(str, s))})" for n, s in steps.items() if s]
    if stepped:
        lines.append("time jumps where a kernel changes: " + "; ".join(stepped[:6])
                     + (f" and {len(stepped) - 6} more" if len(stepped) > 6 else ""))
    return lines


def cmd_profile(args: argparse.Namespace) -> int:
    """Measure (or read from the cache) where one forward pass spends its time."""
    from cli.running import CANCEL, ProgressPrinter, device_for, resolve, run_events, write_json
    from engine.outputs import check_output_file
    from engine.profile import iter_profile
    from engine.runtimes import check_runtime

    if args.json:
        check_output_file(args.json, flag="--json")
    check_runtime(args.runtime, args.device)
    bundle, data = resolve(args)
    device = device_for(args.device)
    profile = run_events(iter_profile(bundle.model, bundle.input_shape or data.input_shape, batch=args.batch_size,
                                      runtime=args.runtime, device=device, threads=args.threads,
                                      curves=not args.no_curves, use_cache=not args.fresh, cancel=CANCEL),
                         ProgressPrinter(quiet=args.quiet), limit=args.memory_limit)
    print(f"{args.model}: where the time goes")
    for line in profile_lines(profile):
        print(line)
    if args.json:
        write_json(args.json, {"model": args.model, "dataset": args.data, **profile.to_json()})
        print(f"wrote {args.json}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the profile command to the main parser."""
    from cli.args import add_data_args, add_model_args
    from cli.types import count
    from engine.runtimes import RUNTIMES

    p = sub.add_parser("profile", help="where the time goes: each layer's measured time and share, and its time "
                                       "at a few widths (cached per machine)")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--runtime", default="torch", choices=RUNTIMES,
                   help="time it in PyTorch or in onnxruntime on its ONNX export (default torch)")
    p.add_argument("--threads", type=count, metavar="N",
                   help="CPU threads (default: the cores other work leaves free)")
    p.add_argument("--no-curves", action="store_true", help="skip timing each layer at several widths")
    p.add_argument("--fresh", action="store_true", help="measure again even when this machine has a cached profile")
    p.add_argument("--json", metavar="FILE", help="write the profile as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_profile)
