"""Sensitivity scans: per-group curves on a copy, cancellation, per-layer ratios at the uniform MACs, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cli.main import main as cli_main
from engine.errors import Cancelled, UserError
from engine.events import CancelToken, Progress
from engine.models import save_model
from engine.sensitivity import (GroupSensitivity, SensitivityDone, drop_at, layer_groups, propose_layer_ratios,
                                pruned_macs, scan)


def test_groups_follow_the_residual_coupling(tiny):
    groups = {root: members for root, members, _ in layer_groups(tiny.model, (1, 28, 28), 10)}
    members = {m for ms in groups.values() for m in ms}
    assert "fc" not in members  # the classifier head is left alone
    # The stem and the first block's second convolution add into the same residual stream.
    assert any({"stem.0", "layer1.0.conv2"} <= set(ms) for ms in groups.values())
    assert len(groups) == 6


def test_scan_gives_one_curve_per_group_and_leaves_the_model_alone(tiny, fashion):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    events = list(scan(tiny, fashion, ratios=(0.25, 0.5), limit=128))
    done = events[-1]
    assert isinstance(done, SensitivityDone)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == len(done.groups) * 2
    assert done.drops.shape == (len(done.groups), 2)
    assert all(np.all(g.macs < done.base_macs) for g in done.groups)
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())
    scores = done.layer_scores()
    assert "layer1.0.conv1" in scores and "fc" not in scores
    again = SensitivityDone.from_json(json.loads(json.dumps(done.to_json())))
    assert np.allclose(again.drops, done.drops) and again.groups[0].layers == done.groups[0].layers


def test_scan_is_cancellable_and_checks_its_input(tiny, fashion):
    cancel = CancelToken()
    with pytest.raises(Cancelled):
        for ev in scan(tiny, fashion, ratios=(0.5,), limit=64, cancel=cancel):
            if isinstance(ev, Progress) and ev.done >= 1:
                cancel.cancel()
    with pytest.raises(UserError, match="between 0 and 1"):
        list(scan(tiny, fashion, ratios=(1.5,)))
    with pytest.raises(UserError, match="unstructured"):
        list(scan(tiny, fashion, ratios=(0.5,), method="magnitude-global"))


def fake_scan(tiny) -> SensitivityDone:
    """A scan where the stage-3 groups are very sensitive and the rest are not."""
    ratios = np.array([0.25, 0.5, 0.75])
    groups = []
    for root, members, channels in layer_groups(tiny.model, (1, 28, 28), 10):
        sensitive = root.startswith("layer3")
        drops = np.array([5.0, 20.0, 40.0]) if sensitive else np.array([0.0, 0.2, 1.0])
        groups.append(GroupSensitivity(root, members, channels, 0.9 - drops / 100, drops, np.zeros(3, np.int64)))
    return SensitivityDone("tiny", "fm", "l2", ratios, 0.9, pruned_macs(tiny, 0.01, round_to=None), tuple(groups),
                           0.0, 128, "val", False)


def test_proposal_prunes_sensitive_layers_less_at_the_uniform_macs(tiny):
    proposal = propose_layer_ratios(fake_scan(tiny), 0.5, tiny, round_to=None)
    assert proposal.macs <= proposal.uniform_macs
    assert proposal.macs >= 0.95 * proposal.uniform_macs  # close to the uniform configuration's MACs
    ratios = proposal.group_ratios
    sensitive = [r for n, r in ratios.items() if n.startswith("layer3")]
    robust = [r for n, r in ratios.items() if not n.startswith("layer3")]
    assert max(sensitive) < 0.5 < max(robust)  # sensitive groups keep more, robust ones give it up
    scan = fake_scan(tiny)
    uniform_drop = sum(drop_at(scan.ratios, g.drops, 0.5) for g in scan.groups)
    assert proposal.estimated_drop < uniform_drop
    # Every member of a group gets its group's ratio, so engine.pruning applies it whatever the root.
    assert set(proposal.layer_ratios) >= {"stem.0", "layer1.0.conv2", "layer3.0.conv1"}
    assert pruned_macs(tiny, 0.5, proposal.layer_ratios, round_to=None) == proposal.macs


def test_proposal_shift_bound_keeps_every_group_near_the_target(tiny):
    free = propose_layer_ratios(fake_scan(tiny), 0.5, tiny, round_to=None)
    bounded = propose_layer_ratios(fake_scan(tiny), 0.5, tiny, round_to=None, max_shift=0.1)
    assert max(abs(r - 0.5) for r in free.group_ratios.values()) > 0.15  # the fake scan pulls hard
    # The bound is met up to one channel of the smallest group (8 channels: 1/8).
    assert all(abs(r - 0.5) <= 0.1 + 1 / 8 for r in bounded.group_ratios.values()), bounded.group_ratios
    assert bounded.macs <= bounded.uniform_macs
    assert bounded.estimated_drop >= free.estimated_drop


def test_sensitivity_cli_writes_json(tiny, tmp_path, capsys):
    path = save_model(tiny, tmp_path / "tiny.pt")
    out = tmp_path / "sens.json"
    code = cli_main(["sensitivity", "--model", str(path), "--data", "fashion-mnist", "--ratios", "0.3,0.6",
                     "--limit", "64", "--json", str(out), "--quiet", "--target-ratio", "0.5",
                     "--store", str(tmp_path / "s.sqlite")])
    assert code == 0
    text = capsys.readouterr().out
    assert "layer1.0.conv1" in text and "sensitivity-guided ratios" in text
    data = json.loads(out.read_text())
    assert data["ratios"] == [0.3, 0.6] and len(data["groups"]) == 6 and "proposal" in data
    assert cli_main(["sensitivity", "--model", str(path), "--data", "fashion-mnist", "--ratios", "2"]) == 2


def test_quadratic_macs_model_is_exact(tiny):
    """The grid search trusts a quadratic fitted to real counts; it must match real counts anywhere."""
    from engine.preparation import ratio_keeping
    from engine.sensitivity import _quadratic_macs, _uniform_kept

    groups = list(fake_scan(tiny).groups)
    k0 = {g.name: _uniform_kept(g.channels, 0.5, 1) for g in groups}

    def macs_of(k):
        return pruned_macs(tiny, 0.5, {layer: ratio_keeping(g.channels, k[g.name]) for g in groups
                                       for layer in g.layers}, round_to=None)

    f0, a, c, b = _quadratic_macs(groups, k0, {g.name: 1 for g in groups}, macs_of)
    rng = np.random.default_rng(0)
    for _ in range(4):
        # at least 10 % of each group: the default maximum layer ratio (0.9) would clamp fewer
        k = {g.name: int(rng.integers(int(np.ceil(0.1 * g.channels)), g.channels + 1)) for g in groups}
        x = np.array([k[g.name] - k0[g.name] for g in groups], dtype=np.float64)
        assert round(f0 + a @ x + c @ (x * x) + x @ b @ x) == macs_of(k)


def test_exhaustive_search_is_no_worse_than_greedy(tiny, monkeypatch):
    import engine.sensitivity as sens

    scan_result = fake_scan(tiny)
    best = propose_layer_ratios(scan_result, 0.5, tiny, round_to=None)
    monkeypatch.setattr(sens, "GRID_LIMIT", 0)  # force the greedy fallback
    greedy = propose_layer_ratios(scan_result, 0.5, tiny, round_to=None)
    assert best.macs <= best.uniform_macs and greedy.macs <= greedy.uniform_macs
    assert best.estimated_drop <= greedy.estimated_drop + 1e-9
    assert pruned_macs(tiny, 0.5, best.layer_ratios, round_to=None) == best.macs


def test_budget_counts_the_same_rounding_as_real_runs(tiny, fashion):
    """At 0.8 with round_to=8 every group of the tiny model would round to 0 channels; real runs keep
    8, and the proposal's MACs budget must be counted the same way (else 'same MACs' is not true)."""
    from engine.metrics import count_macs
    from engine.config import PruneConfig
    from engine.pruning import run_pruning

    from engine.events import result_of

    cfg = PruneConfig(method="l2", pruning_ratio=0.8, round_to=8, eval_limit=64, measure_speed=False)
    real = count_macs(result_of(run_pruning(tiny, fashion, cfg)).bundle.model, (1, 28, 28))
    assert pruned_macs(tiny, 0.8, round_to=8) == real < pruned_macs(tiny, 0.01, round_to=8)
