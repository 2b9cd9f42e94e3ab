"""One image's audit: explain it, then every metric of METHODS.md "Metrics" for every method,
as one JSON-ready record (a line of results.jsonl).

Every score the metrics use is a probability (softmax of the model's logits when the explainer
differentiates logits), of the class the model predicts; for a segment or detection target
(``audit.regions``), the target scalar y = Σ W ⊙ S with the W chosen at x from the
annotation. The re-scored images (explanation maps, deletion and insertion sequences) go
through ``Explainer.scores_at`` in batches sized by the explainer's memory budget.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError, OrtCamError
from ..explainer import Explainer
from ..methods import MethodOptions, default_methods
from ..outputs import extras_record, target_fields
from ..preprocess import Preprocess, load_image
from ..result import DEFAULT_STEPS, SATURATED_ABOVE, Explanation, MethodResult
from ..targets import Target
from . import metrics as M
from .datasets import Obj, Sample, classes_of, pre_model_skip
from .masks import mask_box
from .metrics import DELETION_STEPS, EXTRA_METRICS, MASK_TOP, THRESHOLDS
from .pointing import pointing_scores
from .regions import REGION_KINDS, RegionTarget, region_target

THUMB = 96
#: What ``AuditSpec.targets`` may be.
TARGETS = ("top1", "labels")


@dataclass
class AuditSpec:
    """What is measured, and how (all of it goes into audit.json)."""

    steps: int | str = DEFAULT_STEPS
    methods: tuple[str, ...] = field(default_factory=default_methods)
    baseline: str = "black"
    options: dict = field(default_factory=dict)  # method options, baseline_seed, blur_radius
    filters: tuple[str, ...] = ()
    deletion_steps: int = DELETION_STEPS
    top: float = MASK_TOP
    #: ``top1``: explain the predicted class; ``labels``: each labelled class of an image in
    #: turn (one record per image and label).
    targets: str = "top1"
    #: Score the grid pointing game (``audit.pointing``); set from the dataset, not recorded.
    pointing: bool = False
    #: Opt-in metrics that cost more model runs (``metrics.EXTRA_METRICS``: road, arcc).
    metrics: tuple[str, ...] = ()
    #: An embedding audit's concept vector per label (``regions.read_concepts``).
    concepts: dict | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        """Resolve the options to every method option and baseline parameter, so that
        defaults given or left out make the same settings."""
        if self.targets not in TARGETS:
            raise OrtCamError(f"unknown targets {self.targets!r}; use {' or '.join(TARGETS)}")
        opts = {k: v for k, v in self.options.items() if v is not None}
        seed, blur = opts.pop("baseline_seed", 0), opts.pop("blur_radius", None)
        self.options = {**MethodOptions.from_kwargs(**opts).record(),
                        "baseline_seed": seed, "blur_radius": blur}
        self.methods = tuple(self.methods)
        self.filters = tuple(self.filters)
        self.metrics = check_extra_metrics(self.metrics)

    def as_dict(self) -> dict:
        return {"steps": self.steps, "methods": list(self.methods), "baseline": self.baseline,
                "options": dict(sorted(self.options.items())), "filters": sorted(self.filters),
                "deletion_steps": self.deletion_steps, "deletion_value": "black (pixel 0)",
                "explanation_top": self.top, "thresholds": list(THRESHOLDS),
                "saturated_above": SATURATED_ABOVE, "probabilities": "softmax of the scores",
                **({"targets": self.targets} if self.targets != "top1" else {}),
                **({"concepts_sha256": concepts_digest(self.concepts)} if self.concepts
                   else {}),
                **extra_metrics_settings(self.metrics)}


def concepts_digest(concepts: dict) -> str:
    """A hash of the concept vectors by label (what audit.json records of them)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(concepts):
        h.update(name.encode() + b"\0" + np.asarray(concepts[name], "<f8").tobytes())
    return h.hexdigest()


def skip_record(sample: Sample, kind: str, detail: str, **extra) -> dict:
    return {"key": sample.key, "status": "skipped", "skip": kind, "reason": detail, **extra}


def explainer_preprocess(ex: Explainer) -> Preprocess:
    """The explainer's image preprocessing; audits need one (they read image files)."""
    if ex.preprocess is None:
        raise OrtCamError("the model input is not an image batch; audits need images")
    return ex.preprocess


def explainer_settings(ex: Explainer) -> dict:
    """What of the explainer an audit's settings record: layer, score mode, preprocessing,
    the target kind (other than class and binary) and a detection head's layout overrides
    where given (``target_head``: objectness, layout)."""
    head = {name: getattr(ex.target_options, name) for name in ("objectness", "layout")
            if getattr(ex.target_options, name) is not None}
    return {"layer": ex.layer, "score": ex.score_mode,
            "preprocess": json.loads(explainer_preprocess(ex).to_json()),
            **({"target_kind": ex.target_kind} if ex.target_kind in REGION_KINDS else {}),
            **({"target_head": head} if head else {})}


def probabilities(ex: Explainer, scores: np.ndarray) -> np.ndarray:
    """Class probabilities from scores in the explainer's score mode: the scores themselves
    (probability, sigmoid: a multi-label head's per-class probabilities), the sigmoid of
    ±logit (binary), else a softmax of the logits (logit; rest, whose scores are
    2·logit − logsumexp(logit): the logits up to a constant, twice)."""
    s = np.asarray(scores, np.float64)
    if ex.score_mode in ("probability", "sigmoid"):
        return s
    if ex.score_mode == "binary":
        return 1.0 / (1.0 + np.exp(-s))
    if ex.score_mode == "rest":
        s = s / 2.0
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def score_images(ex: Explainer, images: np.ndarray, c: int | None,
                 target: Target | None = None) -> np.ndarray:
    """p_c of every pixel image (K×H×W×3, float 0..255), in batches; with ``target`` (a
    segment or detection target chosen at x), its y = Σ W ⊙ S instead, W fixed."""
    batch = max(1, ex.chunk_for(len(images) - 1))
    pre = explainer_preprocess(ex)
    out = []
    for i in range(0, len(images), batch):
        x = pre.normalize(images[i:i + batch])
        s = ex.scores_at(x)
        out.append(target.score(s) if target is not None else
                   probabilities(ex, s)[:, c])
    return np.concatenate(out)


@dataclass
class Admitted:
    """A sample that passed every check made before its explanation (``admit``): its image,
    its objects that map to a class and their classes, the target to explain (a class, None:
    the predicted one; for a segment or detection target the call's spec), the seconds the
    checks took, and a segment or detection target chosen from the annotation."""

    image: Image.Image
    mapped: list[Obj]
    true: list[int]
    target: int | dict | None
    seconds: float
    region: RegionTarget | None = None


def admit(ex: Explainer, sample: Sample, label_map: dict[str, list[int]],
          spec: AuditSpec) -> Admitted | dict:
    """``sample`` read and checked before its path is walked: an ``Admitted``, or the skip
    record (unreadable, filtered, wrongly predicted under ``correct``)."""
    t0 = time.perf_counter()
    try:
        image = load_image(sample.path)
    except InputError as exc:
        return skip_record(sample, "unreadable image", str(exc))
    skip = pre_model_skip(sample, label_map, spec.filters, image.size)
    if skip:
        return skip_record(sample, *skip)
    mapped = [o for o in sample.objects if classes_of(o, label_map)]
    true = sorted({c for o in mapped for c in classes_of(o, label_map)})
    if "correct" in spec.filters:  # one forward pass decides before the path is walked
        wrong = wrong_prediction(ex, sample, image, mapped, true)
        if wrong:
            return wrong
    if ex.target_kind in REGION_KINDS:
        chosen = region_target(ex, sample, image, mapped, label_map, spec.concepts)
        if isinstance(chosen, tuple):
            return skip_record(sample, *chosen)
        return Admitted(image, mapped, true, chosen.spec, time.perf_counter() - t0, chosen)
    target = label_target(ex, sample, image, label_map)
    return Admitted(image, mapped, true, target, time.perf_counter() - t0)


def audit_image(ex: Explainer, sample: Sample, label_map: dict[str, list[int]],
                spec: AuditSpec, thumbs: Path | None = None,
                admitted: Admitted | dict | None = None,
                explanation: Explanation | None = None) -> dict:
    """The record for ``sample``: metrics, or ``status: skipped`` with the reason.
    ``admitted``: what ``admit`` gave for ``sample`` when it was already called (its seconds
    count in the record's); ``explanation``: the image's explanation when it was already made
    (for that target, with the settings of ``spec``, as ``run.packed_records`` makes it).
    What is not given is made here."""
    t0 = time.perf_counter() - (admitted.seconds if isinstance(admitted, Admitted) else 0.0)
    a = admitted if admitted is not None else admit(ex, sample, label_map, spec)
    if not isinstance(a, Admitted):
        return a
    mapped, true, size = a.mapped, a.true, a.image.size
    r = explanation if explanation is not None else ex.explain(
        a.image, target=a.target, steps=spec.steps, baseline=spec.baseline,
        methods=spec.methods, **spec.options)
    if a.region is not None:
        rec = region_record(ex, sample, a, a.region, r, spec)
        return _finish(rec, sample, r, thumbs, t0)
    c = r.target
    assert c is not None  # audit_dataset admits class and binary targets only
    p = float(probabilities(ex, r.scores)[c])
    told = target_fields(r)  # as explain's results.jsonl: the kind, and the class and reading
    head = {"key": sample.key, "target": c, "label": r.label,
            "target_kind": told["target_kind"], "target_record": told["target_record"], "p": p,
            "true_labels": sorted({o.label for o in mapped}), "true_classes": true,
            "correct": c in true,
            **({"predicted": int(np.argmax(r.scores))} if sample.target is not None else {})}
    hits = [o for o in mapped if c in classes_of(o, label_map)] or mapped
    pre = explainer_preprocess(ex)
    boxes = [pre.map_box(o.box, size) for o in hits]
    region = M.boxes_mask(pre.size, boxes)
    if not region.any():
        return skip_record(sample, "box outside the view", "the box lies outside the "
                           "model's input after the resize/crop", **head)
    pixels = _pixels(r)
    rec = {**head, "status": "ok", "size": list(size), "objects": len(sample.objects),
           "boxes": [list(b) for b in boxes], "region_fraction": float(region.mean()),
           "saturated": p > SATURATED_ABOVE, "steps": r.steps,
           **extras_record(r),
           "methods": {name: method_metrics(ex, pixels, res, region, c, p, spec)
                       for name, res in r.methods.items()}}  # one at a time: 2k + 4 images
    return _finish(rec, sample, r, thumbs, t0)


def _finish(rec: dict, sample: Sample, r: Explanation, thumbs: Path | None, t0: float) -> dict:
    """``rec`` with its thumbnail (when ``thumbs``) and its seconds since ``t0``."""
    if thumbs is not None:
        rec["thumb"] = save_thumb(thumbs, sample.key, _pixels(r),
                                  {n: m.map for n, m in r.methods.items()})
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def region_record(ex: Explainer, sample: Sample, a: Admitted, rt: RegionTarget,
                  r: Explanation, spec: AuditSpec) -> dict:
    """The record of a segment or detection target: y at x (``y``), its mean over W's
    support (``p``: the mean score over the mask, or the anchor's score), the target chosen
    and every metric against its region, re-scored as y with the same W."""
    y = float(r.score)
    p = y / target_norm(rt.chosen)
    pixels = _pixels(r)
    return {"key": sample.key, "target": r.target, "label": rt.label,
            "target_kind": ex.target_kind, "target_record": r.target_record, "y": y, "p": p,
            "true_labels": sorted({o.label for o in a.mapped}), "true_classes": a.true,
            "correct": None, "status": "ok", "size": list(a.image.size),
            "objects": len(sample.objects), **rt.record,
            "boxes": [[int(v) for v in mask_box(rt.region)]],  # the report draws them
            "region_fraction": float(rt.region.mean()),
            # saturated where the scores are probabilities (not a segmenter's logits)
            "saturated": ex.score_mode != "logit" and rt.chosen.kind != "embedding"
            and SATURATED_ABOVE < p <= 1.0,
            "steps": r.steps, **extras_record(r),
            "methods": {name: method_metrics(ex, pixels, res, rt.region, r.target, y, spec,
                                             rt.chosen)
                        for name, res in r.methods.items()}}


def label_target(ex: Explainer, sample: Sample, image: Image.Image,
                 label_map: dict[str, list[int]]) -> int | None:
    """The class to explain: None (the predicted one) unless ``sample.target`` names a label;
    of a label that maps to several classes, the most probable (one forward pass)."""
    if sample.target is None:
        return None
    classes = label_map.get(sample.target.strip().lower(), [])
    if not classes:
        raise OrtCamError(f"{sample.key}: label {sample.target!r} maps to no class")
    if len(classes) == 1:
        return classes[0]
    probs = probabilities(ex, ex.scores_at(explainer_preprocess(ex)(image)))[0]
    return max(classes, key=lambda k: float(probs[k]))


def wrong_prediction(ex: Explainer, sample: Sample, image: Image.Image, mapped: list[Obj],
                     true: list[int]) -> dict | None:
    """The skip record of the ``correct`` filter when the predicted class is none of
    ``true``, else None (one forward pass)."""
    probs = probabilities(ex, ex.scores_at(explainer_preprocess(ex)(image)))[0]
    c = int(np.argmax(probs))
    if c in true:
        return None
    label = ex.labels[c] if ex.labels and c < len(ex.labels) else None
    return skip_record(sample, "wrong prediction", f"predicted {label or c}",
                       target=c, label=label, p=float(probs[c]),
                       true_labels=sorted({o.label for o in mapped}),
                       true_classes=true, correct=False)


def _pixels(r: Explanation) -> np.ndarray:
    if r.pixels is None:  # explain() of an image always keeps the pixels it saw
        raise RuntimeError("the explanation kept no pixel image")
    return r.pixels


def method_metrics(ex: Explainer, pixels: np.ndarray, res: MethodResult, region: np.ndarray,
                   c: int | None, p: float, spec: AuditSpec,
                   target: Target | None = None) -> dict:
    """Every metric of one method's map: the soft and the mask explanation maps and the
    deletion and insertion curves re-scored (p_c of each; with ``target``, its y, ``p`` being
    y at x, and the AUCs those of y / Σ|W|), energy, Bbox, IoU/IoB/IoR."""
    k = spec.deletion_steps
    deletion, insertion = M.deletion_insertion_images(pixels, res.map, k)
    images = np.concatenate([M.explanation_map(pixels, res.map, "soft")[None],
                             M.explanation_map(pixels, res.map, "mask", spec.top)[None],
                             deletion, insertion])
    scores = score_images(ex, images, c, target)
    # a target's AUCs: of y / Σ|W|, the mean score over its mask (or its one anchor's score),
    # which the images' means compare as they do p_c's
    norm = 1.0 if target is None else target_norm(target)
    o_soft, o_mask = float(scores[0]), float(scores[1])
    dele, ins = scores[2:3 + k], scores[3 + k:]
    return {
        "energy": M.pixel_energy(res.map, region), "bbox": M.bbox_score(res.map, region),
        **M.region_scores(res.map, region, THRESHOLDS),
        "raw_min": float(res.raw.min()), "raw_max": float(res.raw.max()),
        "raw_mean": float(res.raw.mean()), "dark": bool(res.dark),
        "o_soft": o_soft, "o_mask": o_mask,
        "drop_soft": _drop(p, o_soft), "drop_mask": _drop(p, o_mask),
        "increase_soft": M.confidence_increase(p, o_soft),
        "increase_mask": M.confidence_increase(p, o_mask),
        "deletion": [float(v) for v in dele], "insertion": [float(v) for v in ins],
        "deletion_auc": M.curve_auc(dele) / norm, "insertion_auc": M.curve_auc(ins) / norm,
        **(pointing_scores(res.raw, region) if spec.pointing else {}),
        **(extra_metrics(ex, pixels, res, c, spec) if spec.metrics and c is not None
           else {}),
    }


def target_norm(target: Target) -> float:
    """What a target's y is divided by to give ``p``: Σ|W| (the mask's pixels, the one
    anchor), 1 for an embedding's cosine."""
    return 1.0 if target.kind == "embedding" else float(np.abs(target.weights).sum())


def _drop(y: float, o: float) -> float:
    """Average Drop's term; NaN where y ≤ 0 (a target scalar of logits may be)."""
    return M.confidence_drop(y, o) if y > 0 else float("nan")


#: How ROAD's removed pixels are filled (recorded with the settings).
ROAD_IMPUTATION = "noisy linear imputation in pixel space (0..255), noise 0"


def check_extra_metrics(names) -> tuple[str, ...]:
    """``names`` (a sequence or "road,arcc") checked, in ``metrics.EXTRA_METRICS`` order."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    bad = [n for n in names if n not in EXTRA_METRICS]
    if bad:
        raise OrtCamError(f"unknown metric(s) {', '.join(bad)}; use a comma-separated list "
                          f"of {', '.join(EXTRA_METRICS)}")
    return tuple(n for n in EXTRA_METRICS if n in names)


def extra_metrics_settings(metrics: tuple[str, ...]) -> dict:
    """What audit.json records of the opt-in metrics (nothing when there are none, so that
    the settings of an audit without them are those written before they existed): ROAD's
    imputation and solver (which SciPy's presence decides), the faithfulness correlation's
    subsets and the random logit's seed."""
    if not metrics:
        return {}
    road = {"road_imputation": ROAD_IMPUTATION, "road_solver": M.road_solver()} if {
        "road", "arcc"} & set(metrics) else {}
    return {"metrics": list(metrics), **road,
            **({"road_percentiles": list(M.ROAD_PERCENTILES)} if "road" in metrics else {}),
            **({"arcc_road_percentiles": list(M.ARCC_ROAD_PERCENTILES)}
               if "arcc" in metrics else {}),
            **({"faithfulness": {"runs": M.FAITHFULNESS_RUNS, "subset": M.FAITHFULNESS_SUBSET,
                                 "seed": M.FAITHFULNESS_SEED, "baseline": "image minimum"}}
               if "faithfulness_correlation" in metrics else {}),
            **({"random_logit_seed": M.RANDOM_LOGIT_SEED} if "random_logit" in metrics
               else {})}


def extra_metrics(ex: Explainer, pixels: np.ndarray, res: MethodResult, c: int,
                  spec: AuditSpec) -> dict:
    """The opt-in metrics (``spec.metrics``) of one method's map, scores being p_c: ROAD and
    ARCC (``road_arcc``), and Quantus's sparseness, complexity, faithfulness correlation and
    random logit (``metrics.quantus_metrics``; the random logit's other class explained by
    ``explain_pixels``)."""
    out = road_arcc(ex, pixels, res, c, spec) if {"road", "arcc"} & set(spec.metrics) else {}
    out.update(M.quantus_metrics(
        spec.metrics, res.map, pixels, lambda images: score_images(ex, images, c),
        lambda other: explain_pixels(ex, pixels.astype(np.float64), res.name, other, spec),
        ex.n_classes, c))
    return out


def road_arcc(ex: Explainer, pixels: np.ndarray, res: MethodResult, c: int,
              spec: AuditSpec) -> dict:
    """ROAD and/or ARCC (``spec.metrics``) of one method's map, scores being p_c. The ROAD
    images of both (ARCC's percentiles are among ROAD's: imputed once) and the image itself
    are scored in one batched call (``score_images``); ARCC's coherency explains the image
    times the map again with the same method (``explain_again``)."""
    img = pixels.astype(np.float64)
    wanted = {"road": M.ROAD_PERCENTILES, "arcc": M.ARCC_ROAD_PERCENTILES}
    pcts = sorted({p for name in spec.metrics if name in wanted for p in wanted[name]})
    morf, lerf = M.road_imputed(img, res.map, pcts)
    scores = score_images(ex, np.concatenate([img[None], morf, lerf]), c)

    def road(percentiles: tuple[int, ...]) -> dict[str, float]:
        at = [1 + pcts.index(p) for p in percentiles]
        return M.road_from_scores(float(scores[0]), scores[at], scores[[i + len(pcts)
                                                                          for i in at]])

    out: dict[str, float] = {}
    if "road" in spec.metrics:
        out.update({f"road_{k}": v for k, v in road(M.ROAD_PERCENTILES).items()})
    if "arcc" in spec.metrics:
        combined = road(M.ARCC_ROAD_PERCENTILES)["combined"]
        cx = M.complexity(res.map)
        co = M.coherency(res.map, explain_again(ex, pixels, res, c, spec))
        out.update(complexity=cx, coherency=co, arcc_road=combined,
                   arcc=M.arcc(cx, co, combined))
    return out


def explain_again(ex: Explainer, pixels: np.ndarray, res: MethodResult, c: int,
                  spec: AuditSpec) -> np.ndarray:
    """The map (input resolution, normalised) that method ``res.name`` gives for class ``c``
    of the soft explanation map ``pixels`` × ``res.map`` (float pixels, not rounded), with the
    audit's steps, options and baseline (made from that image): ARCC's second map."""
    return explain_pixels(ex, M.explanation_map(pixels, res.map, "soft"), res.name, c, spec)


def explain_pixels(ex: Explainer, image: np.ndarray, method: str, c: int,
                   spec: AuditSpec) -> np.ndarray:
    """The map (input resolution, normalised) that ``method`` gives for class ``c`` of the
    float pixel image ``image`` (at the model's size, not rounded), with the audit's steps,
    options and baseline (made from that image)."""
    from ..baselines import make_baseline

    pre = explainer_preprocess(ex)
    x = pre.normalize(image)
    opts = dict(spec.options)
    seed, blur = opts.pop("baseline_seed"), opts.pop("blur_radius")
    # the baseline from that image in whole pixels (a blur needs them), as for any image
    base_pixels = np.clip(image, 0, 255).round().astype(np.uint8)
    x0 = make_baseline(spec.baseline, base_pixels, x, pre, blur_radius=blur, seed=seed)
    again = ex.explain_array(x, baseline_array=x0, target=c, steps=spec.steps,
                             methods=[method], **opts)
    return again[method].map


def thumb_name(key: str) -> str:
    import hashlib

    return hashlib.sha1(key.encode()).hexdigest()[:16] + ".npz"


def save_thumb(folder: Path, key: str, pixels: np.ndarray, maps: dict[str, np.ndarray]) -> str:
    """A small copy of the image and maps for the report's gallery (longer side THUMB px,
    maps as uint8), written atomically; returns its file name."""
    h, w = pixels.shape[:2]
    s = min(1.0, THUMB / max(h, w))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    arrays = {"pixels": np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)),
              "scale": np.array([size[0] / w, size[1] / h])}
    for name, m in maps.items():
        small = Image.fromarray((np.clip(m, 0, 1) * 255).round().astype(np.uint8))
        arrays[name] = np.asarray(small.resize(size, Image.Resampling.BILINEAR))
    folder.mkdir(parents=True, exist_ok=True)
    name = thumb_name(key)
    tmp = folder / (name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, allow_pickle=False, **arrays)
    tmp.replace(folder / name)
    return name
