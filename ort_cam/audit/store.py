"""The on-disk form of an audit directory: file names, settings, the results.jsonl records.

The run writes it and the report reads it; neither imports the other.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import IO, Any

from ..errors import OrtCamError

RESULTS = "results.jsonl"
SETTINGS = "audit.json"
THUMBS = "thumbs"
MADE = ("summary.json", "summary.csv", "report.html")
#: The sanity checks' folder (``audit.sanity``): its lines, and the gallery image's maps at
#: each step (``<step>.npz``; step ``SANITY_ORIGINAL`` holds the audited model's and the
#: pixels).
SANITY = "sanity"
SANITY_RESULTS = "results.jsonl"
SANITY_GALLERY = "gallery"
SANITY_ORIGINAL = -1
#: Keys of audit.json that say where and how a run was made, not what it measures.
ABOUT = "about"


def read_settings(out: Path) -> dict:
    path = out / SETTINGS
    if not path.is_file():
        raise OrtCamError(f"{out} holds no {SETTINGS}; is it an audit directory?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise OrtCamError(f"cannot read {path}: {exc}") from None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)



def read_results(path: Path, repair: bool = False) -> list[dict]:
    """The records of a results.jsonl. A last line without its newline is torn (the writer
    died mid-line): it is ignored, and cut off the file when ``repair``. Any other bad line
    is an error."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1  # bytes up to the last newline
    records = []
    for n, line in enumerate(data[:complete].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise OrtCamError(f"{path}, line {n} is not JSON; the file was edited or "
                              "damaged (remove that line to resume)") from None
    if repair and complete < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(complete)
    return records


def clean(value: Any) -> Any:
    """JSON-safe: NaN and inf become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def append_record(fh: IO[str], record: dict) -> None:
    """One line, flushed and fsynced before the next image starts."""
    fh.write(json.dumps(clean(record), allow_nan=False) + "\n")
    fh.flush()
    os.fsync(fh.fileno())
