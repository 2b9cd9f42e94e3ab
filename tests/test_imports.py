"""The rooms of ort_cam and the one direction imports flow between them.

Every import in the package, lazy ones inside functions included, is read from the source (AST)
and must point to the same room or one below it:

    foundation → graph → grad → targets → engine → methods → explain → audit → cli

and no two modules may import each other, directly or through others.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ort_cam"

#: room -> its modules, lowest room first. A subpackage (ort_cam.graph, ...) holds its
#: submodules; every top-level module is named here, in one room, so a new one fails
#: ``test_every_module_has_a_room`` (which says where its imports allow it) until it is placed.
ROOMS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("ort_cam._version", "ort_cam.errors", "ort_cam.runtime", "ort_cam.preprocess",
                    "ort_cam.baselines", "ort_cam.maps", "ort_cam.result", "ort_cam.files",
                    "ort_cam.cache", "ort_cam.metadata_keys", "ort_cam.labels",
                    "ort_cam.class_choice", "ort_cam.lazy")),
    ("graph", ("ort_cam.graph",)),
    ("grad", ("ort_cam.grad",)),
    ("targets", ("ort_cam.targets",)),
    ("engine", ("ort_cam.engine",)),
    ("methods", ("ort_cam.methods",)),
    ("explain", ("ort_cam", "ort_cam.explainer", "ort_cam.explain_items", "ort_cam.prepared",
                 "ort_cam.model_runs", "ort_cam.model_setup", "ort_cam.optimized",
                 "ort_cam.augment", "ort_cam.render", "ort_cam.outputs", "ort_cam.demo",
                 "ort_cam.export", "ort_cam.metadata", "ort_cam.target_choice")),
    ("audit", ("ort_cam.audit",)),
    ("cli", ("ort_cam.cli",)),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The ort_cam modules ``name`` imports anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "ort_cam")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ort_cam":
                continue
            for alias in node.names:  # `from . import metrics` imports a submodule
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    # Importing a.b.c first runs a/b/__init__: count that edge too, except for the root facade
    # and for the packages that hold ``name`` (they are already being imported).
    mine = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    for m in list(found):
        parts = m.split(".")
        found.update(p for p in (".".join(parts[:i]) for i in range(2, len(parts)))
                     if p not in mine)
    return {m for m in found if m in known and m != name}


def holds(entry: str, name: str) -> bool:
    """Whether the ROOMS entry ``entry`` holds module ``name``: itself, or a submodule of a
    subpackage (the root package ``ort_cam`` holds only itself)."""
    return name == entry or ("." in entry and name.startswith(entry + "."))


def room_of(name: str) -> int:
    best, rank = -1, -1
    for i, (_, entries) in enumerate(ROOMS):
        for p in entries:
            if holds(p, name) and len(p) > best:
                best, rank = len(p), i
    return rank


def lowest_fit(name: str, g: dict[str, set[str]]) -> str:
    """The lowest room that ``name``'s imports allow (the highest room among them)."""
    ranks = [room_of(d) for d in g.get(name, ()) if room_of(d) >= 0]
    return ROOMS[max(ranks, default=0)][0]


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def test_every_module_has_a_room():
    g = graph()
    homeless = [f"{m} (its imports allow {lowest_fit(m, g)!r} or above)"
                for m in modules() if room_of(m) < 0]
    assert not homeless, "name these modules in a room of ROOMS: " + "; ".join(homeless)


def test_a_new_top_level_module_is_named_not_placed():
    """The root package holds no module but itself: ort_cam.x needs its own entry."""
    assert ROOMS[room_of("ort_cam")][0] == "explain"
    assert room_of("ort_cam.not_listed") == -1
    assert ROOMS[room_of("ort_cam.graph.new_tool")][0] == "graph"
    assert lowest_fit("ort_cam.not_listed", {"ort_cam.not_listed": {"ort_cam.engine"}}) == "engine"


def test_imports_flow_one_way():
    against = []
    for mod, deps in graph().items():
        for dep in deps:
            if room_of(dep) > room_of(mod):
                against.append(f"{mod} ({ROOMS[room_of(mod)][0]}) imports {dep} "
                               f"({ROOMS[room_of(dep)][0]})")
    assert not against, "imports against the flow:\n" + "\n".join(sorted(against))


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``g`` as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(g.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("g, has_cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"b", "c"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"a2"}, "a2": {"b"}, "b": {"a2"}}, True),
])
def test_cycle_finder_on_small_graphs(g, has_cycle):
    assert (find_cycle(g) is not None) == has_cycle


def test_the_walker_sees_lazy_and_relative_imports(tmp_path):
    """The parser follows `from .. import x` and imports inside functions, so the two kinds
    of cycle this test was written against (root ↔ grad/heads through __version__, graph ↔
    grad through a lazy import) are caught."""
    known = {"ort_cam", "ort_cam.grad", "ort_cam.grad.heads", "ort_cam.graph.layers",
             "ort_cam.grad.backprop", "ort_cam._version"}
    src = tmp_path / "ort_cam" / "graph"
    src.mkdir(parents=True)
    f = src / "layers.py"
    f.write_text("from .. import __version__\n"
                 "def rules():\n    from ..grad.backprop import VJP_RULES\n    return VJP_RULES\n")
    assert imports_of("ort_cam.graph.layers", f, known) == {
        "ort_cam", "ort_cam.grad", "ort_cam.grad.backprop"}


#: What `ort-cam explain` must not import: the other commands' code and the plotting library
#: (its panels are drawn with PIL); and with the model in the cache, nothing that builds or
#: loads a model (onnx, onnx-graphsurgeon): the session opens on the cached bytes.
NOT_FOR_EXPLAIN = ("matplotlib", "ort_cam.export", "ort_cam.audit", "ort_cam.cli.export_cmd",
                   "ort_cam.cli.audit_cmd", "ort_cam.cli.demo_cmd", "ort_cam.cli.graph_cmds")
NOT_FOR_WARM_EXPLAIN = ("onnx", "onnx_graphsurgeon", "ml_dtypes", "ort_cam.grad.heads",
                        "ort_cam.graph.load")

EXPLAIN_CHILD = """
import json, sys
from ort_cam.cli import main
main(sys.argv[1:], standalone_mode=False)
print(json.dumps(sorted(sys.modules)))
"""


def _explain_modules(args: list[str], cache: Path) -> list[str]:
    """The modules an `ort-cam explain` process imported."""
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent), ORT_CAM_CACHE=str(cache))
    done = subprocess.run([sys.executable, "-c", EXPLAIN_CHILD, *args], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert "ort_cam.cli.explain_cmd" in loaded  # (the check looks at the right process)
    return loaded


def _among(loaded: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in loaded if any(m == n or m.startswith(n + ".") for n in names)]


def test_explain_imports_only_what_it_uses(tmp_path):
    root = PACKAGE.parent
    args = ["explain", str(root / "models" / "demo" / "demo_cnn.onnx"),
            str(root / "models" / "demo" / "samples" / "ring_unsaturated.png"),
            "--steps", "2", "--json", "--providers", "cpu"]
    cold = _explain_modules([*args, "--out", str(tmp_path / "cold")], tmp_path / "cache")
    assert not _among(cold, NOT_FOR_EXPLAIN), "ort-cam explain imported what it does not use"
    assert _among(cold, NOT_FOR_WARM_EXPLAIN)  # (a cold run builds the model: it needs them)
    warm = _explain_modules([*args, "--out", str(tmp_path / "warm")], tmp_path / "cache")
    wrong = _among(warm, NOT_FOR_EXPLAIN + NOT_FOR_WARM_EXPLAIN)
    assert not wrong, f"ort-cam explain on a cached model imported {wrong}"
