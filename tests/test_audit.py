"""Audits on a tiny dataset: one line per image, resume without recomputing or duplicating,
shards merged equal to one run, settings mismatches refused, the summary's statistics by hand,
the report, and the command line's one-line errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from audit_data import LAYER, SCALE, cli_args, make_dataset, watch_audits
from click.testing import CliRunner

from ort_cam import Explainer
from ort_cam.audit.datasets import open_dataset, read_label_map
from ort_cam.audit.image import AuditSpec
from ort_cam.audit.report_html import rolling, window_size
from ort_cam.audit.run import (
    audit_dataset,
    merge,
    parse_shard,
    read_results,
    shard_samples,
)
from ort_cam.audit.summary import mean_ci, summarize, t975
from ort_cam.cli import main
from ort_cam.errors import OrtCamError
from ort_cam.graph.digest import model_digest

SPEC = AuditSpec(steps=4, deletion_steps=4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = make_dataset(tmp_path_factory.mktemp("audit"))
    ex = Explainer(d["model"], LAYER, preprocess={"preset": "raw", "scale": SCALE}, quiet=True)
    d.update(ex=ex, ds=open_dataset(d["csv"]), lm=read_label_map(d["label_map"], 5),
             sha=model_digest(d["model"]))
    return d


def audit(data, out, spec=SPEC, html_page=False, **kw):
    return audit_dataset(data["ex"], data["ds"], out, label_map=data["lm"], spec=spec,
                         model_sha256=data["sha"], progress=False, html_page=html_page, **kw)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "audit"
    summary = audit(data, out, html_page=True)
    return {"out": out, "summary": summary, "records": read_results(out / "results.jsonl")}


def strip(records):
    return sorted(({k: v for k, v in r.items() if k != "seconds"} for r in records),
                  key=lambda r: r["key"])


def test_every_image_gets_exactly_one_line(data, reference):
    recs = {r["key"]: r for r in reference["records"]}
    assert sorted(recs) == sorted(s.key for s in data["ds"].samples)
    assert len(reference["records"]) == data["n"]
    assert recs["imgs/broken.png"]["skip"] == "unreadable image"
    assert recs["imgs/im001.png"]["skip"] == "no mapped label"
    ok = [r for r in reference["records"] if r["status"] == "ok"]
    assert len(ok) == data["n"] - 2
    assert {r["saturated"] for r in ok} == {True, False}  # both splits are exercised
    for r in ok:
        assert set(r["methods"]) == {"gradcam", "igcam", "rsi"}
        m = r["methods"]["rsi"]
        assert len(m["iou"]) == len(m["iob"]) == len(m["ior"]) == 9
        assert len(m["deletion"]) == len(m["insertion"]) == 5
        assert m["deletion"][0] == pytest.approx(r["p"], rel=1e-5)  # the untouched image
        assert m["insertion"][0] == pytest.approx(m["deletion"][-1])  # both all black
        assert m["drop_soft"] == pytest.approx(max(0, r["p"] - m["o_soft"]) / r["p"])
        assert r["completeness_gap"] is not None
    two = recs["imgs/im002.png"]
    assert len(two["boxes"]) >= 1 and two["objects"] == 2
    s = reference["summary"]
    assert s["images"] == {"in_dataset": data["n"], "shard": [1, 1], "lines": data["n"],
                           "audited": data["n"] - 2,
                           "skipped": {"no mapped label": 1, "unreadable image": 1}}
    split = s["splits"]["saturated"]["images"] + s["splits"]["unsaturated"]["images"]
    assert split == s["splits"]["all"]["images"] == data["n"] - 2


def test_resume_neither_recomputes_nor_duplicates(data, reference, tmp_path, monkeypatch):
    calls = watch_audits(monkeypatch, stop_after=4)  # a crash on the fifth image
    out = tmp_path / "a"
    with pytest.raises(KeyboardInterrupt):
        audit(data, out)
    assert len(read_results(out / "results.jsonl")) == 4
    with open(out / "results.jsonl", "a") as fh:  # a line torn by a crash mid-write
        fh.write('{"key": "imgs/im009.png", "status": "o')
    first = list(calls)
    calls = watch_audits(monkeypatch)
    summary = audit(data, out)
    assert len(calls) == data["n"] - 4 and not set(calls) & set(first)
    recs = read_results(out / "results.jsonl")
    assert len(recs) == len({r["key"] for r in recs}) == data["n"]
    assert summary == reference["summary"]
    assert strip(recs) == strip(reference["records"])
    calls.clear()
    audit(data, out)  # everything done: nothing recomputed
    assert calls == []


def test_shards_merge_to_the_unsharded_audit(data, reference, tmp_path):
    dirs = [tmp_path / f"s{i}" for i in (1, 2, 3)]
    keys = []
    for i, d in enumerate(dirs, start=1):
        audit(data, d, shard=(i, 3))
        keys.append({r["key"] for r in read_results(d / "results.jsonl")})
    assert set.union(*keys) == {s.key for s in data["ds"].samples}
    assert sum(map(len, keys)) == data["n"]  # disjoint
    # merge shards 2, 1, 3, with shard 1 twice: deduplicated
    settings, recs = merge([dirs[1], dirs[0], dirs[2], dirs[0]], tmp_path / "m", force=False)
    from ort_cam.audit.run import make_report

    assert make_report(tmp_path / "m", html_page=False) == reference["summary"]
    assert strip(recs) == strip(reference["records"])
    assert settings["about"]["merged_shards"] == [[1, 3], [2, 3], [3, 3]]
    thumbs = {p.name for p in (tmp_path / "m" / "thumbs").iterdir()}
    assert thumbs == {r["thumb"] for r in recs if r.get("thumb")}


def test_rsi_filters_leave_out_wrong_predictions_and_extra_boxes(data, reference, tmp_path):
    spec = AuditSpec(steps=4, deletion_steps=4, filters=("correct", "one_box", "small_box"))
    audit(data, tmp_path / "f", spec=spec)
    recs = {r["key"]: r for r in read_results(tmp_path / "f" / "results.jsonl")}
    ref = {r["key"]: r for r in reference["records"]}
    assert recs["imgs/im002.png"]["skip"] == "not one box"
    for key, r in ref.items():
        if r["status"] != "ok" or key == "imgs/im002.png":
            continue
        if r["correct"]:  # 7×6 boxes cover 42/256 of a 16×16 image: all small
            assert strip([recs[key]]) == strip([r])
        else:
            assert recs[key]["skip"] == "wrong prediction"
            assert recs[key]["target"] == r["target"] and "completeness_gap" not in recs[key]
    assert {r["correct"] for r in ref.values() if r["status"] == "ok"} == {True, False}


def test_shard_split_is_deterministic():
    from ort_cam.audit.datasets import Sample

    samples = [Sample(k, Path(k)) for k in "dbeacf"]
    assert [s.key for s in shard_samples(samples, (1, 2))] == ["a", "c", "e"]
    assert [s.key for s in shard_samples(samples, (2, 2))] == ["b", "d", "f"]
    assert parse_shard(None) == (1, 1) and parse_shard("3/4") == (3, 4)
    for bad in ("0/2", "3/2", "1-2", "a/b"):
        with pytest.raises(OrtCamError, match="bad shard"):
            parse_shard(bad)


def test_other_settings_are_refused(data, reference, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(reference["out"], out)
    with pytest.raises(OrtCamError, match=r"other settings \(deletion_steps, steps\)"):
        audit(data, out, spec=AuditSpec(steps=3, deletion_steps=5))
    with pytest.raises(OrtCamError, match=r"other settings \(filters\)"):
        audit(data, out, spec=AuditSpec(steps=4, deletion_steps=4, filters=("one_box",)))
    with pytest.raises(OrtCamError, match=r"other settings \(shard\)"):
        audit(data, out, shard=(1, 2))
    other = tmp_path / "other"
    audit(data, other, spec=AuditSpec(steps=3, deletion_steps=4), shard=(2, 2))
    with pytest.raises(OrtCamError, match=r"other settings than .* \(steps\)"):
        merge([out, other], tmp_path / "m", force=False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "mine.txt").write_text("keep me")
    with pytest.raises(OrtCamError, match="not empty and holds no audit.json"):
        audit(data, tmp_path / "junk")
    # --force starts over, and removes only what an audit writes
    audit(data, out, spec=AuditSpec(steps=3, deletion_steps=4), force=True)
    assert json.loads((out / "audit.json").read_text())["steps"] == 3


def test_mean_and_confidence_interval_by_hand():
    # mean 2.5, s = sqrt(5/3), t(0.975, 3) = 3.182: half-width 3.182 * 1.29099 / 2
    s = mean_ci([1, 2, 3, 4, None, float("nan")])
    assert s["n"] == 4 and s["mean"] == 2.5
    half = 3.182 * math.sqrt(5 / 3) / 2
    assert s["ci95"] == pytest.approx([2.5 - half, 2.5 + half])
    assert mean_ci([0.0, 1.0], bounds=(0.0, 1.0))["ci95"] == [0.0, 1.0]  # ±6.35, clipped
    assert mean_ci([7.0]) == {"n": 1, "mean": 7.0, "ci95": [None, None]}
    assert mean_ci([]) == {"n": 0, "mean": None, "ci95": [None, None]}
    assert t975(1) == 12.706 and t975(30) == 2.042
    assert t975(35) == pytest.approx(2.042 + (1 / 30 - 1 / 35) / (1 / 30 - 1 / 40) * -0.021)
    assert t975(10**9) == pytest.approx(1.96, abs=1e-6)


def test_summary_of_hand_made_records():
    def rec(key, p, drop, inc, energy):
        m = {"drop_soft": drop, "increase_soft": inc, "energy": energy, "iou": [0.5] * 9,
             "raw_min": 0.0, "raw_max": 1e-9}
        return {"key": key, "status": "ok", "p": p, "saturated": p > 0.99, "correct": True,
                "completeness_gap": 0.1, "methods": {"rsi": m}}

    settings = {"methods": ["rsi"], "dataset": {"images": 4}, "shard": [1, 1]}
    records = [rec("a", 0.5, 0.5, False, 1.0), rec("b", 0.999, 0.0, True, None),
               rec("c", 0.8, 0.25, False, 0.5),
               {"key": "d", "status": "skipped", "skip": "wrong prediction"}]
    s = summarize(settings, records)
    assert s["images"]["skipped"] == {"wrong prediction": 1} and s["images"]["audited"] == 3
    allm = s["splits"]["all"]["metrics"]["rsi"]
    assert allm["average_drop_soft"]["mean"] == pytest.approx(0.25)
    assert allm["average_drop_soft_pct"]["mean"] == pytest.approx(25.0)
    assert allm["increase_soft"]["mean"] == pytest.approx(1 / 3)
    assert allm["energy"]["n"] == 2 and allm["energy"]["mean"] == 0.75
    assert allm["iou@0.5"]["mean"] == 0.5 and allm["completeness_gap"]["mean"] == pytest.approx(0.1)
    assert s["splits"]["saturated"]["images"] == 1
    assert s["splits"]["unsaturated"]["metrics"]["rsi"]["average_drop_soft"]["mean"] == 0.375
    # dark at ε: range 1e-9 is below 1e-2..1e-8, not below 1e-9..1e-12
    assert s["splits"]["all"]["dark_counts"]["rsi"] == {
        f"1e-{k:02d}": (3 if k <= 8 else 0) for k in range(2, 13)}


def test_summary_lines_and_tables_name_the_mask_by_its_share():
    from ort_cam.audit.report_html import table_rows
    from ort_cam.audit.summary import summary_lines

    stat = {"n": 2, "mean": 0.123456, "ci95": [0.1, 0.2]}
    undefined = {"n": 0, "mean": None, "ci95": [None, None]}
    block = {"images": 2, "metrics": {"rsi": {
        "average_drop_soft_pct": stat, "increase_soft_pct": stat, "average_drop_mask_pct": stat,
        "increase_mask_pct": stat, "energy": stat, "bbox": stat, "deletion_auc": undefined,
        "insertion_auc": stat}}}
    summary = {"splits": {s: block for s in ("all", "saturated", "unsaturated")}}
    lines = summary_lines(summary, ["rsi"], top=0.1)
    assert lines[0] == "all: 2 images"
    assert lines[1] == (f"  {'RSI-Grad-CAM':22s} drop% 0.123  inc% 0.123  drop%@10 0.123  "
                        "inc%@10 0.123  energy 0.123  bbox 0.123  del -  ins 0.123")
    assert len(lines) == 6 and "drop%@15 " in summary_lines(summary, ["rsi"])[1]
    labels = dict(table_rows(0.25))
    assert labels["average_drop_mask_pct"] == "Average Drop %, top-25% mask (IG-CAM paper's Drop%)"
    assert dict(table_rows())["increase_mask_pct"] == (
        "Increase in Confidence %, top-15% mask (Increase%)")


def test_spec_defaults_are_the_shared_constants():
    from ort_cam.audit.metrics import DELETION_STEPS, MASK_TOP, top_label
    from ort_cam.result import DEFAULT_STEPS, SATURATED_ABOVE

    d = AuditSpec().as_dict()
    assert (d["steps"], d["deletion_steps"], d["explanation_top"], d["saturated_above"]) == (
        DEFAULT_STEPS, DELETION_STEPS, MASK_TOP, SATURATED_ABOVE) == (50, 16, 0.15, 0.99)
    assert top_label(MASK_TOP) == "top-15%" and top_label(0.333) == "top-33.3%"


def test_rolling_window_by_hand():
    x = np.array([0.4, 0.1, 0.3, 0.2])
    y = np.array([5.0, 1.0, 3.0, np.nan])  # sorted by x: 1, nan, 3, 5
    xm, ym = rolling(x, y, 2)
    np.testing.assert_allclose(xm, [0.15, 0.25, 0.35])
    np.testing.assert_allclose(ym, [1.0, 3.0, 4.0])
    assert window_size(12525) == 1000 and window_size(200) == 16 and window_size(3) == 3


def test_report_is_self_contained(reference):
    page = (reference["out"] / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5 + 3  # plots + one gallery per method
    assert "src='http" not in page and 'src="http' not in page
    assert "Average Drop %" in page and "Best and worst" in page
    # only the thumbnails the gallery shows are kept (4 best and 4 worst per method)
    from ort_cam.audit.report_html import gallery_records

    ok = [r for r in reference["records"] if r["status"] == "ok"]
    shown = {r["thumb"] for m in ("gradcam", "igcam", "rsi")
             for _, items in gallery_records(reference["out"], ok, m) for _, r in items}
    kept = {p.name for p in (reference["out"] / "thumbs").iterdir()}
    assert kept == shown and len(ok) == 11


def test_thumbnails_are_pruned_to_the_gallery(tmp_path):
    from ort_cam.audit.report_html import GALLERY, gallery_records, prune_thumbs

    (tmp_path / "thumbs").mkdir()
    recs = []
    for i in range(20):
        (tmp_path / "thumbs" / f"{i}.npz").write_bytes(b"")
        recs.append({"key": f"k{i:02d}", "thumb": f"{i}.npz", "methods": {"rsi": {
            "energy": i / 20}}})
    rows = gallery_records(tmp_path, recs, "rsi")
    assert [r["key"] for r in (x for _, x in rows[0][1])] == ["k19", "k18", "k17", "k16"]
    assert [r["key"] for r in (x for _, x in rows[1][1])] == ["k00", "k01", "k02", "k03"]
    prune_thumbs(tmp_path, {r["thumb"] for _, items in rows for _, r in items})
    assert len(list((tmp_path / "thumbs").iterdir())) == 2 * GALLERY
    assert gallery_records(tmp_path, recs, "rsi") == rows  # the same gallery after pruning


def test_cli_audit_then_report(data, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(main, cli_args(data, out))
    assert res.exit_code == 0, res.output
    assert "RSI-Grad-CAM" in res.output and "wrote" in res.output
    assert {p.name for p in out.iterdir()} == {"audit.json", "results.jsonl", "summary.json",
                                               "summary.csv", "thumbs"}
    header = (out / "summary.csv").read_text().splitlines()[0]
    assert header == "split,method,metric,n,mean,ci95_low,ci95_high"
    res = CliRunner().invoke(main, ["audit-report", str(out)])
    assert res.exit_code == 0 and (out / "report.html").exists(), res.output
    res = CliRunner().invoke(main, cli_args(data, out))  # resumes: nothing left to do
    assert res.exit_code == 0, res.output
    assert len(read_results(out / "results.jsonl")) == data["n"]


@pytest.mark.parametrize("case,message", [
    ("missing dataset", "dataset not found"),
    ("bad shard", "bad shard '3/2'"),
    ("bad label map", "maps to 7, outside the model's 0..4"),
    ("no label source", "pass --label-map or --labels"),
    ("other settings", "holds an audit made with other settings (steps)"),
    ("report of no audit", "holds no audit.json"),
    ("merge of no audit", "holds no audit.json"),
])
def test_cli_errors_are_one_line(data, reference, tmp_path, case, message):
    out = tmp_path / "out"
    args = cli_args(data, out)
    if case == "missing dataset":
        args[2] = str(tmp_path / "nowhere.csv")
    elif case == "bad shard":
        args += ["--shard", "3/2"]
    elif case == "bad label map":
        (tmp_path / "m.json").write_text('{"a": 7}')
        args[args.index("--label-map") + 1] = str(tmp_path / "m.json")
    elif case == "no label source":
        i = args.index("--label-map")
        del args[i:i + 2]
    elif case == "other settings":  # the CLI's settings equal the library's: resume it
        shutil.copytree(reference["out"], out)
        assert CliRunner().invoke(main, args).exit_code == 0
        args[args.index("--steps") + 1] = "3"
    elif case == "report of no audit":
        (tmp_path / "empty").mkdir()
        args = ["audit-report", str(tmp_path / "empty")]
    else:
        (tmp_path / "empty").mkdir()
        args = ["audit-merge", str(tmp_path / "empty"), "--out", str(out)]
    res = CliRunner().invoke(main, args)
    lines = [line for line in res.output.strip().splitlines() if not line.startswith("ort_cam:")]
    assert res.exit_code == 1 and len(lines) == 1, res.output
    assert lines[0].startswith("Error: ") and message in lines[0], lines[0]


def _explained(model: Path, image: Path, out: Path, *extra) -> dict:
    """``ort-cam explain``'s results.jsonl line for ``image`` (the audit's layer, steps and
    preprocessing)."""
    res = CliRunner().invoke(main, [str(a) for a in (
        "explain", model, image, "--layer", LAYER, "--preprocess", "raw", "--scale", SCALE,
        "--steps", 4, "--out", out, *extra)])
    assert res.exit_code == 0, res.output
    return json.loads((out / "results.jsonl").read_text())


def test_records_name_class_and_binary_targets_as_explain_does(data, reference, tmp_path):
    """A class or binary target's record carries ``target_kind`` and ``target_record`` (they
    were missing: only segment, detection and embedding records had them), the same as
    ``ort-cam explain``'s results.jsonl gives for that image: the class, label, reading and
    value; a binary target's sign (+1 for class 1, y = z; -1 for class 0, y = -z)."""
    from tolerance import assert_same_records

    recs = {r["key"]: r for r in reference["records"]}
    for r in recs.values():
        if r["status"] == "ok":  # the value explained is the probability p the audit reads
            assert r["target_kind"] == "class" and r["target_record"] == {
                "kind": "class", "class": r["target"], "label": r["label"], "value": r["p"],
                "score": "probability"}
    for key in ("imgs/im000.png", "imgs/im002.png"):
        told = _explained(data["model"], data["dir"] / key, tmp_path / key)
        # one image explained alone, the audit's in packed runs: rebatched() apart at most
        assert_same_records({k: recs[key][k] for k in ("target_kind", "target_record")},
                            {k: told[k] for k in ("target_kind", "target_record")})
    import tiny_models

    model = tiny_models.binary_net(tmp_path)
    (tmp_path / "binary.json").write_text(json.dumps({"a": 0, "b": 1, "c": 0, "d": 1, "e": 1}))
    args = cli_args(data, tmp_path / "b")
    args[1] = str(model)
    args[args.index("--label-map") + 1] = str(tmp_path / "binary.json")
    res = CliRunner().invoke(main, args + ["--methods", "gradcam"])
    assert res.exit_code == 0, res.output
    ok = [r for r in read_results(tmp_path / "b" / "results.jsonl") if r["status"] == "ok"]
    assert len(ok) == data["n"] - 2 and {r["target"] for r in ok} <= {0, 1}
    for r in ok:
        z = r["target_record"]["value"]  # ±logit; p is its sigmoid
        assert r["target_kind"] == "binary" and r["target_record"] == {
            "kind": "binary", "class": r["target"], "label": None, "value": z,
            "sign": 1 if r["target"] == 1 else -1}
        assert r["p"] == pytest.approx(1 / (1 + math.exp(-z)), rel=1e-12) and z >= 0
    told = _explained(model, data["dir"] / ok[0]["key"], tmp_path / "be", "--methods",
                      "gradcam")
    assert_same_records({k: ok[0][k] for k in ("target_kind", "target_record")},
                        {k: told[k] for k in ("target_kind", "target_record")})
