"""onnxruntime sessions: the one place they are created; which execution provider, how many
threads, which graph optimisations, and runs that avoid copies.

Every session ort_cam makes takes its intra-op threads and graph-optimisation level from the
call that makes it, else from the process default (``SessionDefaults``, set with
``set_session_defaults``). ort_cam never changes onnxruntime's process-wide settings: each
session carries its own log level (errors only), so importing ort_cam leaves onnxruntime's
default logger as the application set it."""

from __future__ import annotations

import ctypes
import os
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from .errors import OrtCamError

if TYPE_CHECKING:
    import onnx

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
#: Protobuf's limit: larger models go through a file with external data.
_MAX_PROTO = 2_000_000_000
#: onnxruntime's graph-optimisation levels by name (``SessionDefaults.opt_level``).
OPT_LEVELS = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
#: The log level of ort_cam's sessions (onnxruntime's severities: 3 = errors, 4 = fatal only):
#: ordinary sessions report errors only; provider probes, which are expected to fail where a
#: provider cannot run, report nothing.
LOG_ERRORS, LOG_SILENT = 3, 4


@dataclass(frozen=True)
class SessionDefaults:
    """The process default of every session ort_cam creates, where the call gives none.

    ``threads``: onnxruntime intra-op threads (``None``: onnxruntime's choice, one per core);
    an explicit count also sets one inter-op thread. ``opt_level``: onnxruntime's graph
    optimisations, one of ``OPT_LEVELS`` (``"all"``; the one-off shape probes of
    ``probe_session`` always run unoptimised)."""

    threads: int | None = None
    opt_level: str = "all"

    def __post_init__(self) -> None:
        if self.threads is not None and (isinstance(self.threads, bool)
                                         or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise OrtCamError(f"threads={self.threads!r}; use a whole number >= 1, or None "
                              "for onnxruntime's choice")
        if self.opt_level not in OPT_LEVELS:
            raise OrtCamError(f"opt_level={self.opt_level!r}; use one of "
                              f"{', '.join(OPT_LEVELS)}")


_defaults = SessionDefaults()


def session_defaults() -> SessionDefaults:
    """The process default of ort_cam's sessions (``set_session_defaults`` changes it)."""
    return _defaults


def set_session_defaults(threads: int | None = None, opt_level: str = "all") -> SessionDefaults:
    """Set the process default of every session ort_cam creates from now on (sessions made
    already keep theirs); returns the previous default. ``set_session_defaults()`` restores
    onnxruntime's thread choice and all graph optimisations."""
    global _defaults
    previous, _defaults = _defaults, SessionDefaults(threads, opt_level)
    return previous


#: The provider probe's model: y = Relu(x), x and y float [1], opset 13, IR version 7,
#: serialised (``tiny_model`` builds it with onnx's helpers; tests/test_runtime.py checks the
#: two agree), so that probing a provider does not import onnx.
TINY_MODEL = (b'\x08\x07:7\n\x0c\n\x01x\x12\x01y"\x04Relu\x12\x05probeZ\x0f\n\x01x\x12\n\n'
              b'\x08\x08\x01\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08'
              b'\x01B\x04\n\x00\x10\r')


def tiny_model() -> bytes:
    """``TINY_MODEL`` built with onnx's helpers."""
    import onnx
    from onnx import helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    return model.SerializeToString()


#: The shared library of a provider that onnxruntime loads when a session asks for it.
_PROVIDER_LIBRARIES = {CUDA: "onnxruntime_providers_cuda",
                       "TensorrtExecutionProvider": "onnxruntime_providers_tensorrt"}


def _library_loads(name: str) -> bool:
    """Whether provider ``name``'s shared library (beside onnxruntime's own) and the libraries
    it needs (CUDA, cuDNN) load. onnxruntime reports that failure through its process-wide
    logger, which a session's log level does not reach, so it is checked here first."""
    stem = _PROVIDER_LIBRARIES.get(name)
    if stem is None:
        return True
    capi = Path(ort.__file__).parent / "capi"
    path = capi / (f"{stem}.dll" if os.name == "nt" else f"lib{stem}.so")
    if not path.exists():
        return True  # another packaging: onnxruntime's own attempt decides
    try:
        ctypes.CDLL(str(path))
    except OSError:
        return False
    return True


def provider_works(name: str) -> bool:
    """Whether onnxruntime really runs a session on ``name`` (onnxruntime-gpu lists CUDA even
    where its libraries or the GPU are missing, then silently falls back to the CPU). The probe
    prints nothing."""
    if not _library_loads(name):
        return False
    options = ort.SessionOptions()
    options.log_severity_level = LOG_SILENT
    try:
        sess = ort.InferenceSession(TINY_MODEL, options,
                                    providers=[name] if name == CPU else [name, CPU])
        return sess.get_providers()[0] == name
    except Exception:
        return False


def select_providers(requested: Sequence[str] | str | None = None,
                     available: Callable[[], list[str]] = ort.get_available_providers,
                     works: Callable[[str], bool] = provider_works) -> tuple[list[str], str]:
    """Providers to use and one line saying why.

    ``None``/``"auto"``: CUDA when it really works, else the CPU. ``"cpu"``/``"cuda"`` or full
    provider names pick explicitly; an explicit provider that does not work is an error.
    """
    if isinstance(requested, str):
        requested = [p.strip() for p in requested.split(",") if p.strip()]
    requested = list(requested or ["auto"])
    have = available()
    if requested == ["auto"]:
        if CUDA in have and works(CUDA):
            return [CUDA, CPU], "ort_cam: running on CUDAExecutionProvider"
        why = "CUDA provider not installed" if CUDA not in have else "CUDA present but unusable"
        return [CPU], f"ort_cam: running on CPUExecutionProvider ({why})"
    aliases = {"cpu": CPU, "cuda": CUDA, "tensorrt": "TensorrtExecutionProvider"}
    chosen = [aliases.get(p.lower(), p) for p in requested]
    for p in chosen:
        if p not in have:
            raise OrtCamError(f"execution provider {p!r} is not available here; "
                              f"available: {', '.join(have)}")
        if p != CPU and not works(p):
            raise OrtCamError(f"execution provider {p!r} is installed but cannot run "
                              "(missing GPU or libraries); use --providers cpu")
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen, f"ort_cam: running on {chosen[0]}"


#: onnxruntime's intra-op threads spin while they wait for work, by default: between the
#: session runs of a path (the methods' reductions, the next chunk's inputs) a spinning thread
#: takes a core from the Python thread doing that work. Off: resnet50, m = 50, two threads,
#: explain_array took 0.83x the wall time (0.82x the CPU) of the same with spinning, on a busy
#: 2-core machine (tools/bench_engine.py --sections F).
NO_SPINNING = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


def session_options(threads: int | None = None, opt_level: str | None = None,
                    log_level: int = LOG_ERRORS) -> ort.SessionOptions:
    """Session options: ``threads`` intra-op threads and graph optimisations ``opt_level``
    (each, where not given, the process default: ``session_defaults()``); onnxruntime's own
    log at ``log_level`` (errors only). The intra-op threads sleep between parallel sections
    instead of spinning (``NO_SPINNING``)."""
    defaults = _defaults
    chosen = SessionDefaults(threads or defaults.threads, opt_level or defaults.opt_level)
    opts = ort.SessionOptions()
    if chosen.threads:
        opts.intra_op_num_threads = chosen.threads
        opts.inter_op_num_threads = 1
    for key, value in NO_SPINNING.items():
        opts.add_session_config_entry(key, value)
    opts.graph_optimization_level = OPT_LEVELS[chosen.opt_level]
    opts.log_severity_level = log_level
    return opts


def session_for(model: onnx.ModelProto, providers: list | None = None,
                options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    """An onnxruntime session for an in-memory model (spilled to a file past 2 GB); ``options``
    default to ``session_options()``."""
    providers = providers or [CPU]
    options = options if options is not None else session_options()
    if model.ByteSize() < _MAX_PROTO:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    import onnx

    tmp = tempfile.mkdtemp(prefix="ort_cam_")
    path = os.path.join(tmp, "model.onnx")
    onnx.save(model, path, save_as_external_data=True, location="model.onnx.data")
    return ort.InferenceSession(path, options, providers=providers)


def make_session(model: onnx.ModelProto | bytes, providers: list[str],
                 threads: int | None = None,
                 opt_level: str | None = None) -> ort.InferenceSession:
    """A session for a model, or for its serialised bytes (then it is not serialised again);
    ``threads`` and ``opt_level`` as ``session_options``."""
    options = session_options(threads, opt_level)
    if isinstance(model, bytes):
        return ort.InferenceSession(model, options, providers=providers)
    return session_for(model, providers=providers, options=options)


def cpu_signature() -> str:
    """What onnxruntime's CPU kernels and layout choices depend on here: the machine and its
    instruction-set flags (Linux: /proc/cpuinfo's flags or Features line), hashed short."""
    import hashlib
    import platform

    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            flags = next((line.split(":", 1)[1].strip() for line in fh
                          if line.split(":", 1)[0].strip() in ("flags", "Features")), "")
    except OSError:
        flags = platform.processor()
    text = f"{platform.machine()}|{' '.join(sorted(set(flags.split())))}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def make_saved_session(model: bytes, providers: list[str], threads: int | None = None
                       ) -> tuple[ort.InferenceSession, Path | None]:
    """A session for a serialised model with all graph optimisations, and a temporary file
    holding the model as onnxruntime's optimiser left it (``optimized_model_filepath``; None
    where it could not be written; the caller removes it). That model, loaded with
    optimisations off, gives a session that computes the same values without optimising
    again, but only on this onnxruntime, these providers and this CPU (the layout
    optimisations pick kernels for them)."""
    options = session_options(threads, "all")
    fd, name = tempfile.mkstemp(prefix="ort_cam_optimised_", suffix=".onnx")
    os.close(fd)
    path = Path(name)
    options.optimized_model_filepath = name
    try:
        session = ort.InferenceSession(model, options, providers=providers)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if not path.is_file() or path.stat().st_size == 0:
        path.unlink(missing_ok=True)
        return session, None
    return session, path


def probe_session(model: bytes | onnx.ModelProto) -> ort.InferenceSession:
    """A CPU session for a one-off run of a model or its serialised bytes (a shape probe): no
    graph optimisation, since the run is made once and the optimiser's time would not pay
    back; threads as the process default. Nothing of onnxruntime's own log: a failed probe
    is raised (and often expected: a batch the model may not take)."""
    options = session_options(opt_level="disabled", log_level=LOG_SILENT)
    if isinstance(model, bytes):
        return ort.InferenceSession(model, options, providers=[CPU])
    return session_for(model, options=options)


#: ``1`` runs every session through IOBinding (also on the CPU), ``0`` never; unset: on CUDA.
IOBINDING_ENV = "ORT_CAM_IOBINDING"


def wants_binding(providers: Sequence[str], setting: str | None = None) -> bool:
    """Whether a session on ``providers`` runs through IOBinding: when the CUDA provider is
    among them, unless ``setting`` (default: $ORT_CAM_IOBINDING) is ``1`` (always) or ``0``
    (never)."""
    setting = os.environ.get(IOBINDING_ENV, "") if setting is None else setting
    if setting.strip() in ("0", "1"):
        return setting.strip() == "1"
    if setting.strip():
        raise OrtCamError(f"{IOBINDING_ENV}={setting!r}; use 1 (always), 0 (never) or leave it "
                          "unset (on CUDA)")
    return CUDA in providers


class Runner:
    """Runs one session repeatedly; returns its outputs as host arrays, in order.

    Bound (``wants_binding``: on CUDA, or asked for): inputs bound from host memory (one copy
    to the device), outputs bound to host memory. With ``preallocate`` (for a session whose
    every output is batch-first with the batch of its inputs, as the fused gradient model's)
    each output is bound to a new host array, so that onnxruntime writes it once, straight
    into the array handed back (``copy_outputs_to_cpu`` would copy it a second time); its
    shape after the batch axis comes from the model, else from the first run at the same
    input shapes. The outputs come back whole: the methods reduce the layer and its gradient
    on the host, chunk by chunk. Plain: ``session.run``."""

    def __init__(self, session: ort.InferenceSession, bind: bool | None = None,
                 preallocate: bool = False, free_rows: Collection[str] = ()):
        self.session = session
        self.output_names = [o.name for o in session.get_outputs()]
        self.bound = wants_binding(session.get_providers()) if bind is None else bind
        self.preallocate = preallocate
        # read only where used: a plain session never looks at its output shapes
        self._declared = _output_shapes(session) if self.bound and preallocate else []
        self._learned: dict[tuple, list[_Shape]] = {}
        # outputs whose rows vary from run to run (a map computed on demand): never bound ahead
        self._free_rows = {i for i, name in enumerate(self.output_names) if name in free_rows}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if not self.bound:
            return self.session.run(self.output_names, feeds)
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        if not self.preallocate:
            for name in self.output_names:
                binding.bind_output(name, "cpu")
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()
        return self._run_preallocated(binding, feeds)

    def _run_preallocated(self, binding: ort.IOBinding,
                          feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        key = tuple((k, np.shape(v)[1:]) for k, v in sorted(feeds.items()))
        n = len(next(iter(feeds.values())))
        outs = [np.empty((n, *shape), dtype) if shape is not None and i not in self._free_rows
                else None
                for i, (shape, dtype) in enumerate(self._learned.get(key) or self._declared)]
        for name, out in zip(self.output_names, outs):
            if out is None:
                binding.bind_output(name, "cpu")
            else:
                binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(out))
        self.session.run_with_iobinding(binding)
        if all(out is not None for out in outs):
            return outs  # type: ignore[return-value]  # (None was ruled out just above)
        values = binding.get_outputs()
        got = [out if out is not None else values[i].numpy() for i, out in enumerate(outs)]
        self._learned[key] = [(g.shape[1:], g.dtype) for g in got]
        return got


#: An output's shape after the batch axis and its dtype (None: not known before a run).
_Shape = tuple[tuple[int, ...] | None, np.dtype | None]
_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
           "tensor(float16)": np.float16}


def _output_shapes(session: ort.InferenceSession) -> list[_Shape]:
    """Per output: its shape after the batch axis and dtype, when the model tells both
    (else (None, None), and onnxruntime allocates it at the first run)."""
    out: list[_Shape] = []
    for o in session.get_outputs():
        rest = tuple(o.shape[1:]) if o.shape else ()
        dtype = _DTYPES.get(o.type)
        known = bool(o.shape) and dtype is not None and all(
            isinstance(d, int) and d > 0 for d in rest)
        out.append((rest, np.dtype(dtype)) if known else (None, None))
    return out
