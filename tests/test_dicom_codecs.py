"""Compressed DICOM decodes through pydicom's decoder plugins and tumor-det's DICOM reader.

The files are the ones pydicom bundles (``pydicom/data/test_files``). They are listed directly:
``pydicom.data.get_testdata_files`` also fetches the ~100 files of the pydicom-data repository
from GitHub (and retries for minutes without a network). Decoders (constraints.txt): pylibjpeg
with pylibjpeg-libjpeg (JPEG baseline/extended/lossless, JPEG-LS) and pylibjpeg-openjpeg
(JPEG 2000); RLE is pydicom's own; Pillow is a second JPEG/JPEG 2000 decoder to compare with.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from tumor_det.io.base import InputError
from tumor_det.io.dicom import read_dicom

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.data.data_manager import DATA_ROOT
from pydicom.pixels import get_decoder, pixel_array

TEST_FILES = Path(DATA_ROOT) / "test_files"
LOSSLESS = {uid.RLELossless, uid.JPEGLSLossless, uid.JPEG2000Lossless, uid.JPEGLossless,
            uid.JPEGLosslessSV1, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL}
#: compressed file -> its uncompressed twin in the same folder.
TWINS = {
    "MR_small_RLE.dcm": "MR_small.dcm",
    "MR_small_jp2klossless.dcm": "MR_small.dcm",
    "MR_small_jpeg_ls_lossless.dcm": "MR_small.dcm",
}
#: malformed on purpose (pydicom's own tests); no decoder reads them.
BROKEN = {
    "JPEG-lossy.dcm": "bad JPEG codestream (JPGExtended.dcm is its fixed version)",
    "JPEG2000-embedded-sequence-delimiter.dcm": "sequence delimiter inside the pixel data",
    "SC_rgb_jpeg.dcm": "malformed encapsulation",
}
#: the largest difference allowed between two decoders of a lossy stream (IDCT and colour
#: conversion rounding differ by a few grey levels).
LOSSY_TOLERANCE = 3


def _compressed_files() -> dict[str, pydicom.Dataset]:
    """Bundled files with compressed pixel data, by name (files without a meta header skipped)."""
    found = {}
    for path in sorted(TEST_FILES.glob("*.dcm")):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # pydicom's deliberately odd headers
                ds = pydicom.dcmread(path)
        except Exception:  # noqa: BLE001 - files without a File Meta header (pydicom's tests)
            continue
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is not None and syntax.is_compressed and "PixelData" in ds:
            found[path.name] = ds
    return found


COMPRESSED = _compressed_files()
SINGLE_FRAME = {n: ds for n, ds in COMPRESSED.items()
                if int(ds.get("NumberOfFrames", 1) or 1) == 1 and n not in BROKEN}
MR_CT = sorted(n for n, ds in SINGLE_FRAME.items() if ds.get("Modality") in ("MR", "CT"))


def _syntax(name: str) -> uid.UID:
    return COMPRESSED[name].file_meta.TransferSyntaxUID


def _decode(name: str, plugin: str = "") -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about odd-but-readable headers
        return pixel_array(TEST_FILES / name, decoding_plugin=plugin)


def _modality(ds: pydicom.Dataset, pixels: np.ndarray) -> np.ndarray:
    """What tumor-det's reader returns: the modality rescale applied."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope != 1 or intercept != 0:
        return pixels.astype(np.float32) * slope + intercept
    return pixels


def test_bundled_mr_ct_cover_the_compressed_syntaxes():
    assert set(MR_CT) >= {"693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm", "MR_small_RLE.dcm",
                          "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"}
    assert {_syntax(n) for n in MR_CT} >= {uid.RLELossless, uid.JPEGLSLossless,
                                           uid.JPEG2000Lossless, uid.JPEG2000}


@pytest.mark.parametrize("name", MR_CT)
def test_mr_ct_decodes_like_the_uncompressed_twin(name):
    ds = pydicom.dcmread(TEST_FILES / name)
    pixels = ds.pixel_array
    assert pixels.shape == (ds.Rows, ds.Columns)
    assert pixels.dtype.kind == ("i" if ds.PixelRepresentation else "u")
    low = -(2 ** (ds.BitsStored - 1)) if ds.PixelRepresentation else 0
    assert low <= pixels.min() and pixels.max() < low + 2 ** ds.BitsStored
    if name in TWINS:
        twin = pydicom.dcmread(TEST_FILES / TWINS[name]).pixel_array
        if _syntax(name) in LOSSLESS:
            np.testing.assert_array_equal(pixels, twin)
        else:
            assert np.abs(pixels.astype(float) - twin).max() <= LOSSY_TOLERANCE
    # tumor-det's reader: the same pixels with the modality rescale
    image = read_dicom(TEST_FILES / name)
    np.testing.assert_array_equal(image.pixels, _modality(ds, pixels))
    assert not image.rgb and image.spacing == tuple(float(v) for v in ds.PixelSpacing)


def test_j2k_pixel_representation_mismatch_is_read_as_signed():
    # an unsigned 13-bit codestream in a signed data set (pydicom issue 1149): the air outside
    # the body is -2000, which reads as 6192 when the codestream's signedness is trusted.
    pixels = _decode("J2K_pixelrep_mismatch.dcm")
    assert pixels.dtype == np.int16 and pixels.min() == -2000 and pixels[0, 0] == -2000


def test_jpeg_extended_12_bit():
    # reference values from pydicom's pixel reference data (JPGE_16_12_1_0_1F_M2)
    pixels = _decode("JPGExtended.dcm")
    assert pixels.dtype == np.uint16 and pixels.shape == (1024, 256)
    assert pixels[420, 140] == 244 and pixels[230, 120] == 95
    assert pixels.max() < 2 ** 12


@pytest.mark.parametrize("name", sorted(SINGLE_FRAME))
def test_every_bundled_single_frame_file_decodes_and_decoders_agree(name):
    ds = SINGLE_FRAME[name]
    pixels = _decode(name)
    samples = int(ds.get("SamplesPerPixel", 1))
    assert pixels.shape == ((ds.Rows, ds.Columns) if samples == 1
                            else (ds.Rows, ds.Columns, samples))
    for plugin in get_decoder(_syntax(name)).available_plugins:
        try:
            other = _decode(name, plugin)
        except RuntimeError:  # e.g. Pillow has no 12-bit JPEG or JP2-wrapped J2K
            continue
        if _syntax(name) in LOSSLESS:
            np.testing.assert_array_equal(other, pixels, err_msg=plugin)
        else:
            assert np.abs(other.astype(float) - pixels).max() <= LOSSY_TOLERANCE, plugin
    image = read_dicom(TEST_FILES / name)
    np.testing.assert_array_equal(image.pixels, _modality(ds, pixels))
    assert image.rgb == (samples == 3)


def test_transfer_syntaxes_that_need_the_plugins():
    # what pydicom cannot decode on its own (without pylibjpeg these have no decoder)
    decodable = {_syntax(n) for n in SINGLE_FRAME}
    assert decodable >= {uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLosslessSV1,
                         uid.JPEGLSLossless, uid.JPEGLSNearLossless, uid.JPEG2000Lossless,
                         uid.JPEG2000, uid.RLELossless}
    for syntax in (uid.JPEGExtended12Bit, uid.JPEGLSLossless, uid.JPEG2000):
        assert "pylibjpeg" in get_decoder(syntax).available_plugins


def test_permissive_decoders_cover_hospital_syntaxes_without_the_gpl_extra():
    # install_requires holds only permissively licensed decoders (setup.py); pylibjpeg's JPEG
    # plugin (pylibjpeg-libjpeg, GPL-3.0, extra "dicom-gpl") is only needed for 12-bit JPEG
    permissive = {uid.JPEGBaseline8Bit: {"gdcm", "pillow"}, uid.JPEGLosslessSV1: {"gdcm"},
                  uid.JPEGLSLossless: {"gdcm", "pyjpegls"},
                  uid.JPEG2000Lossless: {"gdcm", "pillow", "pylibjpeg"}}
    for syntax, plugins in permissive.items():
        assert plugins & set(get_decoder(syntax).available_plugins), syntax.name
    for name in ("SC_rgb_jpeg_gdcm.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        reference = _decode(name)
        np.testing.assert_array_equal(_decode(name, "gdcm"), reference)


def test_multi_frame_is_decoded_by_pydicom_and_refused_by_the_2d_reader():
    name = "SC_rgb_rle_2frame.dcm"
    assert _decode(name).shape == (2, 100, 100, 3)
    with pytest.raises(InputError, match="multi-frame"):
        read_dicom(TEST_FILES / name)
