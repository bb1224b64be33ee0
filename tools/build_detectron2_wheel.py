#!/usr/bin/env python
"""Build a pure-Python ``detectron2`` wheel from PyPI's ``pb1-detectron2==0.6`` sdist.

Detectron2 has no package under its own name on PyPI. ``pb1-detectron2==0.6`` holds Detectron2
v0.6's Python files unchanged but lacks ``detectron2/layers/csrc``, so ``pip install`` of it fails
while compiling the C++ extension. This script, run by ``make`` before ``tumor_det`` is installed:

1. finds the sdist through PyPI's simple index (JSON form) and downloads it into ``--cache``,
   checking its pinned SHA-256;
2. copies its ``detectron2`` package (with the model-zoo YAML configs) into a build folder with a
   small ``setup.py`` that declares no C++ extension;
3. runs ``pip wheel`` on that folder and prints the wheel's path.

``tumor_det.compat`` then supplies what the missing ``detectron2._C`` would have. Nothing of
Detectron2 is committed to this repository; everything comes from the registry at install time.
Standard library only: this runs before anything else is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_FILE = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
WHEEL_VERSION = "0.6+nocsrc"
INDEX_URL = os.environ.get("TUMOR_DET_PYPI_SIMPLE", "https://pypi.org/simple")

# Detectron2 0.6's own run-time requirements, minus black/pydot/future (only used by tools that
# tumor_det does not call). Versions are pinned in constraints.txt, the project's one pin file.
REQUIRES = [
    "pillow",
    "matplotlib",
    "pycocotools",
    "termcolor",
    "yacs",
    "tabulate",
    "cloudpickle",
    "tqdm",
    "tensorboard",
    "fvcore",
    "iopath",
    "omegaconf",
    "hydra-core",
]

SETUP_PY = f'''
from setuptools import find_packages, setup

setup(
    name="detectron2",
    version="{WHEEL_VERSION}",
    description="Detectron2 v0.6 (from the pb1-detectron2 sdist), pure Python, no compiled _C",
    url="https://github.com/facebookresearch/detectron2",
    license="Apache-2.0",
    packages=find_packages(include=["detectron2", "detectron2.*"]),
    package_data={{"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]}},
    python_requires=">=3.8",
    install_requires={REQUIRES!r},
)
'''


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sdist_url() -> str:
    """Ask PyPI's simple index (PEP 691 JSON) for the sdist's download URL."""
    request = urllib.request.Request(
        f"{INDEX_URL}/{SDIST_NAME}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        index = json.load(response)
    for entry in index["files"]:
        if entry["filename"] == SDIST_FILE:
            return entry["url"]
    raise SystemExit(f"{SDIST_FILE} is not listed in {INDEX_URL}/{SDIST_NAME}/")


def fetch_sdist(cache: Path) -> Path:
    """Return the verified sdist in ``cache``, downloading it once."""
    path = cache / SDIST_FILE
    if path.exists() and sha256(path) == SDIST_SHA256:
        return path
    cache.mkdir(parents=True, exist_ok=True)
    url = sdist_url()
    print(f"Downloading {url}", flush=True)
    partial = path.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=120) as response, partial.open("wb") as out:
        shutil.copyfileobj(response, out)
    got = sha256(partial)
    if got != SDIST_SHA256:
        partial.unlink()
        raise SystemExit(f"{url}: SHA-256 {got} does not match the pinned {SDIST_SHA256}")
    partial.replace(path)
    return path


def build_wheel(sdist: Path, wheel_dir: Path) -> Path:
    """Build the pure-Python wheel from the sdist's ``detectron2`` package; return its path."""
    wheel_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if "/detectron2/" in m.name]
            tar.extractall(tmp_path, members=members, filter="data")
        src = tmp_path / f"{SDIST_NAME}-{SDIST_VERSION}"
        (src / "setup.py").write_text(SETUP_PY)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--quiet", "-w", str(wheel_dir), str(src)],
            check=True,
        )
    wheels = sorted(wheel_dir.glob("detectron2-*.whl"))
    if not wheels:
        raise SystemExit(f"pip wheel wrote no detectron2 wheel into {wheel_dir}")
    return wheels[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path(".cache/detectron2"),
                        help="where the sdist and the wheel are kept (default: %(default)s)")
    args = parser.parse_args()
    wheel_dir = args.cache / "wheels"
    existing = sorted(wheel_dir.glob(f"detectron2-{WHEEL_VERSION}-*.whl"))
    wheel = existing[-1] if existing else build_wheel(fetch_sdist(args.cache), wheel_dir)
    print(wheel)


if __name__ == "__main__":
    main()
