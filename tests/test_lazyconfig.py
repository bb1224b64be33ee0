"""LazyConfig front end: configs/lazy/*.py, tumor_det.config.lazy and
tools/lazyconfig_train_net.py (the same model, data and evaluation as the YAML path)."""

from __future__ import annotations

import json
from pathlib import Path

import tumor_det  # noqa: F401
from tumor_det.cli import lazyconfig_train_net as cli
from tumor_det.config.config import ConfigError, get_tumor_cfg
from tumor_det.config.lazy import (
    list_lazy_configs,
    load_config,
    load_lazy_config,
    to_cfgnode,
)

import cv2
import pytest
import torch
from detectron2.config import instantiate
from detectron2.modeling import build_model
from toy_data import toy_opts, train_net_in_process, write_toy_dataset

TWINS = {"mask_rcnn_R_50_FPN_coco": "mask_rcnn_R_50_FPN_coco",
         "mask_rcnn_R_50_FPN_imagenet": "mask_rcnn_R_50_FPN_imagenet",
         "mask_rcnn_R_50_FPN_scratch": "mask_rcnn_R_50_FPN_scratch",
         "quick_cpu": "quick_cpu", "real_mri_cpu": "real_mri_cpu"}


def _flat(node, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = list(value) if isinstance(value, tuple) else value
    return out


def test_builtin_lazy_configs_are_found_by_name():
    names = list_lazy_configs()
    assert {f"lazy/{n}.py" for n in TWINS} | {"lazy/mask_rcnn_R_50_FPN_LSJ.py"} <= set(names)
    assert load_lazy_config("lazy/quick_cpu").train.max_iter == 300


@pytest.mark.parametrize("name", sorted(TWINS))
def test_lazy_twin_is_its_yaml_config(name):
    lazy = _flat(to_cfgnode(load_lazy_config(f"lazy/{name}.py")))
    yaml = _flat(get_tumor_cfg(TWINS[name]))
    assert lazy.keys() == yaml.keys()
    ignore = {"OUTPUT_DIR"} | ({"MODEL.RESNETS.STRIDE_IN_1X1"}  # unused by ResNet-18
                               if yaml["MODEL.RESNETS.DEPTH"] < 50 else set())
    assert {k: lazy[k] for k in yaml if lazy[k] != yaml[k] and k not in ignore} == {}


def _same_parameters(name: str, *overrides: str) -> None:
    cfg = load_lazy_config(f"lazy/{name}.py", ["train.device=cpu", *overrides])
    lazy = instantiate(cfg.model).state_dict()
    yacs = build_model(to_cfgnode(cfg)).state_dict()
    assert {k: tuple(v.shape) for k, v in lazy.items()} == \
        {k: tuple(v.shape) for k, v in yacs.items()}


def test_quick_model_from_either_front_end_has_the_same_parameters():
    _same_parameters("quick_cpu", "model.roi_heads.num_classes=3")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mask_rcnn_R_50_FPN_coco", "mask_rcnn_R_50_FPN_scratch",
                                  "mask_rcnn_R_50_FPN_LSJ"])
def test_r50_model_from_either_front_end_has_the_same_parameters(name):
    _same_parameters(name)


def test_overrides_change_what_they_say():
    cfg = load_config("lazy/quick_cpu.py", ["train.max_iter=7", "model.roi_heads.num_classes=3",
                                            "dataloader.train.augment.gamma=[0.8,1.2]",
                                            "MODEL.DEVICE", "cpu"])
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 3
    assert tuple(cfg.TUMOR.AUGMENT.GAMMA) == (0.8, 1.2) and cfg.MODEL.DEVICE == "cpu"
    model = build_model(cfg)
    assert model.roi_heads.box_predictor.cls_score.out_features == 4
    assert load_config("quick_cpu", ["SOLVER.MAX_ITER", "7"]).SOLVER.MAX_ITER == 7  # YAML


@pytest.mark.parametrize("override, words", [
    ("train.max_itr=5", "unknown key"),
    ("train.max_iter=abc", "expected a value like 300"),
    ("train.max_iter=", "expected a value like 300"),
    ("train.max_iter=[1", "config override"),
])
def test_bad_override_is_a_config_error(override, words):
    with pytest.raises(ConfigError, match=words):
        load_lazy_config("lazy/quick_cpu.py", [override])


@pytest.mark.parametrize("argv, words", [
    (["train.max_itr=5"], "unknown key"),
    (["--config-file", "lazy/nope.py"], "config file not found"),
    (["dataloader.train.names=[nope_train]"], "'nope_train'"),
    (["--weights", "last", "train.output_dir=/nonexistent"], "no checkpoint"),
])
def test_lazyconfig_train_net_user_errors_exit_2_with_one_line(argv, words, capsys):
    if argv[0] != "--config-file":
        argv = ["--config-file", "lazy/quick_cpu.py", *argv]
    assert cli.launch_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lazyconfig_train_net.py: error: ")
    assert words in err[0]


# --- training through the lazy path ----------------------------------------------------------


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("datasets")
    write_toy_dataset(root)
    return root


def _lazy_opts(root: Path, out: Path, max_iter: int) -> list[str]:
    """``toy_opts`` of the YAML path, as hydra overrides."""
    return [f"tumor.datasets_root={root}", "dataloader.train.names=[toy_train]",
            "dataloader.test.dataset.names=toy_val",
            "dataloader.train.input.min_size_train=[64]",
            "dataloader.test.mapper.augmentations.0.short_edge_length=64",
            "dataloader.train.total_batch_size=2", f"train.max_iter={max_iter}",
            "train.checkpointer.period=2", f"train.eval_period={max_iter}",
            "lr_multiplier.warmup_iters=1", f"train.output_dir={out}", "train.seed=1",
            "train.log_period=1"]


def _lazy_train(argv: list[str]) -> None:
    args = cli.build_parser().parse_args(["--config-file", "lazy/quick_cpu.py", *argv])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli.main(args)
    finally:
        torch.set_num_threads(threads)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]


def _eval_keys(out: Path) -> set[str]:
    return {k for m in _metrics(out) if "tumor/dice" in m for k in m
            if "/" in k and not k.startswith(("lr", "data_time", "time"))}


@pytest.mark.slow
def test_lazy_training_resume_and_inference_match_the_yaml_path(toy_root, tmp_path):
    from tumor_det.inference.predictor import TumorPredictor

    out = tmp_path / "lazy"
    _lazy_train(_lazy_opts(toy_root, out, 4))
    yaml_out = tmp_path / "yaml"
    train_net_in_process(["--config-file", "quick_cpu"] + toy_opts(toy_root, yaml_out, 4)
                         + ["TEST.EVAL_PERIOD", "4", "TUMOR.EVAL.COCO", "True"])
    # the same evaluation keys (tumor metrics, COCO box/mask AP) as train_net.py
    assert _eval_keys(out) and _eval_keys(out) == _eval_keys(yaml_out)
    assert (out / "inference" / "toy_val" / "tumor_metrics_per_image.csv").is_file()
    assert (out / "model_best.pth").is_file() and list(out.glob("events.out.tfevents.*"))
    assert (out / "last_checkpoint").read_text() == "model_final.pth"

    # --resume continues at the right iteration
    _lazy_train(["--resume", *_lazy_opts(toy_root, out, 6)])
    iters = [m["iteration"] for m in _metrics(out) if "total_loss" in m]
    assert iters == [0, 1, 2, 3, 4, 5]  # 4 and 5 after resuming, nothing twice
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 5

    # the run's saved config.yaml reloads for inference; its checkpoint predicts
    cfg = load_config(out / "config.yaml", ["MODEL.WEIGHTS", str(out / "model_final.pth")])
    assert cfg.DATASETS.TEST == ("toy_val",) and cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
    saved = torch.load(out / "model_final.pth", weights_only=False)["model"]
    built = build_model(cfg).state_dict()
    assert {k: tuple(v.shape) for k, v in saved.items()} == \
        {k: tuple(v.shape) for k, v in built.items()}
    image = cv2.imread(str(toy_root / "toy" / "images" / "val0.png"))
    prediction = TumorPredictor(cfg)(image)
    assert prediction.mask.shape == image.shape[:2]
    assert len(prediction.scores) == len(prediction.instances)
