"""What a model or a dataset is loaded from, parsed once into a value instead of split at every use.

A model source is `demo:NAME`, `torchvision:NAME`, `timm:NAME`, `code:PATH.py:Class` or a file path; an
architecture (what `build_arch` takes) is the same text, where a bare demo name is also accepted; the
architecture of a weights-only file (`--model-code`) is `PATH.py:Class`, split by `split_code`. A data
source is `engine.data.DatasetSpec` (`fashion-mnist`, `imagefolder:DIR`, `cifar10:DIR`), re-exported here
as `DataSource`.

`str(source)` gives back the text it was parsed from (stores and plans keep the text, so their keys
stay as they were).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from engine.data.common import DatasetSpec as DataSource
from engine.data.common import parse_dataset_spec as parse_data_source

__all__ = ["DataSource", "ModelKind", "ModelSource", "parse_data_source", "split_code"]


class ModelKind(StrEnum):
    """Where a model comes from (its text is the source's prefix)."""

    DEMO = "demo"  # PruneLab's demo zoo, with its trained weights
    TORCHVISION = "torchvision"  # an architecture by name, built untrained for the data
    TIMM = "timm"
    CODE = "code"  # the user's own class, `PATH.py:Class`
    FILE = "file"  # a model or weights file


NAMED = (ModelKind.TORCHVISION, ModelKind.TIMM)  # built by name, adapted to the data
_PREFIXED = {kind.value: kind for kind in ModelKind if kind is not ModelKind.FILE}


def split_code(code: str) -> tuple[str, str]:
    """`PATH.py:Class` as (PATH.py, Class); ("", code) when there is no colon."""
    path, _, cls = code.rpartition(":")
    return path, cls


@dataclass(frozen=True)
class ModelSource:
    """A parsed model source; `name` is the demo or architecture name, the code spec or the file path."""

    kind: ModelKind
    name: str

    @classmethod
    def parse(cls, text: str | "ModelSource") -> "ModelSource":
        """Touches no file: anything without a known prefix is a file path (which may itself hold a colon)."""
        if isinstance(text, ModelSource):
            return text
        prefix, sep, rest = text.partition(":")
        if sep and prefix in _PREFIXED:
            return cls(_PREFIXED[prefix], rest)
        return cls(ModelKind.FILE, text)

    @classmethod
    def architecture(cls, text: str, demo_names=()) -> "ModelSource":
        """An architecture spec: as `parse`, and a bare demo name (one of `demo_names`); FILE means none known."""
        source = cls.parse(text)
        if source.kind is ModelKind.FILE and text in demo_names:
            return cls(ModelKind.DEMO, text)
        return source

    def __str__(self) -> str:
        return self.name if self.kind is ModelKind.FILE else f"{self.kind.value}:{self.name}"

    @property
    def is_demo(self) -> bool:
        return self.kind is ModelKind.DEMO

    @property
    def is_named(self) -> bool:
        """A torchvision or timm architecture with a name (built untrained, adapted to the data)."""
        return self.kind in NAMED and bool(self.name)

    @property
    def is_file(self) -> bool:
        return self.kind is ModelKind.FILE

    @property
    def code_file(self) -> str | None:
        """The Python file of a `code:` source."""
        return split_code(self.name)[0] if self.kind is ModelKind.CODE else None

    @property
    def code_class(self) -> str | None:
        """The class name of a `code:` source."""
        return split_code(self.name)[1] if self.kind is ModelKind.CODE else None
