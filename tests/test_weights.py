"""Pretrained weights: download once into Detectron2's cache, fail fast offline, load the model
zoo's COCO and MSRA ImageNet layouts. A local HTTP server on 127.0.0.1 stands in for
dl.fbaipublicfiles.com; nothing touches ~/.torch or the internet."""

from __future__ import annotations

import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.checkpoint import weights
from tumor_det.checkpoint.checkpointer import TumorCheckpointer
from tumor_det.checkpoint.weights import WeightsNotFoundError, cached_path, resolve_weights
from tumor_det.config.config import get_tumor_cfg

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

REPO = Path(__file__).resolve().parents[1]
COCO_CONFIG = REPO / "configs" / "mask_rcnn_R_50_FPN_coco.yaml"
COCO_PATH = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x/137849600/model_final_f10217.pkl"
IMAGENET_PATH = "ImageNetPretrained/MSRA/R-50.pkl"
# The class-specific layers: 80 COCO classes in the file, 1 tumor class in the model.
PREDICTORS = {f"roi_heads.{m}.{p}" for m in ("box_predictor.cls_score", "box_predictor.bbox_pred",
                                              "mask_head.predictor") for p in ("weight", "bias")}


class FileServer:
    """Serves ``files`` (URL path → bytes) on 127.0.0.1; paths in ``truncate`` are cut short."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append(self.path)
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.path in server.truncate:
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True  # drop the connection half-way
                else:
                    self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}/{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test downloads into its own cache folder, online unless it says otherwise."""
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(weights.OFFLINE_ENV, raising=False)
    monkeypatch.delenv(weights.D2_URL_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture
def server(monkeypatch) -> Iterator[FileServer]:
    """The local server, also serving ``detectron2://`` URLs (``TUMOR_DET_D2_URL``)."""
    srv = FileServer()
    monkeypatch.setenv(weights.D2_URL_ENV, srv.url())
    yield srv
    srv.stop()


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zoo_pickle(state: dict[str, np.ndarray]) -> bytes:
    """A checkpoint in Detectron2's model-zoo layout (model_final_*.pkl)."""
    return pickle.dumps({"model": state, "__author__": "Detectron2 Model Zoo",
                         "matching_heuristics": True})


def random_like(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, np.ndarray]:
    """Numpy arrays of the same names and shapes with values no fresh model has."""
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(v.shape).astype(v.numpy().dtype) for k, v in state.items()}


def caffe2_name(name: str) -> str:
    """Detectron2 ResNet name → MSRA/Caffe2 blob name (inverse of c2_model_loading's rules)."""
    name = name.replace("stem.conv1.norm.", "res_conv1_bn.").replace("stem.conv1.", "conv1.")
    name = name.replace(".shortcut.", ".branch1.")
    for i, letter in enumerate("abc", 1):
        name = name.replace(f".conv{i}.", f".branch2{letter}.")
    name = name.replace(".norm.", "_bn.").replace("bn.weight", "bn_s").replace("bn.bias", "bn_b")
    return name.replace(".weight", "_w").replace(".", "_")


def tumor_model() -> torch.nn.Module:
    return build_model(get_tumor_cfg(COCO_CONFIG, ["MODEL.DEVICE", "cpu"]))


def load_reporting(model: torch.nn.Module, path: str, monkeypatch):
    """``TumorCheckpointer(model).load(path)`` and the IncompatibleKeys it found."""
    found = []
    real = TumorCheckpointer._load_model

    def spy(self, checkpoint):
        found.append(real(self, checkpoint))
        return found[-1]

    monkeypatch.setattr(TumorCheckpointer, "_load_model", spy)
    TumorCheckpointer(model).load(path)
    return found[0]


def test_coco_zoo_checkpoint_downloaded_once_and_loaded(server, cache, monkeypatch):
    torch.manual_seed(0)
    coco = build_model(get_tumor_cfg(COCO_CONFIG, ["MODEL.DEVICE", "cpu",
                                                   "MODEL.ROI_HEADS.NUM_CLASSES", "80"]))
    served = random_like(coco.state_dict())
    del coco
    server.files["/" + COCO_PATH] = zoo_pickle(served)

    path = resolve_weights("coco")
    # Where Detectron2 itself caches detectron2:// files, whichever server it came from.
    assert path == str(cache / "detectron2" / COCO_PATH)
    assert path == str(cached_path("detectron2://" + COCO_PATH))
    assert server.requests == ["/" + COCO_PATH]
    assert sorted(p.name for p in Path(path).parent.iterdir()
                  if not p.name.endswith(".lock")) == ["model_final_f10217.pkl"]

    model = tumor_model()
    incompatible = load_reporting(model, path, monkeypatch)
    assert {k for k, *_ in incompatible.incorrect_shapes} == PREDICTORS
    assert set(incompatible.missing_keys) == PREDICTORS
    assert incompatible.unexpected_keys == []
    state = model.state_dict()
    assert state.keys() == served.keys()
    for key, value in served.items():
        if key in PREDICTORS:  # re-initialised for one class
            assert state[key].shape[0] < value.shape[0]
        else:
            assert torch.equal(state[key], torch.from_numpy(value)), key
    assert state["roi_heads.box_predictor.cls_score.weight"].shape == (2, 1024)


def test_imagenet_msra_checkpoint_matches_every_backbone_weight(server, monkeypatch):
    torch.manual_seed(0)
    model = tumor_model()
    bottom_up = model.backbone.bottom_up.state_dict()
    # MSRA's R-50.pkl: Caffe2 blob names, affine BN (scale/bias only), the ImageNet classifier.
    served = {caffe2_name(k): v for k, v in random_like(bottom_up).items()
              if not k.endswith(("running_mean", "running_var"))}
    assert {"conv1_w", "res_conv1_bn_s", "res2_0_branch1_w", "res2_0_branch2a_w",
            "res5_2_branch2c_bn_b"} <= served.keys()
    served.update(fc1000_w=np.zeros((1000, 2048), np.float32), fc1000_b=np.zeros(1000, np.float32))
    server.files["/" + IMAGENET_PATH] = pickle.dumps(served)

    incompatible = load_reporting(model, resolve_weights("imagenet"), monkeypatch)
    assert [k for k in incompatible.missing_keys if k.startswith("backbone.bottom_up.")] == []
    assert incompatible.incorrect_shapes == []
    state = model.backbone.bottom_up.state_dict()
    for key in bottom_up:
        if key.endswith("running_mean"):
            assert torch.count_nonzero(state[key]) == 0, key  # Caffe2's BN folds the stats
        elif key.endswith("running_var"):
            assert torch.all(state[key] == 1), key
        else:
            assert torch.equal(state[key], torch.from_numpy(served[caffe2_name(key)])), key


def test_second_resolve_uses_the_cache_without_the_server(server, cache):
    server.files["/w/model.pth"] = data = bytes(range(256)) * 4096
    url = server.url("w/model.pth")
    path = resolve_weights(url)
    assert Path(path).read_bytes() == data
    assert path == str(cache / "w" / "model.pth") == str(cached_path(url))
    server.stop()
    server.stop = lambda: None  # already stopped for the fixture's teardown
    assert resolve_weights(url) == path
    assert server.requests == ["/w/model.pth"]


def test_connection_dropped_half_way_leaves_no_file(server, cache):
    server.files["/w/model.pth"] = b"x" * 3_000_000
    server.truncate.add("/w/model.pth")
    url = server.url("w/model.pth")
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights(url)
    message = str(err.value)
    assert url in message and str(cache / "w" / "model.pth") in message
    assert "incomplete download" in message
    assert [p.name for p in (cache / "w").iterdir() if not p.name.endswith(".lock")] == []
    # Once the server sends the whole file, the next run downloads it.
    server.truncate.clear()
    assert Path(resolve_weights(url)).stat().st_size == 3_000_000


def test_unreachable_server_fails_fast_with_instructions(cache, monkeypatch):
    monkeypatch.setenv(weights.D2_URL_ENV, f"http://127.0.0.1:{closed_port()}/detectron2")
    start = time.monotonic()
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights("imagenet")
    assert time.monotonic() - start < 30
    message = str(err.value)
    assert f"/detectron2/{IMAGENET_PATH} " in message
    assert str(cache / "detectron2" / IMAGENET_PATH) in message
    assert "could not download" in message and "TUMOR_DET_OFFLINE=1" in message


def test_silent_server_times_out(monkeypatch):
    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setattr(weights, "TIMEOUT", 1.0)
        start = time.monotonic()
        with pytest.raises(WeightsNotFoundError, match="timed out"):
            resolve_weights(f"http://127.0.0.1:{listener.getsockname()[1]}/model.pth")
        assert time.monotonic() - start < 10


def test_offline_switch_never_contacts_the_server(server, cache, monkeypatch):
    server.files["/" + COCO_PATH] = b"weights"
    monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights("coco")
    message = str(err.value)
    assert "TUMOR_DET_OFFLINE=1" in message and "does not download" in message
    assert str(cache / "detectron2" / COCO_PATH) in message
    assert server.requests == []
    # A file put where the message says is used, offline too.
    local = cache / "detectron2" / COCO_PATH
    local.parent.mkdir(parents=True)
    local.write_bytes(b"weights")
    assert resolve_weights("coco") == str(local)


def test_http_error_is_reported(server, cache):
    with pytest.raises(WeightsNotFoundError, match="HTTP Error 404"):
        resolve_weights(server.url("missing.pkl"))
    assert not (cache / "missing.pkl").exists()


def test_train_net_exits_quickly_when_the_weights_cannot_be_downloaded(cache):
    url = f"http://127.0.0.1:{closed_port()}/x.pth"
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file",
         str(REPO / "configs" / "quick_cpu.yaml"), "--weights", url, "SOLVER.MAX_ITER", "1"],
        capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 60
    assert result.returncode == 2, result.stdout[-2000:]
    assert url in result.stderr and str(cache / "x.pth") in result.stderr
    assert "Traceback" not in result.stderr
