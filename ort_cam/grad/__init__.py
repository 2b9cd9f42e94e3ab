"""Gradient graphs in standard ONNX ops: the VJP rule table and the models built from it.

How to add a rule, in ten lines:

1. In rules_elementwise/rules_nn/rules_shape.py, put ``@vjp("OpType")`` on ``def rule(ctx:
   VjpContext, node: gs.Node, gys: Gys) -> Grads``; ``gys[i]`` flows into ``node.outputs[i]``.
2. Return one entry per ``node.inputs`` (omitted optional ones too): a gradient of that input's
   dtype and shape, or None; ``ctx.grads(node, gx)`` pads with None. backprop checks all three.
3. Emit only through the typed builder ``ctx.b`` (op, const, ints, reduce): read shapes and dtypes
   with ``ctx.shape(t)``/``ctx.dtype(t)``, never work them out by hand; ``ctx.needs(node, i)``: is
   input i on the path; ``ctx.unbroadcast(g, x)``: sum g back to x's shape; ``raise Unsupported``.
4. Never open a session or edit the forward graph (``ctx.b.add_output`` adds a missing output).
5. Add a case to tests/vjp_cases.py (``unary(...)`` or ``add(id, "OpType", nodes, inputs)``):
   tests/test_vjp_rules.py checks it by finite differences, and fails while a rule has none.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ..lazy import lazy_names
from .spec import RULE_SWITCHES, SCORE_MODES, TRANSFORMS, Head

if TYPE_CHECKING:
    from .heads import GradientModels, fused_model, split_models
    from .layers import LayerInfo, list_layers
    from .table import VJP_RULES

#: The names that build gradient graphs (onnx and onnx-graphsurgeon): imported on first use,
#: so that code which only reads ``Head`` or the score modes does not load them.
_BUILDERS = {"GradientModels": "heads", "fused_model": "heads", "split_models": "heads",
             "LayerInfo": "layers", "list_layers": "layers", "VJP_RULES": "table"}


# the rule table is filled when heads (backprop) is imported: first, whichever name is asked
__getattr__ = lazy_names(__name__, _BUILDERS, first="heads")


def rule_switches() -> dict[str, bool]:
    """The module switches that change which ops a rule emits (so the gradient graph, and its
    float32 rounding), as they are set now: the prepared-model cache keys by them. A rule
    module not imported yet holds its defaults."""
    nn = sys.modules.get(f"{__name__}.rules_nn")
    return {key: bool(getattr(nn, key, default) if nn is not None else default)
            for key, default in RULE_SWITCHES.items()}


__all__ = [
    "SCORE_MODES", "TRANSFORMS", "VJP_RULES", "GradientModels", "Head", "LayerInfo",
    "fused_model", "list_layers", "rule_switches", "split_models",
]
