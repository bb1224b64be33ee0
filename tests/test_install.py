"""A plain (non-editable) `pip install .` works outside the repository (configs: package data)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_non_editable_install_finds_configs_and_runs_splash_help(tmp_path):
    target = tmp_path / "site"
    # --target: a site-packages of its own; no dependencies (the venv has them), no network.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(REPO)],
                   check=True, cwd=tmp_path)
    assert (target / "tumor_det" / "configs" / "quick_cpu.yaml").is_file()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", "import tumor_det, tumor_det.config.config as c; "
         "print(tumor_det.__file__); print(c.DEFAULT_CONFIG); "
         "print(c.get_tumor_cfg('mask_rcnn_R_50_FPN_coco').MODEL.ROI_HEADS.NUM_CLASSES)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert Path(out[0]).is_relative_to(target)  # the installed copy, not the repository
    assert Path(out[1]) == target / "tumor_det" / "configs" / "quick_cpu.yaml"
    assert out[2] == "1"  # _BASE_ inheritance resolved inside the installed configs
    helped = subprocess.run([sys.executable, str(REPO / "tools" / "splash.py"), "--help"],
                            cwd=tmp_path, env=env, capture_output=True, text=True)
    assert helped.returncode == 0, helped.stderr
    # argparse wraps the default's path (also at hyphens): compare without whitespace
    assert str(target / "tumor_det" / "configs" / "quick_cpu.yaml") in "".join(
        helped.stdout.split())


def test_configs_found_by_name_or_path(tmp_path):
    from tumor_det.config.config import ConfigError, get_config_file, get_tumor_cfg, list_configs

    assert {"quick_cpu.yaml", "Base-Tumor-RCNN-FPN.yaml"} <= set(list_configs())
    by_name = get_config_file("quick_cpu")
    assert by_name.is_file() and by_name == get_config_file("quick_cpu.yaml")
    assert get_config_file("configs/quick_cpu.yaml").resolve() == by_name.resolve()
    own = tmp_path / "mine.yaml"
    own.write_text(f'_BASE_: "{by_name}"\nSOLVER:\n  MAX_ITER: 7\n')
    assert get_config_file(own) == own
    assert get_tumor_cfg(own).SOLVER.MAX_ITER == 7
    with pytest.raises(ConfigError, match="nope.yaml.*built-in configs: .*quick_cpu.yaml"):
        get_config_file(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER"):
        get_tumor_cfg("quick_cpu", ["SOLVER.MAX_ITER", "abc"])
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        get_tumor_cfg("quick_cpu", ["SOLVER.MAX_ITER"])


def test_every_shipped_config_loads_and_builds_its_training_augmentation():
    """No unknown key in any built-in config; the small-data recipe turns its pieces on."""
    from tumor_det.config.config import get_tumor_cfg, list_configs
    from tumor_det.data.augmentation import RandomBiasField, RandomGamma, build_train_augmentation

    for name in list_configs():
        cfg = get_tumor_cfg(name)
        assert build_train_augmentation(cfg)
    recipe = get_tumor_cfg("small_data_cpu")
    kinds = {type(a) for a in build_train_augmentation(recipe)}
    assert {RandomGamma, RandomBiasField} <= kinds
    assert recipe.MODEL.WEIGHTS == ""  # from scratch
