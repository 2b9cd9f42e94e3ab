"""The one digest of a model: SHA-256 of its bytes and of the external data files it names.

It keys the prepared-model cache, and it is what an audit (``model_sha256``) and an exported
explainer (``ort_cam.export.source_sha256``) record of the model they were made from.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias, overload

from .. import cache
from ..errors import ModelLoadError

if TYPE_CHECKING:
    import onnx

#: A model as the explainer takes it: a path, or the model itself (onnx is imported only
#: where a ModelProto is digested: a remembered model file's digest needs no onnx).
ModelSource: TypeAlias = "str | os.PathLike | onnx.ModelProto"


@overload
def model_digest(source: ModelSource, *, strict: Literal[True]) -> str: ...


@overload
def model_digest(source: ModelSource, *, strict: bool = False) -> str | None: ...


def model_digest(source: ModelSource, *, strict: bool = False) -> str | None:
    """SHA-256 (hex) of the model's bytes and of its external data files; None when it cannot
    be told (an in-memory model that points at external data, or a data file that cannot be
    read), or with ``strict`` a one-line ModelLoadError saying which."""
    return digest_and_files(source, strict=strict)[0]


def digest_and_files(source: ModelSource, *, strict: bool = False
                     ) -> tuple[str | None, list[str]]:
    """``model_digest`` and the external data files it read (relative to the model's folder)."""
    path: Path | None = None
    if not isinstance(source, (str, os.PathLike)):  # a ModelProto
        blob, base = source.SerializeToString(), None
    else:
        path = Path(source)
        if not path.is_file():
            raise ModelLoadError(f"model file not found: {path}")
        blob, base = path.read_bytes(), path.parent
    digest = hashlib.sha256(blob)
    # every external tensor names its file under the key "location": no such bytes, no files
    files = _external_files(blob, path) if b"location" in blob else []
    if files and base is None:
        return _unknown(strict, "an in-memory model that keeps tensors in external data files "
                        "has no digest; pass the model's path"), files
    for name in files:
        assert base is not None
        digest.update(b"\0" + name.encode("utf-8") + b"\0")
        try:
            digest.update(file_sha256(base / name).digest())
        except OSError as exc:
            return _unknown(strict, f"cannot read the model's external data {base / name}: "
                            f"{exc.strerror or exc}"), files
    return digest.hexdigest(), files


def remembered_digest(source: ModelSource, directory: Path) -> str | None:
    """``model_digest``, remembered in ``directory`` for a model file (``cache.known_digest``):
    a model file whose status, and its data files', did not change is not read again."""
    if not isinstance(source, (str, os.PathLike)):  # a ModelProto
        return model_digest(source)
    path = Path(source)
    known = cache.known_digest(directory, path) if path.is_file() else None
    if known is not None:
        return known
    digest, files = digest_and_files(source)
    if digest is not None:
        cache.remember_digest(directory, path, digest, files)
    return digest


def file_sha256(path: Path) -> hashlib._Hash:
    """SHA-256 of a file, read in blocks of 1 MiB."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h


def _unknown(strict: bool, why: str) -> str | None:
    """No digest: None, or with ``strict`` the error ``why``."""
    if strict:
        raise ModelLoadError(why)
    return None


def _external_files(blob: bytes, path: Path | None) -> list[str]:
    """The external data files the model names; with its path, a file outside the model's
    folder or behind a symbolic link is refused (ModelLoadError) before any is read."""
    try:
        import onnx

        model = onnx.load_model_from_string(blob)
    except Exception:
        return []  # not a model: the loader says so
    from .load import external_data_files

    return sorted({location for _, location in external_data_files(model, path)})
