"""tumor_det.io.intensity against numbers worked out by hand, not against itself.

The window rule (module docstring): ``low``/``high`` are the 0.5th/99.5th percentiles of the
finite pixels (numpy's default "linear" definition, written out in :func:`_percentile`), a pixel
``v`` becomes ``rint((v - low) * 255 / (high - low))`` clipped to 0..255 (``rint``: halves go to
the even neighbour). The expected values below avoid halves unless a test is about them.
"""

from __future__ import annotations

import warnings

from tumor_det.io.intensity import to_model_input, to_uint8

import numpy as np
import pytest


def _percentile(values: list[float], q: float) -> float:
    """numpy's "linear" percentile: rank ``q/100 * (n-1)`` in the sorted values, interpolated."""
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    below = int(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (rank - below) * (ordered[above] - ordered[below])


def test_percentile_definition_is_numpys():
    values = [7.0, 1.0, 3.0, 100.0, 2.0]
    for q in (0, 0.5, 25, 50, 99.5, 100):
        assert _percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_min_max_window_on_a_tiny_12_bit_image():
    image = np.array([[0, 1000], [3000, 4000]], np.uint16)
    # (0, 100): window 0..4000, 255/4000 per unit: 0, 63.75, 191.25, 255
    assert to_uint8(image, (0, 100)).tolist() == [[0, 64], [191, 255]]


def test_12_bit_ramp_default_window():
    ramp = np.arange(4096, dtype=np.uint16)
    # n = 4096, sorted[i] = i: low = 0.005 * 4095 = 20.475, high = 0.995 * 4095 = 4074.525
    assert _percentile(list(range(4096)), 0.5) == pytest.approx(20.475)
    assert _percentile(list(range(4096)), 99.5) == pytest.approx(4074.525)
    low, high = 20.475, 4074.525
    expected = [min(max(round((v - low) * 255 / (high - low)), 0), 255) for v in range(4096)]
    out = to_uint8(ramp.reshape(64, 64))
    assert out.dtype == np.uint8 and out.shape == (64, 64)
    assert out.ravel().tolist() == expected
    # spot checks: (21 - 20.475) * 255 / 4054.05 = 0.033; (2048 - 20.475) * 0.0629 = 127.53
    assert out.ravel()[[0, 20, 21, 2048, 4074, 4075, 4095]].tolist() == [0, 0, 0, 128, 255, 255,
                                                                          255]
    # pixel order does not matter, only values
    shuffled = np.random.default_rng(0).permutation(ramp)
    assert to_uint8(shuffled).tolist() == [expected[v] for v in shuffled]


def test_hot_voxel_does_not_squash_the_image():
    # 999 pixels 0..998 and one hot voxel of 60000: n = 1000, low rank 4.995, high rank 994.005
    values = np.append(np.arange(999), 60000).astype(np.uint16)
    low, high = 4.995, 994.005
    out = to_uint8(values)
    assert out[500] == round((500 - low) * 255 / (high - low)) == 128  # a min-max window: 2
    assert out[-1] == 255 and out[0] == 0


def test_16_bit_full_range():
    # window 0..65535 (0, 100): 255/65535 = 1/257, so 257 * k becomes exactly k
    image = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)
    assert to_uint8(image, (0, 100)).ravel().tolist() == list(range(256))


def test_signed_int16_with_negatives():
    image = np.array([[-1000, -600], [200, 1000]], np.int16)
    # window -1000..1000: (v + 1000) * 255 / 2000 = 0, 51, 153, 255
    assert to_uint8(image, (0, 100)).tolist() == [[0, 51], [153, 255]]
    # default window, 5 values: low rank 0.005 * 4 = 0.02, high rank 3.98, so
    # low = -2000 + 0.02 * 1000 = -1980, high = 1000 + 0.98 * 1000 = 1980, 255 / 3960 per unit:
    # -1000 -> 980 * 0.0644 = 63.1, 100 -> 2080 * 0.0644 = 133.9, 1000 -> 191.9
    image = np.array([-2000, -1000, 100, 1000, 2000], np.int16)
    assert to_uint8(image).tolist() == [0, 63, 134, 192, 255]


def test_int32_and_float64_follow_the_same_window():
    expected = [[0, 51], [153, 255]]
    for dtype in (np.int32, np.int64, np.float32, np.float64):
        image = np.array([[-1000, -600], [200, 1000]], dtype)
        assert to_uint8(image, (0, 100)).tolist() == expected, dtype


def test_nan_and_inf_are_left_out_of_the_window_and_black():
    image = np.array([[0.0, 10.0, 20.0, 40.0], [np.nan, np.inf, -np.inf, 30.0]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / invalid-value warnings either
        out = to_uint8(image, (0, 100))
    # window 0..40 over the finite pixels only: 0, 63.75, 127.5 (even: 128), 255, 191.25
    assert out.tolist() == [[0, 64, 128, 255], [0, 0, 0, 191]]
    all_bad = np.array([np.nan, np.inf, -np.inf], np.float64)
    assert to_uint8(all_bad).tolist() == [0, 0, 0]


def test_constant_images_become_black_without_division_by_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for image in (np.full((8, 8), 700, np.uint16), np.full((8, 8), -3.5, np.float32),
                      np.array([[np.nan, 2.0], [2.0, np.inf]])):
            out = to_uint8(image)
            assert out.dtype == np.uint8 and out.shape == image.shape
            assert not out.any()


def test_narrow_percentile_window_falls_back_to_min_max():
    # 1000 pixels of 5 and one of 9: both percentiles are 5 (high rank 995 of 1001), so the
    # window becomes min..max = 5..9
    image = np.append(np.full(1000, 5), 9).astype(np.uint16)
    out = to_uint8(image)
    assert out[0] == 0 and out[-1] == 255 and set(out[:-1].tolist()) == {0}


def test_uint8_is_kept_byte_for_byte():
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (17, 23), dtype=np.uint8)
    assert to_uint8(grey).tobytes() == grey.tobytes()
    bgr = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    out = to_model_input(bgr)
    assert out.dtype == np.uint8 and out.tobytes() == bgr.tobytes()
    # a low-contrast 8-bit image is not stretched
    dim = np.full((4, 4), 3, np.uint8)
    dim[0, 0] = 9
    assert to_model_input(dim)[..., 0].tolist() == dim.tolist()


def test_grey_becomes_three_identical_channels():
    grey = np.array([[0, 17], [128, 255]], np.uint8)
    for image in (grey, grey[:, :, None]):
        out = to_model_input(image)
        assert out.shape == (2, 2, 3) and out.dtype == np.uint8
        for c in range(3):
            assert out[:, :, c].tolist() == [[0, 17], [128, 255]]
    out = to_model_input(np.array([[0, 1000], [3000, 4000]], np.uint16), percentiles=(0, 100))
    assert out.tolist() == [[[0] * 3, [64] * 3], [[191] * 3, [255] * 3]]


def test_colour_order_and_alpha():
    pixel = np.array([[[10, 20, 30, 40]]], np.uint8)  # one RGBA or BGRA pixel
    assert to_model_input(pixel).tolist() == [[[10, 20, 30]]]  # BGR given: kept, alpha dropped
    assert to_model_input(pixel, rgb=True).tolist() == [[[30, 20, 10]]]  # RGB given: reversed
    assert to_model_input(pixel[:, :, :3], rgb=True).tolist() == [[[30, 20, 10]]]
    out = to_model_input(pixel, rgb=True)
    assert out.flags["C_CONTIGUOUS"]
    # 16-bit colour: one window over all three channels (0..4000), alpha (65535) ignored
    rgba16 = np.array([[[0, 1000, 3000, 65535], [4000, 4000, 4000, 65535]]], np.uint16)
    assert to_model_input(rgba16, rgb=True, percentiles=(0, 100)).tolist() == [
        [[191, 64, 0], [255, 255, 255]]]


def test_bool_and_unit_float_images():
    mask = np.array([[True, False], [False, True]])
    assert to_uint8(mask).tolist() == [[255, 0], [0, 255]]
    assert to_model_input(mask)[..., 2].tolist() == [[255, 0], [0, 255]]
    # float in [0, 1] is windowed like any non-8-bit image, not multiplied by 255: a float mask
    # gives 0/255, and a dim float image is stretched to its own percentiles
    assert to_uint8(np.array([0.0, 1.0, 1.0, 0.0], np.float32)).tolist() == [0, 255, 255, 0]
    dim = np.array([[0.25, 0.375], [0.5, 0.5]], np.float32)  # exact in binary
    # window 0.25..0.5: 0, 127.5 (even: 128), 255, 255
    assert to_uint8(dim, (0, 100)).tolist() == [[0, 128], [255, 255]]


def test_rejects_what_is_not_an_image():
    with pytest.raises(TypeError):
        to_uint8(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="HxWx"):
        to_model_input(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="HxWx"):
        to_model_input(np.zeros((2, 4, 4, 3), np.uint8))
