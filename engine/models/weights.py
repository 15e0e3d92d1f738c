"""Fitting a file's weights to an architecture, and the record of a pruned model's changed layer sizes."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from engine.errors import UserError


@dataclass(frozen=True)
class WeightsFit:
    """How a state_dict matched an architecture: what was filled and what was not."""

    filled: int
    total: int
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    misshaped: tuple[str, ...]  # "name [file shape] vs [model shape]"

    def summary(self) -> str:
        """One line: the counts, with the first few names of each kind."""
        parts = [f"filled {self.filled} of {self.total} tensors"]
        for label, names in (("missing", self.missing), ("unexpected", self.unexpected),
                             ("wrong shape", self.misshaped)):
            if names:
                shown = ", ".join(names[:3]) + (f", … ({len(names)} in all)" if len(names) > 3 else "")
                parts.append(f"{label}: {shown}")
        return "; ".join(parts)

    def to_json(self) -> dict:
        """Plain dict for the model's metadata."""
        return {"filled": self.filled, "total": self.total, "missing": list(self.missing),
                "unexpected": list(self.unexpected), "misshaped": list(self.misshaped)}


def _best_prefix(state: dict, own: dict) -> dict:
    """Strip `module.` (DataParallel/DDP), `model.` (Lightning) or `_orig_mod.` (torch.compile) when that makes
    more keys match."""
    best, hits = state, sum(k in own for k in state)
    for prefix in ("module.", "model.", "module.model.", "model.module.", "_orig_mod."):
        stripped = {k.removeprefix(prefix): v for k, v in state.items()}
        found = sum(k in own for k in stripped)
        if found > hits:
            best, hits = stripped, found
    return best


def fit_weights(model: nn.Module, state: dict) -> tuple[dict, WeightsFit]:
    """The part of `state` that fits `model`, and a record of what did not."""
    own = model.state_dict()
    state = _best_prefix(state, own)
    fits = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    misshaped = tuple(f"{k} {list(v.shape)} vs {list(own[k].shape)}" for k, v in state.items()
                      if k in own and k not in fits)
    missing = tuple(k for k in own if k not in state)
    unexpected = tuple(k for k in state if k not in own)
    return fits, WeightsFit(len(fits), len(own), missing, unexpected, misshaped)


def _load_state(model: nn.Module, state: dict, source: str, partial: bool = False,
                adapted: tuple[str, ...] = ()) -> WeightsFit:
    """Load what fits; refuse (unless `partial`) when under half of the model's tensors would be filled.

    `adapted` names layers PruneLab rebuilt for the data (first convolution, head): their weights are
    expected not to fit and never count against the file.
    """
    fits, report = fit_weights(model, state)
    expected = sum(1 for k in model.state_dict() if not k.startswith(tuple(a + "." for a in adapted)))
    if not partial and report.filled * 2 < max(1, expected):
        raise UserError(f"the weights in {source} do not fit the architecture ({report.summary()}); check the "
                        "architecture (torchvision:NAME, timm:NAME or --model-code/--model-kwargs), or pass "
                        "--partial-weights to load them anyway")
    model.load_state_dict(fits, strict=False)
    return report


SHAPE_ATTRS = ("in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
               "normalized_shape")


def pruned_state(model: nn.Module) -> dict:
    """Weights plus the layer sizes that pruning changed; tensors, ints and tuples only."""
    attrs = {}
    for name, m in model.named_modules():
        found = {k: getattr(m, k) for k in SHAPE_ATTRS if isinstance(getattr(m, k, None), (int, tuple))}
        if found:
            attrs[name] = found
    return {"tensors": model.state_dict(), "attrs": attrs}


def apply_pruned_state(model: nn.Module, state: dict, source: str = "the model file") -> nn.Module:
    """Shrink a freshly built architecture to the recorded sizes, then load the weights; a record naming layers
    or sizes the architecture does not have is refused in one line (the file was edited, or is another model's)."""
    modules = dict(model.named_modules())
    own = model.state_dict()
    absent = [n for n in state["attrs"] if n not in modules]
    absent += [k for k in state["tensors"] if k not in own]
    unset = [k for k in own if k not in state["tensors"]]
    if absent or unset:
        what = (f"names layers the architecture does not have ({', '.join(absent[:3])})" if absent
                else f"lacks tensors the architecture has ({', '.join(unset[:3])})")
        raise UserError(f"{source}: its pruned-layer record {what}; it was edited or belongs to another "
                        "architecture: save the model again from PruneLab")
    for name, found in state["attrs"].items():
        for key, value in found.items():
            if key in SHAPE_ATTRS and hasattr(modules[name], key):
                setattr(modules[name], key, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state["tensors"].items():
        if own[key].shape != tensor.shape:
            owner, _, leaf = key.rpartition(".")
            module = modules[owner]
            if leaf in module._parameters:
                module._parameters[leaf] = nn.Parameter(torch.empty_like(tensor))
            elif leaf in module._buffers:
                module._buffers[leaf] = torch.empty_like(tensor)
    try:
        model.load_state_dict(state["tensors"])
    except RuntimeError as exc:
        raise UserError(f"{source}: its tensors do not fit the pruned architecture it records "
                        f"({' '.join(str(exc).split())[:160]}); save the model again from PruneLab") from None
    return model
