"""Checks that a structurally pruned model is correct, not just smaller: it runs in eval and train
mode, takes an optimiser step, exports to ONNX, and keeps the share of channels and parameters the
ratio asks for (with the rounding units `engine.architectures` records while pruning)."""
from __future__ import annotations

import copy
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.errors import first_line


def check_pruned(model: nn.Module, example: torch.Tensor, original_params: int, pruned_params: int,
                 requested_ratio: float | None, *, original: nn.Module | None = None, round_to: int | None = None,
                 units: dict | None = None, ignored: tuple[str, ...] = (), onnx: bool = True) -> list[str]:
    """Problems of a structurally pruned model, empty when fine: eval and train forward passes, one
    optimiser step, the ONNX export, and the kept-parameter share against the requested channel ratio.

    `original_params` counts the model as pruning started (after `prepare`). With `original` (the
    unpruned model), each layer's kept output channels are checked too.
    """
    problems = _run_checks(model, example, onnx)
    if requested_ratio is not None and original_params:
        problems += share_problems(original_params, pruned_params, requested_ratio, original, model, round_to,
                                    units or {}, set(ignored))
    return problems


def _run_checks(model: nn.Module, example: torch.Tensor, onnx: bool) -> list[str]:
    problems: list[str] = []
    trial = copy.deepcopy(model).cpu()  # the checks train a step; the caller's model stays as it is
    x = example.detach().cpu()
    x = torch.cat([x, torch.randn_like(x)]) if x.shape[0] == 1 else x  # train-mode BatchNorm needs two samples
    try:
        trial.eval()
        with torch.no_grad():
            out = trial(x)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or not torch.isfinite(out).all():
            problems.append(f"eval forward gives {_describe(out)}, not finite logits of shape (batch, classes)")
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        problems.append(f"eval forward fails ({first_line(exc, with_type=True)})")
    try:
        trial.train()
        # a seeded random batch: a zero image (the runs' example) gives norms a zero variance whose gradient
        # is not finite in the unpruned model too (MobileNetV5's and PoolFormer-v2's first layers)
        out = trial(torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype))
        if not isinstance(out, torch.Tensor):
            problems.append(f"train forward gives {_describe(out)}, not logits: fine-tuning needs one tensor")
        else:
            optimiser = torch.optim.SGD(trial.parameters(), lr=1e-3)
            F.cross_entropy(out, torch.zeros(len(x), dtype=torch.long, device=out.device)).backward()
            optimiser.step()
            if not all(torch.isfinite(p).all() for p in trial.parameters()):
                problems.append("one optimiser step leaves weights that are not finite")
    except Exception as exc:  # noqa: BLE001
        problems.append(f"train forward / optimiser step fails ({first_line(exc, with_type=True)})")
    if onnx:
        from engine.models import export_onnx

        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                export_onnx(copy.deepcopy(model).cpu().eval(), tuple(example.shape[1:]), Path(tmp) / "model.onnx")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"ONNX export fails ({first_line(exc, with_type=True)})")
    return problems


def _describe(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    return f"a {type(out).__name__}"


def out_size(module: nn.Module) -> int | None:
    """Output channels of a layer torch-pruning prunes (containers may record stale sizes: skipped)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    if isinstance(module, nn.Linear) and not isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
        return module.out_features
    if isinstance(module, nn.MultiheadAttention):
        return module.embed_dim
    return None


def layer_sizes(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Layer name -> (output channels, parameters): what the share check needs of the unpruned model,
    without keeping a copy of it."""
    out = {}
    for name, module in model.named_modules():
        size = out_size(module)
        if size is not None:
            out[name] = (size, sum(p.numel() for p in module.parameters()))
    return out


def share_problems(original_params: int, pruned_params: int, ratio: float,
                   original: nn.Module | dict[str, tuple[int, int]] | None,
                    pruned: nn.Module, round_to: int | None, units: dict, ignored: set[str]) -> list[str]:
    """The kept-parameter share, and with `original` each layer's kept channels.

    Tolerance: under layer scope every pruned channel dimension keeps int((1 - ratio) × C) channels,
    rounded to the nearest rounding unit u (round_to; per-group units for grouped convolutions; a head
    for attention), and a layer never goes below min(u, C) nor below what the maximum layer ratio
    leaves, rounded up to a unit (`ratio` is the effective one, at most that maximum). So a layer keeps
    between (1 - ratio) × C - u and max((1 - ratio) × C + u, min(u, C)) output channels. A weight has up to two
    pruned dimensions, so the whole model keeps between (t - d)² and t + d of its parameters, with
    t = 1 - ratio and d the parameter-weighted mean of u / C over the layers.
    """
    t = 1.0 - ratio
    share = pruned_params / original_params
    problems: list[str] = []
    d = 0.0
    if original is not None:
        pruned_modules = dict(pruned.named_modules())
        weighted = total = 0.0
        unit_by_name = {n: units[m] for n, m in pruned.named_modules() if m in units}
        sizes = layer_sizes(original) if isinstance(original, nn.Module) else original
        for name, (size, weight) in sizes.items():
            unit = unit_by_name.get(name, round_to or 1)
            weighted, total = weighted + weight * min(1.0, unit / size), total + weight
            if name in ignored or name not in pruned_modules:
                continue
            kept = out_size(pruned_modules[name]) or 0
            low, high = t * size - unit, max(t * size + unit, min(unit, size))
            if kept < low - 1e-9:
                problems.append(f"{name} kept {kept}/{size} channels, fewer than {t:.0%} less one rounding unit "
                                f"({unit})")
            elif kept > high + 1e-9:
                problems.append(f"{name} kept {kept}/{size} channels, more than the requested {t:.0%}"
                                + (" (not pruned)" if kept == size else ""))
        d = weighted / total if total else 0.0
    # A layer's input dimension follows the rounding of the layer that feeds it, which `d` does not see
    # (AlexNet's first classifier layer holds 2/3 of the weights and moves in steps of 8/256 of its
    # input): the lower bound gets 5 % of itself as slack for that.
    low, high = 0.95 * max(0.0, t - d) ** 2, min(1.0, t + d)
    if not low - 1e-9 <= share <= high + 1e-9:
        problems.append(f"kept {share:.1%} of the parameters; ratio {ratio:g} should keep between {low:.1%} and "
                        f"{high:.1%} (channels kept {t:.0%} ± one rounding unit, on one or two dimensions per "
                        "weight)")
    return problems
