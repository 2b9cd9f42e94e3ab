"""The exported segmenter explainer with the map computed on demand (``grad.tail``: S only at the
Loop's first iteration, the run of x) against the plain build (S and Σ W ⊙ S on the full-size
map at every path point), side by side in one process (docs/export.md, "Maps on demand").

The segment head of tools/bench_targets.py (resnet18's convolutions, random weights, a 1x1
conv to 21 classes upsampled x32 to 224²), ``export_explainer`` at layer4 (tensor input,
baseline zeros, the default target: the largest argmax region at x; the default methods and
chunk), each model run in onnxruntime with ``--threads``, interleaved over ``--repeats``:
median wall and CPU seconds of one run, and the largest difference of their maps and y. The
class head's explainer on the same backbone (GAP -> fc, target_index −1) runs beside them, for
scale.

    python tools/bench_export_segment.py [--steps 16] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import interleaved_wall_cpu, print_ratios, random_batch, scratch_dir  # noqa: E402
from bench_targets import _export, _layer, _models  # noqa: E402

from ort_cam.export import build, export_explainer  # noqa: E402
from ort_cam.runtime import make_session  # noqa: E402


def _plain(path: Path, layer: str, m: int):
    """The explainer as exported before the map on demand: ModelSetup's plain fused model."""
    resolve = build.ModelSetup.resolve.__func__  # type: ignore[attr-defined]

    def plain(cls, *args, **kwargs):
        return resolve(cls, *args, **{**kwargs, "on_demand": False})

    with mock.patch.object(build.ModelSetup, "resolve", classmethod(plain)):
        return _explainer(path, layer, m)


def _explainer(path: Path, layer: str, m: int, kind: str = "segment"):
    return export_explainer(path, layer, steps=m, input_kind="tensor", baseline="zeros",
                            target_kind=kind, preprocess="raw", cache=False)


def _runner(proto, x: np.ndarray, threads: int):
    sess = make_session(proto, ["CPUExecutionProvider"], threads)
    feeds = {}
    for i in sess.get_inputs():
        if i.name == "target_index":
            feeds[i.name] = np.array(-1, np.int64)
        elif i.name in ("target_mask", "baseline"):
            feeds[i.name] = np.zeros((0, *i.shape[1:]), np.float32)
        else:
            feeds[i.name] = x
    names = [o.name for o in sess.get_outputs()]
    return lambda: dict(zip(names, sess.run(None, feeds), strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    tmp = scratch_dir("ort_cam_bench_export_segment_")
    models = _models()
    path = _export(models["segment"], tmp / "segment.onnx")
    layer, x = _layer(path), random_batch(1)
    protos = {"plain": _plain(path, layer, args.steps),
              "on demand": _explainer(path, layer, args.steps)}
    path = _export(models["class"], tmp / "class.onnx")
    protos["class"] = _explainer(path, _layer(path), args.steps, "class")
    assert [_has_if(protos[k]) for k in ("plain", "on demand")] == [False, True], \
        "the two builds are not the plain and the on-demand one"
    runs = {name: _runner(p, x, args.threads) for name, p in protos.items()}
    outs = {name: run() for name, run in runs.items()}
    a, b = outs["plain"], outs["on demand"]
    maps = [k for k in a if k.endswith("_map")]
    print(f"exported segmenter explainer, m = {args.steps}, 224², layer4, {args.threads} "
          f"thread(s), chunk {_chunk(protos['plain'])} "
          f"(plain) / {_chunk(protos['on demand'])} (on demand); target {int(a['target'])} / "
          f"{int(b['target'])}; maps {', '.join(maps)}: largest difference "
          f"{max(np.abs(a[k] - b[k]).max() for k in maps):.1e}; y_m {float(a['ym']):.9g} / "
          f"{float(b['ym']):.9g}")
    t = interleaved_wall_cpu(runs, args.repeats)
    print(f"one run, median of {args.repeats}: wall s, CPU s, ratio to plain (wall, CPU); the "
          f"class explainer's chunk {_chunk(protos['class'])}")
    print_ratios(t, "plain")


def _has_if(proto) -> bool:
    """Whether the Loop body holds the on-demand map's If."""
    loop = next(n for n in proto.graph.node if n.op_type == "Loop")
    return any(n.op_type == "If" for n in loop.attribute[0].g.node)


def _chunk(proto) -> str:
    return next(p.value for p in proto.metadata_props if p.key.endswith("export.chunk"))


if __name__ == "__main__":
    main()
