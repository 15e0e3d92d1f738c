"""The Open model dialog's memory and words: recipes remembered with their files (QSettings), the input
shape as typed, engine messages in the dialog's terms, and the check's findings as a small table."""
from __future__ import annotations

import json
import logging
import re
from html import escape

from engine.errors import UserError
from engine.inputs import ModelRecipe, RecipeChecked
from engine.units import fmt_count, images_words
from gui.settings import Settings

log = logging.getLogger(__name__)

RECIPES_KEY = "models/recipes"
DATASETS_KEY = "models/recipe_datasets"  # the dataset each remembered model was opened with
ERR = "<span style='color:#D55E00'>{}</span>"
OK, NO = "<span style='color:#009E73'>✔</span>", "<span style='color:#D55E00'>✘</span>"

# The engine's errors name command-line flags; the dialog names its own fields instead.
PLAIN_WORDS = (("pass --partial-weights to load them anyway", "tick “Accept a partial match” to load them anyway"),
               ("--model-code/--model-kwargs", "a Python file and its arguments"),
               ("pass --input-shape C,H,W", "set the input shape"), ("--input-shape", "the input shape"),
               ("pass --mean/--std with one value per channel", "choose a normalisation with one value per channel"),
               ("--mean and --std", "the mean and std"), ("--model-kwargs JSON", "the arguments (JSON)"),
               ("--std", "std"), ("--model-kwargs", "the arguments"))


def plain(message: str) -> str:
    """An engine message with the dialog's words in place of command-line flags."""
    for flag, words in PLAIN_WORDS:
        message = message.replace(flag, words)
    return message


# ===================================================================== recipes remembered with the file
def _recipes(settings: Settings, key: str = RECIPES_KEY) -> dict:
    try:
        found = json.loads(settings.value(key, "{}", str))
    except json.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


def remembered_recipe(settings: Settings, source: str) -> ModelRecipe | None:
    """The recipe the model `source` was last opened with; None if none (or a damaged one, which is logged)."""
    obj = _recipes(settings).get(source)
    if obj is None:
        return None
    try:
        return ModelRecipe.from_json(obj)
    except UserError as exc:
        log.warning("ignoring the remembered recipe of %s: %s", source, exc)
        return None


def remembered_dataset(settings: Settings, source: str) -> str | None:
    """The dataset spec the model `source` was last opened with (None: not remembered)."""
    found = _recipes(settings, DATASETS_KEY).get(source)
    return found if isinstance(found, str) and found else None


def remember_recipe(settings: Settings, source: str, recipe: ModelRecipe, data_spec: str | None = None) -> None:
    """Keep `recipe` (and the dataset it was opened with) for `source`, and only for what is still in the recent
    list: a recent entry reopens exactly as it was opened, not with the window's dataset of the moment."""
    keep = set(settings.recent("models")) | {source}
    for key, value in ((RECIPES_KEY, recipe.to_json()), (DATASETS_KEY, data_spec)):
        kept = {k: v for k, v in _recipes(settings, key).items() if k in keep}
        if value is not None:
            kept[source] = value
        settings.set_value(key, json.dumps(kept))


def parse_shape(text: str) -> tuple[int, int, int] | None:
    """"C,H,W" (or 3x224x224) as three integers; None when empty (the dataset's shape)."""
    parts = [p for p in re.split(r"[\s,x×]+", text.strip()) if p]
    if not parts:
        return None
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"the input shape must be three positive whole numbers C,H,W such as 3,224,224, got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


MISSHAPED = re.compile(r"^(\S+) \[([\d, ]+)\] vs \[([\d, ]+)\]$")  # engine.models.weights: name [file] vs [model]


def found_text(info, data) -> str:
    """What the file holds (engine.models.FileInfo), and what that means on dataset `data`."""
    text = escape(info.summary[:1].upper() + info.summary[1:], quote=False) + "."
    if info.head_outputs and info.head_outputs != data.num_classes and info.needs_arch:
        text += (f" Its last layer has {info.head_outputs} outputs, the dataset {data.num_classes} classes: "
                 "the head will be new (untrained).")
    if info.needs_arch:
        text += " Choose its architecture below." if not info.arch else " Check the architecture below."
    return text


def stem_problem(c: RecipeChecked) -> str:
    """Plain words when the file's first layer was made for images of other channels ("" when not).

    Such a layer is left untrained and every later layer sees noise: unlike a new head (meant to be
    retrained), this is almost never what the user wants. Found among the tensors that did not fit: a
    convolution (or patch embedding) kernel whose input channels are the model's input channels in the
    model, and something else in the file.
    """
    channels = c.input_shape[0] if c.input_shape else None
    for entry in c.unmatched:
        found = MISSHAPED.match(entry)
        if not found:
            continue
        file_shape, model_shape = ([int(v) for v in g.split(",")] for g in found.group(2, 3))
        if (len(file_shape) >= 3 and len(file_shape) == len(model_shape) and file_shape[0] == model_shape[0]
                and model_shape[1] == channels and file_shape[1] != channels):
            has = f"{channels} channel" + ("" if channels == 1 else "s")
            return (f"the file's first layer ({found.group(1).rsplit('.', 1)[0]}) takes {file_shape[1]}-channel "
                    f"images, the dataset's images have {has}: that layer would start untrained. Choose a dataset "
                    f"of {file_shape[1]}-channel images, or set the input shape to {file_shape[1]},"
                    f"{c.input_shape[1]},{c.input_shape[2]} to convert the images")
    return ""


def checked_html(c: RecipeChecked, dataset: str, val_total: int | None = None, problem: str = "") -> str:
    """The check's findings as a small table: weights, forward pass, classes, top-1, size and cost; `problem`
    (which keeps Open disabled) first, in red."""
    notes = list(c.notes)
    if c.untrained:
        seed = next((m.group(1) for m in map(re.compile(r"\(seed (\d+)\)").search, notes) if m), None)
        weights = f"{OK} untrained: weights are random" + (f" (seed {seed})" if seed else "")
        notes = [n for n in notes if "is untrained" not in n]  # said in the row
    elif c.tensors_total is None:
        weights = f"{OK} the file holds the whole model (architecture and weights): nothing to match"
    else:
        mark = OK if c.tensors_filled == c.tensors_total else "<span style='color:#E69F00'>●</span>"
        if problem:
            mark = NO
        weights = f"{mark} {c.tensors_filled} of {c.tensors_total} tensors matched"
        if c.unmatched:
            shown = ", ".join(escape(n) for n in c.unmatched[:6])
            weights += f"; not matched: {shown}" + (f" and {len(c.unmatched) - 6} more" if len(c.unmatched) > 6
                                                    else "")
    shape = "×".join(map(str, c.input_shape))
    classes = (f"{OK if c.output_classes == c.dataset_classes else NO} {c.output_classes} outputs for "
               f"{c.dataset_classes} classes of {escape(dataset)}")
    chance = 1 / max(1, c.dataset_classes)
    top1 = f"{c.top1:.1%} " + images_words(c.images, val_total if val_total is not None else c.images, "validation")
    if not c.untrained and c.top1 < 1.5 * chance:
        top1 += (f" <span style='color:#E69F00'>(about chance, {chance:.0%}: the weights may not fit this data, "
                 "or the normalisation may be wrong)</span>")
    norm = ", ".join(f"{m:.3g}" for m in c.norm_mean) + " / " + ", ".join(f"{s:.3g}" for s in c.norm_std)
    rows = [("Architecture", escape(c.arch)), ("Weights", weights), ("Forward pass", f"{OK} runs on {shape} images"),
            ("Output", classes), ("Top-1", top1), ("Size", f"{fmt_count(c.params)} parameters, "
                                                           f"{fmt_count(c.macs)} MACs per image"),
            ("Mean / std", norm)]
    head = f"<p><b>{NO} Cannot open:</b> {ERR.format(escape(problem, quote=False))}.</p>" if problem else ""
    html = head + "<table cellspacing='0' cellpadding='1'>" + "".join(
        f"<tr><td style='padding-right:8px'><i>{k}</i></td><td>{v}</td></tr>" for k, v in rows) + "</table>"
    html += "".join(f"<br><small>{escape(n)}</small>" for n in notes)
    return html + f"<br><small>Checked in {c.seconds:.1f} s.</small>"
