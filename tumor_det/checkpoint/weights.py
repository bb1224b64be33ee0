"""Where ``MODEL.WEIGHTS`` comes from: aliases, local files, and the download cache.

A ``detectron2://`` or ``http(s)://`` checkpoint is downloaded once into the cache Detectron2
uses (``$FVCORE_CACHE``, default ``~/.torch/iopath_cache``, same relative path as iopath's
``HTTPURLHandler``), with a progress bar, atomically and with a connection timeout. Without a
route to the server, or with ``TUMOR_DET_OFFLINE=1``, :func:`resolve_weights` stops with
:class:`WeightsNotFoundError` naming the URL and the exact path to put the file at.
"""

from __future__ import annotations

import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from tumor_det.utils.atomic import atomic_path

from iopath.common.file_io import file_lock, get_cache_dir
from tqdm import tqdm

#: ``--weights`` shortcuts of the old ``tumor.py`` CLI (``last`` is handled by the trainer).
WEIGHT_ALIASES = {
    "coco": "detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/"
            "model_final_f10217.pkl",
    "imagenet": "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
}
D2_PREFIX = "detectron2://"
D2_URL = "https://dl.fbaipublicfiles.com/detectron2/"  # Detectron2Handler.S3_DETECTRON2_PREFIX
#: Set to 1 to never download: a URL not in the cache then stops the run at once.
OFFLINE_ENV = "TUMOR_DET_OFFLINE"
#: Base URL that ``detectron2://`` downloads from instead of D2_URL (a mirror; tests).
D2_URL_ENV = "TUMOR_DET_D2_URL"
#: Seconds to wait for the connection and for each read; a single attempt, no retries.
TIMEOUT = 15.0


class WeightsNotFoundError(FileNotFoundError):
    """``MODEL.WEIGHTS`` names a file that is neither local, cached nor downloadable."""


def is_offline() -> bool:
    """True when ``TUMOR_DET_OFFLINE`` is 1/true/yes/on (like ``HF_HUB_OFFLINE``)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def canonical_url(url: str) -> str:
    """``detectron2://X`` as Detectron2 spells it (``https://dl.fbaipublicfiles.com/...``)."""
    return D2_URL + url[len(D2_PREFIX):] if url.startswith(D2_PREFIX) else url


def download_url(url: str) -> str:
    """The URL actually fetched: ``detectron2://X`` under ``$TUMOR_DET_D2_URL`` when set."""
    base = os.environ.get(D2_URL_ENV)
    if url.startswith(D2_PREFIX) and base:
        return base.rstrip("/") + "/" + url[len(D2_PREFIX):]
    return canonical_url(url)


def cached_path(url: str) -> Path:
    """Where Detectron2/iopath keep a downloaded ``url`` (``$FVCORE_CACHE`` or ~/.torch/...).

    Always the path of the canonical URL, so a file fetched from a mirror is where Detectron2
    looks for it.
    """
    url = canonical_url(url)
    parsed = urlparse(url)
    return Path(get_cache_dir()) / os.path.dirname(parsed.path.lstrip("/")) / url.split("/")[-1]


def download(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` with a progress bar; ``dest`` appears only when complete.

    Written by hand: iopath's ``download`` (urllib's ``urlretrieve``) has no timeout, so a
    machine without a route to the server waits for ever. Here the bytes go to a temporary
    file beside ``dest`` that is renamed only once its size matches ``Content-Length``.
    """
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response, atomic_path(dest) as tmp:
        expected = response.headers.get("Content-Length")
        total = int(expected) if expected else None
        tqdm.write(f"Downloading {url} to {dest}", file=sys.stderr)
        with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True,
                                        unit_divisor=1024, miniters=1, desc=dest.name) as bar:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
        size = tmp.stat().st_size
        if size == 0 or (total is not None and size != total):
            raise OSError(f"incomplete download: {size} of {total or 'some'} bytes arrived")


def _not_found(name: str, url: str, local: Path, reason: str, hint: str) -> WeightsNotFoundError:
    return WeightsNotFoundError(
        f"MODEL.WEIGHTS {name}: {reason}. Download {url} on a machine with internet access "
        f"and put it at {local} (the cache folder is $FVCORE_CACHE or ~/.torch/iopath_cache), "
        f"or set MODEL.WEIGHTS / --weights to the local file. {hint}")


def fetch_cached(name: str, url: str) -> Path:
    """The cached file of ``url``, downloaded first unless it is cached or we are offline."""
    local = cached_path(url)
    if local.is_file():
        return local
    source = download_url(url)
    if is_offline():
        switch = f"{OFFLINE_ENV}={os.environ[OFFLINE_ENV]}"
        raise _not_found(name, source, local, f"not in the local cache, and {switch} says this "
                         "run does not download", f"Unset {OFFLINE_ENV} to download it.")
    try:
        with file_lock(str(local)):  # distributed ranks: one downloads, the others wait
            if not local.is_file():
                download(source, local)
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets
        plain = isinstance(exc, urllib.error.URLError) and not hasattr(exc, "code")
        reason = exc.reason if plain else exc  # HTTPError: "HTTP Error 404: Not Found"
        raise _not_found(name, source, local, f"could not download it ({reason})",
                         f"With {OFFLINE_ENV}=1 a run does not download and stops at once "
                         "with this message.") from exc
    return local


def last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named in ``output_dir/last_checkpoint``, if it exists."""
    tag = Path(output_dir) / "last_checkpoint"
    if not tag.is_file():
        return None
    path = Path(output_dir) / tag.read_text().strip()
    return path if path.is_file() else None


def resolve_weights(weights: str, output_dir: str | os.PathLike = "") -> str:
    """Turn an alias, path or URL into a local file that Detectron2 loads.

    ``""`` (random init) stays ``""``; ``coco``/``imagenet`` become their ``detectron2://`` URL;
    ``last`` becomes the last checkpoint in ``output_dir``. URLs are downloaded into the cache
    unless already there (their cached file is returned); local paths must exist.
    """
    if not weights:
        return ""
    if weights == "last":
        path = last_checkpoint(output_dir)
        if path is None:
            raise WeightsNotFoundError(
                f"--weights last: no checkpoint in {output_dir or '.'} (no last_checkpoint file "
                "or the file it names is missing); train first or give a checkpoint path")
        return str(path)
    url = WEIGHT_ALIASES.get(weights, weights)
    if "://" in url:
        name = weights if url == weights else f"{weights} ({url})"
        return str(fetch_cached(name, url))
    if not Path(weights).is_file():
        raise WeightsNotFoundError(f"MODEL.WEIGHTS {weights}: no such file")
    return weights
