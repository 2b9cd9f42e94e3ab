"""The one registry of target kinds: every list of kinds (the CLI's choices, the export's,
the audit's, refusals) is read from ``TARGET_KINDS``."""

from __future__ import annotations

from ..errors import OrtCamError
from .base import TargetKind
from .binary import BinaryKind
from .classify import ClassKind
from .detection import DetectionKind
from .embedding import EmbeddingKind
from .segment import SegmentKind
from .sequence import SequenceKind
from .weights import WeightsKind

#: kind name -> kind, in the order listings show them.
TARGET_KINDS: dict[str, type[TargetKind]] = {
    cls.name: cls for cls in (ClassKind, BinaryKind, SegmentKind, DetectionKind, EmbeddingKind,
                              SequenceKind, WeightsKind)
}


def kind_named(name: str) -> type[TargetKind]:
    """The registered kind ``name``; an unknown name is refused with the list."""
    if name not in TARGET_KINDS:
        raise OrtCamError(f"unknown target kind {name!r}; use one of {', '.join(TARGET_KINDS)}")
    return TARGET_KINDS[name]


def target_records() -> list[dict[str, str]]:
    """One record per kind, in registry order: name, title, usage."""
    return [{"name": name, "title": k.title, "usage": k.usage} for name, k in TARGET_KINDS.items()]
