"""Audits on a Ray cluster (``ort-cam audit ... --ray [ADDRESS]``).

Ray is an optional extra (``pip install 'ort_cam[ray]'``). Each worker is a Ray actor holding
one ``Explainer``, built once (with one GPU reserved when CUDA is asked for); it audits one
image per call with the same ``audit.image.audit_image`` as a single-process audit and sends
back the record and its thumbnail.

The driver is the only writer: it appends each record as it arrives through
``run.write_records`` (the single-process path: one fsynced line per image) and writes the
thumbnails, so resuming after a crash, Ctrl-C or a lost worker is the single-process resume
(keys already in results.jsonl are skipped; nothing else was written). At most
``PER_WORKER`` images per worker are in flight, so the driver's memory does not grow with the
dataset. A worker that is lost (its process killed or crashed, killed by Ray's memory monitor,
its node gone) has its in-flight images put back at the head of the queue for the other
workers, and a replacement worker is started, as long as records keep coming (at most as many
losses in a row, with no record in between, as there are workers: a crash loop ends the run
with a one-line error, and a rerun resumes). Workers read the images by their path when
they see the same file as the driver (one machine, shared storage); otherwise the driver sends
the image's bytes with the call, and the model's bytes once per worker.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import OrtCamError
from .datasets import Sample, open_dataset
from .image import AuditSpec
from .regions import REGION_KINDS, check_dataset
from .run import (
    check_kind,
    dataset_for,
    label_map_of,
    make_report,
    make_settings,
    measured_settings,
    parse_shard,
    plan,
    shard_samples,
    start_or_resume,
    write_records,
)
from .store import THUMBS

RAY_MISSING = "--ray needs Ray, an optional extra: pip install 'ort_cam[ray]'"
#: Images in flight per worker: one being audited, one waiting in its queue.
PER_WORKER = 2
#: Seconds to wait for the first worker to load the model.
START_TIMEOUT = 600.0
#: Seconds the workers get to remove their temporary files at the end.
CLOSE_TIMEOUT = 10.0


def import_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise OrtCamError(RAY_MISSING) from None
    return ray


def wants_cuda(providers: str | None, cluster_gpus: float) -> bool:
    """Whether workers need a GPU: CUDA named in ``providers``, or ``auto`` (the default)
    on a cluster that has GPUs."""
    names = [p.strip().lower() for p in (providers or "auto").split(",") if p.strip()]
    if names in ([], ["auto"]):
        return cluster_gpus > 0
    return any(p in ("cuda", "cudaexecutionprovider", "tensorrt",
                     "tensorrtexecutionprovider") for p in names)


# --- the worker (runs in a Ray actor process) ---------------------------------------------------
#: A worker's temporary folder: TMP_PREFIX + its pid + "_" + random letters.
TMP_PREFIX = "ort_cam_audit_"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def remove_stale_folders() -> None:
    """Remove the temporary folders of workers on this machine that were killed before they
    could (a killed process runs no clean-up): each folder's name holds its worker's pid."""
    for folder in Path(tempfile.gettempdir()).glob(TMP_PREFIX + "*_*"):
        pid = folder.name[len(TMP_PREFIX):].split("_", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


class AuditWorker:
    """One Explainer, built once; ``audit`` returns one image's record and thumbnail bytes.

    An error while building the explainer is kept and raised by ``worker_record``, so the driver
    reports it as the single-process audit would."""

    def __init__(self, model: str, sha256: str, blob: list, layer: str | None,
                 preprocess: dict | str | None, runtime: dict, ship: bool = False) -> None:
        remove_stale_folders()
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}_"))
        self.error: Exception | None = None
        self.label_map: dict[str, list[int]] = {}
        self.spec = AuditSpec()
        try:
            from ..explainer import Explainer

            self.ex = Explainer(self._model_file(model, sha256, blob, ship), layer,
                                preprocess=preprocess, quiet=True, **runtime)
            self.ex.own_sizes = False  # as audit_dataset: the metrics' one size
        except Exception as exc:  # raised again by worker_record, in the driver
            self.error = exc

    def _model_file(self, model: str, sha256: str, blob: list, ship: bool) -> str:
        """The driver's model path when this node sees the same file (and not ``ship``),
        else its bytes (sent once, through Ray's object store) written to a temporary file."""
        from ..graph.digest import model_digest

        if not ship and Path(model).is_file() and model_digest(model) == sha256:
            return model
        import ray

        local = self.tmp / Path(model).name
        local.write_bytes(ray.get(blob[0]))
        return str(local)

    def worker_record(self, probe: tuple[str, int] | None) -> dict:
        """The explainer as the settings record it, and who this worker is; ``sees``: whether
        it reads the driver's file ``probe`` (path, size) itself."""
        if self.error is not None:
            raise self.error
        import ray

        from .image import explainer_settings
        from .run import explainer_reading

        sees = probe is None or (Path(probe[0]).is_file()
                                 and Path(probe[0]).stat().st_size == probe[1])
        return {**explainer_reading(self.ex), **explainer_settings(self.ex),
                "providers": self.ex.providers, "node": ray.util.get_node_ip_address(),
                "pid": os.getpid(), "sees": sees}

    def setup(self, label_map: dict[str, list[int]], spec: AuditSpec) -> None:
        self.label_map, self.spec = label_map, spec

    def cleanup(self) -> None:
        """Remove this worker's temporary files (the driver then ends the actor)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def audit(self, sample: Sample, data: bytes | None) -> tuple[dict, bytes | None]:
        """The record of ``sample`` (its image's bytes in ``data`` when this node cannot read
        its path) and the bytes of its thumbnail, if it made one."""
        from .image import audit_image

        local = sample
        if data is not None:
            folder = Path(tempfile.mkdtemp(dir=self.tmp))
            local = replace(sample, path=folder / Path(sample.path).name)
            local.path.write_bytes(data)
        try:
            rec = audit_image(self.ex, local, self.label_map, self.spec, self.tmp / THUMBS)
        finally:
            if local is not sample:
                shutil.rmtree(local.path.parent, ignore_errors=True)
        if local is not sample and isinstance(rec.get("reason"), str):
            rec["reason"] = rec["reason"].replace(str(local.path), str(sample.path))
        thumb = None
        if rec.get("thumb"):
            path = self.tmp / THUMBS / rec["thumb"]
            thumb = path.read_bytes()
            path.unlink()
        return rec, thumb


# --- the driver ---------------------------------------------------------------------------------
@dataclass
class Worker:
    """The driver's view of one actor."""

    handle: Any
    info: dict | None = None
    in_flight: int = 0
    done: int = 0
    lost: bool = False

    @property
    def name(self) -> str:
        if self.info is None:
            return "a worker that never started"
        return f"{self.info['node']} pid {self.info['pid']}" + (" (lost)" if self.lost else "")


@dataclass
class Pool:
    """The workers of one audit and the calls in flight (ref -> what it was)."""

    ray: Any
    make: Any  # () -> actor handle
    size: int
    ship_probe: tuple[str, int] | None
    workers: list[Worker] = field(default_factory=list)
    calls: dict = field(default_factory=dict)  # ref -> (worker, "worker_record" | Sample)
    losses: int = 0  # workers lost since the last record (replaced while below size)
    setup: tuple | None = None  # (label_map, spec) once known
    ship: dict[int, bool] = field(default_factory=dict)  # id(worker) -> send image bytes
    force_ship: bool = False  # send the bytes of the model and images to every worker
    last_loss: str = ""  # why the last worker was lost, as Ray says it

    def start(self) -> None:
        w = Worker(self.make())
        self.workers.append(w)
        self.calls[w.handle.worker_record.remote(self.ship_probe)] = (w, "worker_record")

    def first_info(self) -> dict:
        """Start the workers and wait for the first one's description (the settings need it)."""
        for _ in range(self.size):
            self.start()
        while True:
            if not self.calls:
                raise OrtCamError(f"every Ray worker died while loading the model (the last: "
                                  f"{self.last_loss}); see the Ray logs of the cluster")
            ready, _ = self.ray.wait(list(self.calls), num_returns=1, timeout=START_TIMEOUT)
            if not ready:
                raise OrtCamError(f"no Ray worker started within {START_TIMEOUT:.0f} s; does "
                                  "the cluster have the CPUs/GPUs asked for free?")
            w, _what = self.calls.pop(ready[0])
            if self._described(w, ready[0]):
                return w.info

    def _get(self, ref: Any) -> tuple[Any, bool]:
        """(the call's value, False), or (None, True) when its worker was lost: its process
        killed or crashed, killed by Ray for want of memory, its node gone. The worker's own
        error is raised as it was (an OrtCamError stays a one-line error); any other Ray
        error ends the audit with a one-line error."""
        ex = self.ray.exceptions
        try:
            return self.ray.get(ref), False
        except ex.RayTaskError as exc:
            raise _cause(exc) from None
        except (ex.RayActorError, ex.OutOfMemoryError, ex.WorkerCrashedError, ex.NodeDiedError,
                ex.ObjectLostError) as exc:
            self.last_loss = _first_line(exc)
            return None, True
        except ex.RayError as exc:
            raise OrtCamError(f"Ray failed ({_first_line(exc)}); rerun the same command to "
                              "resume (finished images are kept)") from None

    def _described(self, w: Worker, ref: Any) -> bool:
        w.info, lost = self._get(ref)
        if lost:
            self._lose(w, deque())
            return False
        self.ship[id(w)] = self.force_ship or not w.info["sees"]
        if self.setup is not None:
            w.handle.setup.remote(*self.setup)
        return True

    def ready(self, label_map: dict[str, list[int]], spec: AuditSpec) -> None:
        self.setup = (label_map, spec)
        for w in self.workers:
            if w.info is not None and not w.lost:
                w.handle.setup.remote(label_map, spec)

    def _lose(self, w: Worker, queue: deque) -> None:
        """``w`` died: put its in-flight images back first in ``queue``, start a replacement."""
        if w.lost:
            return
        w.lost = True
        for ref, (owner, what) in list(self.calls.items()):
            if owner is w:
                del self.calls[ref]
                if isinstance(what, Sample):
                    queue.appendleft(what)
        self.ray.kill(w.handle)
        if self.losses < self.size:
            self.losses += 1
            self.start()

    def results(self, work: list[Sample], out: Path) -> Iterator[dict]:
        """Records of ``work`` as they finish (thumbnails written first), in any order."""
        queue = deque(work)
        while queue or any(isinstance(w, Sample) for _, w in self.calls.values()):
            self._fill(queue)
            if not self.calls:
                raise OrtCamError(f"every Ray worker was lost (the last: {self.last_loss}); "
                                  "rerun the same command to resume (finished images are kept)")
            ready, _ = self.ray.wait(list(self.calls), num_returns=1)
            w, what = self.calls.pop(ready[0])
            if what == "worker_record":
                self._described(w, ready[0])
                continue
            w.in_flight -= 1
            record = self._record(w, ready[0], what, queue, out)
            if record is not None:
                yield record

    def _fill(self, queue: deque) -> None:
        for w in self.workers:
            while w.info is not None and not w.lost and queue and w.in_flight < PER_WORKER:
                sample = queue.popleft()
                data = _image_bytes(sample) if self.ship[id(w)] else None
                sent = replace(sample, path=Path(sample.path).absolute())  # workers' cwd differs
                if self.ship[id(w)]:
                    sent = _inline_masks(sent)
                self.calls[w.handle.audit.remote(sent, data)] = (w, sample)
                w.in_flight += 1

    def _record(self, w: Worker, ref: Any, sample: Sample, queue: deque,
                out: Path) -> dict | None:
        got, lost = self._get(ref)
        if lost:
            queue.appendleft(sample)
            self._lose(w, queue)
            return None
        record, thumb = got
        self.losses = 0  # progress: the next lost worker may be replaced again
        if isinstance(record.get("reason"), str):  # the path as the single-process run says it
            record["reason"] = record["reason"].replace(str(Path(sample.path).absolute()),
                                                        str(sample.path))
        if thumb is not None:
            _write_thumb(out / THUMBS, record["thumb"], thumb)
        w.done += 1
        return record

    def close(self) -> None:
        """End every worker, after it removed its temporary files (a few seconds at most)."""
        alive = [w for w in self.workers if not w.lost]
        self.ray.wait([w.handle.cleanup.remote() for w in alive], num_returns=len(alive),
                      timeout=CLOSE_TIMEOUT)
        for w in alive:
            self.ray.kill(w.handle)

    def counts(self) -> list[tuple[str, int]]:
        return [(w.name, w.done) for w in self.workers if w.info is not None or w.done]


def _cause(exc: Any) -> Exception:
    """The exception a worker raised (an OrtCamError stays one: a one-line error)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, Exception) else exc


def _first_line(exc: Exception) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()),
                type(exc).__name__)


def _inline_masks(sample: Sample) -> Sample:
    """``sample`` with its PNG masks read here, as arrays (for a worker that cannot read the
    files)."""
    from .masks import ArrayMask, PngMask

    return replace(sample, objects=[
        replace(o, mask=ArrayMask.of(o.mask.decode())) if isinstance(o.mask, PngMask) else o
        for o in sample.objects])


def _image_bytes(sample: Sample) -> bytes | None:
    try:
        return Path(sample.path).read_bytes()
    except OSError:
        return None  # the worker finds no file either and records why


def _write_thumb(folder: Path, name: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(folder / name)


@dataclass
class RayAudit:
    """What ``audit_model_ray`` returns: the summary and the images each worker audited."""

    summary: dict
    workers: list[tuple[str, int]]
    address: str


def connect(address: str | None) -> tuple[Any, bool]:
    """Ray, connected to ``address`` (None: Ray's own choice: $RAY_ADDRESS, a cluster started
    on this machine with ``ray start``, else a new local one); whether this call connected.
    A process already connected (``ray.init`` done by the caller) keeps its connection."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    return ray, True


def worker_options(ray: Any, runtime: dict) -> dict:
    """Resources per actor: one GPU when CUDA is asked for, ``threads`` CPUs (default 1; the
    worker's onnxruntime then runs that many threads)."""
    gpus = ray.cluster_resources().get("GPU", 0)
    cuda = wants_cuda(runtime.get("providers"), gpus)
    if cuda and gpus < 1:
        raise OrtCamError("CUDA was asked for but the Ray cluster has no GPU; "
                          "use --providers cpu")
    return {"num_cpus": runtime.get("threads") or 1, "num_gpus": 1 if cuda else 0,
            "max_restarts": 0, "max_task_retries": 0}


def default_workers(ray: Any, options: dict) -> int:
    """As many workers as the cluster's GPUs (CUDA) or CPUs hold."""
    res = ray.cluster_resources()
    if options["num_gpus"]:
        return max(1, int(res.get("GPU", 0) // options["num_gpus"]))
    return max(1, int(res.get("CPU", 1) // options["num_cpus"]))


def start_pool(ray: Any, model: Path, sha256: str, layer: str | None,
               preprocess: dict | str | None, runtime: dict, workers: int | None,
               ship: bool, probe: tuple[str, int] | None) -> Pool:
    """The workers' pool (not started yet): the model's bytes in the object store, the
    actor's resources, one onnxruntime thread per CPU reserved."""
    options = worker_options(ray, runtime)
    runtime = {**runtime, "threads": runtime.get("threads") or options["num_cpus"]}
    blob = [ray.put(model.read_bytes())]
    actor = ray.remote(**options)(AuditWorker)
    return Pool(ray, lambda: actor.remote(str(model.absolute()), sha256, blob, layer,
                                          preprocess, runtime, ship),
                workers or default_workers(ray, options), probe, force_ship=ship)


def _probe(samples: list[Sample]) -> tuple[str, int] | None:
    """A file of the dataset (path, size) that workers check they can read."""
    for s in samples:
        if Path(s.path).is_file():
            return str(Path(s.path).resolve()), Path(s.path).stat().st_size
    return None


def audit_model_ray(model: str | os.PathLike[str], dataset: str | os.PathLike[str],
                    out: str | os.PathLike[str], *, address: str | None = None,
                    workers: int | None = None, spec: AuditSpec | None = None,
                    layer: str | None = None, fmt: str = "auto", images: Path | None = None,
                    label_map: Path | None = None, shard: str | None = None,
                    preprocess: dict | str | None = None, runtime: dict | None = None,
                    force: bool = False, html_page: bool = True, progress: bool = True,
                    ship: bool = False) -> RayAudit:
    """``run.audit_model`` on a Ray cluster at ``address`` with ``workers`` actors (default:
    as many as its CPUs, or GPUs when CUDA is asked for, hold): the same settings, the same
    results.jsonl (appended by this process only), the same summary and report. ``ship``
    sends the model's and images' bytes to every worker even where it sees the files."""
    from ..labels import read_labels

    import_ray()  # the one-line error first, when Ray is not installed
    spec = spec or AuditSpec()
    part = parse_shard(shard)
    runtime = dict(runtime or {})
    data = open_dataset(Path(dataset), fmt, images, masks=runtime.get("target_kind") == "segment")
    if runtime.get("labels") is not None:  # a file the workers may not see: send the names
        runtime["labels"] = read_labels(runtime["labels"])
    from ..graph.digest import model_digest

    sha = model_digest(model, strict=True)
    ray, connected = connect(address)
    pool = None
    try:
        pool = start_pool(ray, Path(model), sha, layer, preprocess, runtime, workers, ship,
                          _probe(shard_samples(data.samples, part)))
        info = pool.first_info()
        kind = info["target_kind"]
        data = dataset_for(kind, data, Path(dataset), fmt, images)
        mapping = label_map_of(info, spec, label_map)  # refuses as audit_model does
        check_kind(kind, spec, False)
        if kind in REGION_KINDS:
            check_dataset(data, kind, mapping, info["labels"])
        where = ray.get_runtime_context().gcs_address
        settings = make_settings(measured_settings(info, mapping, spec, sha), data, part,
                                 {"providers": info["providers"], "model": str(model),
                                  "ray": where})
        done = start_or_resume(Path(out), settings, force)
        spec, samples = plan(data, part, spec, mapping)
        pool.ready(mapping, spec)
        write_records(samples, done, Path(out),
                      lambda work: pool.results(work, Path(out)), progress)
        counts = pool.counts()
    finally:
        if pool is not None:
            pool.close()
        if connected:
            ray.shutdown()
    return RayAudit(make_report(Path(out), html_page), counts, where)
