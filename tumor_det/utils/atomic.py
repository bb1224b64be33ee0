"""Atomic file writes: the one place every output of tumor-det goes through.

A file is written under a temporary name in its destination folder, flushed to disk and moved
into place with ``os.replace``; a reader, or a run killed half-way, never sees a partial file,
and the previous version stays intact until the new one is complete.

The temporary name is ``.<name>.<random>.tmp<suffix>``: hidden, and marked by ``.tmp``. It ends
with the destination's suffix (``cv2.imwrite``, ``nibabel`` and PIL choose the format by it),
except for checkpoint suffixes (:data:`CHECKPOINT_SUFFIXES`): Detectron2 counts every ``*.pth``
file of a folder as a checkpoint, so a temporary file left by a killed save ends in ``.tmp``.
Only a process killed outright (SIGKILL, power loss) leaves one behind;
:func:`remove_stale_temporaries` clears them.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)

#: Suffixes left off temporary names: ``torch.save``/``pickle`` do not need them, and Detectron2
#: (``Checkpointer.get_all_checkpoint_files``) takes any ``*.pth`` in a folder for a checkpoint.
CHECKPOINT_SUFFIXES = frozenset({".pth", ".pt", ".pkl", ".ckpt"})
#: ``.<name>.<random>.tmp[<suffix>]``; ``<random>`` is ``tempfile``'s (no dot, no slash).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[^./]+\.tmp(?P<suffix>(?:\.[^./]+)*)$")


def _suffix(path: Path) -> str:
    if path.name.endswith(".nii.gz"):
        return ".nii.gz"
    return "" if path.suffix.lower() in CHECKPOINT_SUFFIXES else path.suffix


def is_temporary(path: str | os.PathLike) -> bool:
    """True when ``path`` is named like a temporary file of :func:`atomic_path`."""
    return _TEMPORARY.match(Path(path).name) is not None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix but for checkpoints); move it onto
    ``path`` on success, remove it on an exception."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{_suffix(path)}",
                               dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder: str | os.PathLike, older_than_s: float = 60.0
                             ) -> list[Path]:
    """Delete the temporary files of :func:`atomic_path` in ``folder`` (not recursive) that
    have not been modified for ``older_than_s`` seconds (left by a killed process; a write in
    progress keeps touching its file). Return the paths removed."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not (entry.is_file(follow_symlinks=False) and is_temporary(entry.name)):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime >= older_than_s:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:  # finished or removed meanwhile
            continue
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_bytes(path, text.encode())


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    return write_bytes(path, json.dumps(obj, indent=indent).encode())
