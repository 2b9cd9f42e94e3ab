"""The sanity checks of saliency maps (Adebayo et al. 2018), run on the images of an audit.

Each audited image is explained again, for the same class, by models whose weights were
randomised (``audit.randomise``: ``cascade`` from the output down, one more layer each step,
or ``independent``, one layer at a time) and/or by a second model trained on shuffled labels
(``--sanity-model``, the data-randomisation test); each method's map is compared with the
audit model's map of that image (``audit.similarity``: Spearman with and without absolute
values, SSIM, HOG). Lines go to DIR/sanity/results.jsonl, one per step and image, appended
and fsynced as they come, so an interrupted run resumes; the first image's maps at every step
go to DIR/sanity/gallery/ for the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from PIL import Image

from ..errors import OrtCamError
from ..preprocess import load_image
from .randomise import DEFAULT_SEED, MODES, randomised_models, weight_layers
from .randomise import step_count as randomised_count
from .similarity import similarities
from .store import (
    SANITY,
    SANITY_GALLERY,
    SANITY_ORIGINAL,
    SANITY_RESULTS,
    append_record,
    read_results,
)

if TYPE_CHECKING:
    from ..explainer import Explainer
    from .image import AuditSpec

GALLERY_SIZE = 96
#: A method's map and whether it is dark.
Pair = tuple[np.ndarray, bool]


@dataclass(frozen=True)
class SanitySpec:
    """Which sanity checks run: ``mode`` (cascade, independent or None), its ``seed``,
    ``model``, a model trained on shuffled labels (None: no data-randomisation test), and
    ``every``: explain after every K-th layer only (``randomise.randomised_models``)."""

    mode: str | None = None
    seed: int = DEFAULT_SEED
    model: str | None = None
    every: int = 1

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in MODES:
            raise OrtCamError(f"unknown sanity check {self.mode!r}; use {' or '.join(MODES)}")

    @property
    def active(self) -> bool:
        return self.mode is not None or self.model is not None

    def as_dict(self, model_sha256: str | None = None) -> dict:
        """What audit.json records (nothing when no check runs)."""
        if not self.active:
            return {}
        return {"sanity": {"mode": self.mode, "seed": self.seed, "every": self.every,
                           "randomised": "Quantus 0.6.0 MPRT: torch reset_parameters, "
                                         "torch.manual_seed(seed + 1) per layer",
                           **({"model_sha256": model_sha256} if self.model else {})}}


@dataclass
class SanityRun:
    """What an audit needs to run the checks: the spec, the audited model as loaded from its
    file (whose copies are randomised), a builder of explainers with the audit's settings,
    and the digest of the ``--sanity-model`` file (recorded in audit.json)."""

    spec: SanitySpec
    source: onnx.ModelProto
    make_explainer: Callable[[onnx.ModelProto | str], Explainer]
    model_sha256: str | None = None


@dataclass(frozen=True)
class Step:
    """One model of the checks: its index, the layer randomised last (or the data-randomised
    model's name), that layer's op, how many layers were randomised (cascade: this one and
    all above it; 0 for the data test), and the model (a ModelProto or a path)."""

    index: int
    layer: str
    op: str
    randomised: int
    model: onnx.ModelProto | str


def sanity_steps(model: onnx.ModelProto, spec: SanitySpec) -> Iterator[Step]:
    """The models to explain with, in order (each built when reached)."""
    k = 0
    if spec.mode is not None:
        for n, layer, proto in randomised_models(model, spec.mode, spec.seed, spec.every):
            yield Step(k, layer.name, layer.op, n if spec.mode == "cascade" else 1, proto)
            k += 1
    if spec.model is not None:
        yield Step(k, f"data: {Path(spec.model).name}", "data", 0, spec.model)


@dataclass
class SanityImage:
    """An audited image to explain again, and the class its audit explained."""

    key: str
    path: str
    target: int


def _explain(ex: Explainer, image: Image.Image, target: int, spec: AuditSpec):
    return ex.explain(image, target=target, steps=spec.steps, baseline=spec.baseline,
                      methods=spec.methods, **spec.options)


def _maps(ex: Explainer, image: Image.Image, target: int, spec: AuditSpec) -> dict[str, Pair]:
    """Each method's map and whether it is dark."""
    return {name: (res.map, bool(res.dark))
            for name, res in _explain(ex, image, target, spec).methods.items()}


def compare(before: Pair, after: Pair) -> dict:
    """The similarities of two (map, dark) pairs, and whether the second is dark (a dark map
    has none: ``similarity.similarities``)."""
    return {**similarities(before[0], after[0], dark=before[1] or after[1]), "dark": after[1]}


def _save_gallery(folder: Path, step: int, maps: dict[str, np.ndarray],
                  pixels: np.ndarray | None = None) -> None:
    """The gallery image's maps at one step (uint8, longer side GALLERY_SIZE), atomically."""
    arrays = {}
    for name, m in maps.items():
        img = Image.fromarray((np.clip(m, 0, 1) * 255).round().astype(np.uint8))
        arrays[name] = np.asarray(_small(img))
    if pixels is not None:
        arrays["pixels"] = np.asarray(_small(Image.fromarray(pixels)))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{step}.npz.tmp"
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, allow_pickle=False, **arrays)
    tmp.replace(folder / f"{step}.npz")


def _small(img: Image.Image) -> Image.Image:
    s = min(1.0, GALLERY_SIZE / max(img.size))
    size = (max(1, round(img.size[0] * s)), max(1, round(img.size[1] * s)))
    return img.resize(size, Image.Resampling.BILINEAR)


def step_records(ex: Explainer, step: Step, images: Sequence[SanityImage],
                 originals: dict[str, dict[str, Pair]], spec: AuditSpec,
                 gallery: Path | None) -> Iterator[dict]:
    """One record per image for the model of ``step`` (explained by ``ex``): each method's
    similarities to the original map."""
    for item in images:
        t0 = time.perf_counter()
        maps = _maps(ex, load_image(item.path), item.target, spec)
        if gallery is not None and item is images[0]:
            _save_gallery(gallery, step.index, {k: m for k, (m, _) in maps.items()})
        yield {"step": step.index, "layer": step.layer, "op": step.op,
               "randomised": step.randomised, "key": item.key,
               "methods": {name: compare(originals[item.key][name], m)
                           for name, m in maps.items()},
               "seconds": round(time.perf_counter() - t0, 3)}


def run_sanity(ex: Explainer, source: onnx.ModelProto,
               make_explainer: Callable[[onnx.ModelProto | str], Explainer],
               images: Sequence[SanityImage], spec: AuditSpec, sanity: SanitySpec, out: Path,
               progress: bool = True) -> int:
    """Run the checks of ``sanity`` on ``images`` into ``out``/sanity/, resuming what an
    earlier run left there; ``ex`` explains the audited model ``source`` (whose copies are
    randomised), ``make_explainer`` builds an explainer of a step's model with the same
    settings. Returns how many lines were written."""
    from tqdm import tqdm

    if not images:
        return 0
    folder = out / SANITY
    folder.mkdir(parents=True, exist_ok=True)
    done = {(r["step"], r["key"]) for r in read_results(folder / SANITY_RESULTS, repair=True)}
    originals: dict[str, dict[str, Pair]] = {}
    total = step_count(source, sanity) * len(images) - len(done)
    written = 0
    with open(folder / SANITY_RESULTS, "a", encoding="utf-8") as fh, \
            tqdm(total=total, unit="img", desc="sanity", disable=None if progress else True) as bar:
        for step in sanity_steps(source, sanity):  # one model in memory at a time
            work = [i for i in images if (step.index, i.key) not in done]
            if not work:
                continue
            _originals(ex, work, originals, spec, folder / SANITY_GALLERY, images[0])
            randomised = make_explainer(step.model)
            gallery = folder / SANITY_GALLERY if work[0] is images[0] else None
            for record in step_records(randomised, step, work, originals, spec, gallery):
                append_record(fh, record)
                written += 1
                bar.update()
            del randomised
    return written


def step_count(model: onnx.ModelProto, spec: SanitySpec) -> int:
    """How many models ``sanity_steps`` yields."""
    n = randomised_count(len(weight_layers(model)), spec.every) if spec.mode else 0
    return n + (spec.model is not None)


def _originals(ex: Explainer, work: Sequence[SanityImage], originals: dict, spec: AuditSpec,
               gallery: Path, first: SanityImage) -> None:
    """The audited model's maps of the images of ``work`` not yet in ``originals`` (and the
    gallery's first panel)."""
    for item in work:
        if item.key in originals:
            continue
        r = _explain(ex, load_image(item.path), item.target, spec)
        originals[item.key] = {name: (res.map, bool(res.dark)) for name, res in r.methods.items()}
        if item is first and r.pixels is not None:  # the pixels the maps lie on
            _save_gallery(gallery, SANITY_ORIGINAL, {k: m for k, (m, _) in
                                                     originals[item.key].items()}, r.pixels)
