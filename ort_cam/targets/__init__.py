"""Targets: the scalar each image's maps explain, ``y = Σ W ⊙ S``, on top of any output.

``TARGET_KINDS`` maps a kind's name to its class; the CLI's choices, the export and the audit
read it. A kind (one module each) says which outputs it reads (``fits``), the head it puts on
them (``head``: S, built once into the fused gradient model) and how it picks ``W`` at the
input x, on the host (``choose``); ``detect.read_output`` says which kind applies to an
output (the flag, the model's metadata, the output's pattern). ``../shared/METHODS.md``,
"Targets", writes each one out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names
from .base import OutputInfo, Target, TargetKind, TargetOptions
from .kinds import TARGET_KINDS, kind_named, target_records

if TYPE_CHECKING:
    from .detect import Reading, output_info, read_output

#: Reading an output off a model's graph (onnx-graphsurgeon): imported on first use, so that
#: choosing targets for a prepared model does not load it.
_DETECT = ("Reading", "output_info", "read_output")


__getattr__ = lazy_names(__name__, dict.fromkeys(_DETECT, "detect"))


__all__ = ["TARGET_KINDS", "OutputInfo", "Reading", "Target", "TargetKind", "TargetOptions",
           "target_records", "kind_named", "output_info", "read_output"]
