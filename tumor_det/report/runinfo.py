"""What ran: command, config and its SHA-256, weights and their SHA-256, version, date, machine.

A run's tool may record these when it finishes (:func:`record_run` writes ``run_info.json``
beside its outputs); a report rebuilt later reads them back. Without that file they come from
what the run wrote anyway: Detectron2's ``config.yaml`` (``MODEL.WEIGHTS``) and the
``Command line arguments:`` line of ``log.txt``, ``cv_summary.json``'s weights.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from tumor_det.utils.atomic import write_json

import yaml

RUN_INFO = "run_info.json"
_COMMAND = re.compile(r"Command line arguments: (.*)$")


def sha256(path: str | os.PathLike) -> str:
    """The file's SHA-256 (hex), or ``-`` when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return "-"
    return digest.hexdigest()


def machine() -> str:
    """Host name, OS, Python, CPU count and the GPU when there is one."""
    parts = [platform.node(), platform.platform(), f"Python {platform.python_version()}",
             f"{os.cpu_count()} CPUs"]
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(0))
    return ", ".join(p for p in parts if p)


def version() -> str:
    from tumor_det import __version__

    return __version__


def record_run(run_dir: str | os.PathLike, command: Sequence[str] | None = None,
               config_file: str | os.PathLike | None = None,
               weights: Sequence[str | os.PathLike] = ()) -> Path:
    """Write ``run_dir/run_info.json``: what ran, now, on this machine (the tool's hook)."""
    info = {"command": " ".join(command if command is not None else sys.argv),
            "config_file": str(config_file) if config_file else None,
            "weights": [str(w) for w in weights],
            "tumor_det_version": version(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine()}
    return write_json(Path(run_dir) / RUN_INFO, info, indent=2)


def _recorded(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / RUN_INFO).read_text())
    except (OSError, ValueError):
        return {}


def _config_weights(config: Path) -> list[str]:
    try:
        weights = (yaml.safe_load(config.read_text()) or {}).get("MODEL", {}).get("WEIGHTS")
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    return [weights] if weights else []


def _logged_command(run_dir: Path) -> str | None:
    try:
        lines = (run_dir / "log.txt").read_text(errors="replace").splitlines()
    except OSError:
        return None
    found = [m.group(1) for line in lines if (m := _COMMAND.search(line))]
    return found[-1] if found else None


def _date(path: Path) -> str:
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime).astimezone()
    return stamp.isoformat(timespec="seconds")


def run_info(run_dir: str | os.PathLike, kind: str, main_file: Path) -> list[tuple[str, str]]:
    """(label, value) rows describing the run in ``run_dir`` (see module docstring)."""
    run_dir = Path(run_dir)
    rec = _recorded(run_dir)
    config = Path(rec["config_file"]) if rec.get("config_file") else None
    if config is None and (run_dir / "config.yaml").is_file():
        config = run_dir / "config.yaml"
    weights = list(rec.get("weights") or [])
    if not weights and kind == "cross_validation":
        try:
            weights = json.loads((run_dir / "cv_summary.json").read_text()).get("weights", [])
        except (OSError, ValueError):
            weights = []
    if not weights and config is not None and kind == "evaluation":
        weights = _config_weights(config)
    command = rec.get("command") or _logged_command(run_dir) or (
        "not recorded by this run (rebuild: tools/report.py RUN_DIR)")
    rows = [("kind", kind.replace("_", "-")), ("run folder", str(run_dir.resolve())),
            ("command", command)]
    if config is not None:
        rows += [("config", str(config)), ("config SHA-256", sha256(config))]
    elif kind != "cases":
        rows.append(("config", "not recorded by this run"))
    for k, w in enumerate(weights):
        label = "weights" if len(weights) == 1 else f"weights {k}"
        rows += [(label, str(w)), (f"{label} SHA-256", sha256(w) if w else "-")]
    if not weights and kind in ("evaluation", "splash"):
        rows.append(("weights", "not recorded by this run"))
    rows += [("tumor-det version", rec.get("tumor_det_version") or version()),
             ("run date", rec.get("date") or f"{_date(main_file)} (time of {main_file.name})"),
             ("machine", rec.get("machine") or f"not recorded; report built on {machine()}"),
             ("report built", datetime.datetime.now().astimezone().isoformat(
                 timespec="seconds"))]
    return rows
