"""Where ort_cam writes into the user's folders, one rule: nothing already there is overwritten
unless the user says so (``force``), and that is checked before any work starts.

Every command that writes (explain, demo, split, metadata, export, audit, audit-merge) asks
``refuse_overwrite`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .errors import OrtCamError

#: How many taken file names an error lists before it ends with " …".
SHOWN = 4
#: What an error tells the user to do, unless the caller knows better.
FORCE_HINT = "pass --force to overwrite"


def refuse_overwrite(target: Path, force: bool = False, *, names: Iterable[str] | None = None,
                     marker: str | None = None, writer: str | None = None,
                     fix: str = FORCE_HINT) -> None:
    """Raise ``OrtCamError`` (one line: what is in the way, then ``fix``) when writing
    ``target`` would overwrite something of the user's; never with ``force``.

    - ``names`` given: ``target`` is a folder that gets these files; it is taken when any of
      them exists (the first ``SHOWN`` are named).
    - otherwise, ``target`` a folder: taken when it holds anything, unless it holds ``marker``,
      the file by which an earlier run (of ``writer``, named in the error) claimed it.
    - otherwise: ``target`` is a file, taken when it exists.
    """
    target = Path(target)
    if force:
        return
    if names is not None:
        taken = [n for n in names if (target / n).exists()]
        if taken:
            shown = ", ".join(taken[:SHOWN]) + (" …" if len(taken) > SHOWN else "")
            raise OrtCamError(f"{target} already holds {shown}; {fix}")
    elif target.is_dir():
        if any(target.iterdir()) and not (marker and (target / marker).exists()):
            why = (f" and holds no {marker}" if marker else "") + (
                f" (not written by {writer})" if writer else "")
            raise OrtCamError(f"{target} is not empty{why}; {fix}")
    elif target.exists():
        raise OrtCamError(f"{target} exists; {fix}")
