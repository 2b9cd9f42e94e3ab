"""Packed audits (``audit.run.packed_records``): the paths of several images explained in
shared session runs give the records of the image-by-image audit (maps bit-identical, so every
metric equal), with fewer session runs; skipped and unreadable images, label targets (also one
that is not the predicted class) and failures mid-group behave as image by image."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from audit_data import DEMO, demo_dataset, watch_audits
from tolerance import assert_rebatched, assert_same_records

from ort_cam import Explainer
from ort_cam.audit.datasets import label_map_for, open_dataset
from ort_cam.audit.image import AuditSpec, audit_image
from ort_cam.audit.run import audit_dataset, packed_records, read_results
from ort_cam.errors import OrtCamError
from ort_cam.runtime import Runner

SPEC = AuditSpec(steps=8, deletion_steps=4)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = demo_dataset(tmp_path_factory.mktemp("packing"), n=7)  # 6 images, the 7th unreadable
    ex = Explainer(d["model"], quiet=True, providers="cpu")
    return {"ex": ex, "ds": open_dataset(d["csv"]),
            "lm": label_map_for(None, ex.labels, ex.n_classes)}


class Runs:
    """Counts ``Runner.run`` calls."""

    def __init__(self, monkeypatch):
        self.n = 0
        original = Runner.run

        def run(runner, feeds):
            self.n += 1
            return original(runner, feeds)

        monkeypatch.setattr(Runner, "run", run)


def strip(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def audit(demo, out: Path, spec: AuditSpec, pack: bool) -> list[dict]:
    audit_dataset(demo["ex"], demo["ds"], out, label_map=demo["lm"], spec=spec,
                  model_sha256="x", progress=False, html_page=False, pack=pack)
    return read_results(out / "results.jsonl")


@pytest.mark.parametrize("targets, filters", [("top1", ()), ("labels", ()),
                                              ("top1", ("correct",))])
def test_packed_audit_writes_the_unpacked_records_with_fewer_runs(demo, tmp_path, monkeypatch,
                                                                 targets, filters):
    spec = replace(SPEC, targets=targets, filters=filters)
    assert demo["ex"].pack_size(spec.steps, spec.methods) >= 6, "all six paths fit one group"
    runs = Runs(monkeypatch)
    single = audit(demo, tmp_path / "single", spec, pack=False)
    n_single, runs.n = runs.n, 0
    packed = audit(demo, tmp_path / "packed", spec, pack=True)
    # every map-derived number equal: maps bit-identical (within tolerance.rebatched() where
    # onnxruntime sums a batch item by the batch)
    assert_same_records(strip(packed), strip(single))
    ok = [r for r in packed if r["status"] == "ok"]
    assert len(ok) == 6 and [r["skip"] for r in packed if r["status"] != "ok"] == [
        "unreadable image"]
    assert targets == "top1" or all("#" in r["key"] for r in ok)
    # image by image: the run of x and the run of its path (m = 8 fits one run), per image;
    # packed: both once for the six. The metrics' re-scoring runs are the same in both, and
    # so is the ``correct`` filter's one forward per image (each image is checked once).
    assert n_single - runs.n == 2 * 6 - 2
    for name in ("single", "packed"):  # the thumbnails are the same files
        assert sorted(p.name for p in (tmp_path / name / "thumbs").iterdir()) == sorted(
            r["thumb"] for r in ok)


def test_label_targets_other_than_the_prediction(demo):
    """Samples with a label target, one of them another class than the model predicts, mixed
    with top-1 samples and the unreadable image, through ``packed_records`` directly."""
    ex, lm = demo["ex"], demo["lm"]
    s = demo["ds"].samples
    own = s[0].objects[0].label
    other = next(lab for lab in ex.labels if lab.lower() != own.lower())
    samples = [s[0], replace(s[0], key=s[0].key + "#" + other, target=other), s[6],
               replace(s[1], key=s[1].key + "#" + s[1].objects[0].label,
                       target=s[1].objects[0].label), s[2], s[3]]
    packed = list(packed_records(ex, samples, lm, SPEC, None))
    single = [audit_image(ex, x, lm, SPEC, None) for x in samples]
    assert_same_records(strip(packed), strip(single))
    assert packed[1]["target"] == lm[other.lower()][0] != packed[0]["target"]
    assert packed[1]["correct"] is False and packed[2]["status"] == "skipped"


def test_a_failure_mid_group_writes_the_images_before_it(demo):
    """A label that maps to no class fails at that image, after the earlier images' records
    came out, as image by image; an interrupted measurement likewise."""
    ex, lm, s = demo["ex"], demo["lm"], demo["ds"].samples
    bad = replace(s[2], key="bad#nothing", target="no such label")
    got: list[dict] = []
    with pytest.raises(OrtCamError, match="maps to no class"):
        for rec in packed_records(ex, [s[0], s[1], bad, s[3]], lm, SPEC, None):
            got.append(rec)
    assert [r["key"] for r in got] == [s[0].key, s[1].key]
    assert_same_records(strip(got), strip([audit_image(ex, x, lm, SPEC, None) for x in s[:2]]))


def test_an_interrupt_mid_group_resumes_to_the_same_records(demo, tmp_path, monkeypatch):
    calls = watch_audits(monkeypatch, stop_after=3)  # a Ctrl-C on the fourth image
    out = tmp_path / "a"
    with pytest.raises(KeyboardInterrupt):
        audit(demo, out, SPEC, pack=True)
    assert [r["key"] for r in read_results(out / "results.jsonl")] == calls
    monkeypatch.undo()  # the real audit_image again
    resumed = audit(demo, out, SPEC, pack=True)
    assert_same_records(strip(resumed), strip(audit(demo, tmp_path / "b", SPEC, pack=False)))


def test_explain_pairs_equals_explain(demo):
    ex = demo["ex"]
    imgs = sorted((DEMO / "samples").glob("*.png"))[:3]
    pairs = [(imgs[0], None), (imgs[1], 2), (imgs[2], "top:2")]
    for (img, t), r in zip(pairs, ex.explain_pairs(pairs, steps=8)):
        one = ex.explain(img, target=t, steps=8)
        assert r.target == one.target
        for name in r.methods:
            assert_rebatched(r[name].raw, one[name].raw, name)
