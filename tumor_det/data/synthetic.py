"""The built-in synthetic dataset: T1-contrast-like axial brain MRI slices with enhancing lesions.

No real patient images can ship with the project, so :func:`generate_synthetic_dataset` draws
them: a head outline with a bright scalp (fat) ring and dark bone with some marrow, a thin CSF
rim, grey/white matter with gyri, dark ventricles with bright choroid plexus, enhancing vessels
and dural sinuses, lesions (ring-enhancing with or without a necrotic core, or solid; lobulated
outlines; radius 4-40 px at 256 px; from barely to strongly enhancing; often with hypointense
oedema), a smooth multiplicative bias field and Rician noise. About a fifth of the slices have no
tumor. Bright structures that are not tumors (scalp, vessels, choroid plexus, sinuses) make a
plain intensity threshold fail (see ``benchmarks/threshold_baseline.py``).

Each "patient" has one anatomy (head size and shape, ventricles, lesions as 3D blobs) and
``slices_per_patient`` neighbouring slices through it, so a lesion shrinks or vanishes from slice
to slice. Everything is deterministic given the seed. Lengths in the code are in pixels of a
256-px slice ("units") and are scaled to the requested size.

:func:`read_synthetic` yields the slices as :class:`~tumor_det.data.records.Sample` objects, like
the format readers; :func:`generate_synthetic_dataset` writes them with the one dataset writer,
:func:`tumor_det.data.prepare.write_dataset` (same polygons, same patient-level split rule).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tumor_det.data.prepare import PrepareOptions, write_dataset
from tumor_det.data.records import Instance, Sample

import cv2
import numpy as np
from scipy import ndimage

REF_SIZE = 256
TUMOR_FREE_PATIENTS = 0.1  # share of patients without a tumor
DEFAULTS = {"num_patients": 30, "slices_per_patient": 5, "size": 256, "seed": 0,
            "splits": (0.7, 0.15, 0.15)}


@dataclass
class _Lesion:
    u: float  # centre in brain-radius units (x: left-right, y: anterior(-) to posterior(+))
    v: float
    z: float  # centre along the slice axis (units)
    radius: float  # largest in-plane radius (units)
    half_depth: float  # extent along the slice axis (units)
    harmonics: np.ndarray  # (k, amplitude, phase) rows of the lobulated outline
    inner: np.ndarray  # same, for the inner edge of the rim
    ring: bool  # ring-enhancing (else solid)
    rim: float  # rim thickness as a fraction of the radius
    core: float  # intensity of the core of a ring lesion
    enhancement: float  # rim / solid intensity above white matter
    heterogeneity: float
    edema: float  # oedema extent in radii (0: none)
    edema_depth: float  # relative darkening of the tissue in the oedema


@dataclass
class _Anatomy:
    cx: float  # head centre, fraction of the image size
    cy: float
    ax: float  # head semi-axes (units), left-right and antero-posterior
    ay: float
    angle: float  # in-plane rotation (rad)
    shape: np.ndarray  # (k, amplitude, phase) rows of the head outline
    half_height: float  # head half-extent along the slice axis (units)
    scalp: float  # layer thicknesses (units)
    bone: float
    csf_rim: float
    scalp_level: float  # intensities (white matter ~0.55)
    bone_level: float
    diploe: float
    csf: float
    gm: float
    wm: float
    ventricle_scale: float
    ventricle_z: float
    ventricle_asym: float
    choroid: tuple[float, float]  # choroid plexus brightness per side (0: not visible)
    noise: float
    bias: float
    gain: float
    gamma: float


@dataclass
class SyntheticSlice:
    """One generated slice: 8-bit image, one bool mask per tumor and the brain mask."""

    patient_id: str
    index: int
    image: np.ndarray
    masks: list[np.ndarray]
    brain: np.ndarray


# ----------------------------------------------------------------------------- sampling


def _harmonics(rng: np.random.Generator, ks: Sequence[int], amp: float) -> np.ndarray:
    ks = np.asarray(ks, np.float64)
    amps = rng.uniform(0.2, 1.0, ks.size) * amp / ks**0.7
    return np.stack([ks, amps, rng.uniform(0, 2 * np.pi, ks.size)], axis=1)


def _sample_anatomy(rng: np.random.Generator) -> _Anatomy:
    ax = rng.uniform(86, 100)
    wm = rng.uniform(0.5, 0.6)
    shape = _harmonics(rng, [2, 3, 4, 5], 0.02)
    egg = np.array([[1, rng.uniform(0.0, 0.04), np.pi / 2 + rng.normal(0, 0.2)]])
    choroid = tuple(float(rng.uniform(0.8, 1.05)) if rng.random() < 0.8 else 0.0
                    for _ in range(2))
    return _Anatomy(
        cx=0.5 + rng.normal(0, 0.012), cy=0.5 + rng.normal(0, 0.012),
        ax=ax, ay=min(ax * rng.uniform(1.1, 1.24), 118.0), angle=rng.normal(0, 0.07),
        shape=np.concatenate([egg, shape]), half_height=rng.uniform(100, 120),
        scalp=rng.uniform(4.0, 8.0), bone=rng.uniform(3.5, 7.0), csf_rim=rng.uniform(1.0, 2.5),
        scalp_level=rng.uniform(0.85, 1.05), bone_level=rng.uniform(0.03, 0.08),
        diploe=rng.uniform(0.3, 0.75), csf=rng.uniform(0.1, 0.2),
        gm=wm * rng.uniform(0.72, 0.82), wm=wm,
        ventricle_scale=rng.uniform(0.75, 1.45), ventricle_z=rng.normal(0, 6),
        ventricle_asym=rng.normal(0, 0.08), choroid=choroid,
        noise=rng.uniform(0.015, 0.04), bias=rng.uniform(0.06, 0.2),
        gain=rng.uniform(0.92, 1.06), gamma=rng.uniform(0.85, 1.15),
    )


def _brain_axes(anat: _Anatomy, z: float) -> tuple[float, float, float]:
    """Head scale at slice ``z`` and the brain semi-axes (units)."""
    s = float(np.sqrt(max(1.0 - (z / anat.half_height) ** 2, 0.3)))
    layers = anat.scalp + anat.bone + anat.csf_rim
    return s, anat.ax * s - layers, anat.ay * s - layers


def _sample_lesion(rng: np.random.Generator, anat: _Anatomy, z_range: tuple[float, float],
                   others: list[_Lesion]) -> _Lesion | None:
    """A lesion whose centre lies in the brain, apart from ``others`` (None if it does not fit)."""
    _, bx, by = _brain_axes(anat, float(np.mean(z_range)))
    radius = float(np.exp(rng.uniform(np.log(4.5), np.log(40.0))))
    for _ in range(40):
        reach = 0.9 - (radius * 1.15 + 3) / min(bx, by)
        if reach < 0.05:
            radius *= 0.85
            continue
        ang, dist = rng.uniform(0, 2 * np.pi), reach * np.sqrt(rng.random())
        u, v = dist * np.cos(ang), dist * np.sin(ang)
        if all(np.hypot((u - o.u) * bx, (v - o.v) * by) > 1.3 * (radius + o.radius) + 4
               for o in others):
            break
        radius *= 0.93
    else:
        return None
    mid, half = 0.5 * (z_range[0] + z_range[1]), 0.5 * (z_range[1] - z_range[0])
    zc = mid + rng.uniform(-0.6, 0.6) * half
    ring = rng.random() < (0.6 if radius > 8 else 0.25)
    irregular = rng.uniform(0.04, 0.22)
    necrotic = rng.random() < 0.75
    return _Lesion(
        u=float(u), v=float(v), z=zc,
        radius=radius, half_depth=radius * rng.uniform(0.9, 1.4) + 4.0,
        harmonics=_harmonics(rng, [2, 3, 4, 5, 6], irregular),
        inner=_harmonics(rng, [2, 3, 4], 0.25),
        ring=bool(ring), rim=rng.uniform(0.2, 0.45) if radius > 8 else rng.uniform(0.35, 0.55),
        core=rng.uniform(0.12, 0.32) if necrotic else rng.uniform(0.38, 0.55),
        enhancement=0.08 + 0.42 * rng.random() ** 1.3,
        heterogeneity=rng.uniform(0.02, 0.1),
        edema=rng.uniform(1.3, 2.3) if rng.random() < 0.6 else 0.0,
        edema_depth=rng.uniform(0.06, 0.2),
    )


def _sample_lesions(rng: np.random.Generator, anat: _Anatomy, count: int,
                    z_range: tuple[float, float]) -> list[_Lesion]:
    lesions: list[_Lesion] = []
    for _ in range(count):
        lesion = _sample_lesion(rng, anat, z_range, lesions)
        if lesion is not None:
            lesions.append(lesion)
    return lesions


def _num_lesions(rng: np.random.Generator) -> int:
    return int(rng.choice(4, p=[0.16, 0.64, 0.16, 0.04]))


# ----------------------------------------------------------------------------- rendering


def _smooth_noise(rng: np.random.Generator, size: int, scale_px: float) -> np.ndarray:
    """Unit-variance smooth random field with features of about ``scale_px`` pixels."""
    n = max(3, int(np.ceil(size / max(scale_px, 1.0))) + 3)
    grid = rng.standard_normal((n, n)).astype(np.float32)
    field = cv2.resize(grid, (size + 2 * int(scale_px) + 2,) * 2, interpolation=cv2.INTER_CUBIC)
    off = int(scale_px) + 1
    field = field[off:off + size, off:off + size]
    return (field - field.mean()) / (field.std() + 1e-6)


def _box(x: float, y: float, half: float, size: int) -> tuple[slice, slice]:
    """Row and column slices of the square of half-width ``half`` around (x, y), clipped."""
    x0, x1 = max(int(x - half), 0), min(int(np.ceil(x + half)) + 1, size)
    y0, y1 = max(int(y - half), 0), min(int(np.ceil(y + half)) + 1, size)
    return slice(y0, max(y1, y0)), slice(x0, max(x1, x0))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _outline(h: np.ndarray, angle: np.ndarray, jitter: float = 0.0) -> np.ndarray:
    """Radius factor ``1 + sum(a cos(k angle + phase))`` (tabulated, then interpolated)."""
    table_angle = np.linspace(-np.pi, np.pi, 721)
    table = np.ones_like(table_angle)
    for k, amp, phase in h:
        table += amp * np.cos(k * table_angle + phase + jitter)
    return np.interp(angle, table_angle, table).astype(np.float32)


def _ellipse_field(bu: np.ndarray, bv: np.ndarray, cu: float, cv: float, au: float, av: float,
                   rot: float) -> np.ndarray:
    """Normalised radius of an ellipse (< 1 inside)."""
    c, s = np.cos(rot), np.sin(rot)
    du, dv = bu - cu, bv - cv
    return np.hypot((c * du + s * dv) / au, (-s * du + c * dv) / av)


@dataclass
class _Frame:
    """Pixel grid of one slice and the head/brain coordinates on it."""

    size: int
    sc: float  # pixels per unit
    xx: np.ndarray  # pixel centres
    yy: np.ndarray
    ccx: float  # head centre (px)
    ccy: float
    cos: float  # in-plane rotation of the head
    sin: float
    bx: float  # brain semi-axes at this slice (units)
    by: float
    bu: np.ndarray  # position in brain-radius units (left-right, antero-posterior)
    bv: np.ndarray
    depth: np.ndarray  # units below the scalp surface


@dataclass
class _Noise:
    """Smooth random fields of four feature sizes, shared by the layers of one slice."""

    lo: np.ndarray
    mid: np.ndarray
    band: np.ndarray
    fine: np.ndarray


def _frame(anat: _Anatomy, z: float, size: int) -> _Frame:
    sc = size / REF_SIZE
    s_z, bx, by = _brain_axes(anat, z)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    ccx, ccy = anat.cx * size, anat.cy * size
    cos, sin = np.cos(anat.angle), np.sin(anat.angle)
    dx, dy = xx - ccx, yy - ccy
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    hx, hy = anat.ax * s_z * sc, anat.ay * s_z * sc
    rho = np.hypot(u / hx, v / hy) / _outline(anat.shape, np.arctan2(v / hy, u / hx))
    depth = (1.0 - rho) * 0.5 * (hx + hy) / sc
    return _Frame(size, sc, xx, yy, ccx, ccy, cos, sin, bx, by, u / (bx * sc), v / (by * sc),
                  depth)


def _noise_fields(rng: np.random.Generator, frame: _Frame) -> _Noise:
    size, sc = frame.size, frame.sc
    return _Noise(_smooth_noise(rng, size, 40 * sc), _smooth_noise(rng, size, 14 * sc),
                  _smooth_noise(rng, size, 7 * sc), _smooth_noise(rng, size, 2.5 * sc))


def _head_layers(anat: _Anatomy, frame: _Frame, noise: _Noise,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scalp fat, bone with marrow, CSF rim: the image, the brain's alpha and its depth."""
    depth = frame.depth
    scalp_t = anat.scalp * (1 + 0.25 * noise.lo)
    bone_in = scalp_t + anat.bone * (1 + 0.2 * noise.mid)
    surface = bone_in + anat.csf_rim + 0.8 * noise.mid
    soft = 0.7 / frame.sc  # edge softness in units
    head_a = _sigmoid(depth / soft)
    bone_a = _sigmoid((depth - scalp_t) / soft)
    brain_a = _sigmoid((depth - surface) / soft)
    img = anat.scalp_level * (0.88 + 0.1 * noise.mid + 0.04 * noise.fine) * head_a
    marrow = np.clip(1 - np.abs(depth - scalp_t - 0.5 * anat.bone) / (0.22 * anat.bone), 0, 1)
    bone_v = anat.bone_level + anat.diploe * marrow * np.clip(noise.lo + 0.3, 0, 1)
    img = img * (1 - bone_a) + bone_v * bone_a
    csf_a = _sigmoid((depth - bone_in) / soft)
    img = img * (1 - csf_a) + anat.csf * csf_a
    return img, brain_a, surface


def _cortex(anat: _Anatomy, d: np.ndarray, noise: _Noise) -> np.ndarray:
    """Grey matter, white matter and sulci at depth ``d`` below the brain surface."""
    cortex = 4.0 + 1.5 * noise.mid + 1.2 * noise.band
    tissue = anat.gm + (anat.wm - anat.gm) * _sigmoid((d - cortex) / 0.8)
    tissue = tissue * (1 + 0.025 * noise.fine + 0.02 * noise.mid)
    sulcus = np.clip(1 - np.abs(noise.band) / 0.16, 0, 1) * _sigmoid((cortex + 3 - d) / 1.2)
    return tissue + (anat.csf - tissue) * 0.85 * sulcus


def _ventricle_field(anat: _Anatomy, cu: np.ndarray, cv: np.ndarray, vs: float, vz: float,
                     ) -> np.ndarray:
    """Normalised radius of the lateral (and, near their centre, third) ventricles."""
    field = np.full_like(cu, 9.0)
    for side in (-1.0, 1.0):
        k = vs * (1 + side * anat.ventricle_asym)
        for centre_u, centre_v, au, av, rot in ((0.085, -0.15, 0.06, 0.15, 0.5),
                                                (0.11, 0.04, 0.045, 0.1, -0.1),
                                                (0.15, 0.2, 0.055, 0.09, -0.5)):
            field = np.minimum(field, _ellipse_field(
                cu, cv, side * centre_u * k, centre_v * (0.6 + 0.4 * k), au * k, av * k,
                side * rot))
    if vz > 0.5:
        field = np.minimum(field, _ellipse_field(cu, cv, 0.0, 0.05, 0.014, 0.07 * vs, 0.0))
    return field


def _choroid_plexus(anat: _Anatomy, cu: np.ndarray, cv: np.ndarray, vs: float, vz: float,
                    t: np.ndarray) -> np.ndarray:
    """Bright choroid plexus in the ventricles' trigones."""
    for side, level in zip((-1.0, 1.0), anat.choroid, strict=True):
        if level > 0 and vz > 0.3:
            k = vs * (1 + side * anat.ventricle_asym)
            plexus = _ellipse_field(cu, cv, side * 0.16 * k, 0.2 * (0.6 + 0.4 * k),
                                    0.03 * k, 0.045 * k, 0.3)
            t = t + (level - t) * _sigmoid((1 - plexus) * 6) * vz
    return t


def _deep_structures(anat: _Anatomy, frame: _Frame, z: float, tissue: np.ndarray,
                     band: np.ndarray) -> None:
    """Basal nuclei, ventricles and choroid plexus, drawn into ``tissue`` in a central box."""
    vz = float(np.exp(-0.5 * ((z - anat.ventricle_z) / 22.0) ** 2))
    if vz <= 0.12:
        return
    box = _box(frame.ccx, frame.ccy, 0.55 * max(frame.bx, frame.by) * frame.sc, frame.size)
    cu, cv, t = frame.bu[box], frame.bv[box], tissue[box]
    vs = anat.ventricle_scale * (0.45 + 0.55 * vz)
    nuclei = np.minimum(_ellipse_field(cu, cv, -0.25, 0.0, 0.08, 0.14, 0.25),
                        _ellipse_field(cu, cv, 0.25, 0.0, 0.08, 0.14, -0.25))
    t = t + (anat.gm * 1.05 - t) * vz * _sigmoid((1 - nuclei) * 6)
    field = _ventricle_field(anat, cu, cv, vs, vz) + 0.08 * band[box]
    t = t + (anat.csf - t) * _sigmoid((1 - field) * 9)
    tissue[box] = _choroid_plexus(anat, cu, cv, vs, vz, t)


def _midline(anat: _Anatomy, frame: _Frame, tissue: np.ndarray, mid: np.ndarray) -> np.ndarray:
    """The interhemispheric fissure and falx (CSF-dark), front and back."""
    fissure = (np.clip(1 - np.abs(frame.bu + 0.01 * mid) * frame.bx / 1.3, 0, 1)
               * (np.abs(frame.bv) > 0.55))
    return tissue + (anat.csf - tissue) * 0.8 * fissure


def _sinuses(rng: np.random.Generator, frame: _Frame) -> np.ndarray:
    """The bright superior sagittal sinus, front and back."""
    bright = np.zeros((frame.size, frame.size), np.float32)
    for sign, amp in ((1.0, rng.uniform(0.35, 0.6)), (-1.0, rng.uniform(0.15, 0.45))):
        spot = np.hypot(frame.bu * frame.bx / 3.0, (np.abs(frame.bv) - 1.0) * frame.by / 3.5)
        bright += amp * np.exp(-spot**2) * (sign * frame.bv > 0)
    return bright


def _vessels(rng: np.random.Generator, frame: _Frame) -> np.ndarray:
    """A few enhancing vessels: random walks drawn as thin anti-aliased lines."""
    f, sc = frame, frame.sc
    canvas = np.zeros((f.size, f.size), np.float32)
    for _ in range(int(rng.integers(1, 4))):
        pts = [np.array([rng.uniform(-0.8, 0.8), rng.uniform(-0.8, 0.8)])]
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(4, 10))):
            heading += rng.normal(0, 0.5)
            step = rng.uniform(4, 9) * sc
            pts.append(pts[-1] + step * np.array([np.cos(heading) / (f.bx * sc),
                                                  np.sin(heading) / (f.by * sc)]))
        xy = np.array([[f.ccx + f.cos * p[0] * f.bx * sc - f.sin * p[1] * f.by * sc,
                        f.ccy + f.sin * p[0] * f.bx * sc + f.cos * p[1] * f.by * sc]
                       for p in pts])
        cv2.polylines(canvas, [np.round(xy * 16).astype(np.int32)], False,
                      float(rng.uniform(0.25, 0.45)), 1, cv2.LINE_AA, shift=4)
    return cv2.GaussianBlur(canvas, (0, 0), 0.5 * max(sc, 0.5))


def _spots(rng: np.random.Generator, frame: _Frame) -> np.ndarray:
    """Small bright dots (vessels in cross-section)."""
    f, sc = frame, frame.sc
    dots = np.zeros((f.size, f.size), np.float32)
    for _ in range(int(rng.integers(4, 14))):
        r, a = 0.9 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
        px = f.ccx + f.cos * r * np.cos(a) * f.bx * sc - f.sin * r * np.sin(a) * f.by * sc
        py = f.ccy + f.sin * r * np.cos(a) * f.bx * sc + f.cos * r * np.sin(a) * f.by * sc
        ix, iy = int(px), int(py)
        if 0 <= ix < f.size and 0 <= iy < f.size:
            dots[iy, ix] = rng.uniform(0.25, 0.55)
    sigma = rng.uniform(0.8, 1.3) * sc
    return cv2.GaussianBlur(dots, (0, 0), sigma) * (2 * np.pi * sigma**2)


def _lesion_shape(lesion: _Lesion, frame: _Frame, z: float, band: np.ndarray,
                  ) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, float] | None:
    """Box around the lesion at slice ``z``, normalised radius and angle in it, radius (units).

    ``None`` when the slice misses the lesion or cuts less than 4 units of it.
    """
    f, sc = frame, frame.sc
    dz = z - lesion.z
    if abs(dz) >= lesion.half_depth:
        return None
    radius = lesion.radius * np.sqrt(1 - (dz / lesion.half_depth) ** 2)
    if radius < 4.0:
        return None
    lx = f.ccx + (f.cos * lesion.u * f.bx - f.sin * lesion.v * f.by) * sc
    ly = f.ccy + (f.sin * lesion.u * f.bx + f.cos * lesion.v * f.by) * sc
    reach = radius * sc * (1 + lesion.harmonics[:, 1].sum()) + 1.5 * sc + 2
    box = _box(lx, ly, reach * max(lesion.edema, 1.0) + 2, f.size)
    ldx, ldy = f.xx[box] - lx, f.yy[box] - ly
    angle = np.arctan2(ldy, ldx)
    jitter = 0.15 * dz / lesion.half_depth
    bound = radius * sc * _outline(lesion.harmonics, angle, jitter) + 0.5 * sc * band[box]
    return box, np.hypot(ldx, ldy) / np.maximum(bound, 0.5), angle, radius


def _lesion_value(anat: _Anatomy, lesion: _Lesion, rr: np.ndarray, angle: np.ndarray,
                  radius: float, sc: float, fine: np.ndarray) -> np.ndarray:
    """Intensity inside a lesion: an enhancing rim around a darker core, or solid."""
    level = anat.wm + lesion.enhancement
    if not lesion.ring:
        return level * (1 + lesion.heterogeneity * fine)
    inner = 1.0 - lesion.rim * _outline(lesion.inner, angle)
    rim_a = _sigmoid((rr - inner) * radius * sc / 0.7)
    value = lesion.core + (level - lesion.core) * rim_a
    return value * (1 + lesion.heterogeneity * fine * 0.5)


def _draw_lesion(anat: _Anatomy, lesion: _Lesion, frame: _Frame, z: float, img: np.ndarray,
                 brain_a: np.ndarray, core_brain: np.ndarray, noise: _Noise,
                 ) -> np.ndarray | None:
    """Paint a lesion and its oedema into ``img``; its mask (None: not in this slice)."""
    shape = _lesion_shape(lesion, frame, z, noise.band)
    if shape is None:
        return None
    box, rr, angle, radius = shape
    sc = frame.sc
    mask = np.zeros((frame.size, frame.size), bool)
    mask[box] = ndimage.binary_fill_holes((rr < 1.0) & core_brain[box])
    if mask.sum() < 30 * sc * sc:
        return None
    in_brain, local = brain_a[box], img[box]
    if lesion.edema > 0:
        e = np.clip((lesion.edema - rr) / (lesion.edema - 1.0), 0, 1)
        local = local * (1 - lesion.edema_depth * e * e * (3 - 2 * e) * in_brain)
    value = _lesion_value(anat, lesion, rr, angle, radius, sc, noise.fine[box])
    alpha = _sigmoid((1.0 - rr) * radius * sc / 0.6) * in_brain
    img[box] = local * (1 - alpha) + value * alpha
    return mask


def _acquisition(rng: np.random.Generator, anat: _Anatomy, img: np.ndarray, frame: _Frame,
                 ) -> np.ndarray:
    """Scanner blur, a smooth multiplicative bias field with a gradient, Rician noise."""
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.45 * max(frame.sc, 0.5))
    bias = _smooth_noise(rng, frame.size, 110 * frame.sc)
    gradient = ((frame.xx / frame.size - 0.5) * rng.normal(0, 0.15)
                + (frame.yy / frame.size - 0.5) * rng.normal(0, 0.15))
    img = img * np.exp(anat.bias * bias + gradient)
    sigma = anat.noise
    noisy = np.hypot(img + sigma * rng.standard_normal(img.shape, np.float32),
                     sigma * rng.standard_normal(img.shape, np.float32))
    return noisy.astype(np.float32)


def _render(anat: _Anatomy, lesions: list[_Lesion], z: float, size: int,
            rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Float image (white matter ~0.55, before windowing), tumor masks and brain mask.

    Layers from the outside in, then the lesions, then the scanner; the order of the random
    draws is part of the output (same seed, same pixels).
    """
    frame = _frame(anat, z, size)
    noise = _noise_fields(rng, frame)
    img, brain_a, surface = _head_layers(anat, frame, noise)
    below = frame.depth - surface  # units below the brain surface
    tissue = _cortex(anat, below, noise)
    _deep_structures(anat, frame, z, tissue, noise.band)
    tissue = _midline(anat, frame, tissue, noise.mid)
    img = img * (1 - brain_a) + tissue * brain_a
    bright = _sinuses(rng, frame)
    bright += _vessels(rng, frame)
    bright += _spots(rng, frame)
    img = img + bright * brain_a
    core_brain, masks = below > 1.0, []
    for lesion in lesions:
        mask = _draw_lesion(anat, lesion, frame, z, img, brain_a, core_brain, noise)
        if mask is not None:
            masks.append(mask)
    return _acquisition(rng, anat, img, frame), masks, below > 0.0


def _window(img: np.ndarray, anat: _Anatomy) -> np.ndarray:
    """Map the float image to 8 bits the way a scanner export would (percentile + gain)."""
    ref = float(np.percentile(img, 99.6))
    scaled = np.clip(img * (anat.gain / max(ref, 1e-6)), 0, 1) ** anat.gamma
    return np.rint(scaled * 255).astype(np.uint8)


# ----------------------------------------------------------------------------- public API


def synthetic_slice(rng: np.random.Generator, size: int = 256, num_tumors: int | None = None,
                    ) -> tuple[np.ndarray, list[np.ndarray]]:
    """One slice: uint8 HxW image and a list of bool HxW masks, one per tumor (possibly empty).

    ``num_tumors`` (default: random, 0 about a fifth of the time) is met unless the lesions do
    not fit in the brain.
    """
    anat = _sample_anatomy(rng)
    z = float(rng.uniform(-12, 20))
    count = _num_lesions(rng) if num_tumors is None else int(num_tumors)
    lesions = _sample_lesions(rng, anat, count, (z, z))
    for lesion in lesions:
        lesion.z = z + rng.uniform(-0.3, 0.3) * lesion.half_depth
    img, masks, _ = _render(anat, lesions, z, size, rng)
    return _window(img, anat), masks


def iter_synthetic_slices(num_patients: int = 30, slices_per_patient: int = 5, size: int = 256,
                          seed: int = 0) -> Iterator[SyntheticSlice]:
    """Yield the slices of :func:`generate_synthetic_dataset`, patient by patient."""
    # A fixed share of the patients has no tumor; others lose theirs on some slices.
    free = np.random.default_rng([seed, 0xF4EE]).permutation(num_patients)
    free = set(free[:int(round(TUMOR_FREE_PATIENTS * num_patients))].tolist())
    for p in range(num_patients):
        rng = np.random.default_rng([seed, p])
        anat = _sample_anatomy(rng)
        spacing = rng.uniform(4.5, 6.5)
        start = rng.uniform(-8, 16) - spacing * (slices_per_patient - 1) / 2
        zs = [start + k * spacing for k in range(slices_per_patient)]
        count = 0 if p in free else 1 + int(rng.choice(3, p=[0.76, 0.19, 0.05]))
        lesions = _sample_lesions(rng, anat, count, (zs[0], zs[-1]))
        for k, z in enumerate(zs):
            img, masks, brain = _render(anat, lesions, z, size, rng)
            yield SyntheticSlice(_patient_id(p), k, _window(img, anat), masks, brain)


def _patient_id(index: int) -> str:
    return f"synth{index:03d}"


def read_synthetic(num_patients: int = 30, slices_per_patient: int = 5, size: int = 256,
                   seed: int = 0) -> Iterator[Sample]:
    """The slices of :func:`iter_synthetic_slices` as samples for the dataset writer.

    ``<patient>_<k>.png``, one mask instance per tumor, 1 mm pixels; tumor-free slices have no
    instance (write them with ``keep_negatives``). Generated data have nothing to skip.
    """
    for item in iter_synthetic_slices(num_patients, slices_per_patient, size, seed):
        name = f"{item.patient_id}_{item.index}.png"
        yield Sample(source=name, file_name=name, patient_id=item.patient_id, width=size,
                     height=size, instances=[Instance(mask=mask) for mask in item.masks],
                     pixels=lambda image=item.image: image,
                     extra={"pixel_spacing": [1.0, 1.0], "slice_index": item.index},
                     empty_reason="tumor-free slice")


def generate_synthetic_dataset(folder: Path, num_patients: int = 30, slices_per_patient: int = 5,
                               size: int = 256, seed: int = 0,
                               splits: Sequence[float] = (0.7, 0.15, 0.15)) -> dict:
    """Write ``folder/images/<patient>_<k>.png`` and ``folder/annotations/{split}.json`` (COCO).

    :func:`read_synthetic` through the dataset writer (``tumor_det.data.prepare``): its polygon
    rule and its patient-level split (``splits``: train/val/test fractions, normalised; a zero
    drops that split), tumor-free slices kept, ``train.json`` written last.
    Returns ``{split: {"patients", "images", "tumor_free", "annotations"}}``.
    """
    if len(splits) != 3 or min(splits) < 0 or sum(splits) <= 0:
        raise ValueError(f"splits must be three non-negative fractions, got {splits}")
    fractions = ",".join(repr(f / sum(splits)) for f in splits)
    options = PrepareOptions("synthetic", None, Path(folder), split=fractions, seed=seed,
                             keep_negatives=True)
    info = {"description": "tumor-det synthetic T1-contrast-like brain MRI", "seed": seed}
    result = write_dataset(read_synthetic(num_patients, slices_per_patient, size, seed),
                           options, info=info)
    if result.issues.skipped:  # generated data have nothing to skip: an image was not written
        raise OSError("; ".join(f"{item}: {reason}" for item, reason in result.issues.skipped))
    summary = {}
    for split, coco in result.splits.items():
        with_ann = {a["image_id"] for a in coco["annotations"]}
        summary[split] = {
            "patients": len({im["patient_id"] for im in coco["images"]}),
            "images": len(coco["images"]),
            "tumor_free": sum(im["id"] not in with_ann for im in coco["images"]),
            "annotations": len(coco["annotations"]),
        }
    return summary


def ensure_synthetic_dataset(folder: Path) -> Path:
    """Generate the default dataset into ``folder`` unless ``annotations/train.json`` exists.

    Safe against concurrent callers: the data are written to a temporary folder beside
    ``folder`` and renamed into place; the loser of a race keeps the winner's files.
    """
    folder = Path(folder)
    if (folder / "annotations" / "train.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        generate_synthetic_dataset(tmp)
        try:
            os.rename(tmp, folder)  # atomic; replaces an empty folder, fails on a full one
        except OSError:
            if not (folder / "annotations" / "train.json").is_file():
                _merge_into(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _merge_into(src: Path, dst: Path) -> None:
    """Move a generated dataset into an existing folder, annotations last (train.json last)."""
    for sub in ("images", "annotations"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    for path in sorted((src / "images").iterdir()):
        os.replace(path, dst / "images" / path.name)
    for path in sorted((src / "annotations").iterdir(), key=lambda p: p.name == "train.json"):
        os.replace(path, dst / "annotations" / path.name)


def synthetic_volume(seed: int = 0, size: int = 128, num_slices: int = 24,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic scan with one 3D lesion spanning several slices.

    Returns an int16 volume of shape ``(X, Y, Z)`` (scanner-like units, white matter ~550), a
    uint8 label volume (1 = tumor) of the same shape and a RAS 4x4 affine with 1x1x2 mm voxels
    centred on the volume. ``volume[i, j, k]`` is pixel (row ``size - 1 - j``, column ``i``) of
    axial slice ``k`` (rows run anterior to posterior).
    """
    rng = np.random.default_rng([seed, 0x3D])
    anat = _sample_anatomy(rng)
    mm = REF_SIZE / size  # units per mm (1 mm pixels)
    zs = [(k - (num_slices - 1) / 2) * 2.0 * mm for k in range(num_slices)]
    lesion = _sample_lesion(rng, anat, (-4.0 * mm, 4.0 * mm), [])
    assert lesion is not None
    lesion.radius = rng.uniform(8, 13) * mm
    lesion.half_depth = rng.uniform(7, 11) * mm
    lesion.u, lesion.v = lesion.u * 0.5, lesion.v * 0.5
    volume = np.zeros((size, size, num_slices), np.int16)
    labels = np.zeros((size, size, num_slices), np.uint8)
    for k, z in enumerate(zs):
        img, masks, _ = _render(anat, [lesion], z, size, rng)
        label = np.zeros((size, size), bool)
        for m in masks:
            label |= m
        volume[:, :, k] = np.flipud(np.clip(np.rint(img * 1000), 0, 32767).astype(np.int16)).T
        labels[:, :, k] = np.flipud(label).T
    spacing = np.array([1.0, 1.0, 2.0])
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.array(volume.shape) - 1) / 2 * spacing
    return volume, labels, affine
