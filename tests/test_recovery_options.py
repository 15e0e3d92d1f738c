"""The recovery recipe's options from every front end: --finetune-schedule, --warmup and --label-smoothing
(bad values exit 2 in one line before any work), and the recovery presets through the CLI (--recovery), plans
([[recovery]] preset) and the Prune panel's Recipe combo (#28)."""
from __future__ import annotations

from dataclasses import replace

import pytest

from cli.main import build_parser, main
from cli.options import config_from_args
from engine.config import PruneConfig
from engine.errors import UserError
from engine.experiments.plans import parse_plan
from engine.recipes import PRESET_FIELDS, PRESETS

BASE = ["prune", "--model", "demo:resnet", "--data", "fashion-mnist", "--method", "l2", "--ratio", "0.5"]
PLAN = '[model]\nsource = "demo:resnet"\n[sweep]\nmethods = ["l2"]\nratios = [0.5]\n'


def cfg_of(*flags: str) -> PruneConfig:
    return config_from_args(build_parser().parse_args([*BASE, *flags]))


def test_the_recipe_flags_reach_the_config():
    cfg = cfg_of("--finetune-schedule", "constant", "--warmup", "0.1", "--label-smoothing", "0.2")
    assert (cfg.finetune_schedule, cfg.warmup, cfg.label_smoothing) == ("constant", 0.1, 0.2)
    plain = cfg_of()
    assert (plain.finetune_schedule, plain.warmup, plain.label_smoothing) == ("onecycle", 0.0, 0.0)


def test_augmentation_is_off_unless_asked_and_old_runs_keep_their_keys():
    from engine.config import recovery_words
    from engine.experiments.runner import _digest, run_key

    assert not cfg_of().finetune_augment and cfg_of("--finetune-augment").finetune_augment
    plan = parse_plan(PLAN + '[[recovery]]\nfinetune_epochs = 1\nfinetune_augment = true\n')
    (augmented, _), = plan.configs()
    assert augmented.finetune_augment and "augmented" in recovery_words(augmented)
    assert "augmentation" in plan.recoveries[0].summary  # the stored words tell the two recipes apart
    # runs stored before the option fine-tuned on shifted, flipped images: their configs lack the key
    stored = {k: v for k, v in augmented.to_json().items() if k != "finetune_augment"}
    assert PruneConfig.from_json(stored).finetune_augment
    key_before = {k: v for k, v in stored.items() if k != "target_latency_speedup"}  # (older still: unset, left out)
    key_before["distill_temperature"] = 4.0  # distilling nothing, it keeps the default it had then
    assert run_key(plan, augmented, {"m": 1}) == _digest({"model": {"m": 1}, "data": plan.data, "config": key_before})
    plain = PruneConfig(**{**stored, "finetune_augment": False})
    assert run_key(plan, plain, {"m": 1}) != run_key(plan, augmented, {"m": 1})  # another recipe, another run
    # without fine-tuning nothing is augmented: the same run as before the option (and asking is refused)
    still = PruneConfig(method="l2", pruning_ratio=0.5)
    assert run_key(plan, still, {"m": 1}) == run_key(plan, replace(still, finetune_augment=True), {"m": 1})
    with pytest.raises(UserError, match="is for fine-tuning"):
        replace(still, finetune_augment=True).validate()


def test_distillation_is_at_t2_and_runs_it_does_not_touch_keep_their_keys():
    from engine.config import recovery_words
    from engine.experiments.runner import _digest, run_key

    assert cfg_of("--finetune-epochs", "1", "--distill").distill_temperature == 2.0
    assert cfg_of("--finetune-epochs", "1", "--distill", "--distill-temperature", "4").distill_temperature == 4.0
    plan = parse_plan(PLAN + '[[recovery]]\nfinetune_epochs = 1\ndistill = true\n[[recovery]]\nfinetune_epochs = 1\n'
                             'distill = true\ndistill_temperature = 4.0\n')
    (now, _), (before, _) = plan.configs()
    assert (now.distill_temperature, before.distill_temperature) == (2.0, 4.0)
    assert run_key(plan, now, {"m": 1}) != run_key(plan, before, {"m": 1})  # another recipe, another run
    # the words tell a stored run at T = 4 from one at the default
    assert recovery_words(now) == "fine-tune 1 ep, distil" and "distil T=4" in recovery_words(before)
    assert "at T = 4" in plan.recoveries[1].summary and "T =" not in plan.recoveries[0].summary
    # a run that distils nothing keeps the key it had when 4 was the default, whatever the temperature says
    plain = PruneConfig(method="l2", pruning_ratio=0.5, finetune_epochs=1.0)
    stored = {**plain.to_json(), "distill_temperature": 4.0}
    key = {k: v for k, v in stored.items() if k != "target_latency_speedup"}
    assert run_key(plan, plain, {"m": 1}) == _digest({"model": {"m": 1}, "data": plan.data, "config": key})
    assert run_key(plan, replace(plain, distill_temperature=7.0), {"m": 1}) == run_key(plan, plain, {"m": 1})


@pytest.mark.parametrize("flags, words", [
    (["--finetune-schedule", "wobble"], "--finetune-schedule) must be one of onecycle, cosine, constant"),
    (["--warmup", "1"], "--warmup) must be in [0, 1)"),
    (["--label-smoothing", "-0.1"], "--label-smoothing) must be in [0, 1)"),
    (["--warmup", "0.1", "--finetune-schedule", "onecycle"], "its own warm-up"),
    (["--recovery", "slow"], "--recovery must be one of quick, default, thorough"),
    (["--precision", "half"], "--precision) must be one of auto, bf16, fp32"),
    (["--finetune-augment"], "augmentation (--finetune-augment) is for fine-tuning"),
    (["--distill-temperature", "0"], "(--distill-temperature) must be above 0"),
])
def test_bad_recipe_values_exit_2_in_one_line_before_any_work(flags, words, capsys, monkeypatch):
    import cli.main

    def no_loading(args):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(cli.main, "resolve", no_loading)
    assert main([*BASE, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and words in err, err


@pytest.mark.parametrize("name", list(PRESETS))
def test_a_preset_fills_what_the_flags_leave_and_the_flags_win(name):
    preset = PRESETS[name]
    cfg = cfg_of("--recovery", name)
    assert all(getattr(cfg, k) == v for k, v in preset.options.items()), (name, cfg)
    cfg.validate()
    assert cfg_of("--recovery", name, "--finetune-epochs", "0.5").finetune_epochs == 0.5
    assert cfg_of("--recovery", name, "--lr", "0.05").finetune_lr == 0.05  # a flag the preset does not set
    assert not cfg_of().recovers_by_training  # no preset: no recovery, as before


def test_a_plan_recovery_table_starts_from_a_preset():
    plan = parse_plan(PLAN + '[[recovery]]\npreset = "quick"\n[[recovery]]\npreset = "thorough"\n'
                             'finetune_epochs = 4.0\n[[recovery]]\nname = "mine"\npreset = "default"\n')
    quick, thorough, mine = plan.recoveries
    assert quick.name == "quick" and quick.options == PRESETS["quick"].options
    assert thorough.name == "thorough" and thorough.options == {**PRESETS["thorough"].options, "finetune_epochs": 4.0}
    assert mine.name == "mine" and mine.options == PRESETS["default"].options
    with pytest.raises(UserError, match=r"\[\[recovery\]\] #1 preset must be one of quick, default, thorough"):
        parse_plan(PLAN + '[[recovery]]\npreset = "slow"\n')


def test_the_recipe_combo_sets_the_recovery_rows_and_shows_custom_once_edited(qtbot):
    from gui.method_panel import GENERATED, MethodPanel

    assert set(PRESET_FIELDS) <= set(GENERATED)  # the combo can only set rows the panel has
    panel = MethodPanel()
    qtbot.addWidget(panel)
    combo = panel.recipe_combo
    assert combo.currentData() is None  # the panel's own start matches no preset
    for name, preset in PRESETS.items():
        index = combo.findData(name)
        assert preset.cost and preset.cost in combo.itemText(index)
        combo.setCurrentIndex(index)
        combo.activated.emit(index)
        cfg = panel.config()
        assert all(getattr(cfg, k) == v for k, v in preset.options.items()), (name, cfg)
        assert combo.currentData() == name
    panel.finetune_spin.setValue(panel.finetune_spin.value() + 0.5)
    assert combo.currentData() is None  # edited: no longer the preset


def test_the_precision_reaches_the_config_from_flags_plans_and_the_panel(qtbot):
    from gui.method_panel import MethodPanel

    assert cfg_of().training_precision == "auto" and cfg_of("--precision", "fp32").training_precision == "fp32"
    plan = parse_plan(PLAN + '[[recovery]]\nname = "exact"\nfinetune_epochs = 1.0\ntraining_precision = "fp32"\n')
    assert plan.recoveries[0].options["training_precision"] == "fp32"
    with pytest.raises(UserError, match="must be one of auto, bf16, fp32"):
        parse_plan(PLAN + '[[recovery]]\nfinetune_epochs = 1.0\ntraining_precision = "half"\n')
    panel = MethodPanel()
    qtbot.addWidget(panel)
    panel.finetune_spin.setValue(0)
    assert not panel.precision_combo.isEnabled()  # nothing to compute without fine-tuning
    panel.finetune_spin.setValue(2)
    assert panel.precision_combo.isEnabled() and panel.config().training_precision == "auto"
    panel.precision_combo.setCurrentIndex(panel.precision_combo.findData("fp32"))
    assert panel.config().training_precision == "fp32"
    restored = MethodPanel()
    qtbot.addWidget(restored)
    restored.restore(panel.options())
    assert restored.config().training_precision == "fp32"


def test_augmentation_is_a_box_in_the_panel_that_reaches_the_config_and_is_remembered(qtbot):
    from gui.method_panel import MethodPanel

    panel = MethodPanel()
    qtbot.addWidget(panel)
    panel.augment_check.setChecked(True)
    panel.finetune_spin.setValue(0)
    assert not panel.augment_check.isEnabled()  # nothing to augment without fine-tuning
    assert not panel.config().finetune_augment  # a ticked box left from before is not asked for
    panel.augment_check.setChecked(False)
    panel.finetune_spin.setValue(2)
    assert panel.augment_check.isEnabled() and not panel.augment_check.isChecked()
    assert not panel.config().finetune_augment
    panel.augment_check.setChecked(True)
    assert panel.config().finetune_augment
    restored = MethodPanel()
    qtbot.addWidget(restored)
    restored.restore(panel.options())
    assert restored.config().finetune_augment
