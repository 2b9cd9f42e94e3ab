"""Writing models: a model past protobuf's 2 GB limit goes out with its tensors in a data file."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx.external_data_helper import _get_all_tensors, uses_external_data

from ..errors import ModelLoadError

#: Past this many bytes a model is saved with external data (protobuf cannot serialize 2 GB).
EXTERNAL_DATA_LIMIT = 2_000_000_000


def data_file(path: str | os.PathLike) -> Path:
    """Where ``save_model`` puts the tensors of a large model written to ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".data")


def save_model(model: onnx.ModelProto, path: str | os.PathLike,
               limit: int = EXTERNAL_DATA_LIMIT) -> list[Path]:
    """Write ``model`` to ``path``; returns the files written.

    A model of ``limit`` bytes or more is written with its tensors in ``data_file(path)``
    beside it (``onnx.save(..., save_as_external_data=True)``), which moves the tensor bytes
    out of ``model``: pass a copy if you still need them. A stale data file at that place is
    removed first, since onnx appends to an existing one.
    """
    path = Path(path)
    data = data_file(path)
    _hold_in_memory(model)
    if data.exists():
        data.unlink()
    if model.ByteSize() < limit:
        onnx.save(model, str(path))
        return [path]
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=data.name, size_threshold=0)
    return [path, data]


def _hold_in_memory(model: onnx.ModelProto) -> None:
    """Drop every tensor's external-data reference, its bytes being in memory: onnx writes a
    tensor that keeps one to the location it names (an attribute tensor is not renamed by
    ``save_as_external_data``), and a location such as ``../x`` would write outside the
    folder. Then the only data file written is ``data_file(path)``."""
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            if not tensor.HasField("raw_data"):
                raise ModelLoadError(
                    f"tensor {tensor.name!r} of the model to save has its data in an external "
                    "file, not in memory; read the model with its data (onnx.load(path)) first"
                )
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.external_data[:]
