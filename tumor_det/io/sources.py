"""Find inference inputs: ``--input`` files, folders and globs -> :class:`Source` records.

Pixels are not read. A folder contributes its own files (not its subfolders), sorted; the DICOM
files found in a folder are grouped by ``SeriesInstanceUID`` and a group of two or more slices
becomes one volume. DICOM files named directly or by a glob are read as 2D images.
"""

from __future__ import annotations

import glob
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tumor_det.io.base import file_stem
from tumor_det.io.dicom import series_uid
from tumor_det.io.registry import kind_of


class UsageError(Exception):
    """A command-line problem (no such input, empty folder): reported in one line, exit 2."""


@dataclass
class Source:
    """One unit of work: ``kind`` is image, dicom, nifti, dicom_series, video or unsupported."""

    kind: str
    path: Path
    files: tuple[Path, ...] = field(default=())  # the slices of a DICOM series
    stem: str = ""
    reason: str = ""  # why an "unsupported" source is skipped

    def __post_init__(self) -> None:
        if not self.stem:
            self.stem = file_stem(self.path)

    @property
    def paths(self) -> tuple[Path, ...]:
        """Every file this source reads (outputs must never replace one of them)."""
        return self.files or (self.path,)


def classify(path: Path) -> Source:
    """A file's source from its name (and the DICOM preamble); pixels are not read."""
    kind = kind_of(path)
    if kind is None:
        return Source("unsupported", path,
                      reason=f"unsupported file type {path.suffix or '(none)'}")
    return Source(kind, path)


def expand_folder(folder: Path) -> list[Source]:
    """The folder's files, sorted; its DICOM slices grouped into series volumes."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UsageError(f"--input {folder}: folder has no files")
    sources: list[Source] = []
    series: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        src = classify(path)
        uid = series_uid(path) if src.kind == "dicom" else None
        if uid is None:
            sources.append(src)  # a DICOM file without a series is read as 2D (or skipped)
        else:
            series[uid].append(path)
    multi = [uid for uid, paths in series.items() if len(paths) > 1]
    for uid, paths in series.items():
        if len(paths) == 1:
            sources.append(Source("dicom", paths[0]))
            continue
        stem = folder.name if len(multi) == 1 else f"{folder.name}_{uid.rsplit('.', 1)[-1]}"
        sources.append(Source("dicom_series", folder, files=tuple(paths), stem=stem))
    return sorted(sources, key=lambda s: str(s.paths[0]))


def expand_inputs(patterns: list[str], video: str | None = None) -> list[Source]:
    """Expand ``--input`` patterns and ``--video-input`` into sources (duplicates dropped).

    Raises :class:`UsageError` when an argument matches nothing or nothing was given.
    """
    sources: list[Source] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            sources.extend(expand_folder(path))
        elif path.is_file():
            sources.append(classify(path))
        elif glob.has_magic(pattern):
            matches = sorted(glob.glob(str(path)))
            if not matches:
                raise UsageError(f"--input {pattern}: no file matches this pattern")
            for match in map(Path, matches):
                sources.extend(expand_folder(match) if match.is_dir() else [classify(match)])
        else:
            raise UsageError(f"--input {pattern}: no such file or folder")
    if video:
        path = Path(video).expanduser()
        if not path.is_file():
            raise UsageError(f"--video-input {video}: no such file")
        sources.append(Source("video", path))
    if not sources:
        raise UsageError("no input: give --input FILE/FOLDER/GLOB or --video-input FILE")
    unique: dict[tuple[str, ...], Source] = {}
    for src in sources:
        unique.setdefault(tuple(str(p.resolve()) for p in src.paths), src)
    return list(unique.values())
