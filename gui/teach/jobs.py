"""The Teach tab's background jobs: the engine's explain generators run on the worker thread."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generator, Protocol

from engine.config import PruneConfig
from engine.data import Dataset
from engine.events import CancelToken
from engine.explain import ChosenScores, CriteriaSoFar, Explanation, ImageExplanation, explain_image, explain_layer
from engine.models import ModelBundle
from gui.jobs import WorkerJob

if TYPE_CHECKING:
    from PySide6.QtWidgets import QLabel

    from gui.commands import Commands


class MapsView(Protocol):
    def show_image(self, result: ImageExplanation) -> None: ...


class TeachTab(Protocol):
    """What the jobs use of the Teach tab that started them (gui.teach.tab.TeachTab, which imports these jobs,
    so it is described here rather than imported)."""

    status_label: QLabel
    maps_view: MapsView

    def show_chosen(self, event: ChosenScores) -> None: ...
    def show_criteria_so_far(self, event: CriteriaSoFar) -> None: ...
    def forget_criteria_so_far(self) -> None: ...
    def show_explanation(self, explanation: Explanation) -> None: ...


class ExplainJob(WorkerJob):
    """Score one layer with the chosen method and every structured criterion; find its couplings.

    The chosen method's scores and the couplings arrive first and fill their views at once; the criteria
    fill in as they are scored (Taylor's and Hessian's calibration last)."""

    name, title = "explain", "Could not explain the layer"

    def __init__(self, commands: Commands, tab: TeachTab, bundle: ModelBundle, data: Dataset, layer: str,
                 cfg: PruneConfig) -> None:
        super().__init__(commands)
        self.tab, self.bundle, self.data, self.layer, self.cfg = tab, bundle, data, layer, cfg

    def work(self, cancel: CancelToken) -> Generator[Any, None, Explanation]:
        b = self.bundle
        return (yield from explain_layer(b.model, self.layer, self.cfg, self.data, b.input_shape, b.num_classes,
                                         cancel))

    def on_event(self, event: object) -> None:
        if isinstance(event, ChosenScores):
            self.tab.show_chosen(event)
        elif isinstance(event, CriteriaSoFar):
            self.tab.show_criteria_so_far(event)

    def on_success(self, result: Explanation) -> None:
        self.tab.show_explanation(result)

    def on_failure(self, failure) -> None:
        self.tab.forget_criteria_so_far()
        self.tab.status_label.setText("Could not explain the layer: " + failure.message)
        super().on_failure(failure)

    def on_cancel(self) -> None:
        self.tab.forget_criteria_so_far()
        self.tab.status_label.setText(f"Explain of {self.layer} cancelled; the views show what was scored.")


class ImageJob(WorkerJob):
    """One test image through the layer, and the top-5 of the original and of a pruned copy."""

    name, title = "explain-image", "Could not show the feature maps"

    def __init__(self, commands: Commands, tab: TeachTab, bundle: ModelBundle, data: Dataset, layer: str,
                 cfg: PruneConfig, index: int) -> None:
        super().__init__(commands)
        self.tab, self.bundle, self.data, self.layer, self.cfg, self.index = tab, bundle, data, layer, cfg, index

    def work(self, cancel: CancelToken) -> Generator[Any, None, ImageExplanation]:
        b = self.bundle
        return (yield from explain_image(b.model, self.layer, self.cfg, self.data, self.index, b.input_shape,
                                         b.num_classes, cancel))

    def on_success(self, result: ImageExplanation) -> None:
        self.tab.maps_view.show_image(result)
        removed = int(result.cut.sum())
        self.tab.status_label.setText(f"Test image {result.index} ({result.label_name}) through {self.layer}: "
                                      f"{removed} of {len(result.cut)} channels removed by {self.cfg.method}.")

    def on_failure(self, failure) -> None:
        self.tab.status_label.setText("Could not show the feature maps: " + failure.message)
        super().on_failure(failure)
