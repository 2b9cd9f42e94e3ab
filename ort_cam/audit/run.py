"""An audit directory: the settings (audit.json), one line per image (results.jsonl, appended
and fsynced as it goes), resuming, shards and merging.

Every image of the dataset (or of its shard) gets exactly one line: its metrics, or
``status: skipped`` with the reason. A rerun with the same settings skips the keys already
written; a torn last line (the process died mid-write) is cut off and that image redone.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._version import __version__
from ..errors import OrtCamError
from ..files import refuse_overwrite
from .datasets import Dataset, Sample, classes_of, label_map_for, open_dataset
from .regions import (
    REGION_KINDS,
    REGION_SCALAR,
    check_concepts,
    check_dataset,
    concept_label_map,
)
from .store import (
    ABOUT,
    MADE,
    RESULTS,
    SANITY,
    SETTINGS,
    THUMBS,
    append_record,
    read_results,
    read_settings,
    write_atomic,
)

if TYPE_CHECKING:  # annotations only: the run never needs the explainer's import at load
    from ..explainer import Explainer
    from ..result import Explanation
    from .image import Admitted, AuditSpec
    from .sanity import SanityImage, SanityRun, SanitySpec


# --- shards -----------------------------------------------------------------------------------
def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` (1 <= i <= n) to (i, n); None is the whole dataset, (1, 1)."""
    if not text:
        return 1, 1
    parts = text.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise OrtCamError(f"bad shard {text!r}; use i/n, e.g. 1/4 (shards are 1..n)")
    i, n = int(parts[0]), int(parts[1])
    if not 1 <= i <= n:
        raise OrtCamError(f"bad shard {text!r}; i must be between 1 and n")
    return i, n


def shard_samples(samples: Sequence[Sample], shard: tuple[int, int]) -> list[Sample]:
    """Shard i of n: every n-th image in key order, starting at the i-th (deterministic and
    balanced; every image is in exactly one shard)."""
    i, n = shard
    ordered = sorted(samples, key=lambda s: s.key)
    return ordered[i - 1::n]


def plan(dataset: Dataset, shard: tuple[int, int], spec: AuditSpec,
         label_map: dict[str, list[int]]) -> tuple[AuditSpec, list[Sample]]:
    """What one run audits: ``spec`` (scoring the pointing game when the dataset is a grid)
    and the samples of ``shard``, one per labelled class of an image when ``spec.targets``
    is ``labels``."""
    from dataclasses import replace

    samples = shard_samples(dataset.samples, shard)
    if dataset.grid is not None:
        spec = replace(spec, pointing=True)
    if spec.targets == "labels":
        samples = [t for s in samples for t in label_samples(s, label_map)]
    return spec, samples


def label_samples(sample: Sample, label_map: dict[str, list[int]]) -> list[Sample]:
    """One sample per distinct label of ``sample`` that maps to a class, keyed
    ``key#label`` (``sample`` itself when none maps: it is skipped with the reason)."""
    from dataclasses import replace

    labels: dict[str, str] = {}
    for o in sample.objects:
        if classes_of(o, label_map):
            labels.setdefault(o.label.strip().lower(), o.label.strip())
    if not labels:
        return [sample]
    return [replace(sample, key=f"{sample.key}#{label}", target=label)
            for label in labels.values()]


# --- settings ---------------------------------------------------------------------------------
def make_settings(measured: dict, dataset: Dataset, shard: tuple[int, int], about: dict) -> dict:
    """audit.json: what was measured (compared on resume and merge), the dataset's
    fingerprint (with its masks for a segment audit), the shard, and ``about`` (paths,
    providers, version; never compared)."""
    masks = measured.get("target_kind") == "segment"
    return {**measured, "dataset": dataset.fingerprint(masks), "shard": list(shard),
            ABOUT: {**about, "ort_cam": __version__,
                    "dataset_path": str(Path(dataset.root).resolve())}}


def settings_diff(a: dict, b: dict, ignore: Iterable[str] = (ABOUT,)) -> list[str]:
    """Dotted names of the settings that differ between ``a`` and ``b``."""
    skip = set(ignore)
    out = []
    for key in sorted(set(a) | set(b)):
        if key in skip:
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += [f"{key}.{k}" for k in settings_diff(va, vb, ())]
        elif va != vb:
            out.append(key)
    return out


# --- one run ----------------------------------------------------------------------------------
def start_or_resume(out: Path, settings: dict, force: bool) -> set[str]:
    """Make ``out`` ready and return the keys already done there.

    New or empty ``out``: write audit.json. An earlier audit with the same settings: resume
    (torn last line cut off). Other settings, or a non-empty folder that is no audit: refuse,
    unless ``force``, which removes what an audit writes (nothing else) and starts over."""
    if force:
        clear(out)
    if (out / SETTINGS).exists():
        old = read_settings(out)
        diff = settings_diff(old, settings)
        if diff:
            raise OrtCamError(f"{out} holds an audit made with other settings "
                              f"({', '.join(diff)}); use another --out, or --force to start over")
        return {r["key"] for r in read_results(out / RESULTS, repair=True)}
    # force removed only what an audit writes: anything else of the user's is never overwritten
    refuse_overwrite(out, marker=SETTINGS, fix="use another --out or --force")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / SETTINGS, json.dumps(settings, indent=2) + "\n")
    return set()


def clear(out: Path) -> None:
    """Remove the files an audit writes in ``out`` (and nothing else)."""
    for name in (RESULTS, SETTINGS, *MADE):
        (out / name).unlink(missing_ok=True)
    for folder in (THUMBS, SANITY):
        if (out / folder).is_dir():
            shutil.rmtree(out / folder)


def run(samples: Sequence[Sample], done: set[str], out: Path,
        measure: Callable[[Sample, Path], dict], progress: bool = True) -> int:
    """Measure every sample not in ``done``, appending each record as it comes; returns how
    many were measured. A progress bar with an ETA counts the whole shard."""
    return write_records(samples, done, out,
                         lambda work: (measure(s, out / THUMBS) for s in work), progress)


def write_records(samples: Sequence[Sample], done: set[str], out: Path,
                  produce: Callable[[list[Sample]], Iterable[dict]],
                  progress: bool = True) -> int:
    """Append to results.jsonl (fsynced, one line each) every record ``produce`` yields for
    the samples not in ``done``, in the order they come; returns how many were written. The
    only writer of results.jsonl, for one process (``run``) and for a cluster alike."""
    from tqdm import tqdm

    work = [s for s in samples if s.key not in done]
    written = skipped = 0
    with open(out / RESULTS, "a", encoding="utf-8") as fh, \
            tqdm(total=len(samples), initial=len(samples) - len(work), unit="img",
                 desc="audit", disable=None if progress else True, smoothing=0.1) as bar:
        for record in produce(work):
            append_record(fh, record)
            written += 1
            skipped += record.get("status") == "skipped"
            bar.set_postfix(skipped=skipped, refresh=False)
            bar.update()
    return written


def packed_records(ex: Explainer, samples: Sequence[Sample], label_map: dict[str, list[int]],
                   spec: AuditSpec, thumbs: Path | None) -> Iterator[dict]:
    """The records ``audit.image.audit_image`` gives sample by sample, in order, with the
    paths of up to ``ex.pack_size`` images explained together in shared session runs
    (``Explainer.explain_pairs``); the maps, and so the records, are the same. Each sample is
    admitted (read and checked, ``audit.image.admit``) once. Each record is yielded as soon
    as it is made; a failure mid-group redoes that group image by image, so that the images
    before the failing one are written and it fails where it would have."""
    from .image import Admitted, admit

    size = ex.pack_size(spec.steps, spec.methods)
    pending: list[tuple[Sample, Admitted | dict | None]] = []
    for sample in samples:
        try:
            admitted = admit(ex, sample, label_map, spec) if size > 1 else None
        except Exception:
            yield from _measure_group(ex, pending, label_map, spec, thumbs)
            raise
        pending.append((sample, admitted))
        if size <= 1 or sum(isinstance(a, Admitted) for _, a in pending) >= size:
            yield from _measure_group(ex, pending, label_map, spec, thumbs)
            pending = []
    yield from _measure_group(ex, pending, label_map, spec, thumbs)


def _measure_group(ex: Explainer, group: list[tuple[Sample, Admitted | dict | None]],
                   label_map: dict[str, list[int]], spec: AuditSpec,
                   thumbs: Path | None) -> Iterator[dict]:
    """The records of ``group``: its admitted images explained together, then each measured."""
    from . import image as audit

    jobs = [(i, a) for i, (_, a) in enumerate(group) if isinstance(a, audit.Admitted)]
    made: dict[int, Explanation] = {}
    if len(jobs) > 1:
        try:
            made = dict(zip((i for i, _ in jobs), ex.explain_pairs(
                [(a.image, a.target) for _, a in jobs], steps=spec.steps,
                baseline=spec.baseline, methods=spec.methods, **spec.options)))
        except Exception:  # redone one at a time below: fails at the image that fails
            made = {}
    for i, (sample, admitted) in enumerate(group):
        r = made.pop(i, None)
        rec = audit.audit_image(ex, sample, label_map, spec, thumbs, admitted=admitted,
                                explanation=r)
        if r is not None and "seconds" in rec:  # the image's share of the packed runs
            shared = r.timings.get("total", 0.0) + r.timings.get("preprocess", 0.0)
            rec["seconds"] = round(rec["seconds"] + shared, 3)
        yield rec


# --- merge ------------------------------------------------------------------------------------
def merge(dirs: Sequence[Path], out: Path, force: bool) -> tuple[dict, list[dict]]:
    """Join shard outputs into ``out``: same settings (but the shard) or refuse; records
    deduplicated by key (first seen wins); thumbnails copied. Returns (settings, records)."""
    if not dirs:
        raise OrtCamError("give at least one audit directory to merge")
    if any(Path(d).resolve() == Path(out).resolve() for d in dirs):
        raise OrtCamError("--out must be a new directory, not one of the inputs")
    all_settings = [read_settings(Path(d)) for d in dirs]
    _check_one_audit(dirs, all_settings)
    records: dict[str, dict] = {}
    sources: dict[str, Path] = {}
    for d in dirs:
        for r in read_results(Path(d) / RESULTS):
            if r["key"] not in records:
                records[r["key"]] = r
                sources[r["key"]] = Path(d)
    if force:
        clear(out)
    refuse_overwrite(out, fix="use another --out or --force")  # after clear, as in start_or_resume
    out.mkdir(parents=True, exist_ok=True)
    first = all_settings[0]
    shards = sorted({tuple(s["shard"]) for s in all_settings})
    settings = {**first, "shard": [1, 1],
                ABOUT: {**first.get(ABOUT, {}), "merged_from": [str(d) for d in dirs],
                        "merged_shards": [list(s) for s in shards]}}
    _write_merged(out, records, sources)
    write_atomic(out / SETTINGS, json.dumps(settings, indent=2) + "\n")
    return settings, [records[k] for k in sorted(records)]


def _check_one_audit(dirs: Sequence[Path], all_settings: list[dict]) -> None:
    """Refuse shards of different audits: other settings (but the shard), or other splits."""
    first = all_settings[0]
    for d, s in zip(dirs[1:], all_settings[1:]):
        diff = settings_diff(first, s, ignore=(ABOUT, "shard"))
        if diff:
            raise OrtCamError(f"{d} was made with other settings than {dirs[0]} "
                              f"({', '.join(diff)}); only shards of one audit can be merged")
    counts = {tuple(s["shard"])[1] for s in all_settings}
    if len(counts) != 1:
        raise OrtCamError(f"the directories were split into different shard counts "
                          f"({', '.join(map(str, sorted(counts)))}); merge shards of one split")


def _write_merged(out: Path, records: dict[str, dict], sources: dict[str, Path]) -> None:
    """results.jsonl in key order, each record's thumbnail copied from its shard."""
    with open(out / RESULTS, "w", encoding="utf-8") as fh:
        for key in sorted(records):
            r = records[key]
            if r.get("thumb"):
                src = sources[key] / THUMBS / r["thumb"]
                if src.exists():
                    (out / THUMBS).mkdir(exist_ok=True)
                    shutil.copyfile(src, out / THUMBS / r["thumb"])
            fh.write(json.dumps(r) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


# --- the whole audit ----------------------------------------------------------------------------
def measured_settings(described: dict, label_map: dict[str, list[int]], spec: AuditSpec,
                      model_sha256: str) -> dict:
    """What an audit measures (compared on resume and merge): the model, the explainer as
    ``image.explainer_settings`` tells it (layer, score, preprocessing, a detection head's
    overrides), the label map and ``spec``."""
    import hashlib

    kind = described.get("target_kind", "class")
    return {"model_sha256": model_sha256, "layer": described["layer"],
            "score": described["score"], "preprocess": described["preprocess"],
            **({"target_head": described["target_head"]} if "target_head" in described
               else {}),
            "label_map_sha256": hashlib.sha256(
                json.dumps(label_map, sort_keys=True).encode()).hexdigest(),
            **spec.as_dict(),
            **({"target_kind": kind, "probabilities": REGION_SCALAR}
               if kind in REGION_KINDS else {})}


def audit_dataset(ex: Explainer, dataset: Dataset, out: Path, *,
                  label_map: dict[str, list[int]], spec: AuditSpec, model_sha256: str,
                  shard: tuple[int, int] = (1, 1), force: bool = False,
                  progress: bool = True, about: dict | None = None,
                  html_page: bool = True, pack: bool = True,
                  sanity: SanityRun | None = None) -> dict:
    """Audit ``dataset`` (or its ``shard``) with the explainer ``ex`` into ``out``, resuming
    whatever an earlier run with the same settings left there; then write summary.json,
    summary.csv and (unless not ``html_page``) report.html. Returns the summary.

    ``spec`` is an ``audit.image.AuditSpec``; ``label_map`` maps lower-case labels to class
    indices. A KeyboardInterrupt leaves every finished image on disk (rerun to resume).
    ``pack``: explain several images' paths in shared session runs (``packed_records``; the
    same records); False explains one image at a time. ``sanity``: then run the sanity
    checks (``audit.sanity``) on the audited images."""
    from .image import audit_image, explainer_settings

    check_kind(ex.target_kind, spec, sanity is not None)
    if ex.target_kind == "embedding":
        check_concepts(spec.concepts, int(np.prod(ex.output_info.shape)))
    if ex.target_kind in REGION_KINDS:
        check_dataset(dataset, ex.target_kind, label_map, ex.labels)
    ex.own_sizes = False  # the metrics re-score images at the explainer's one size
    measured = measured_settings(explainer_settings(ex), label_map, spec, model_sha256)
    if sanity is not None:
        measured.update(sanity.spec.as_dict(sanity.model_sha256))
    settings = make_settings(measured, dataset, shard, {"providers": ex.providers,
                                                        **(about or {})})
    done = start_or_resume(Path(out), settings, force)
    spec, samples = plan(dataset, shard, spec, label_map)
    if pack:
        write_records(samples, done, Path(out), lambda work: packed_records(
            ex, work, label_map, spec, Path(out) / THUMBS), progress)
    else:
        run(samples, done, Path(out),
            lambda s, thumbs: audit_image(ex, s, label_map, spec, thumbs), progress)
    if sanity is not None:
        from .sanity import run_sanity

        run_sanity(ex, sanity.source, sanity.make_explainer, sanity_images(samples, Path(out)),
                   spec, sanity.spec, Path(out), progress)
    return make_report(Path(out), html_page)


def dataset_for(kind: str, data: Dataset, path: Path, fmt: str, images: Path | None
                ) -> Dataset:
    """The dataset a ``kind`` audit reads: a VOC folder opened for its XML boxes is read
    again for its segmentation PNGs when the target is a segment one."""
    if kind == "segment" and data.format == "voc" and fmt == "auto":
        return open_dataset(path, fmt, images, masks=True)
    return data


def check_kind(kind: str, spec: AuditSpec, sanity: bool) -> None:
    """Refuse a target kind the audit does not measure, and for a segment or detection
    target what applies to class targets only (a predicted class, the opt-in metrics, the
    sanity checks)."""
    if kind not in ("class", "binary", *REGION_KINDS):
        raise OrtCamError(f"the audit measures class, binary, segment, detection and embedding "
                          f"targets; this model's output is read as a {kind} target (pass "
                          "--target-kind if it is another)")
    if spec.concepts and kind != "embedding":
        raise OrtCamError(f"--concepts applies to an embedding audit; this model's output is "
                          f"read as a {kind} target (pass --target-kind embedding if it is one)")
    if kind not in REGION_KINDS:
        return
    for what, given in (("--correct-only", "correct" in spec.filters),
                        ("--metrics", bool(spec.metrics)), ("--sanity", sanity)):
        if given:
            raise OrtCamError(f"{what} applies to class targets; a {kind} audit measures the "
                              "target each image's annotation gives: leave it out")


def sanity_images(samples: Sequence[Sample], out: Path) -> list[SanityImage]:
    """The audited images (status ok), in the samples' order, with the class explained."""
    from .sanity import SanityImage

    targets = {r["key"]: r["target"] for r in read_results(out / RESULTS)
               if r.get("status") == "ok"}
    return [SanityImage(s.key, str(s.path), int(targets[s.key])) for s in samples
            if s.key in targets]


def sanity_run(model: str | os.PathLike[str], spec: SanitySpec, ex: Explainer,
               runtime: dict) -> SanityRun:
    """The sanity checks of an audit of the file ``model`` explained by ``ex``: its
    randomised copies and the ``--sanity-model`` explained with ``ex``'s layer and
    preprocessing and the audit's ``runtime`` settings (never from the prepared-model cache,
    which a model per step would fill)."""
    import onnx

    from ..explainer import Explainer
    from ..graph.digest import model_digest
    from .sanity import SanityRun

    settings = {**runtime, "cache": False, "quiet": True}

    def make(m: onnx.ModelProto | str) -> Explainer:
        return Explainer(m, ex.layer, preprocess=ex.preprocess, **settings)

    sha = model_digest(spec.model, strict=True) if spec.model else None
    return SanityRun(spec, onnx.load(os.fspath(model)), make, sha)


def audit_model(model: str | os.PathLike[str], dataset: str | os.PathLike[str],
                out: str | os.PathLike[str], *, spec: AuditSpec | None = None,
                layer: str | None = None, fmt: str = "auto", images: Path | None = None,
                label_map: Path | None = None, shard: str | None = None,
                preprocess: dict | str | None = None, runtime: dict | None = None,
                force: bool = False, html_page: bool = True, progress: bool = True,
                sanity: SanitySpec | None = None) -> dict:
    """The audit from files: ``model`` explained at ``layer`` over ``dataset`` (its format
    ``fmt``, image folder ``images``: see ``datasets.open_dataset``), labels mapped to classes
    by the JSON file ``label_map`` or else the class names, ``shard`` "i/n" or all of it;
    ``preprocess`` and ``runtime`` (score, providers, threads, labels, chunk_size,
    target_kind, target: e.g. a detection head's objectness and layout) go to the
    ``Explainer``; ``sanity``: the sanity checks to run after (on a whole audit, not a
    shard). The rest as ``audit_dataset``; returns the summary."""
    from ..explainer import Explainer
    from ..graph.digest import model_digest
    from .image import AuditSpec

    part = parse_shard(shard)
    if sanity is not None and sanity.active and part != (1, 1):
        raise OrtCamError("the sanity checks run on a whole audit, not on a shard: run them "
                          "without --shard (on a sample of the images: they explain each "
                          "image once per layer)")
    data = open_dataset(Path(dataset), fmt, images,
                        masks=(runtime or {}).get("target_kind") == "segment")
    ex = Explainer(model, layer, preprocess=preprocess, **(runtime or {}))
    data = dataset_for(ex.target_kind, data, Path(dataset), fmt, images)
    mapping = audit_label_map(ex, spec or AuditSpec(), label_map)
    checks = (sanity_run(model, sanity, ex, runtime or {})
              if sanity is not None and sanity.active else None)
    return audit_dataset(ex, data, Path(out), label_map=mapping, spec=spec or AuditSpec(),
                         model_sha256=model_digest(model, strict=True), shard=part, force=force,
                         progress=progress, about={"model": str(model)}, html_page=html_page,
                         sanity=checks)


def audit_label_map(ex: Explainer, spec: AuditSpec, path: Path | None) -> dict[str, list[int]]:
    """``label_map_of`` the explainer ``ex``."""
    return label_map_of(explainer_reading(ex), spec, path)


def explainer_reading(ex: Explainer) -> dict:
    """What ``label_map_of`` reads of an explainer (a Ray worker sends it to the driver):
    the target kind, the class names and count, the values per image of the output."""
    return {"target_kind": ex.target_kind, "labels": ex.labels, "n_classes": ex.n_classes,
            "output_size": int(np.prod(ex.output_info.shape))}


def label_map_of(reading: dict, spec: AuditSpec, path: Path | None) -> dict[str, list[int]]:
    """The labels an audit explains, to classes, for an explainer that ``reading``
    describes (``explainer_reading``): an embedding audit's concepts' labels (each to its
    concept's index), else the label map file ``path`` or the model's class names; what the
    target kind refuses is refused first."""
    kind = reading["target_kind"]
    if kind == "embedding":
        check_concepts(spec.concepts, reading["output_size"])
        assert spec.concepts is not None
        return concept_label_map(spec.concepts)
    check_kind(kind, spec, False)
    return label_map_for(path, reading["labels"], reading["n_classes"] or None)


def make_report(out: Path, html_page: bool = True) -> dict:
    """(Re)write summary.json, summary.csv and (unless not ``html_page``) report.html of the
    audit in ``out`` from its audit.json and results.jsonl; returns the summary."""
    from .report_html import prune_thumbs, write_html
    from .summary import summarize, write_summary

    settings = read_settings(out)
    records = read_results(out / RESULTS)
    summary = summarize(settings, records)
    if settings.get("sanity"):
        from .sanity_report import read_sanity, summarize_sanity

        summary["sanity"] = summarize_sanity(settings, read_sanity(out))
    write_summary(out, summary)
    if html_page:
        prune_thumbs(out, write_html(out, settings, summary, records))
    return summary
