"""An on-disk cache of prepared models: one file per key, written by atomic rename, checked by
checksum when read, bounded in size with least-recently-used eviction.

The cache stores bytes (the payload, e.g. a serialised gradient model) and a JSON header (what
the caller needs besides the payload). It knows nothing about models: ``ort_cam.prepared``
decides what goes in and what the key is made of.

Where: ``$ORT_CAM_CACHE`` if set, else ``<user cache dir>/ort_cam/prepared`` (platformdirs:
``~/.cache`` on Linux, ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows). Bound:
``$ORT_CAM_CACHE_MAX_MB`` megabytes, else 2 GiB.

Safe under concurrent runs: an entry is written to a temporary file in the same directory and
renamed over the final name (``os.replace`` is atomic), so a reader sees the old entry, the new
one or none, never half of one. A reader re-checks the payload's length and SHA-256, so a
truncated or corrupt entry is removed and reported as a miss (the caller rebuilds it).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_DIR = "ORT_CAM_CACHE"
ENV_MAX_MB = "ORT_CAM_CACHE_MAX_MB"
DEFAULT_MAX_BYTES = 2 << 30
SUFFIX = ".ortcam"
_MAGIC = b"ORT_CAM-PREPARED-1\n"
_LEN = struct.Struct(">Q")
#: A header longer than this is not one of ours.
_MAX_HEADER = 1 << 24
#: A temporary file older than this is a crashed writer's: removed when evicting.
_STALE_TMP_SECONDS = 3600.0


def cache_dir() -> Path:
    """The cache directory: ``$ORT_CAM_CACHE``, else the user cache dir's ``ort_cam/prepared``."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("ort_cam")) / "prepared"


def max_bytes() -> int:
    """The size bound: ``$ORT_CAM_CACHE_MAX_MB`` megabytes, else ``DEFAULT_MAX_BYTES``."""
    env = os.environ.get(ENV_MAX_MB)
    if not env:
        return DEFAULT_MAX_BYTES
    try:
        return int(float(env) * 2**20)
    except ValueError:
        from .errors import OrtCamError

        raise OrtCamError(f"{ENV_MAX_MB}={env!r} is not a number of megabytes") from None


def key_of(fields: Mapping[str, Any]) -> str:
    """The entry name for ``fields`` (JSON values): SHA-256 of their canonical JSON."""
    text = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Entry:
    """What an entry holds: the caller's JSON ``data`` and its ``payload`` bytes."""

    data: dict[str, Any]
    payload: bytes


def _encode(fields: Mapping[str, Any], data: Mapping[str, Any], payload: bytes) -> bytes:
    return _head(fields, data, payload) + payload


def _head(fields: Mapping[str, Any], data: Mapping[str, Any], payload: bytes) -> bytes:
    """What an entry holds before its payload: the magic line, the header's length, the header."""
    header = json.dumps({"fields": dict(fields), "data": dict(data), "size": len(payload),
                         "sha256": hashlib.sha256(payload).hexdigest()}).encode("utf-8")
    return _MAGIC + _LEN.pack(len(header)) + header


def _decode(blob: bytes, fields: Mapping[str, Any]) -> Entry | None:
    """The entry in ``blob``, or None when it is not a complete, intact entry for ``fields``."""
    start = len(_MAGIC) + _LEN.size
    n = _header_size(blob[:start])
    return None if n is None else _checked(blob[start:start + n], blob[start + n:], fields)


def _header_size(head: bytes) -> int | None:
    if len(head) != len(_MAGIC) + _LEN.size or not head.startswith(_MAGIC):
        return None
    n = int(_LEN.unpack(head[len(_MAGIC):])[0])
    return n if n <= _MAX_HEADER else None


def _checked(header_bytes: bytes, payload: bytes, fields: Mapping[str, Any]) -> Entry | None:
    try:
        header = json.loads(header_bytes.decode("utf-8"))
        size, digest, data = int(header["size"]), str(header["sha256"]), header["data"]
        same_key = header["fields"] == json.loads(json.dumps(dict(fields)))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None
    if not same_key or len(payload) != size or not isinstance(data, dict):
        return None
    if hashlib.sha256(payload).hexdigest() != digest:
        return None
    return Entry(data, payload)


def _read(path: Path, fields: Mapping[str, Any]) -> Entry | None:
    """Read and check an entry; the payload is read into its own buffer (no copy of a slice
    of the whole file)."""
    with open(path, "rb") as fh:
        n = _header_size(fh.read(len(_MAGIC) + _LEN.size))
        if n is None:
            return None
        header = fh.read(n)
        return _checked(header, fh.read(), fields) if len(header) == n else None


def read(directory: Path, fields: Mapping[str, Any]) -> Entry | None:
    """The entry for ``fields``, or None (missing, unreadable, truncated or corrupt: a bad
    entry is removed so that the rebuilt one replaces it). A hit marks the entry as used.
    The writes this process started (``write_soon``) are waited for first."""
    wait()
    path = directory / (key_of(fields) + SUFFIX)
    try:
        entry = _read(path, fields)
    except FileNotFoundError:
        return None
    except OSError:
        entry = None
    if entry is None:
        _unlink(path)
        return None
    try:
        os.utime(path)  # least recently used = oldest mtime
    except OSError:
        pass
    return entry


def write(directory: Path, fields: Mapping[str, Any], data: Mapping[str, Any], payload: bytes,
          limit: int | None = None) -> Path | None:
    """Store an entry (atomically), then evict the least recently used ones past ``limit``
    bytes (default ``max_bytes()``). Returns its path, or None when the directory cannot be
    written (the cache is an optimisation: a failed write is not an error)."""
    limit = max_bytes() if limit is None else limit
    head = _head(fields, data, payload)
    if len(head) + len(payload) > limit:
        return None
    path = directory / (key_of(fields) + SUFFIX)
    tmp = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=SUFFIX, dir=directory)
        with os.fdopen(fd, "wb") as fh:
            fh.write(head)  # the payload is written as it is (no copy joined to the header)
            fh.write(payload)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            _unlink(Path(tmp))
        return None
    evict(directory, limit, keep=path)
    return path


#: The writes ``write_soon`` started and that may not have finished.
_pending: list[threading.Thread] = []
_pending_lock = threading.Lock()


def write_soon(directory: Path, fields: Mapping[str, Any], data: Mapping[str, Any],
               payload: Callable[[], bytes | None]) -> None:
    """``write`` in a background thread, so that the caller goes on (the explanation runs
    meanwhile, mostly in onnxruntime, which releases the GIL): ``payload()`` gives the bytes
    there (None: nothing is written). The thread is not a daemon, so the process waits for it
    before it exits; ``read`` and ``wait`` wait for it in this process."""

    def run() -> None:
        try:
            blob = payload()
            if blob is not None:
                write(directory, fields, data, blob)
        except Exception:  # noqa: BLE001, S110 (the cache is an optimisation)
            pass

    thread = threading.Thread(target=run, name="ort-cam-cache-write")
    with _pending_lock:
        _pending.append(thread)
    thread.start()


def wait() -> None:
    """Wait for the writes ``write_soon`` started in this process."""
    with _pending_lock:
        threads, _pending[:] = list(_pending), []
    for thread in threads:
        thread.join()


def evict(directory: Path, limit: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used entries (oldest mtime first) until the entries take at
    most ``limit`` bytes; ``keep`` is never removed. Stale temporary files go too."""
    entries = []
    now = time.time()
    for p in directory.glob("*" + SUFFIX):
        try:
            st = p.stat()
        except OSError:
            continue
        if p.name.startswith(".tmp-"):
            if now - st.st_mtime > _STALE_TMP_SECONDS:
                _unlink(p)
            continue
        entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, p in sorted(entries, key=lambda e: (e[0], e[2].name)):
        if total <= limit:
            break
        if keep is not None and p == keep:
            continue
        _unlink(p)
        total -= size
        removed.append(p)
    return removed


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


# --- the digests of model files, remembered by the files' status -------------------------
#: Where the digests of model files are remembered (in the cache directory).
DIGESTS = "digests.json"
#: Files remembered at most (the least recently remembered go first).
_MAX_DIGESTS = 256


def file_status(path: Path) -> list[int]:
    """What changes whenever a file's bytes change: its size, its modification and status-change
    times in nanoseconds (the latter cannot be set back by a user), its inode and device."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def known_digest(directory: Path, path: Path) -> str | None:
    """The digest remembered for the model file ``path`` (``remember_digest``) when neither it
    nor any of the data files it names changed since (same ``file_status``), else None."""
    try:
        with open(directory / DIGESTS, encoding="utf-8") as fh:
            seen = json.load(fh).get(str(path.resolve()))
        if not isinstance(seen, dict) or seen.get("status") != file_status(path):
            return None
        for name, status in seen["files"].items():
            if file_status(path.parent / name) != status:
                return None
        return str(seen["sha256"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remember_digest(directory: Path, path: Path, digest: str, files: list[str]) -> None:
    """Remember ``digest`` of the model file ``path`` and of the data ``files`` it names
    (relative to its folder), with their status now. Best effort, atomic: a failed write, or
    one lost to a concurrent writer, only means the next run hashes the file again."""
    try:
        try:
            with open(directory / DIGESTS, encoding="utf-8") as fh:
                seen = json.load(fh)
            seen = seen if isinstance(seen, dict) else {}
        except (OSError, ValueError):
            seen = {}
        key = str(path.resolve())
        seen.pop(key, None)
        seen[key] = {"status": file_status(path), "sha256": digest,
                     "files": {name: file_status(path.parent / name) for name in files}}
        while len(seen) > _MAX_DIGESTS:
            seen.pop(next(iter(seen)))
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(seen, fh)
        os.replace(tmp, directory / DIGESTS)
    except OSError:
        pass
