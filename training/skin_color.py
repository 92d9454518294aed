"""Skin colour from chromophore concentrations: a two-layer spectral absorption model.

The epidermis absorbs with melanin (a eumelanin / pheomelanin blend) over a baseline; light that
crosses it twice reaches the dermis, whose diffuse reflectance follows from the ratio of its
absorption (haemoglobin, oxygenated and not, over a baseline) to its reduced scattering through
the Kubelka-Munk semi-infinite layer. Spectra at 400..700 nm are integrated against analytic CIE
1931 colour matching functions (Wyman, Sloan & Shirley 2013) and converted to linear sRGB,
white-balanced so that a perfect white reflector is (1, 1, 1).

Coefficients (per mm) are those of Donner & Jensen 2006 (melanins, baseline) and Prahl's molar
extinction of haemoglobin (whole blood, 150 g/L). The optical constants the literature leaves
open (the dermis' scattering and its Rayleigh share, the melanin packing, the upper epidermis'
flat reflectance) are fitted to measured skin colour (`training.skin_calibration`: the L*a*b*
locus of the ITA skin categories and the ColorChecker skin patches): measured skin is much less
yellow (b* 14-18 at L* 38-66) than a dermis with Mie-only scattering makes it.

Colours are looked up in a table over (log melanin, log blood, oxygenation) built per eumelanin
ratio: `skin_albedo` is vectorised over maps of any size.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

WAVELENGTHS = np.arange(400.0, 701.0, 10.0)

# Prahl's molar extinction coefficients (cm^-1 / M), 400..700 nm every 10 nm.
_HBO2 = np.array([266232, 466840, 480360, 246072, 102580, 62816, 44480, 33209, 26629, 23684,
                  20933, 20035, 24202, 39957, 53236, 43016, 32613, 44496, 50104, 14401, 3200,
                  1506, 942, 610, 442, 368, 320, 294, 278, 276, 290], float)  # fmt: skip
_HB = np.array([223296, 303956, 407560, 528600, 413280, 103292, 23389, 16156, 14550, 16684,
                20035, 25774, 31590, 39036, 46592, 53412, 53788, 45072, 37020, 28324, 14677,
                9444, 6510, 5149, 4345, 3750, 3227, 2795, 2408, 2052, 1794], float)  # fmt: skip

EPIDERMIS_MM = 0.15  # thickness of the melanin-bearing layer
_DIFFUSE_PATH = 1.6  # mean path length of diffuse light through the layer, in thicknesses
# Fitted by `training.skin_calibration.fit_optics` (grid search against measured skin colour).
# Melanin sits in melanosomes, unevenly: path optical depths are Gamma-distributed with this
# shape, so transmission falls as a power of the melanin content, not exponentially (the
# "sieve effect"; it keeps dark skin from turning saturated orange).
MELANIN_PACKING = 1.0
# Light scattered back by the stratum corneum and upper epidermis before it meets the melanin
# of the basal layer (wavelength-flat).
UPPER_EPIDERMIS_REFLECTANCE = 0.025
# Reduced scattering of the dermis at 500 nm (per mm) and the share of it that falls as
# lambda^-4 (Rayleigh scattering by collagen fibrils; Jacques 2013 gives skin a large one): the
# blue it sends back is what keeps skin from looking yellow.
DERMIS_SCATTERING = 5.0
DERMIS_RAYLEIGH_SHARE = 0.9

# Table axes: log10 melanin volume fraction, log10 blood volume fraction, oxygen saturation.
LOG_MELANIN_RANGE = (-3.3, 0.0)
LOG_BLOOD_RANGE = (-3.3, -0.3)
OXYGENATION = (0.3, 0.6, 0.9)
_TABLE_SHAPE = (64, 48)


def _cie_cmf(lam: np.ndarray) -> np.ndarray:
    """`(L, 3)` analytic CIE 1931 2-degree colour matching functions (multi-lobe fit)."""

    def g(mu, s1, s2):
        s = np.where(lam < mu, s1, s2)
        return np.exp(-0.5 * ((lam - mu) / s) ** 2)

    x = 1.056 * g(599.8, 37.9, 31.0) + 0.362 * g(442.0, 16.0, 26.7) - 0.065 * g(501.1, 20.4, 26.2)
    y = 0.821 * g(568.8, 46.9, 40.5) + 0.286 * g(530.9, 16.3, 31.1)
    z = 1.217 * g(437.0, 11.8, 36.0) + 0.681 * g(459.0, 26.0, 13.8)
    return np.stack([x, y, z], -1)


_XYZ_TO_SRGB = np.array(
    [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]
)


@lru_cache(maxsize=1)
def _spectrum_to_rgb() -> np.ndarray:
    """`(L, 3)`: reflectance spectrum -> linear sRGB (equal-energy light, white -> 1)."""
    m = _cie_cmf(WAVELENGTHS) @ _XYZ_TO_SRGB.T
    return m / m.sum(0, keepdims=True)


def _baseline_absorption(lam: np.ndarray) -> np.ndarray:
    return 0.0244 + 8.53 * np.exp(-(lam - 154.0) / 66.2)


def skin_reflectance(
    melanin: np.ndarray, eumelanin_ratio: float, blood: np.ndarray, oxygenation: np.ndarray
) -> np.ndarray:
    """Diffuse reflectance spectra `(..., L)` of skin.

    Args:
        melanin (`(...)`): melanin volume fraction of the epidermis (0.002 very fair .. 0.5 and
            more for the darkest skin).
        eumelanin_ratio (`float`): eumelanin share of the melanin (the rest pheomelanin).
        blood (`(...)`): blood volume fraction of the dermis (0.002 .. 0.2; faces 0.03-0.08).
        oxygenation (`(...)`): haemoglobin oxygen saturation in [0, 1].
    """
    lam = WAVELENGTHS
    eu = 6.6e10 * lam**-3.33
    pheo = 2.9e14 * lam**-4.75
    base = _baseline_absorption(lam)
    m = np.asarray(melanin)[..., None]
    mu_epi = m * (eumelanin_ratio * eu + (1 - eumelanin_ratio) * pheo) + (1 - m) * base
    depth = 2 * _DIFFUSE_PATH * EPIDERMIS_MM * mu_epi  # down and up again
    transmit = (1 + depth / MELANIN_PACKING) ** -MELANIN_PACKING
    # whole blood, 150 g/L of haemoglobin (64.5 kg/mol): per-mm absorption of each form
    per_molar = np.log(10) * 150.0 / 64500.0 / 10.0
    ox = np.asarray(oxygenation)[..., None]
    mu_blood = per_molar * (ox * _HBO2 + (1 - ox) * _HB)
    b = np.asarray(blood)[..., None]
    mu_derm = b * mu_blood + (1 - b) * base
    scatter = DERMIS_SCATTERING * (
        (1 - DERMIS_RAYLEIGH_SHARE) * (lam / 500.0) ** -1.3
        + DERMIS_RAYLEIGH_SHARE * (lam / 500.0) ** -4.0
    )
    ratio = mu_derm / scatter
    dermis = 1 + ratio - np.sqrt(ratio * ratio + 2 * ratio)  # Kubelka-Munk, infinitely thick
    upper = UPPER_EPIDERMIS_REFLECTANCE
    return upper + (0.96 - upper) * transmit * dermis  # 4% is the surface (specular) reflection


def reflectance_to_rgb(spectra: np.ndarray) -> np.ndarray:
    """`(..., L)` reflectance spectra -> `(..., 3)` linear sRGB."""
    return np.clip(spectra @ _spectrum_to_rgb(), 0.0, 1.0)


@lru_cache(maxsize=64)
def _colour_table(eumelanin_ratio: float) -> np.ndarray:
    """`(len(OXYGENATION), Nm, Nb, 3)` float32 linear sRGB over the table axes."""
    lm = np.linspace(*LOG_MELANIN_RANGE, _TABLE_SHAPE[0])
    lb = np.linspace(*LOG_BLOOD_RANGE, _TABLE_SHAPE[1])
    m, b = np.meshgrid(10.0**lm, 10.0**lb, indexing="ij")
    tables = [
        reflectance_to_rgb(skin_reflectance(m, eumelanin_ratio, b, np.full_like(m, ox)))
        for ox in OXYGENATION
    ]
    table = np.stack(tables).astype(np.float32)
    table.setflags(write=False)
    return table


def skin_albedo(
    log_melanin: np.ndarray,
    log_blood: np.ndarray,
    oxygenation: np.ndarray | float,
    eumelanin_ratio: float,
) -> np.ndarray:
    """Linear sRGB diffuse albedo `(H, W, 3)` float32 from chromophore maps.

    Args:
        log_melanin, log_blood (`(H, W)`): log10 volume fractions (clamped to the table).
        oxygenation (`(H, W)` or `float`): in [0.3, 0.9] (clamped).
        eumelanin_ratio (`float`): per face; rounded to 0.02 (the table is cached per value).
    """
    ratio = round(float(np.clip(eumelanin_ratio, 0, 1)) * 50) / 50
    table = _colour_table(ratio)
    nm, nb = _TABLE_SHAPE
    lo_m, hi_m = LOG_MELANIN_RANGE
    lo_b, hi_b = LOG_BLOOD_RANGE
    # table rows = melanin, columns = blood: remap's x is the column, y the row
    map_y = ((np.asarray(log_melanin, np.float32) - lo_m) / (hi_m - lo_m) * (nm - 1)).clip(
        0, nm - 1
    )
    map_x = ((np.asarray(log_blood, np.float32) - lo_b) / (hi_b - lo_b) * (nb - 1)).clip(0, nb - 1)
    slices = [
        cv2.remap(t, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for t in table
    ]
    ox = np.clip(np.asarray(oxygenation, np.float32), OXYGENATION[0], OXYGENATION[-1])
    ox = np.broadcast_to(ox, map_x.shape)
    pos = np.interp(ox, OXYGENATION, np.arange(len(OXYGENATION), dtype=np.float32))
    lo = np.minimum(pos.astype(np.int64), len(OXYGENATION) - 2)
    frac = (pos - lo)[..., None]
    stacked = np.stack(slices)  # (O, H, W, 3)
    rows, cols = np.indices(map_x.shape)
    out = stacked[lo, rows, cols] * (1 - frac) + stacked[lo + 1, rows, cols] * frac
    return out.astype(np.float32)


def cie_lab(albedo_linear: np.ndarray) -> np.ndarray:
    """CIE L*a*b* `(..., 3)` (D65 white: linear sRGB (1, 1, 1)) of linear sRGB colours
    `(..., 3)`."""
    xyz = np.asarray(albedo_linear, np.float64) @ np.linalg.inv(_XYZ_TO_SRGB).T
    t = xyz / (np.linalg.inv(_XYZ_TO_SRGB) @ np.ones(3))
    f = np.where(t > 0.008856, np.cbrt(np.maximum(t, 1e-9)), 7.787 * t + 16 / 116)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


def individual_typology_angle(albedo_linear: np.ndarray) -> np.ndarray:
    """ITA (degrees) of linear sRGB colours `(..., 3)`: `atan((L* - 50) / b*)`, the
    dermatological skin-tone scale (> 55 very light .. < -30 dark)."""
    lab = cie_lab(albedo_linear)
    return np.degrees(np.arctan2(lab[..., 0] - 50, lab[..., 2]))
