"""The work the GUI's jobs run on the worker thread: generators over engine calls.

Each yields the engine's plain events and returns its result (a `Loaded`, a `PrunedModel`, ...),
which the worker hands to the job's `on_success`. Nothing here touches Qt.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generator

from engine.data import Dataset, load_dataset, load_dataset_events
from engine.events import CancelToken, Progress, StepGate
from engine.layers import LayerInfo, classifier_head, describe_layers
from engine.metrics import count_macs, count_params, size_on_disk
from engine.models import DEMO_TITLES, FileInfo, ModelBundle, describe_file, export_onnx, list_architectures
from engine.pruning import PruneConfig, run_pruning
from engine.sources import ModelKind, ModelSource
from engine.training import quick_top1
from engine.units import images_words

# Images used to measure the accuracy of a model that comes without a recorded one.
QUICK_EVAL_IMAGES = 1000


@dataclass
class LoadRequest:
    """What to load: a model source (or an already built bundle) and a dataset spec (or a dataset)."""

    model_src: str | None
    data_spec: str
    trust: bool = False
    bundle: ModelBundle | None = None
    data: Dataset | None = None  # the raw dataset, when already loaded for this spec
    export_graph: bool = True  # write an ONNX file for the graph view
    work_dir: Path | None = None
    recipe: Any = None  # an engine.inputs.ModelRecipe from the Open model dialog (or remembered with the file)


@dataclass
class Loaded:
    """A model and dataset ready to prune, with what the summary card and the layer table show."""

    request: LoadRequest
    bundle: ModelBundle
    raw_data: Dataset  # as loaded, before fitting to the model (kept to switch models quickly)
    data: Dataset  # fitted to the model
    layers: list[LayerInfo]
    head: str | None
    summary: dict[str, Any]
    onnx_path: Path | None = None
    onnx_error: str | None = None
    pending: list[str] = field(default_factory=list)  # facts still to find in the background (`details`)


@dataclass
class PrunedModel:
    """The pruned copy produced by a run, with its ONNX export for the graph view."""

    run_id: int
    bundle: ModelBundle
    onnx_path: Path | None = None
    onnx_error: str | None = None


@dataclass
class Exported:
    """Files written by an export job."""

    files: dict[str, str] = field(default_factory=dict)


@dataclass
class Sensitivity:
    """A finished sensitivity scan (engine.sensitivity.SensitivityDone) and the per-layer ratios it suggests."""

    result: Any
    proposal: Any | None
    target_ratio: float


def architecture_title(bundle: ModelBundle) -> str:
    """A readable name for the model's architecture."""
    source = ModelSource.parse(bundle.arch)
    if source.is_demo and source.name in DEMO_TITLES:
        return DEMO_TITLES[source.name]
    if source.kind is ModelKind.TORCHVISION:
        return f"torchvision {source.name}"
    return type(bundle.model).__name__ if bundle.arch in ("module", "torchscript") else bundle.arch


def recorded_top1(bundle: ModelBundle) -> float | None:
    """Top-1 accuracy stored with the model (training card or pruning metadata), if any."""
    for key in ("card", None):
        meta = bundle.meta.get(key, {}) if key else bundle.meta
        top1 = (meta.get("metrics") or {}).get("top1") if isinstance(meta, dict) else None
        if top1 is not None:
            return float(top1)
    return None


def load(request: LoadRequest, cancel: CancelToken) -> Generator[Any, None, Loaded]:
    """Load the model and dataset and describe the layers: what the window needs to be Ready.

    The slower facts (ONNX for the graph view, the size on disk, a measured top-1) are left in
    `Loaded.pending` for `details`, which the window runs in the background once it is Ready
    (ResNet-50 on two cores: about 3 s to Ready instead of 10 s and more, the top-1 growing with the test set).
    """
    from engine.inputs import load_inputs_events

    yield Progress("load", 0, 3, "reading the dataset")
    # the dataset as read (not fitted to this model) is what the window keeps for the next load
    raw = request.data if request.data is not None else (yield from load_dataset_events(request.data_spec))
    cancel.check()
    yield Progress("load", 1, 3, "reading the model")
    # the engine's one load sequence: torchvision:NAME and timm:NAME take the dataset's channels, size and classes
    options = request.recipe.load_args() if request.recipe is not None else {
        "model": request.bundle if request.bundle is not None else request.model_src, "trust": request.trust}
    inputs = yield from load_inputs_events(data=raw, **options)
    bundle, data = inputs.bundle, inputs.data
    cancel.check()
    yield Progress("load", 2, 3, "tracing layers and dependency groups")
    shape = bundle.input_shape
    head = classifier_head(bundle.model, bundle.num_classes) if not bundle.scripted else None
    # the head is left alone by default, so it belongs to no dependency group in the table
    layers = describe_layers(bundle.model, shape, ignored=(head,) if head else ()) if not bundle.scripted else []
    top1 = recorded_top1(bundle)
    summary: dict[str, Any] = {
        "architecture": architecture_title(bundle), "source": bundle.source, "input_shape": shape,
        "classes": bundle.num_classes, "params": count_params(bundle.model),
        "macs": count_macs(bundle.model, shape), "size_bytes": None, "compressed_bytes": None,
        "top1": top1, "top1_note": "recorded", "dataset": data.name,
    }
    pending = [DETAIL_SIZE] + ([DETAIL_TOP1] if top1 is None else [])
    if request.export_graph and not bundle.scripted:
        pending.insert(0, DETAIL_GRAPH)  # first: the Network tab is blank until it is there
    yield Progress("load", 3, 3, "ready")
    return Loaded(request, bundle, raw, data, layers, head, summary, pending=pending)


DETAIL_GRAPH, DETAIL_SIZE, DETAIL_TOP1 = "graph", "size", "top1"
DETAIL_WORDS = {DETAIL_GRAPH: "exporting ONNX for the graph view", DETAIL_SIZE: "measuring the size on disk",
                DETAIL_TOP1: f"measuring accuracy on up to {QUICK_EVAL_IMAGES} test images"}


@dataclass(frozen=True)
class Detail:
    """One fact about the loaded model found after it was Ready: `values` go into its summary (or graph)."""

    name: str
    values: dict[str, Any]


def details(loaded: Loaded, names: tuple[str, ...], cancel: CancelToken) -> Generator[Any, None, None]:
    """The facts `load` left pending, one `Detail` event each as soon as it is known.

    Runs in the background while the window is usable; it only reads the model (nothing else runs on
    the worker meanwhile), and a cancelled pass leaves the facts not yet found pending for the next one.
    """
    bundle = loaded.bundle
    for index, name in enumerate(names):
        cancel.check()
        yield Progress("details", index, len(names), DETAIL_WORDS[name])
        if name == DETAIL_GRAPH:
            work = loaded.request.work_dir or Path(tempfile.mkdtemp(prefix="prunelab-"))
            try:
                values = {"onnx_path": export_onnx(bundle.model, bundle.input_shape, work / "original.onnx",
                                                   keep_batchnorm=True),
                          "onnx_error": None}
            except Exception as exc:  # some user models do not export; the rest of the app still works
                values = {"onnx_path": None, "onnx_error": f"ONNX export failed: {type(exc).__name__}: {exc}"}
        elif name == DETAIL_SIZE:
            size, compressed = size_on_disk(bundle.model)
            values = {"size_bytes": size, "compressed_bytes": compressed}
        else:
            # no recorded accuracy: measure on a slice of the test set so the card is never blank
            # top-1 only: the full metric set would count MACs and compress the weights a second time
            values = {"top1": quick_top1(bundle.model, loaded.data, "test", limit=QUICK_EVAL_IMAGES, batch_size=64,
                                         cancel=cancel),
                      "top1_note": images_words(QUICK_EVAL_IMAGES, loaded.data.split_size("test"), "test")}
        yield Detail(name, values)
    yield Progress("details", len(names), len(names), "done")


def prune(run_id: int, bundle: ModelBundle, data: Dataset, cfg: PruneConfig, export_graph: bool,
          work_dir: Path, cancel: CancelToken, gate: StepGate | None = None, recover_only: bool = False,
          teacher: ModelBundle | None = None) -> Generator[Any, None, PrunedModel]:
    """One pruning run on a copy of `bundle` (its events pass through; with `gate`, it pauses after each
    phase; `recover_only` and `teacher` as run_pruning's), then the result exported to ONNX."""
    result = yield from run_pruning(bundle, data, cfg, cancel=cancel, gate=gate, recover_only=recover_only,
                                    teacher=teacher)
    pruned = PrunedModel(run_id, result.bundle)
    if export_graph:
        yield Progress("export", 0, 1, "exporting the pruned model to ONNX")
        try:
            pruned.onnx_path = export_onnx(pruned.bundle.model, pruned.bundle.input_shape,
                                           work_dir / f"run{run_id}.onnx", keep_batchnorm=True)
        except Exception as exc:  # keep the run even when the graph cannot be shown
            pruned.onnx_error = f"ONNX export failed: {type(exc).__name__}: {exc}"
        yield Progress("export", 1, 1, "done")
    return pruned


def export(bundle: ModelBundle, target: Path, structured: bool, what: str,
           cancel: CancelToken) -> Generator[Any, None, Exported]:
    """Save a model into folder `target` (what="model": model, ONNX, metadata) or as one ONNX file."""
    from engine.deploy import save_outputs

    yield Progress("export", 0, 1, f"writing to {target}")
    if what == "onnx":
        files = {"onnx": str(export_onnx(bundle.model, bundle.input_shape, target))}
    else:
        files = save_outputs(bundle, target, structured=structured)
    yield Progress("export", 1, 1, "written")
    return Exported(files)


def scan_sensitivity(bundle: ModelBundle, data: Dataset, method: str, target_ratio: float, round_to: int | None,
                     max_layer_ratio: float, cancel: CancelToken) -> Generator[Any, None, Sensitivity]:
    """Scan each dependency group's accuracy drop, then propose per-layer ratios for `target_ratio` overall."""
    from engine.sensitivity import propose_layer_ratios, scan

    done = None
    for ev in scan(bundle, data, method=method, cancel=cancel):
        if isinstance(ev, Progress):
            yield Progress("sensitivity", ev.done, ev.total, ev.message, ev.eta_s)
        else:
            done = ev
    yield Progress("sensitivity", 1, 1, f"choosing per-layer ratios for {target_ratio:.0%} overall")
    proposal = propose_layer_ratios(done, target_ratio, bundle, round_to=round_to, max_layer_ratio=max_layer_ratio)
    return Sensitivity(done, proposal, target_ratio)


@dataclass
class Described:
    """What the Open model dialog needs before the user chooses: the file, the dataset, the architectures."""

    info: FileInfo | None  # None for a new untrained architecture
    raw_data: Dataset
    architectures: list[str]


def describe(path: str | None, data_spec: str, raw: Dataset | None,
             cancel: CancelToken) -> Generator[Any, None, Described]:
    """Describe a model file (nothing from it runs), read the dataset and list the architectures by name."""
    yield Progress("open", 0, 3, "reading the dataset")
    raw = raw if raw is not None else load_dataset(data_spec)
    cancel.check()
    yield Progress("open", 1, 3, "reading the model file")
    info = describe_file(path) if path else None
    cancel.check()
    yield Progress("open", 2, 3, "listing torchvision and timm architectures")
    names = list_architectures()  # the first call imports timm (a few seconds), so not on the UI thread
    yield Progress("open", 3, 3, "ready")
    return Described(info, raw, names)


def check_model(recipe: Any, raw: Dataset, limit: int, cancel: CancelToken) -> Generator[Any, None, Any]:
    """The Open model dialog's check of `recipe` on `raw` (engine.inputs.check_recipe); returns RecipeChecked."""
    from engine.inputs import RecipeChecked, check_recipe

    checked = None
    for ev in check_recipe(recipe, raw, limit=limit, cancel=cancel):
        if isinstance(ev, RecipeChecked):
            checked = ev
        else:
            yield ev
        cancel.check()
    return checked
