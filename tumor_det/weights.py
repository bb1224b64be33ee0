"""Where ``MODEL.WEIGHTS`` comes from: aliases, local files, and the download cache.

These machines cannot download. Detectron2 would try to fetch a ``detectron2://`` or ``https://``
checkpoint that is not in its cache (and hang or retry); :func:`resolve_weights` checks the
cache first and fails at once with a message naming the file, the URL and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from iopath.common.file_io import get_cache_dir

#: ``--weights`` shortcuts of the old ``tumor.py`` CLI (``last`` is handled by the trainer).
WEIGHT_ALIASES = {
    "coco": "detectron2://COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/"
            "model_final_f10217.pkl",
    "imagenet": "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
}
D2_PREFIX = "detectron2://"
D2_URL = "https://dl.fbaipublicfiles.com/detectron2/"


class WeightsNotFoundError(FileNotFoundError):
    """``MODEL.WEIGHTS`` names a file that is neither local nor in the download cache."""


def cached_path(url: str) -> Path:
    """Where Detectron2/iopath keep a downloaded ``url`` (``$FVCORE_CACHE`` or ~/.torch/...)."""
    if url.startswith(D2_PREFIX):
        url = D2_URL + url[len(D2_PREFIX):]
    parsed = urlparse(url)
    return Path(get_cache_dir()) / os.path.dirname(parsed.path.lstrip("/")) / url.split("/")[-1]


def last_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The checkpoint named in ``output_dir/last_checkpoint``, if it exists."""
    tag = Path(output_dir) / "last_checkpoint"
    if not tag.is_file():
        return None
    path = Path(output_dir) / tag.read_text().strip()
    return path if path.is_file() else None


def resolve_weights(weights: str, output_dir: str | os.PathLike = "") -> str:
    """Turn an alias, path or URL into something Detectron2 loads without downloading.

    ``""`` (random init) stays ``""``; ``coco``/``imagenet`` become their ``detectron2://`` URL;
    ``last`` becomes the last checkpoint in ``output_dir``. URLs must already be in the cache
    (their cached file is returned); local paths must exist.
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
    weights = WEIGHT_ALIASES.get(weights, weights)
    if "://" in weights:
        local = cached_path(weights)
        if local.is_file():
            return str(local)
        url = D2_URL + weights[len(D2_PREFIX):] if weights.startswith(D2_PREFIX) else weights
        raise WeightsNotFoundError(
            f"MODEL.WEIGHTS {weights}: not in the local cache, and this machine does not "
            f"download. Download {url} on a machine with internet access and put it at "
            f"{local} (the cache folder is $FVCORE_CACHE or ~/.torch/iopath_cache), or set "
            "MODEL.WEIGHTS / --weights to the local file.")
    if not Path(weights).is_file():
        raise WeightsNotFoundError(f"MODEL.WEIGHTS {weights}: no such file")
    return weights
