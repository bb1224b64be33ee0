"""The page of a splash run (``tools/splash.py``): per input the findings, per scan the 3D
lesion table and key slices with the lesions outlined, and every file the run wrote."""

from __future__ import annotations

import csv
from pathlib import Path

from tumor_det.io import READERS, InputError, file_stem, load_nifti
from tumor_det.io.geometry import Volume, display_slices
from tumor_det.report import html, thumbnails

import cv2
import numpy as np

#: Key slices shown per scan (the largest lesions' largest slices).
MAX_KEY_SLICES = 6


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def scan_paths(run_dir: Path) -> dict[str, Path]:
    """Output stem -> input path of a splash run (``results.csv``; stems made unique as the
    splash sink makes them: ``<stem>``, ``<stem>_2``, ...); empty when there is none."""
    if not (run_dir / "results.csv").is_file():
        return {}
    stems: dict[str, Path] = {}
    for row in read_rows(run_dir / "results.csv"):
        base = file_stem(Path(row["file"]))
        stem, n = base, 1
        while stem in stems:
            n += 1
            stem = f"{base}_{n}"
        stems[stem] = Path(row["file"])
    return stems


def _read_volume(path: Path) -> Volume | None:
    """The input scan (NIfTI file or DICOM series folder), or None when it cannot be read."""
    for reader in READERS.values():
        try:
            if reader.accepts(path) or (path.is_dir() and reader.kind == "dicom_series"):
                volume = reader.read(path)
                return volume if isinstance(volume, Volume) else None
        except (InputError, OSError, ValueError, KeyError):
            return None
    return None


def key_slices(run_dir: Path, stem: str, source: Path) -> str:
    """The largest lesions' largest axial slices, outlined over the scan."""
    labels_path = run_dir / f"{stem}_instances.nii.gz"
    if not labels_path.is_file():
        return ""
    labels = np.asarray(display_slices(load_nifti(labels_path))[0])
    volume = _read_volume(source)
    scan = np.asarray(display_slices(volume)[0]) if volume is not None else None
    if scan is not None and scan.shape != labels.shape:
        scan = None
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    parts = []
    for lesion in ids[np.argsort(-counts)][:MAX_KEY_SLICES]:
        mask = labels == lesion
        k = thumbnails.key_slice(mask, None)
        uri = thumbnails.thumbnail_uri(None if scan is None else scan[k], None, labels[k] > 0)
        parts.append(f'<figure style="display:inline-block;margin:4px">'
                     f'{html.image(uri, f"lesion {lesion}", "thumb")}<figcaption class="note">'
                     f"lesion {lesion}, slice {k}</figcaption></figure>")
    return "".join(parts)


def files_table(run_dir: Path) -> str:
    rows = []
    for path in sorted(p for p in run_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        name = path.name
        what = ("DICOM-SEG" if name.endswith(".dcm") else "NIfTI" if ".nii" in name
                else "table" if name.endswith((".csv", ".json")) else "video"
                if name.endswith(".mp4") else "image" if name.endswith(".png") else "")
        rows.append([name, what, round(path.stat().st_size / 1024, 1)])
    return html.table(["file", "what", "size (KiB)"], rows)


def build(page: html.Page, run_dir: Path) -> None:
    rows = read_rows(run_dir / "results.csv")
    tumors = sum(int(r.get("tumors") or 0) for r in rows)
    volume = sum(float(r["volume_ml"]) for r in rows if r.get("volume_ml"))
    page.add("Headline", html.cards([
        ("inputs processed", len(rows), "rows of results.csv"),
        ("inputs with tumor", sum(1 for r in rows if int(r.get("tumors") or 0)), ""),
        ("tumors found", tumors, "2D: detections; volumes: 3D lesions"),
        ("tumor volume (mL)", volume, "sum over the volumes")]) + html.note(
        "No ground truth in a splash run: findings only (no Dice or sensitivity)."))
    page.add("Inputs", html.table(
        ["file", "kind", "tumors", "scores", "area (px)", "area (mm²)", "volume (mL)",
         "slices"], [[r.get("file", ""), r.get("kind", ""), _num(r.get("tumors")),
                      r.get("scores", ""), _num(r.get("area_px")), _num(r.get("area_mm2")),
                      _num(r.get("volume_ml")), r.get("slices", "")] for r in rows]))
    for stem, source in scan_paths(run_dir).items():
        lesions = run_dir / f"{stem}_lesions.csv"
        overlay = run_dir / f"{stem}_overlay.png"
        if lesions.is_file():
            les = read_rows(lesions)
            body = html.table(["id", "class", "score", "voxels", "volume (mL)", "slices",
                               "centroid x (mm)", "centroid y", "centroid z"],
                              [[_num(r["id"]), r["class"], _num(r["score"]), _num(r["voxels"]),
                                _num(r["volume_ml"]), r["slices"], _num(r["centroid_x_mm"]),
                                _num(r["centroid_y_mm"]), _num(r["centroid_z_mm"])]
                               for r in les], digits=4)
            body += ('<p class="legend note">outlines: <i style="background:#ff3b30"></i>'
                     "predicted lesions</p>") + key_slices(run_dir, stem, source)
            written = sorted(p.name for p in run_dir.glob(f"{stem}_*")
                             if p.name.endswith((".nii.gz", ".dcm")))
            body += html.note("Files: " + ", ".join(written))
            page.add(f"Scan: {source.name}", body)
        elif overlay.is_file():
            image = cv2.imread(str(overlay), cv2.IMREAD_COLOR)
            if image is not None:
                page.add(f"Image: {source.name}", html.image(
                    thumbnails.image_uri(image), f"{stem} overlay"))
    page.add("Files written", files_table(run_dir))


def _num(value: object) -> object:
    try:
        return float(value) if value not in (None, "") else ""
    except (TypeError, ValueError):
        return value
