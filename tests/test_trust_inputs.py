"""Figures that can be trusted: the ratio asked for is the ratio got (rounded to the nearest allowed channel
count, the maximum layer ratio honoured in every scope), and broken or meaningless models are said to be
so (weights that are not finite, a stored zero std, random weights, plans that would mislead).

Bad inputs go through the command line's entry point in this process, as in tests/test_bad_inputs.py (exit 2,
one line on stderr, nothing left behind), all in one module fixture; the rest through the engine.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch

from engine.config import PruneConfig
from engine.data import Normalization
from engine.errors import UserError
from engine.experiments.plans import Recovery
from engine.models import DemoResNet, ModelBundle, load_model, save_model
from engine.verify import out_size
from tests.test_bad_inputs import Case, run_in_process  # a command line ({F}: the fixtures folder), its one line

ROOT = Path(__file__).resolve().parents[1]
WIDE = (32, 64, 64)  # the demo's first widths: 0.5 keeps 16 of 32 and 32 of 64


# a Fashion-MNIST of 240 images in the fixtures folder: what is checked is the refusals, the channel counts and
# the notes, and loading the whole set in each of the 13 commands took about as long as the checks
DATA = "fashion-mnist:{F}/fashion"


def _prune(model: str, *extra: str) -> tuple[str, ...]:
    return ("prune", "--model", f"{{F}}/{model}", "--data", DATA, "--quiet", "--no-speed",
            "--eval-limit", "20", *extra)


def _evaluate(model: str) -> tuple[str, ...]:
    return ("evaluate", "--model", f"{{F}}/{model}", "--data", DATA, "--quiet", "--no-speed",
            "--eval-limit", "20")


def _sweep(plan: str) -> tuple[str, ...]:
    return ("sweep", f"{{F}}/{plan}", "--store", "{F}/store.sqlite", "--quiet")


REFUSED = [
    Case("nan-evaluate", _evaluate("nan.pt"), "weight layer1.0.conv1.weight holds 1 value(s) that are not finite (NaN)"),
    Case("nan-prune-l2", _prune("nan.pt", "--method", "l2", "--ratio", "0.5"), "layer1.0.conv1.weight"),
    Case("nan-prune-magnitude-global", _prune("nan.pt", "--method", "magnitude-global", "--ratio", "0.5"),
         "layer1.0.conv1.weight"),
    Case("inf-buffer", _evaluate("inf_buffer.pt"), "buffer stem.1.running_var holds 1 value(s) that are not finite (Inf)"),
    Case("stored-std-zero", _evaluate("zero_std.pt"), "stored normalisation's std must be above 0"),
    Case("ratio-leaves-no-channel", _prune("tiny.pt", "--method", "l2", "--ratio", "0.99", "--max-layer-ratio", "1"),
         "with no channel"),
    Case("global-leaves-no-weight", _prune("tiny.pt", "--method", "magnitude-global", "--ratio", "0.5",
                                           "--max-layer-ratio", "1"), "with no weight"),
    Case("plan-duplicate-ratios", _sweep("plan_ratios.toml"), "[sweep] ratios lists 0.5 twice"),
    Case("plan-zero-weights", _sweep("plan_weights.toml"), "every weight is 0"),
    Case("plan-long-name", _sweep("plan_name.toml"), "[plan] name is 201 characters long"),
]
RUNS = [
    Case("ratio-a-hair-above-half", _prune("wide.pt", "--method", "l2", "--ratio", "0.50000000001", "--out",
                                           "{W}/hair"), ""),
    Case("max-layer-ratio-in-layer-scope", _prune("wide.pt", "--method", "l2", "--ratio", "0.95",
                                                  "--max-layer-ratio", "0.5", "--out", "{W}/capped"), ""),
    Case("sweep-on-random-weights", ("sweep", "{F}/plan_untrained.toml", "--store", "{W}/untrained.sqlite"), ""),
]
PLAN = ('[plan]\nname = "{name}"\nsave_models = false\n[model]\nsource = "{F}/tiny.pt"\n[data]\nspec = "fashion-mnist:{F}/fashion"\n'
        '[sweep]\nmethods = ["l2"]\nratios = {ratios}\n')


def _bundle(widths=(4, 8, 16), norm: Normalization | None = None) -> ModelBundle:
    torch.manual_seed(0)
    return ModelBundle(DemoResNet(1, 10, widths=widths).eval(), "tiny", "demo:resnet", (1, 28, 28), 10, norm,
                       arch_kwargs={"widths": list(widths)})


def write_fixtures(folder: Path) -> None:
    from shared_fixtures import write_fake_fashion

    folder.mkdir(parents=True)
    write_fake_fashion(folder / "fashion", n_train=240, n_test=120)
    save_model(_bundle(), folder / "tiny.pt")
    save_model(_bundle(WIDE), folder / "wide.pt")
    broken = _bundle()
    with torch.no_grad():
        broken.model.layer1[0].conv1.weight[0, 0, 0, 0] = float("nan")  # one value is enough
    save_model(broken, folder / "nan.pt")
    infinite = _bundle()
    infinite.model.stem[1].running_var[2] = float("inf")
    save_model(infinite, folder / "inf_buffer.pt")
    save_model(_bundle(norm=Normalization((0.5,), (0.0,))), folder / "zero_std.pt")
    plans = {"plan_ratios": PLAN.format(name="p", F=folder, ratios="[0.5, 0.3, 0.5]"),
             "plan_weights": PLAN.format(name="p", F=folder, ratios="[0.5]")
             + "".join(f"[criteria.{c}]\nweight = 0\n" for c in ("accuracy", "latency", "size", "memory")),
             "plan_name": PLAN.format(name="n" * 201, F=folder, ratios="[0.5]"),
             "plan_untrained": PLAN.format(name="p", F=folder, ratios="[0.5]").replace(
                 f"{folder}/tiny.pt", "torchvision:mobilenet_v3_small")
             + "[prune]\neval_limit = 20\nmeasure_speed = false\n"}
    for name, text in plans.items():
        (folder / f"{name}.toml").write_text(text)


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> dict:
    """Every case run once: {id: (returncode, stdout, stderr, leftovers)}, and the folders."""
    base = tmp_path_factory.mktemp("trust")
    fixtures, outputs = base / "fixtures", base / "outputs"
    write_fixtures(fixtures)
    outputs.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT), HOME=str(base / "home"), PRUNELAB_DATA_DIR=str(base / "data"),
               PRUNELAB_LOG_DIR=str(base / "logs"), OMP_NUM_THREADS="1")

    def run(case: Case):
        cwd = base / "work" / case.id
        cwd.mkdir(parents=True)
        args = [a.replace("{F}", str(fixtures)).replace("{W}", str(outputs)) for a in case.args]
        stdout = io.StringIO()
        code, stderr = run_in_process(args, cwd, env, stdout)
        return case.id, (code, stdout.getvalue(), stderr, sorted(p.name for p in cwd.iterdir()))

    results = dict(run(case) for case in RUNS + REFUSED)
    return {"results": results, "outputs": outputs, "fixtures": fixtures}


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_a_misleading_input_is_refused_in_one_line(cli, case):
    code, _, stderr, leftovers = cli["results"][case.id]
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and code == 2, f"exit {code}: {stderr[-1500:]}"
    assert len(lines) == 1 and case.expect in lines[0], stderr[-1500:]
    assert leftovers == [] and not (cli["fixtures"] / "store.sqlite").exists()


def _channels(path: Path) -> dict[str, int]:
    model = load_model(str(path / "model.pt")).model
    return {n: out_size(m) for n, m in model.named_modules() if out_size(m) and n != "fc"}


def test_a_ratio_a_hair_above_a_half_prunes_as_a_half(cli):
    """0.50000000001 kept 8 of the stem's 32 channels (torch-pruning floors 15.99… to 15, then to 8)."""
    code, stdout, stderr, _ = cli["results"]["ratio-a-hair-above-half"]
    assert code == 0, stderr[-1500:]
    kept = _channels(cli["outputs"] / "hair")
    assert kept["stem.0"] == kept["layer1.0.conv1"] == 16 and kept["layer2.0.conv1"] == kept["layer3.0.conv1"] == 32, kept
    assert "channel counts rounded to multiples of 8" in stdout  # the rounding is named in the summary
    assert "not the 50% asked for" not in stdout


def test_the_maximum_layer_ratio_holds_in_layer_scope_and_the_summary_says_so(cli):
    """--ratio 0.95 --max-layer-ratio 0.5 cut every layer to 1/32 of its channels."""
    code, stdout, stderr, _ = cli["results"]["max-layer-ratio-in-layer-scope"]
    assert code == 0, stderr[-1500:]
    kept = _channels(cli["outputs"] / "capped")
    assert kept["stem.0"] == kept["layer1.0.conv1"] == 16 and kept["layer2.0.conv1"] == kept["layer3.0.conv1"] == 32, kept
    notes = [line for line in stdout.splitlines() if "not the 95% asked for" in line]
    assert len(notes) == 1 and "removed 50.0%" in notes[0] and "maximum layer ratio 0.5" in notes[0], stdout


def test_a_sweep_on_random_weights_says_so_first_and_in_its_recommendation(cli):
    """`sweep` on torchvision:NAME without weights printed no note and recommended a method anyway."""
    code, stdout, stderr, _ = cli["results"]["sweep-on-random-weights"]
    assert code == 0, stderr[-1500:]
    sentence = "torchvision:mobilenet_v3_small has no [model] weights: its weights are random (seed 0)"
    lines = stdout.splitlines()
    assert lines[0].startswith(f"note: {sentence}"), stdout[:500]
    assert any(line.startswith(f"Careful: {sentence}") for line in lines), stdout[-1500:]


# ----------------------------------------------------------------------------- rounding, through the engine

def _kept_at(ratio: float, round_to: int | None = 8, widths=WIDE) -> dict[str, int]:
    from engine.pruners import trial_prune

    bundle = _bundle(widths)
    pruned = trial_prune(bundle.model, PruneConfig(pruning_ratio=ratio, round_to=round_to), ratio,
                         torch.zeros(1, 1, 28, 28), 10)
    return {n: out_size(m) for n, m in pruned.named_modules() if out_size(m) and n != "fc"}


def test_a_tiny_ratio_removes_nothing_rather_than_a_quarter():
    """0.0001 kept 24 of 32 channels (31 floored to a multiple of 8): 25 % removed for 0.01 % asked."""
    assert set(_kept_at(0.0001).values()) == {32, 64}


def test_forty_percent_of_64_channels_keeps_the_nearest_multiple_of_8():
    """38.4 channels: 40 is nearer than 32 (the GUI's 40 % took 64-channel layers to 32)."""
    kept = _kept_at(0.4)
    assert kept["layer2.0.conv1"] == 40 and kept["stem.0"] == 16  # 19.2 of 32: 16 is nearer than 24


def test_kept_channels_rounds_to_the_nearest_allowed_count():
    from engine.preparation import kept_channels

    assert kept_channels(15, 32, 8) == 16 and kept_channels(19, 32, 8) == 16 and kept_channels(20, 32, 8) == 24
    assert kept_channels(9, 10, 8) == 10  # the whole layer is an allowed count too (a tie keeps more)
    assert kept_channels(0, 32, 8) == 8 and kept_channels(3, 4, 8) == 4  # at least one unit, or all there is
    assert kept_channels(8, 32, 8, least=10) == 16  # the maximum layer ratio's floor, rounded up to a unit
    assert kept_channels(5, 7, 1) == 5


def _run(bundle: ModelBundle, fashion, **options):
    from engine.inputs import fit_data
    from engine.pruning import run_pruning

    data = fit_data(bundle, fashion)
    cfg = PruneConfig(**{"eval_limit": 20, "measure_speed": False, **options})
    from engine.events import result_of

    pruned = result_of(run_pruning(bundle, data, cfg))
    return pruned.run, pruned.bundle.model


def _channel_shares(before: ModelBundle, after: torch.nn.Module) -> dict[str, float]:
    first = {n: out_size(m) for n, m in before.model.named_modules() if out_size(m)}
    return {n: 1 - out_size(m) / first[n] for n, m in after.named_modules() if out_size(m) and n != "fc"}


def test_the_maximum_layer_ratio_holds_in_global_scope(fashion):
    """Global ranking used to cut a layer past the maximum within one step."""
    bundle = _bundle(WIDE)
    original = _bundle(WIDE)
    done, pruned = _run(bundle, fashion, method="l1", scope="global", pruning_ratio=0.8, max_layer_ratio=0.5)
    shares = _channel_shares(original, pruned)
    assert max(shares.values()) <= 0.5 + 1e-9, shares
    assert any("not the 80% asked for" in n and "maximum layer ratio 0.5" in n for n in done.notes), done.notes


def test_the_maximum_layer_ratio_holds_for_global_magnitude(fashion):
    """torch's global_unstructured has no per-layer cap: a layer could lose nearly everything."""
    from engine.layers import prunable_layers

    bundle = _bundle(WIDE)
    _, model = _run(bundle, fashion, method="magnitude-global", pruning_ratio=0.8, max_layer_ratio=0.5)
    zero = {n: float((m.weight == 0).float().mean()) for n, m in prunable_layers(model) if n != "fc"}
    assert max(zero.values()) <= 0.5 + 1e-3, zero


# ----------------------------------------------------------------------------- broken models

class Overflowing(torch.nn.Module):
    """Finite weights, outputs that are not: an overflow inside the forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("inf")


def test_outputs_that_are_not_finite_are_refused_naming_the_batch(fashion):
    from engine.metrics import evaluate_quality

    with pytest.raises(UserError, match=r"test batch 1 of \d+ are not finite"):
        list(evaluate_quality(Overflowing(), fashion, limit=20, batch_size=10))


def test_the_gui_says_non_finite_weights_in_a_dialog(qtbot, tmp_path, monkeypatch, fashion):
    pytest.importorskip("pytestqt")
    from tests.gui_helpers import TIMEOUT_MS, close_window, open_window

    broken = _bundle()
    with torch.no_grad():
        broken.model.fc.bias[3] = float("inf")
    save_model(broken, tmp_path / "broken.pt")
    win = open_window(qtbot, tmp_path, monkeypatch)
    win.session.raw_data_cache["fashion-mnist"] = fashion
    with qtbot.waitSignal(win.job_stopped, timeout=TIMEOUT_MS):
        assert win.load(str(tmp_path / "broken.pt"), "fashion-mnist")
    assert win.session.loaded is None and win.error_box is not None
    assert "weight fc.bias holds 1 value(s) that are not finite (Inf)" in win.error_box.text()
    assert not win.busy  # the window stays usable
    close_window(qtbot, win)


# ----------------------------------------------------------------------------- random weights and plans

def test_a_plan_on_random_weights_says_so_in_the_store_the_ranking_the_report_and_the_gui(fashion, tmp_path,
                                                                                           qtbot):
    from engine.experiments import Plan, ResultStore, run_plan
    from engine.inputs import fit_data
    from engine.report import write_report

    bundle = _bundle()
    bundle.meta["untrained"] = True  # as torchvision:NAME without --weights loads
    plan = Plan(model="torchvision:resnet18", methods=("l1", "l2"), ratios=(0.5,), save_models=False,
                prune={"eval_limit": 20, "measure_speed": False}, name="random")
    store = ResultStore(tmp_path / "store.sqlite")
    done = list(run_plan(plan, store, bundle=bundle, data=fit_data(bundle, fashion)))[-1]
    sentence = "torchvision:resnet18 has no [model] weights: its weights are random (seed 0)"
    assert done.ranking.recommendation.startswith(f"Careful: {sentence}")
    assert sentence in done.baseline.extra["untrained"]
    html, _ = write_report(ResultStore(tmp_path / "store.sqlite", read_only=True), tmp_path / "report.html",
                           plan_name="random")
    text = Path(html).read_text()
    assert sentence in text and text.index(sentence) < text.index("<table")  # at the top

    from tests.gui_helpers import qt_environment

    qt_environment()
    from gui.experiment_tab import ExperimentTab

    tab = ExperimentTab()
    qtbot.addWidget(tab)
    tab.set_model_source(plan.model, plan.data)  # the tab shows the runs of the loaded model only
    tab.load_store(tmp_path / "store.sqlite", "random")
    assert tab.recommendation_label.text().startswith(f"Careful: {sentence}")


@pytest.mark.parametrize("change, words", [
    (dict(methods=("l2", "l2")), "[sweep] methods lists 'l2' twice"),
    (dict(ratios=(0.5, 0.5)), "[sweep] ratios lists 0.5 twice"),
    (dict(target_speedups=(2.0, 2.0)), "[sweep] target_speedups lists 2.0 twice"),
    (dict(name="x" * 201), "201 characters"),
    (dict(recoveries=(Recovery("a", {"bn_recalibrate": True}), Recovery("b", {"bn_recalibrate": True}))),
     "[[recovery]] 'a' and 'b' give the same settings"),
])
def test_a_plan_built_in_code_is_checked_as_a_file_is(change, words):
    """The GUI's Experiment tab builds Plan objects and checks them with configs(), as parse_plan does."""
    from engine.experiments import Plan

    with pytest.raises(UserError) as caught:
        Plan(**change).configs()
    assert words in str(caught.value)


def test_the_experiment_tab_refuses_a_ratio_listed_twice(qtbot):
    pytest.importorskip("pytestqt")
    from tests.gui_helpers import qt_environment

    qt_environment()
    from gui.experiment_tab import ExperimentTab

    tab = ExperimentTab()
    qtbot.addWidget(tab)
    tab.ratios_edit.setText("0.5, 0.5")
    with pytest.raises(UserError, match="lists 0.5 twice"):
        tab.plan()


# ----------------------------------------------------------------------------- the rounding in the window

def test_the_method_panel_names_the_rounding_beside_the_amount(qtbot):
    pytest.importorskip("pytestqt")
    from tests.gui_helpers import qt_environment

    qt_environment()
    from gui.method_panel import MethodPanel

    panel = MethodPanel()
    qtbot.addWidget(panel)
    panel.select_method("l2")
    assert "rounded to multiples of 8" in panel.ratio_hint.text()
    panel.round_spin.setValue(16)
    assert "rounded to multiples of 16" in panel.ratio_hint.text()
    panel.select_method("magnitude-global")  # unstructured: single weights, nothing to round
    assert "rounded" not in panel.ratio_hint.text()


def test_the_layer_table_marks_a_layer_off_its_ratio(qtbot):
    """40 % of 32 channels asked, 16 kept (50 % removed): the row says so; 64 → 40 (37.5 %) is within 5 points."""
    pytest.importorskip("pytestqt")
    from tests.gui_helpers import qt_environment

    qt_environment()
    from engine.layers import LayerInfo, LayerStat
    from gui.layer_table import LayerTable

    table = LayerTable()
    qtbot.addWidget(table)
    table.set_layers([LayerInfo("stem", "Conv2d", (32, 28, 28), 288, 0, 1, 32, 0),
                      LayerInfo("body", "Conv2d", (64, 28, 28), 18432, 0, 32, 64, 1)], None)
    stats = (LayerStat("stem", "Conv2d", 32, 16, 288, 144, 144), LayerStat("body", "Conv2d", 64, 40, 18432, 5760, 5760))
    table.show_stats(stats, PruneConfig(pruning_ratio=0.4))
    stem, body = table.item(0, table.COL_CHANNELS), table.item(1, table.COL_CHANNELS)
    assert stem.text() == "32 → 16 ⚠" and "removed 50.0% of its channels (32 → 16), not the 40% asked for" in \
        stem.toolTip() and "multiples of 8" in stem.toolTip()
    assert body.text() == "64 → 40" and "removed" not in body.toolTip()
    table.show_stats(stats, PruneConfig(method="magnitude-global", pruning_ratio=0.4))  # no channel share asked
    assert table.item(0, table.COL_CHANNELS).text() == "32 → 16"
