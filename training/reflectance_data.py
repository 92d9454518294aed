"""Synthetic facial reflectance maps in our UV layout: procedural, physically motivated.

`sample_face_maps(seed)` draws one face's parameters and paints its maps:

- *Skin colour* from melanin and blood concentrations through a two-layer absorption model
  (`training.skin_color`). The face's melanin is drawn uniformly in log space within one of six
  bands chosen with equal odds, one per Fitzpatrick type (I..VI, bounded by the
  individual-typology-angle thresholds), so the data is balanced over skin tones.
- *Regions* (anchored on the topology's landmarks and skin-exclusion loops): redder cheeks and
  nose (blood), lips (much more blood, less melanin), darker and bluer skin around the eyes
  (melanin, deoxygenated blood), an oilier T-zone (higher specular); small random asymmetries.
- *Details* (`training.skin_details`) with physical sizes (texel size from the mean face's
  area over its UV area, `training.face_layout.uv_scale_mm`): skin micro-relief, pores (pits
  with less specular), wrinkles (forehead lines, frown lines, crow's feet, under-eye lines,
  nasolabial folds, lip lines), mid-scale relief the mean mesh lacks (lid creases, philtrum),
  freckles, moles, age spots, eyebrow hairs (dark, low specular), and for some faces stubble
  and beard shadow. Features are placed in continuous UV from the seed, independently of the
  resolution, and drawn area-averaged, so a face keeps its identity across resolutions
  (sub-texel detail fades rather than aliases).
- *Normals*: specular normals from the gradient of the detail height field (mm over mm, tangent
  space: +x along +u, +y along +v, +z out of the skin), diffuse normals the same from the height
  blurred by the diffuse light's scattering distance (`DIFFUSE_NORMAL_BLUR_MM`).

Specular albedo is in the shader's units (`rendering.shading`): skin about 0.05-0.25 (the oily
T-zone highest; the photometric fit measures 0.07-0.08 on real photos), hair and stubble about
0.02-0.05, eyes 0.15-0.3 (wet, but the shader has one broad lobe for everything).

>>> maps = sample_face_maps(7, resolution=256)
>>> maps["diffuse_albedo"].shape, maps["specular_albedo"].shape
((256, 256, 3), (256, 256, 1))
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from rendering.color import linear_to_srgb
from rendering.mesh import encode_normals
from training.face_layout import (
    ALA,
    CHEEK,
    CHIN_TOP,
    FOREHEAD,
    LOWER_CHEEK,
    NOSE_BASE,
    NOSE_TIP,
    OUTER_EYE_CORNER,
    LayoutMasks,
    anchor,
    both_sides,
    gaussian_blur_mm,
    layout_masks,
    texel_size_mm,
    uv_scale_mm,
)
from training.skin_color import skin_albedo
from training.skin_details import (
    HAIR_COLORS,
    beard_density,
    brow_hairs,
    eye_albedo,
    lash_cover,
    pigment_spots,
    pore_height,
    relief_height,
    shape_residual_height,
    stream,
    stubble_cover,
    wrinkle_height,
)
from training.uv_painting import blob, blob_pair, fbm, mm_grid, noise

__all__ = [
    "sample_face_maps",
    "sample_parameters",
    "height_to_normals",
    "FITZPATRICK_LOG_MELANIN",
    "DIFFUSE_NORMAL_BLUR_MM",
]

# log10 melanin volume fraction per Fitzpatrick type I..VI: the bands whose faces' face-mean ITA
# (`training.skin_calibration`) falls in the ITA categories very light (> 55), light, intermediate,
# tan, brown and dark (< -30) of Chardon et al. 1991, from a cubic fit of ITA over log melanin
# on 150 faces (ITA 68 at the lightest end, -60 at the darkest).
FITZPATRICK_LOG_MELANIN = (
    (-2.9, -2.0),
    (-2.0, -1.68),
    (-1.68, -1.45),
    (-1.45, -1.18),
    (-1.18, -0.68),
    (-0.68, -0.3),
)
OOD_LOG_MELANIN = ((-3.3, -2.95), (-0.3, -0.05))

# Diffuse light leaves the skin about a millimetre from where it entered (green/blue scattering
# distance), which smooths the normals the diffuse shading sees.
DIFFUSE_NORMAL_BLUR_MM = 1.0
_MACRO_RESOLUTION = 256  # smooth (region, tone) fields are painted at most this fine


# ---------------------------------------------------------------------------------------------
# Parameters


def sample_parameters(seed: int, ood: bool = False) -> dict:
    """The scalar parameters of one face (JSON-friendly floats, ints and bools).

    With `ood=True` they come from outside the training ranges: melanin beyond the lightest or
    darkest band, 2.5-4x the detail amplitudes, strong left/right asymmetry, extreme specular,
    unusual hair, many moles, vitiligo patches on half the faces.
    """
    rng = stream(seed, ood, "params")
    u = rng.uniform
    fitz = int(rng.integers(1, 7))
    band = FITZPATRICK_LOG_MELANIN[fitz - 1]
    if ood:
        band = OOD_LOG_MELANIN[int(rng.integers(2))]
        fitz = 1 if band[0] < -2.9 else 6
    log_melanin = u(*band)
    darkness = float(np.clip((log_melanin + 2.9) / 2.6, 0, 1))  # 0 fairest .. 1 darkest
    age = u(0.1, 0.95)
    male = bool(rng.random() < 0.5)
    stubble = male and bool(rng.random() < 0.6)
    # hair colour: dark for dark skin, the whole palette for fair skin
    hair_weights = np.array([1.0 + 4 * darkness, 2.0, 2.0, 1.5, 1.2, 0.6, 0, 0]) * np.array(
        [1, 1, 1, 1 - darkness, (1 - darkness) ** 2, (1 - darkness) ** 2, 0, 0]
    )
    hair = int(rng.choice(8, p=hair_weights / hair_weights.sum()))
    iris_weights = np.array([1 + 6 * darkness, 2, 1, 1 - darkness, 2 * (1 - darkness) ** 2, 0.5])
    iris = int(rng.choice(6, p=iris_weights / iris_weights.sum()))
    detail = u(2.5, 4.0) if ood else 1.0
    params = {
        "fitzpatrick": fitz,
        "log_melanin": log_melanin,
        "eumelanin_ratio": u(0.65, 0.95) if not ood else u(0.2, 1.0),
        "log_blood": u(-1.5, -1.1) if not ood else u(-1.9, -0.8),
        "oxygenation": u(0.55, 0.85),
        "cheek_flush": u(0.05, 0.55),
        "nose_redness": u(0.0, 0.4),
        "lip_blood": u(0.7, 1.1),
        "lip_melanin": u(-0.45, 0.05),
        "periorbital_melanin": u(0.1, 0.3) + 0.2 * darkness * rng.random(),
        "periorbital_deoxygenation": u(0.1, 0.4),
        "melanin_mottling": u(0.02, 0.06),
        "blood_blotchiness": u(0.03, 0.08),
        "age": age,
        "male": male,
        "asymmetry": u(0.4, 0.8) if ood else u(0.0, 0.15),
        "detail_scale": detail,
        "pore_spacing_mm": u(0.9, 1.5),
        "pore_depth_mm": u(0.03, 0.07) * (0.7 + 0.6 * age) * detail,
        "pore_radius_mm": u(0.09, 0.15) * (0.8 + 0.4 * age),
        "relief_depth_mm": u(0.015, 0.035) * detail,
        "wrinkle_depth_mm": u(0.03, 0.1) * (0.2 + age**1.5) * detail,
        "nasolabial_depth_mm": u(0.08, 0.25) * (0.3 + age) * detail,
        "freckles": int(rng.integers(60, 700)) if rng.random() < 0.45 * (1 - darkness) else 0,
        "moles": int(rng.poisson(12 if ood else 2.5)),
        "age_spots": int(rng.poisson(6 * max(age - 0.55, 0))),
        "vitiligo": bool(ood and rng.random() < 0.5),
        "hair_color": hair if not ood else int(rng.choice([4, 5, 6, 7])),
        "grey_hair_fraction": float(np.clip(age - 0.55, 0, 1) * rng.random()),
        "brow_density": u(0.6, 1.0) if male else u(0.35, 0.85),
        "brow_hair_length_mm": u(5.0, 9.0),
        "stubble": stubble,
        "stubble_length_mm": u(0.15, 2.5) if stubble else 0.0,
        "stubble_density": u(0.5, 1.0) if stubble else 0.0,
        "beard_style": int(rng.choice(3, p=[0.6, 0.2, 0.2])),  # full, goatee, chin + mustache
        "beard_shadow": u(0.05, 0.3) if male else 0.0,
        "iris_color": iris,
        "pupil_radius_mm": u(1.5, 3.0),
        # the project shader's units; the photometric fit measures 0.07-0.08 on real photos
        # (face_recognition's obama.jpg, obama_partial_face.jpg), so skin spans 0.05-0.16
        "specular": u(0.05, 0.16) if not ood else float(rng.choice([u(0.01, 0.03), u(0.3, 0.5)])),
        "oiliness": u(0.1, 0.6),
        "lip_shine": u(1.0, 1.3),
        "hair_specular": u(0.02, 0.05),
        "eye_specular": u(0.15, 0.3),
    }
    return params


# ---------------------------------------------------------------------------------------------
# Components


def _tone_fields(params: dict, seed: int, ood: bool, resolution: int):
    """Smooth log10 melanin / blood offsets, oxygenation, T-zone and region masks, painted at
    up to `_MACRO_RESOLUTION` and resized."""
    rng = stream(seed, ood, "tone")
    r = min(resolution, _MACRO_RESOLUTION)
    x, y = mm_grid(r)
    m = layout_masks(r)
    asym = params["asymmetry"]

    def gains():
        return 1 + asym * rng.uniform(-1, 1, 2)

    skin = 1 - np.clip(m.eyes + m.lips, 0, 1)
    cheeks = blob_pair(x, y, CHEEK, 16.0, gains(), 13.0, offset_mm=(2.0, -4.0))
    cheeks = cheeks + 0.6 * blob_pair(x, y, LOWER_CHEEK, 12.0, gains())
    nose = blob(x, y, anchor(NOSE_TIP), 7.0, 9.0) + 0.7 * blob_pair(x, y, ALA, 5.0, gains())
    nose = nose + 0.3 * blob(x, y, anchor(NOSE_BASE), 6.0)
    chin = blob(x, y, anchor(CHIN_TOP), 14.0, 10.0)
    forehead = blob(x, y, anchor(FOREHEAD), 38.0, 16.0)
    # around the eyes: distance to the eye openings, stronger below (dark circles)
    eyes_big = cv2.resize(m.eyes, (r, r)) if m.eyes.shape[0] != r else m.eyes
    dist = cv2.distanceTransform((eyes_big < 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    dist_mm = dist * texel_size_mm(r)
    ring = np.exp(-0.5 * (dist_mm / 6.0) ** 2) * (1 - eyes_big)
    below = np.clip(0.5 - sum(blob(x, y, c, 18.0, 6.0) for c in both_sides(OUTER_EYE_CORNER)), 0, 1)
    ring = ring * (0.6 + 0.8 * below)
    ring_gain = np.where(x > 0.5 * uv_scale_mm(), *gains()[::-1]).astype(np.float32)
    ring = ring * ring_gain
    lips = gaussian_blur_mm(m.lips, 0.6, r)

    log_mel = params["melanin_mottling"] * fbm(rng, r, (30.0, 8.0, 2.5), (0.35, 0.5, 0.6))
    log_mel += params["periorbital_melanin"] * ring
    log_mel += params["lip_melanin"] * lips
    log_mel += 0.05 * forehead - 0.04 * cheeks  # sun-exposed forehead, lighter cheeks
    log_blood = params["blood_blotchiness"] * fbm(rng, r, (25.0, 5.0, 1.5), (0.5, 0.5, 0.4))
    log_blood += params["cheek_flush"] * cheeks + params["nose_redness"] * nose
    log_blood += 0.1 * chin - 0.08 * forehead + 0.12 * ring
    log_blood = log_blood * (1 - lips) + params["lip_blood"] * lips
    oxygenation = params["oxygenation"] - params["periorbital_deoxygenation"] * ring
    oxygenation = oxygenation + 0.1 * lips

    midline = np.exp(-0.5 * ((x - 0.5 * uv_scale_mm()) / 9.0) ** 2)
    bridge = midline * np.clip((y - anchor(NOSE_TIP)[1] * uv_scale_mm()) / 10.0 + 1, 0, 1)
    tzone = np.clip(forehead * 1.2 + bridge + 0.8 * nose + 0.7 * chin, 0, 1) * skin
    fields = {
        "log_melanin": log_mel,
        "log_blood": log_blood,
        "oxygenation": oxygenation,
        "tzone": tzone,
        "cheeks": cheeks,
        "nose": nose,
    }
    if r != resolution:
        size = (resolution, resolution)
        fields = {k: cv2.resize(f, size, interpolation=cv2.INTER_LINEAR) for k, f in fields.items()}
    return {k: f.astype(np.float32) for k, f in fields.items()}


# ---------------------------------------------------------------------------------------------
# Normals


def height_to_normals(height_mm: np.ndarray, texel_mm: float) -> np.ndarray:
    """Tangent-space unit normals `(R, R, 3)` of a height field (mm) whose texels are
    `texel_mm` wide: +x along +u (columns), +y along +v (up the rows), +z out of the skin."""
    h = np.pad(height_mm.astype(np.float64), 1, mode="edge")
    dh_du = (h[1:-1, 2:] - h[1:-1, :-2]) / (2 * texel_mm)
    dh_dv = -(h[2:, 1:-1] - h[:-2, 1:-1]) / (2 * texel_mm)  # rows grow downwards, v upwards
    n = np.stack([-dh_du, -dh_dv, np.ones_like(dh_du)], -1)
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The face


@dataclass(frozen=True, eq=False)
class _Hair:
    """One face's hair, float32 `(R, R)` maps.

    Attributes:
        brows, grey_brows: cover of the dark and the grey eyebrow hairs.
        beard: where beard hair grows, in [0, 1] (also for a face without stubble: its shadow).
        stubble: cover of the stubble (0 without).
        cover: all hair's cover, in [0, 1].
    """

    brows: np.ndarray
    grey_brows: np.ndarray
    beard: np.ndarray
    stubble: np.ndarray
    cover: np.ndarray


@dataclass(frozen=True, eq=False)
class _Overlays:
    """What changes both the diffuse and the specular albedo of the bare skin, `(R, R)` in
    [0, 1]: pore pits (`pore_pit`), shaved skin's beard shadow (`shadow`), the eyes with a soft
    edge (`eyes`) and the lashes (`lash`)."""

    pore_pit: np.ndarray
    shadow: np.ndarray
    eyes: np.ndarray
    lash: np.ndarray


def _skin_height(
    params: dict,
    seed: int,
    ood: bool,
    masks: LayoutMasks,
    pores: np.ndarray,
    mole_height: np.ndarray,
) -> np.ndarray:
    """Detail height (mm) `(R, R)` of the bare skin, eyes included: `pores` and `mole_height`
    `(R, R)` plus micro-relief (shallower on the lips), wrinkles and the mid-scale relief the
    mean mesh lacks."""
    r = pores.shape[0]
    return (
        pores
        + relief_height(params, seed, ood, r) * (1 - 0.6 * masks.lips)
        + wrinkle_height(params, seed, ood, r)
        + mole_height
        + shape_residual_height(params, seed, ood, r)
    )


def _hair(params: dict, seed: int, ood: bool, resolution: int) -> _Hair:
    """Eyebrow hairs, the beard area and (for faces with `params["stubble"]`) stubble."""
    r = resolution
    brow_cover, brow_grey = brow_hairs(params, seed, ood, r)
    beard = beard_density(params, seed, ood, r)
    beard = (
        cv2.resize(beard, (r, r), interpolation=cv2.INTER_LINEAR) if beard.shape[0] != r else beard
    )
    if params["stubble"]:
        beard_full = beard * params["stubble_density"]
        stubble = stubble_cover(params, seed, ood, r, cv2.resize(beard_full, (64, 64)))
    else:
        stubble = np.zeros((r, r), np.float32)
    cover = np.clip(brow_cover + brow_grey + stubble, 0, 1)
    return _Hair(brows=brow_cover, grey_brows=brow_grey, beard=beard, stubble=stubble, cover=cover)


def _zero_mean_on_skin(height: np.ndarray, masks: LayoutMasks, not_eye: np.ndarray) -> np.ndarray:
    """`height` `(R, R)` less its mean over the skin (the chart less the eyes), the offset
    faded out on the eyes as `not_eye` `(R, R)` does."""
    skin_px = (masks.chart > 0) & (masks.eyes < 0.5)
    return height - float(height[skin_px].mean()) * not_eye


def _overlays(params: dict, pores: np.ndarray, hair: _Hair, masks: LayoutMasks) -> _Overlays:
    """The `_Overlays` of a face with pore height `pores` `(R, R)` (mm, <= 0)."""
    r = pores.shape[0]
    return _Overlays(
        pore_pit=np.clip(-pores / max(params["pore_depth_mm"], 1e-6), 0, 1),
        shadow=(params["beard_shadow"] + 0.5 * params["stubble_density"]) * hair.beard,
        eyes=gaussian_blur_mm(masks.eyes, 0.2, r),
        lash=lash_cover(r),
    )


def _bare_skin_albedo(
    params: dict, seed: int, ood: bool, tone: dict, spot_melanin: np.ndarray
) -> np.ndarray:
    """Linear diffuse albedo `(R, R, 3)` of the bare skin from its melanin (the face's, the
    regions' `tone`, the pigment spots `spot_melanin` `(R, R)` and a fine grain) and blood."""
    r = spot_melanin.shape[0]
    grain = 0.05 * noise(stream(seed, ood, "grain"), r, 0.7)
    log_mel = params["log_melanin"] + tone["log_melanin"] + spot_melanin + grain
    log_blood = params["log_blood"] + tone["log_blood"]
    return skin_albedo(log_mel, log_blood, tone["oxygenation"], params["eumelanin_ratio"])


def _diffuse_albedo(
    skin: np.ndarray,
    params: dict,
    seed: int,
    ood: bool,
    masks: LayoutMasks,
    hair: _Hair,
    over: _Overlays,
) -> np.ndarray:
    """Linear diffuse albedo `(R, R, 3)`: the bare `skin` `(R, R, 3)` darkened in the pores,
    the beard shadow and the mouth, under the hairs, the eyes and the lashes."""
    r = skin.shape[0]
    albedo = skin * (1 - 0.15 * over.pore_pit)[..., None]
    albedo = albedo * (1 - over.shadow[..., None] * np.array([0.45, 0.38, 0.25], np.float32))
    albedo = albedo * (1 - 0.45 * masks.mouth)[..., None]
    hair_rgb = HAIR_COLORS[params["hair_color"]].astype(np.float32)
    grey_rgb = HAIR_COLORS[7].astype(np.float32)
    albedo = (
        albedo * (1 - hair.cover[..., None]) + (hair.brows + hair.stubble)[..., None] * hair_rgb
    )
    albedo = albedo + hair.grey_brows[..., None] * grey_rgb
    eyes = over.eyes[..., None]
    albedo = albedo * (1 - eyes) + eye_albedo(params, seed, ood, r) * eyes
    lash_rgb = np.sqrt(hair_rgb * HAIR_COLORS[1].astype(np.float32))  # lashes run darker
    return albedo * (1 - over.lash[..., None]) + over.lash[..., None] * lash_rgb


def _specular_albedo(
    params: dict, seed: int, ood: bool, tone: dict, masks: LayoutMasks, hair: _Hair, over: _Overlays
) -> np.ndarray:
    """Specular albedo `(R, R)` (shader units): the skin's, higher on the oily T-zone and the
    lips, lower in the pores, on shaved skin and in the mouth, and the hair's and the eyes'."""
    r = over.pore_pit.shape[0]
    rng = stream(seed, ood, "specular")
    spec = params["specular"] * (1 + params["oiliness"] * tone["tzone"])
    spec = (
        spec
        * (1 + 0.05 * noise(rng, r, 8.0) + 0.08 * noise(rng, r, 1.5))
        * (1 - 0.55 * over.pore_pit)
    )
    lips_soft = gaussian_blur_mm(masks.lips, 0.5, r)
    # shaved skin is rougher (a lower, broader lobe: with one shininess, a lower albedo)
    rough = 0.25 * over.shadow + 0.4 * params["stubble_density"] * hair.beard
    spec = spec * (1 + (params["lip_shine"] - 1) * lips_soft) * (1 - rough)
    spec = spec * (1 - 0.6 * masks.mouth)  # the dark gap between the lips
    spec = spec * (1 - hair.cover) + params["hair_specular"] * hair.cover
    spec = spec * (1 - over.lash) + params["hair_specular"] * over.lash
    return spec * (1 - over.eyes) + params["eye_specular"] * over.eyes


def _normal_maps(height: np.ndarray, texel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """`(specular, diffuse)` tangent-space unit normals `(R, R, 3)` of the detail `height`
    `(R, R)` (mm); the diffuse ones from the height blurred by `DIFFUSE_NORMAL_BLUR_MM`."""
    blurred = gaussian_blur_mm(height.astype(np.float32), DIFFUSE_NORMAL_BLUR_MM, height.shape[0])
    return height_to_normals(height, texel_mm), height_to_normals(blurred, texel_mm)


def sample_face_maps(seed: int, resolution: int = 256, ood: bool = False) -> dict:
    """Paint one synthetic face's reflectance maps in our UV layout.

    Args:
        seed (`int`): the face; the same seed gives the same maps (and at another resolution
            the same face, with the detail finer or coarser).
        resolution (`int`): R (>= 32).
        ood (`bool`): draw the parameters from outside the training ranges
            (`sample_parameters`).

    Returns:
        `dict` of float32 maps, row 0 = v ~ 1:
            `diffuse_albedo` `(R, R, 3)` sRGB-encoded in [0, 1];
            `specular_albedo` `(R, R, 1)` linear, shader units;
            `height` `(R, R)` detail height in mm (0 mean on the skin);
            `specular_normals`, `diffuse_normals` `(R, R, 3)` tangent space, (n + 1) / 2;
        and `params` (`dict`): the sampled parameters plus `texel_size_mm`.

    >>> maps = sample_face_maps(0, resolution=128)
    >>> maps["params"]["fitzpatrick"] in range(1, 7)
    True
    """
    if not isinstance(resolution, (int, np.integer)) or resolution < 32:
        raise ValueError(f"resolution must be an integer >= 32, got {resolution!r}")
    r = int(resolution)
    params = sample_parameters(seed, ood)
    texel = texel_size_mm(r)
    masks = layout_masks(r)
    tone = _tone_fields(params, seed, ood, r)
    # coarse copies for thinning point sets (pores, freckles) independently of the resolution
    coarse = {
        k: cv2.resize(tone[k], (64, 64), interpolation=cv2.INTER_AREA) for k in ("cheeks", "nose")
    }
    pores = pore_height(params, seed, ood, r, coarse)
    spot_melanin, mole_height = pigment_spots(params, seed, ood, r, coarse)
    not_eye = 1 - gaussian_blur_mm(masks.eyes, 0.3, r)
    skin_height = _skin_height(params, seed, ood, masks, pores, mole_height) * not_eye
    hair = _hair(params, seed, ood, r)
    height = _zero_mean_on_skin(skin_height + 0.05 * hair.cover, masks, not_eye)
    over = _overlays(params, pores, hair, masks)
    skin = _bare_skin_albedo(params, seed, ood, tone, spot_melanin)
    albedo = _diffuse_albedo(skin, params, seed, ood, masks, hair, over)
    spec = _specular_albedo(params, seed, ood, tone, masks, hair, over)
    specular_normals, diffuse_normals = _normal_maps(height, texel)
    return {
        "diffuse_albedo": linear_to_srgb(np.clip(albedo, 0, 1)),
        "specular_albedo": np.clip(spec, 0, 1).astype(np.float32)[..., None],
        "height": height.astype(np.float32),
        "specular_normals": encode_normals(specular_normals),
        "diffuse_normals": encode_normals(diffuse_normals),
        "params": dict(params, texel_size_mm=texel),
    }
