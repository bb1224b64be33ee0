"""Turn any MRI pixel array into the model's input, the same way at training and at inference.

MRI arrives as 8-bit JPEG/PNG, 16-bit PNG/TIFF, int16 (Figshare ``.mat``, DICOM) or float
(NIfTI). The model sees 8-bit, 3-channel BGR images (Detectron2's ``INPUT.FORMAT``). Rules:

* ``uint8`` input is kept as it is (grey is repeated to 3 channels; RGBA drops alpha; RGB is
  taken as given and converted to BGR when ``rgb=True``).
* Anything else (uint16, int16, int32, float) is windowed per image: values between the
  ``low``-th and ``high``-th percentiles (default 0.5 and 99.5, computed over finite pixels) are
  mapped linearly onto 0..255 and clipped. This is robust to the hot voxels and arbitrary scanner
  units of MRI, where a fixed window is meaningless. A constant image becomes all zeros; NaN
  and ±inf pixels are left out of the window and become 0. Colour channels share one window.

Dataset converters write images normalised by :func:`to_uint8`;
:mod:`~tumor_det.inference.predictor`
applies :func:`to_model_input` to whatever it reads, so both paths meet the same rule.
"""

from __future__ import annotations

import numpy as np

DEFAULT_PERCENTILES = (0.5, 99.5)


def to_uint8(
    image: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> np.ndarray:
    """Map an array of any numeric dtype to uint8 (see module docstring); shape is kept."""
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if not np.issubdtype(image.dtype, np.number):
        raise TypeError(f"cannot convert an image of dtype {image.dtype} to 8 bits")
    with np.errstate(over="ignore"):  # float64 beyond float32's range -> inf, handled below
        values = image.astype(np.float32)
    # NaN/inf (also float64 values beyond float32's range): no measurement; black
    is_finite = np.isfinite(values)
    finite = values[is_finite]
    if finite.size == 0:
        return np.zeros(image.shape, np.uint8)
    low, high = np.percentile(finite, percentiles)
    if high <= low:
        low, high = float(finite.min()), float(finite.max())
    if high <= low:
        return np.zeros(image.shape, np.uint8)
    scaled = (np.where(is_finite, values, low) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_model_input(
    image: np.ndarray,
    rgb: bool = False,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> np.ndarray:
    """Return an HxWx3 uint8 BGR array from a 2D grey, HxWx1, HxWx3 or HxWx4 array.

    ``rgb`` says the colour channels are in RGB order (PIL, imageio) rather than BGR (OpenCV).
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        grey = to_uint8(image, percentiles)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected a 2D image or HxWx{{1,3,4}}, got shape {image.shape}")
    colour = to_uint8(image[:, :, :3], percentiles)
    if rgb:
        colour = colour[:, :, ::-1]
    return np.ascontiguousarray(colour)
