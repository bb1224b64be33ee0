"""Rendering, output writers and input discovery of the splash tool (no model involved)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tumor_det.io import InputError, UsageError, expand_inputs, read_dicom, read_image
from tumor_det.splash.drawing import color_splash, draw_overlay, upscale, video_frame
from tumor_det.splash.writers import (
    OutputError,
    OutputGuard,
    rle,
    write_csv,
    write_image,
    write_json,
)

import cv2
import numpy as np
import pydicom
import pytest
from pycocotools import mask as mask_util
from pydicom.data import get_testdata_file


def _colour_image(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_color_splash_pixel_by_pixel():
    image = _colour_image()
    mask = np.zeros(image.shape[:2], bool)
    mask[10:30, 5:40] = True
    mask[40, 60] = True
    out = color_splash(image, mask)
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert out.shape == image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[mask], image[mask])  # original colours inside
    outside = ~mask
    for c in range(3):
        np.testing.assert_array_equal(out[..., c][outside], grey[outside])  # greyscale outside
    assert not np.array_equal(out[outside], image[outside])


def test_color_splash_empty_mask_is_all_grey_and_tint_colours_the_mask():
    image = _colour_image()
    out = color_splash(image, np.zeros(image.shape[:2], bool))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    grey = np.full((8, 8, 3), 100, np.uint8)
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:4] = True
    tinted = color_splash(grey, mask, tint=(0, 0, 255), alpha=0.5)
    assert (tinted[mask] == [50, 50, 178]).all()
    np.testing.assert_array_equal(tinted[~mask], grey[~mask])


def test_overlay_upscales_small_images_and_draws_outlines():
    image = np.zeros((64, 64, 3), np.uint8)
    mask = np.zeros((1, 64, 64), bool)
    mask[0, 20:40, 20:40] = True
    out = draw_overlay(image, mask, [0.87], [0], ["tumor"])
    assert out.shape == (256, 256, 3)
    assert out.any()
    assert draw_overlay(image, mask[:0], [], [], ["tumor"]).max() == 0


def test_overlay_is_detectron2_visualizer_drawing_over_the_untouched_image():
    image = np.full((64, 64, 3), 100, np.uint8)
    masks = np.zeros((2, 64, 64), bool)
    masks[0, 8:20, 8:20] = True                                                # top left
    masks[1] = cv2.circle(np.zeros((64, 64), np.uint8), (43, 46), 7, 1, -1) > 0  # bottom right
    out = draw_overlay(image, masks, [0.87, 0.5], [0, 0], ["tumor"])
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8  # 4x: at least 256 px
    changed = np.any(out != upscale(image, 4), axis=2)
    for mask, bgr in zip(masks, [(0, 0, 255), (0, 255, 255)], strict=True):  # red, yellow
        ys, xs = np.nonzero(mask)
        assert changed[4 * ys + 2, 4 * xs + 2].all()  # inside, and on the outline (pixel centres)
        mean = out[4 * ys + 2, 4 * xs + 2].mean(axis=0)
        assert ((mean > 100) == (np.array(bgr) > 0)).all()  # grey 100 blended with the colour
    # far from the masks and their labels: the image as it was (ColorMode.IMAGE, not dimmed)
    assert not changed[:96, 160:].any() and not changed[208:, :100].any()


def test_overlay_sizes():
    image = np.zeros((48, 70, 3), np.uint8)
    masks = np.zeros((1, 48, 70), bool)
    masks[0, 10:20, 10:30] = True
    assert draw_overlay(image, masks, [0.5], [3], ["tumor"]).shape == (288, 420, 3)  # 6x
    big = np.zeros((300, 260, 3), np.uint8)
    assert draw_overlay(big, np.ones((1, 300, 260), bool), [1.0], [0], ["t"]).shape == big.shape
    np.testing.assert_array_equal(draw_overlay(image, masks[:0], [], [], ["tumor"]),
                                  upscale(image, 6))


def test_video_frame_is_even_sized():
    assert video_frame(np.zeros((33, 41, 3), np.uint8), 2).shape == (66, 82, 3)
    assert video_frame(np.zeros((33, 41, 3), np.uint8)).shape == (34, 42, 3)


def test_writers_are_atomic_and_never_overwrite_inputs(tmp_path):
    src = tmp_path / "in.png"
    write_image(src, np.full((4, 4), 7, np.uint8))
    assert cv2.imread(str(src), cv2.IMREAD_UNCHANGED).max() == 7
    guard = OutputGuard([src])
    with pytest.raises(OutputError, match="in.png"):
        write_image(src, np.zeros((4, 4), np.uint8), guard)
    with pytest.raises(OutputError):  # the same file by another spelling
        write_json(tmp_path / "sub" / ".." / "in.png", [], guard)
    assert cv2.imread(str(src), cv2.IMREAD_UNCHANGED).max() == 7
    write_json(tmp_path / "r.json", [{"a": 1}], guard)
    write_csv(tmp_path / "r.csv", [{"file": "x", "tumors": 1, "area_mm2": None}], guard)
    assert json.loads((tmp_path / "r.json").read_text()) == [{"a": 1}]
    assert (tmp_path / "r.csv").read_text().splitlines()[1] == "x,,1,,,,,"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "r.csv", "r.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "r.json").st_mode & 0o777 == 0o666 & ~umask


def test_rle_counts_is_str_and_round_trips():
    mask = np.zeros((20, 30), bool)
    mask[3:9, 4:20] = True
    encoded = rle(mask)
    assert isinstance(encoded["counts"], str) and encoded["size"] == [20, 30]
    json.dumps(encoded)
    decoded = mask_util.decode({"size": encoded["size"], "counts": encoded["counts"].encode()})
    np.testing.assert_array_equal(decoded.astype(bool), mask)


def test_expand_inputs_files_folders_globs_and_errors(tmp_path):
    for name in ("b.png", "a.png", "c.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"x")
    sources = expand_inputs([str(tmp_path)])
    assert [(s.path.name, s.kind) for s in sources] == [
        ("a.png", "image"), ("b.png", "image"), ("c.txt", "unsupported")]
    assert [s.path.name for s in expand_inputs([str(tmp_path / "*.png")])] == ["a.png", "b.png"]
    assert len(expand_inputs([str(tmp_path / "a.png"), str(tmp_path)])) == 3  # no duplicates
    with pytest.raises(UsageError, match="nope.png"):
        expand_inputs([str(tmp_path / "nope.png")])
    with pytest.raises(UsageError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.jpg")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no files"):
        expand_inputs([str(empty)])
    with pytest.raises(UsageError):
        expand_inputs([])
    with pytest.raises(InputError, match="unreadable"):
        read_image(tmp_path / "a.png")


def make_dicom_series(folder: Path, n: int = 4) -> list[float]:
    """Write ``n`` axial slices of MR_small.dcm as one series, files in shuffled order."""
    folder.mkdir(parents=True, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    zs = [6.6406 + 2.5 * k for k in range(n)]
    for k, z in enumerate(zs):
        ds = base.copy()
        ds.ImagePositionPatient = [-83.9063, -91.2, z]
        ds.InstanceNumber = n - k  # reversed, positions decide the order
        ds.SOPInstanceUID = f"{base.SOPInstanceUID}.{k + 1}"
        ds.save_as(folder / f"slice{(k * 3) % n:02d}_{k}", enforce_file_format=True)
    return zs


def test_dicom_folder_becomes_one_series_volume(tmp_path):
    make_dicom_series(tmp_path / "series")
    other = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    other.SeriesInstanceUID = other.SeriesInstanceUID + ".9"
    other.save_as(tmp_path / "series" / "other.dcm")
    (tmp_path / "series" / "notes.txt").write_text("hello")
    sources = expand_inputs([str(tmp_path / "series")])
    kinds = sorted((s.kind, len(s.files)) for s in sources)
    assert kinds == [("dicom", 0), ("dicom_series", 4), ("unsupported", 0)]
    series = next(s for s in sources if s.kind == "dicom_series")
    assert series.stem == "series" and series.path == tmp_path / "series"


def test_trailing_config_overrides_are_split_off_inputs():
    from tumor_det.cli.splash import split_opts

    assert split_opts(["a.png", "b/", "MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "64"]) == (
        ["a.png", "b/"], ["MODEL.WEIGHTS", "", "INPUT.MIN_SIZE_TEST", "64"])
    assert split_opts(["a.png"]) == (["a.png"], [])


def test_dicom_reading_spacing_and_colour():
    pixels, rgb, spacing = read_dicom(Path(get_testdata_file("MR_small.dcm")))
    assert pixels.shape == (64, 64) and not rgb and spacing == (0.3125, 0.3125)
    pixels, rgb, _ = read_dicom(Path(get_testdata_file("SC_rgb_small_odd.dcm")))
    assert rgb and pixels.ndim == 3 and pixels.shape[2] == 3
