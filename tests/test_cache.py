"""The prepared-model cache (ort_cam/cache.py, ort_cam/prepared.py, ort_cam/optimized.py): a hit
starts without loading, probing or differentiating the model and gives bit-identical maps; any
change of a key field is a miss; a truncated or corrupt entry is rebuilt, never trusted; two
processes filling it at once both succeed and leave one intact entry; least-recently-used
eviction keeps it under its bound; --no-cache / cache=False neither reads nor writes it.

A CPU explainer leaves two entries per model: the fused model's (``entries``) and the fused
model as onnxruntime optimised it for this onnxruntime, provider and CPU (``sessions``). The
second is kept at onnxruntime's highest optimisation level only (``optimized.context``), the
sessions' default, at which this file runs whatever ``--ort-opt-level`` asks for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import ort_cam
from ort_cam import cache, grad, graph, optimized, prepared
from ort_cam import runtime as ort_runtime
from ort_cam.cli import main
from ort_cam.grad import rules_nn
from ort_cam.graph import digest
from ort_cam.graph.digest import model_digest
from ort_cam.runtime import CPU

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo" / "demo_cnn.onnx"
SAMPLE = ROOT / "models" / "demo" / "samples" / "ring_unsaturated.png"
OTHER_LAYER = "/block3/relu/Relu_output_0"


@pytest.fixture
def where(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv(cache.ENV_DIR, str(d))
    return d


@pytest.fixture(autouse=True)
def highest_level():
    """This file's sessions at the highest level (keeping the run's threads): at
    ``--ort-opt-level basic`` (tools/perturb_suite.py) no optimised entry is written, and the
    tests of the optimised model and of the two entries had nothing to look at."""
    before = ort_runtime.set_session_defaults(ort_runtime.session_defaults().threads, "all")
    yield
    ort_runtime.set_session_defaults(before.threads, before.opt_level)


def every_entry(d: Path) -> list[Path]:
    cache.wait()  # the entries this process is writing in the background
    return sorted(d.glob("*" + cache.SUFFIX)) if d.is_dir() else []


def _is_session(path: Path) -> bool:
    """Whether the entry holds an optimised model (its key has a session context)."""
    blob = path.read_bytes()
    start = len(cache._MAGIC) + cache._LEN.size
    n = cache._header_size(blob[:start])
    assert n is not None
    return "session" in json.loads(blob[start:start + n])["fields"]


def entries(d: Path) -> list[Path]:
    """The fused models' entries."""
    return [p for p in every_entry(d) if not _is_session(p)]


def sessions(d: Path) -> list[Path]:
    """The optimised models' entries."""
    return [p for p in every_entry(d) if _is_session(p)]


def maps(ex: ort_cam.Explainer) -> dict[str, np.ndarray]:
    r = ex.explain(SAMPLE, steps=6)
    return {name: res.raw for name, res in r.methods.items()} | {"scores": r.scores}


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_hit_skips_load_probe_and_build(where, monkeypatch):
    cold = ort_cam.Explainer(DEMO, quiet=True)
    assert not cold.cache_hit and len(entries(where)) == 1
    want = maps(cold)

    def refuse(*args, **kwargs):
        raise AssertionError("a cache hit must not load or differentiate the model")

    monkeypatch.setattr(graph, "load_model", refuse)  # (prepared imports them where it builds)
    monkeypatch.setattr(grad, "fused_model", refuse)
    warm = ort_cam.Explainer(DEMO, quiet=True)
    assert warm.cache_hit
    assert (warm.layer, warm.channel_axis, warm.n_classes) == (
        cold.layer, cold.channel_axis, cold.n_classes)
    assert warm.per_sample_bytes() == cold.per_sample_bytes()
    assert warm.preprocess == cold.preprocess and warm.labels == cold.labels
    assert_same(maps(warm), want)
    assert warm.fused.SerializeToString() == cold.fused.SerializeToString()


def test_model_loads_on_first_use_after_a_hit(where):
    ort_cam.Explainer(DEMO, quiet=True)
    warm = ort_cam.Explainer(DEMO, quiet=True)
    assert warm.cache_hit and warm._setup.loaded is None
    assert warm.model.shapes[warm.layer][1:] == (96, 12, 12)


def test_every_key_field_changes_the_key():
    base = prepared.key_fields("ab" * 32, "layer", "probability")
    changed = {"format": base["format"] + 1, "model_sha256": "cd" * 32, "layer": "other",
               "score": "logit", "target_kind": "binary", "target_head": ["anchors", True],
               "output": "logits", "input_shapes": {"image": [3, 64, 64]}, "on_demand": False,
               "layer_view": {"layout": "tokens", "grid": [14, 14], "extra_tokens": 1},
               "rule_switches": {"STRIDE1_AS_CONV": False},
               "ort_cam": "0.0.0", "onnx": "0.0", "onnxruntime": "0.0"}
    assert set(changed) == set(base), "every key field is tried"
    keys = {cache.key_of(base)}
    for name, value in changed.items():
        keys.add(cache.key_of({**base, name: value}))
    assert len(keys) == len(changed) + 1


@pytest.mark.parametrize("change", ["layer", "score", "model_bytes", "ort_cam", "onnxruntime",
                                    "onnx", "stride1_as_conv"])
def test_any_change_of_key_is_a_miss(where, monkeypatch, tmp_path, change):
    ort_cam.Explainer(DEMO, quiet=True)
    model, layer, score = DEMO, None, "probability"
    if change == "layer":
        layer = OTHER_LAYER
    elif change == "score":
        score = "logit"
    elif change == "model_bytes":  # the same network, one metadata value different
        proto = onnx.load(str(DEMO))
        proto.doc_string = "changed"
        model = tmp_path / "changed.onnx"
        onnx.save(proto, str(model))
    elif change == "onnxruntime":
        monkeypatch.setattr(prepared.ort, "__version__", "0.0.0-test")
    elif change == "onnx":
        monkeypatch.setattr(prepared, "onnx_version", lambda: "0.0.0-test")
    elif change == "stride1_as_conv":  # a rule switch: keyed whether or not a rule reads it
        monkeypatch.setattr(rules_nn, "STRIDE1_AS_CONV", False)
    else:
        monkeypatch.setattr(prepared, "__version__", "0.0.0-test")
    ex = ort_cam.Explainer(model, layer, score=score, quiet=True)
    assert not ex.cache_hit and len(entries(where)) == 2
    assert ort_cam.Explainer(model, layer, score=score, quiet=True).cache_hit


def _truncate(blob: bytes) -> bytes:
    return blob[: len(blob) // 2]


def _flip_payload_byte(blob: bytes) -> bytes:
    i = len(blob) - 100
    return blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1:]


def _other_fields(blob: bytes) -> bytes:
    return blob.replace(b'"score": "probability"', b'"score": "logit"', 1)


def _bad_record(blob: bytes) -> bytes:
    return blob.replace(b'"channel_axis"', b'"channel_axiz"', 1)


@pytest.mark.parametrize("damage", [_truncate, _flip_payload_byte, _other_fields, _bad_record,
                                    lambda b: b"", lambda b: b"not an entry" * 10])
def test_corrupt_entry_is_rebuilt_not_trusted(where, damage):
    want = maps(ort_cam.Explainer(DEMO, quiet=True))
    (path,), (optimised,) = entries(where), sessions(where)
    for p in (path, optimised):
        p.write_bytes(damage(p.read_bytes()))
    ex = ort_cam.Explainer(DEMO, quiet=True)
    assert not ex.cache_hit
    assert_same(maps(ex), want)
    assert every_entry(where) == sorted([path, optimised])
    assert cache._decode(path.read_bytes(), _fields()) is not None
    assert cache._decode(optimised.read_bytes(), _session_fields()) is not None
    assert ort_cam.Explainer(DEMO, quiet=True).cache_hit


@pytest.mark.parametrize("which", ["fused", "optimised"])
def test_one_corrupt_entry_of_two(where, which):
    """A damaged optimised model: the fused model's entry serves, and the optimised one is
    written again. A damaged fused model: the optimised one serves the session, and the fused
    model, when asked for, is rebuilt (and written again)."""
    cold = ort_cam.Explainer(DEMO, quiet=True)
    want, fused = maps(cold), cold.fused.SerializeToString()
    path = (entries if which == "fused" else sessions)(where)[0]
    path.write_bytes(_flip_payload_byte(path.read_bytes()))
    ex = ort_cam.Explainer(DEMO, quiet=True)
    assert ex.cache_hit
    assert_same(maps(ex), want)
    assert ex.fused.SerializeToString() == fused
    fields = _fields() if which == "fused" else _session_fields()
    cache.wait()  # the rebuilt entry is written in the background
    assert cache._decode(path.read_bytes(), fields) is not None


def _fields() -> dict:
    # score None: the Explainer's default (the target kind's own reading)
    return prepared.key_fields(model_digest(DEMO) or "", None, None)


def _session_fields() -> dict:
    return {**_fields(), "session": optimized.context([CPU])}


CHILD = """
import hashlib, json, sys
import ort_cam
ex = ort_cam.Explainer(sys.argv[1], quiet=True)
r = ex.explain(sys.argv[2], steps=6)
raw = b"".join(res.raw.tobytes() for res in r.methods.values())
print(json.dumps({"hit": ex.cache_hit, "maps": hashlib.sha256(raw).hexdigest()}))
"""


def test_two_processes_at_once(where):
    env = dict(os.environ, **{cache.ENV_DIR: str(where)})
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(DEMO), str(SAMPLE)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
             for _ in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert outs[0]["maps"] == outs[1]["maps"]
    assert len(entries(where)) == len(sessions(where)) == 1 and not list(where.glob(".tmp-*"))
    assert cache._decode(entries(where)[0].read_bytes(), _fields()) is not None
    third = subprocess.run([sys.executable, "-c", CHILD, str(DEMO), str(SAMPLE)], env=env,
                           capture_output=True, text=True, timeout=300, check=True)
    got = json.loads(third.stdout.strip().splitlines()[-1])
    assert got == {"hit": True, "maps": outs[0]["maps"]}


def test_lru_eviction_keeps_the_bound(tmp_path):
    payload = bytes(1000)
    size = len(cache._encode({"k": "a"}, {}, payload))
    limit = 3 * size + size // 2  # room for three entries
    paths: dict[str, Path] = {}
    for t, name in enumerate("abc"):
        written = cache.write(tmp_path, {"k": name}, {}, payload, limit=limit)
        assert written is not None
        paths[name] = written
        os.utime(written, (1000 + t, 1000 + t))  # a, b, c: oldest first
    assert cache.read(tmp_path, {"k": "a"}) is not None  # a is used: now the newest
    cache.write(tmp_path, {"k": "d"}, {}, payload, limit=limit)
    assert not paths["b"].exists(), "the least recently used entry goes first"
    assert all(paths[k].exists() for k in "ac")
    assert sum(p.stat().st_size for p in every_entry(tmp_path)) <= limit
    assert cache.write(tmp_path, {"k": "e"}, {}, bytes(10 * limit), limit=limit) is None


def test_no_cache_api_and_cli(where, tmp_path):
    ex = ort_cam.Explainer(DEMO, quiet=True, cache=False)
    assert not ex.cache_hit and not where.exists()
    args = ["explain", str(DEMO), str(SAMPLE), "--steps", "4", "--json"]
    res = CliRunner().invoke(main, [*args, "--no-cache", "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert not where.exists()  # no entry, no remembered digest
    res = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert len(entries(where)) == len(sessions(where)) == 1
    a = np.load(tmp_path / "a" / "ring_unsaturated.npz")
    b = np.load(tmp_path / "b" / "ring_unsaturated.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_unwritable_cache_is_not_an_error(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(cache.ENV_DIR, str(blocker / "cache"))
    ex = ort_cam.Explainer(DEMO, quiet=True)
    assert not ex.cache_hit and ex.explain(SAMPLE, steps=2).steps == 2


def test_external_data_is_part_of_the_key(tmp_path):
    proto = onnx.load(str(DEMO))
    path = tmp_path / "ext.onnx"
    onnx.save(proto, str(path), save_as_external_data=True, location="ext.data",
              size_threshold=0)
    first = model_digest(path)
    data = tmp_path / "ext.data"
    blob = bytearray(data.read_bytes())
    blob[-1] ^= 0x01
    data.write_bytes(bytes(blob))
    assert model_digest(path) not in (None, first)
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(path, copy / "ext.onnx")
    assert model_digest(copy / "ext.onnx") is None  # its data file is missing


# --- the optimised model (ort_cam/optimized.py) --------------------------------------------
@pytest.mark.parametrize("threads", [1, 2])
def test_warm_session_opens_the_optimised_model_with_the_same_maps(where, monkeypatch, threads):
    want = maps(ort_cam.Explainer(DEMO, quiet=True, cache=False, threads=threads))
    ort_cam.Explainer(DEMO, quiet=True)  # writes both entries (onnxruntime's thread choice)
    opened: list[str] = []
    real = optimized.make_session

    def spy(model, providers, threads=None, opt_level=None):
        opened.append(opt_level)
        return real(model, providers, threads, opt_level)

    def refuse(*args, **kwargs):
        raise AssertionError("a warm session must not optimise the model again")

    monkeypatch.setattr(optimized, "make_session", spy)
    monkeypatch.setattr(optimized, "make_saved_session", refuse)
    monkeypatch.setattr(prepared, "build", refuse)
    warm = ort_cam.Explainer(DEMO, quiet=True, threads=threads)
    assert warm.cache_hit and opened == ["disabled"]  # the optimised model, not optimised again
    assert_same(maps(warm), want)  # bit-identical to a session that optimised it itself


def test_another_cpu_runtime_or_level_is_not_served_the_optimised_model(where, monkeypatch):
    ort_cam.Explainer(DEMO, quiet=True)
    assert len(sessions(where)) == 1
    monkeypatch.setattr(optimized, "cpu_signature", lambda: "another-cpu")
    assert ort_cam.Explainer(DEMO, quiet=True).cache_hit  # the fused model's entry
    assert len(sessions(where)) == 2 and len(entries(where)) == 1  # one per CPU
    before = ort_runtime.set_session_defaults(opt_level="extended")
    try:
        assert optimized.context([CPU]) is None
        ex = ort_cam.Explainer(DEMO, quiet=True)
        assert ex.cache_hit and len(sessions(where)) == 2  # none kept below the highest level
        ex.explain(SAMPLE, steps=2)
    finally:
        ort_runtime.set_session_defaults(before.threads, before.opt_level)
    assert optimized.context(["CUDAExecutionProvider", CPU]) is None  # CPU sessions only


# --- the remembered digest ---------------------------------------------------------------
def test_the_digest_is_remembered_until_the_file_changes(where, monkeypatch, tmp_path):
    model = tmp_path / "m.onnx"
    shutil.copy(DEMO, model)
    first = digest.remembered_digest(model, where)
    assert first == model_digest(DEMO)
    calls: list[Path] = []
    real = digest.digest_and_files
    monkeypatch.setattr(digest, "digest_and_files",
                        lambda source, **kw: calls.append(Path(source)) or real(source, **kw))
    assert digest.remembered_digest(model, where) == first and not calls  # not read again
    blob = bytearray(model.read_bytes())
    blob[-1] ^= 0x01  # the same size, another byte
    model.write_bytes(bytes(blob))
    assert digest.remembered_digest(model, where) not in (None, first) and calls == [model]


def test_a_remembered_digest_follows_the_external_data(where, tmp_path):
    proto = onnx.load(str(DEMO))
    path = tmp_path / "ext.onnx"
    onnx.save(proto, str(path), save_as_external_data=True, location="ext.data",
              size_threshold=0)
    first = digest.remembered_digest(path, where)
    assert first == model_digest(path) and first is not None
    data = tmp_path / "ext.data"
    blob = bytearray(data.read_bytes())
    blob[-1] ^= 0x01
    data.write_bytes(bytes(blob))
    assert digest.remembered_digest(path, where) not in (None, first)


def test_the_keys_onnx_version_is_onnxs_own():
    """The key reads onnx's version without importing onnx: the same one onnx reports."""
    assert prepared.onnx_version() == onnx.__version__
    assert prepared.key_fields("ab" * 32, None, None)["onnx"] == onnx.__version__
