"""Skin details of a synthetic face, each painted from its own random stream: pores, micro-relief,
wrinkles, mid-scale relief, freckles / moles / age spots, eyebrow hairs, stubble, eyes and lash
lines (used by `training.reflectance_data.sample_face_maps`).

Heights are in mm (negative = into the skin), coverages in [0, 1], pigment as log10 melanin
offsets; all `(R, R)` float32 maps in our UV layout (row 0 = v ~ 1).
"""

from __future__ import annotations

import cv2
import numpy as np

from training.face_layout import (
    BROW_LOOPS,
    CHIN,
    CHIN_TOP,
    EYE_LOOPS,
    FOREHEAD_TOP,
    GLABELLA,
    NASOLABIAL,
    NOSE_BASE,
    OUTER_EYE_CORNER,
    anchor,
    both_sides,
    eye_lid_arcs,
    gaussian_blur_mm,
    layout_masks,
    loop_uv,
    mirror,
    texel_size_mm,
    to_pixels,
    uv_grid,
    uv_scale_mm,
)
from training.uv_painting import (
    blob,
    curve,
    draw_lines,
    gaussian_spots,
    grooves,
    jittered_points,
    lookup,
    mm,
    mm_grid,
    noise,
)

# Linear albedo of hair: black, dark brown, brown, light brown, blond, red, grey, white.
HAIR_COLORS = np.array(
    [
        [0.014, 0.011, 0.010],
        [0.035, 0.022, 0.015],
        [0.075, 0.042, 0.024],
        [0.15, 0.095, 0.052],
        [0.33, 0.24, 0.13],
        [0.22, 0.075, 0.03],
        [0.30, 0.29, 0.28],
        [0.55, 0.54, 0.52],
    ]
)
# Linear albedo of irises: dark brown, brown, hazel, green, blue, grey.
IRIS_COLORS = np.array(
    [
        [0.035, 0.018, 0.010],
        [0.10, 0.05, 0.022],
        [0.15, 0.11, 0.045],
        [0.09, 0.13, 0.065],
        [0.09, 0.15, 0.23],
        [0.14, 0.15, 0.17],
    ]
)
STREAMS = (
    "params",
    "tone",
    "pores",
    "relief",
    "wrinkles",
    "freckles",
    "moles",
    "brows",
    "stubble",
    "eyes",
    "specular",
    "shape",
    "grain",
)


def stream(seed: int, ood: bool, name: str) -> np.random.Generator:
    """A face's random generator for one component (`STREAMS`): independent streams, so that
    changing how one component draws leaves the others as they were."""
    return np.random.default_rng([int(seed), int(ood), STREAMS.index(name)])


def detail_weight(resolution: int) -> np.ndarray:
    """Where skin details (pores, freckles) may go: the chart less eyes, brows' core and lips."""
    m = layout_masks(resolution)
    away = gaussian_blur_mm(np.clip(m.eyes + m.lips, 0, 1), 1.5, resolution)
    return np.clip(m.chart * (1 - 2 * away), 0, 1)


def pore_height(params, seed, ood, resolution, coarse) -> np.ndarray:
    """Height of pores (<= 0), bigger and denser on the nose and cheeks."""
    rng = stream(seed, ood, "pores")
    pts = jittered_points(rng, params["pore_spacing_mm"])
    keep_p = rng.random(len(pts))
    size_draw = rng.random(len(pts))
    depth_draw = rng.uniform(0.5, 1.5, len(pts))
    lo = 64
    density = detail_weight(lo) * (0.55 + 0.45 * np.clip(coarse["cheeks"] + coarse["nose"], 0, 1))
    ok = keep_p < lookup(density, pts)
    pts, size_draw, depth_draw = pts[ok], size_draw[ok], depth_draw[ok]
    boost = 1 + 0.6 * np.clip(lookup(coarse["nose"], pts), 0, 1)
    height = np.zeros((resolution, resolution), np.float32)
    radius, depth = params["pore_radius_mm"], params["pore_depth_mm"]
    for lo_q, hi_q, scale in ((0.0, 0.5, 0.7), (0.5, 0.85, 1.0), (0.85, 1.0, 1.5)):
        sel = (size_draw >= lo_q) & (size_draw < hi_q)
        height -= gaussian_spots(
            pts[sel], depth * depth_draw[sel] * boost[sel], radius * scale, resolution
        )
    return height


def relief_height(params, seed, ood, resolution) -> np.ndarray:
    """Skin micro-relief: a network of shallow furrows (zero crossings of band-passed noise)
    and a gentle unevenness."""
    rng = stream(seed, ood, "relief")
    band = noise(rng, resolution, 0.45) - 0.7 * noise(rng, resolution, 1.2)
    sd = max(float(band.std()), 1e-6)
    furrows = np.exp(-0.5 * (band / (0.35 * sd)) ** 2) * min(1.0, sd / 0.5)
    uneven = noise(rng, resolution, 4.0)
    return -params["relief_depth_mm"] * (furrows - furrows.mean() - 0.6 * uneven)


def wrinkle_height(params, seed, ood, resolution) -> np.ndarray:
    rng = stream(seed, ood, "wrinkles")
    depth = params["wrinkle_depth_mm"]
    brow_top = max(loop_uv(i)[:, 1].max() for i in BROW_LOOPS)
    top = anchor(FOREHEAD_TOP)[1] - mm(4)
    height = np.zeros((resolution, resolution), np.float32)

    # forehead: horizontal lines following the brows' arch, broken into pieces
    lines = []
    count = int(rng.integers(2, 6))
    for k in range(count):
        v0 = brow_top + mm(6) + (k + rng.uniform(0.2, 0.8)) / count * (top - brow_top - mm(8))
        half = rng.uniform(0.12, 0.22)
        u = np.linspace(0.5 - half, 0.5 + half, 64)
        arch = rng.uniform(-0.5, 0.2) * (u - 0.5) ** 2 + rng.uniform(0.0, 0.01) * np.cos(
            (u - 0.5) / 0.12 * np.pi
        )
        wiggle = sum(
            rng.uniform(0, mm(1.2)) * np.sin(2 * np.pi * (u * f + rng.random())) for f in (3.0, 7.0)
        )
        line = np.stack([u, v0 + arch + wiggle], 1)
        cuts = np.sort(rng.integers(8, 56, int(rng.integers(0, 3))))
        pieces = np.split(line, cuts)
        lines += [p[: max(2, int(len(p) * rng.uniform(0.7, 1.0)))] for p in pieces if len(p) > 4]
    height += grooves(lines, depth, 0.35, resolution)

    # frown lines between the brows
    if rng.random() < 0.3 + 0.5 * params["age"]:
        glabella = anchor(GLABELLA)
        lines = []
        for side in (-1, 1):
            x0 = glabella[0] + side * mm(rng.uniform(3, 7))
            tilt = side * mm(rng.uniform(0, 3))
            lines.append(np.array([[x0, glabella[1] - mm(8)], [x0 + tilt, glabella[1] + mm(8)]]))
        height += grooves(lines, 0.8 * depth, 0.4, resolution)

    # crow's feet: fans from the outer eye corners
    lines = []
    for side, corner in zip((-1, 1), both_sides(OUTER_EYE_CORNER), strict=True):
        n = int(rng.integers(2, 6))
        for ang in np.radians(np.linspace(-35, 35, n) + rng.uniform(-8, 8, n)):
            r0, r1 = rng.uniform(3, 6), rng.uniform(10, 20)
            bend = rng.uniform(-0.15, 0.15)
            t = np.linspace(0, 1, 8)[:, None]
            a = ang + bend * t
            d = np.concatenate([side * np.cos(a), np.sin(a)], 1)
            lines.append(corner + mm(r0 + (r1 - r0) * t) * d)
    height += grooves(lines, depth * 1.1, 0.3, resolution)

    # under-eye lines: the lower lid arc, moved down and shortened
    lines = []
    for loop in EYE_LOOPS:
        _, lower = eye_lid_arcs(loop)
        n = len(lower)
        for k in range(int(rng.integers(1, 3))):
            part = (
                lower[int(0.25 * n) : int(0.9 * n)]
                if loop == 0
                else lower[int(0.1 * n) : int(0.75 * n)]
            )
            lines.append(part - [0, mm(3.5 + 3 * k + rng.uniform(0, 2))])
    height += grooves(lines, 0.8 * depth, 0.3, resolution)

    # nasolabial folds: a broad fold and its crease
    folds = []
    for idx in (NASOLABIAL, tuple(mirror(i) for i in NASOLABIAL)):
        pts = np.stack([anchor(i) for i in idx])
        pts = np.concatenate([pts, pts[-1:] + 0.6 * (pts[-1:] - pts[-2:-1])])
        pts[0] += [mm(-2) if idx[0] == NASOLABIAL[0] else mm(2), 0]
        pts = pts + rng.normal(0, mm(1.0), pts.shape)
        folds.append(curve(pts))
    fold = params["nasolabial_depth_mm"]
    height += grooves(folds, fold, 2.5, resolution) + grooves(folds, 0.4 * fold, 0.5, resolution)

    # lip lines: short vertical grooves across the lips
    lips = loop_uv(4)
    centre = lips.mean(0)
    lines = []
    for _ in range(int(rng.integers(40, 90))):
        p = np.array(
            [
                rng.uniform(lips[:, 0].min(), lips[:, 0].max()),
                rng.uniform(lips[:, 1].min(), lips[:, 1].max()),
            ]  # fmt: skip
        )
        d = np.array([0.25 * (p[0] - centre[0]) / 0.15, 1.0])
        d /= np.linalg.norm(d)
        half = mm(rng.uniform(1.0, 2.2))
        lines.append(np.stack([p - half * d, p + half * d]))
    lip_lines = grooves(lines, 0.04 * params["detail_scale"], 0.15, resolution)
    height += lip_lines * layout_masks(resolution).lips
    return height


def shape_residual_height(params, seed, ood, resolution) -> np.ndarray:
    """Mid-scale relief the mean face's mesh lacks (mm): upper-lid creases, under-eye bags,
    philtrum ridges, the lips' border, the groove above the chin, and gentle bumps."""
    rng = stream(seed, ood, "shape")
    r = resolution
    detail, age = params["detail_scale"], params["age"]
    height = 0.04 * detail * noise(rng, r, 6.0)
    creases, bags = [], []
    for loop in EYE_LOOPS:
        upper, lower = eye_lid_arcs(loop)
        creases.append(upper[1:-1] + [0, mm(rng.uniform(3.0, 5.0))])
        bags.append(lower[1:-1] - [0, mm(rng.uniform(3.5, 5.0))])
    height += grooves(creases, rng.uniform(0.2, 0.5) * detail, 0.8, r)
    height -= grooves(bags, rng.uniform(0.1, 0.3) * (0.5 + age) * detail, 2.0, r)
    lips = loop_uv(4)
    top = lips[:, 1].max()
    nose = anchor(NOSE_BASE)
    ridges = []
    for side in (-1, 1):
        x = 0.5 + side * mm(rng.uniform(3.0, 4.5))
        t = np.linspace(0, 1, 8)[:, None]
        start = np.array([x - side * mm(1.5), nose[1] - mm(7)])
        end = np.array([x, top - mm(2)])
        ridges.append(start + t * (end - start) + [side * mm(0.8), 0] * np.sin(np.pi * t))
    height -= grooves(ridges, rng.uniform(0.1, 0.25) * detail, 1.5, r)
    height -= grooves([np.concatenate([lips, lips[:1]])], 0.12 * detail, 0.5, r)
    bottom = lips[:, 1].min()
    chin = anchor(CHIN_TOP)[1]
    v = 0.5 * (bottom + chin) + rng.normal(0, mm(1.5))
    u = np.linspace(0.5 - mm(18), 0.5 + mm(18), 24)
    sulcus = np.stack([u, v + 3 * (u - 0.5) ** 2], 1)
    height += grooves([sulcus], rng.uniform(0.2, 0.6) * detail, 2.5, r)
    return height.astype(np.float32)


def pigment_spots(params, seed, ood, resolution, coarse) -> tuple[np.ndarray, np.ndarray]:
    """log10 melanin offsets `(R, R)` of freckles, moles, age spots (and vitiligo), and the
    moles' height (mm)."""
    r = resolution
    log_mel = np.zeros((r, r), np.float32)
    height = np.zeros((r, r), np.float32)
    skin_lo = detail_weight(64)
    rng = stream(seed, ood, "freckles")
    n = params["freckles"]
    if n:
        density = skin_lo * np.clip(1.3 * coarse["cheeks"] + coarse["nose"] + 0.3, 0, 1)
        cand = rng.random((n * 6, 2)) * [0.9, 0.7] + [0.05, 0.25]
        keep = rng.random(len(cand)) < lookup(density, cand)
        pts = cand[keep][:n]
        amp = rng.uniform(0.1, 0.45, len(pts))
        size = rng.random(len(pts))
        for lo_q, hi_q, sigma in ((0, 0.6, 0.6), (0.6, 1.01, 1.1)):
            sel = (size >= lo_q) & (size < hi_q)
            log_mel += gaussian_spots(pts[sel], amp[sel], sigma, r)

    rng = stream(seed, ood, "moles")
    spots = []  # (uv, radius_mm, log melanin, raised mm)
    for _ in range(params["moles"]):
        for _try in range(20):
            p = rng.random(2) * [0.9, 0.8] + [0.05, 0.1]
            if lookup(skin_lo, p[None])[0] > 0.9:
                break
        raised = rng.uniform(0.0, 0.35) if rng.random() < 0.5 else 0.0
        spots.append((p, rng.uniform(0.6, 2.2), rng.uniform(0.9, 1.8), raised))
    for _ in range(params["age_spots"]):
        p = rng.random(2) * [0.8, 0.6] + [0.1, 0.3]
        spots.append((p, rng.uniform(2.0, 5.0), rng.uniform(0.2, 0.45), 0.0))
    for p, radius, dark, raised in spots:
        disc = np.zeros((r, r), np.uint8)
        c = np.round(to_pixels(p, r) * 16).astype(np.int32)
        rad = int(round(radius / texel_size_mm(r) * 16))
        cv2.circle(disc, (int(c[0]), int(c[1])), max(rad, 8), 255, -1, cv2.LINE_AA, shift=4)
        disc = gaussian_blur_mm(disc.astype(np.float32) / 255.0, 0.25 * radius, r)
        log_mel += dark * disc
        height += raised * disc
    if params["vitiligo"]:
        patches = noise(rng, r, 15.0) + 0.5 * noise(rng, r, 4.0)
        log_mel -= 1.6 * np.clip((patches - 1.0) * 4, 0, 1)
    return log_mel, height


def brow_hairs(params, seed, ood, resolution):
    """Eyebrow hair coverage and height: strokes rooted in the brow loops, pointing up at the
    inner end and out and along the brow towards the tail."""
    rng = stream(seed, ood, "brows")
    hairs = []
    for loop in BROW_LOOPS:
        poly = loop_uv(loop)
        lo, hi = poly.min(0) - mm(1.5), poly.max(0) + mm(1.5)
        inner_x = lo[0] if abs(lo[0] - 0.5) < abs(hi[0] - 0.5) else hi[0]
        outward = 1.0 if inner_x == lo[0] else -1.0
        n = int(900 * params["brow_density"])
        cand = lo + rng.random((n * 4, 2)) * (hi - lo)
        inside = np.array(
            [
                cv2.pointPolygonTest(poly.astype(np.float32), tuple(map(float, c)), True)
                for c in cand
            ]
        )
        # soft edge: a hair may root up to ~1.5 mm outside the loop, with falling odds
        odds = np.clip(1 + inside / mm(1.5), 0, 1) ** 2
        roots = cand[rng.random(len(cand)) < odds][:n]
        t = np.clip(np.abs(roots[:, 0] - inner_x) / (hi[0] - lo[0]), 0, 1)
        angle = np.radians(80 - 75 * np.clip(t * 2.5, 0, 1) - 25 * np.clip((t - 0.7) / 0.3, 0, 1))
        angle = angle + rng.normal(0, np.radians(10), len(roots))
        length = mm(params["brow_hair_length_mm"] * rng.uniform(0.5, 1.1, len(roots)))
        bend = rng.normal(-0.25, 0.15, len(roots))
        for p, a, ln, b in zip(roots, angle, length, bend, strict=True):
            steps = np.linspace(0, 1, 4)
            a_t = a + b * steps
            d = np.stack([outward * np.cos(a_t), np.sin(a_t)], 1)
            seg = np.cumsum(d * (ln / 3), 0) - d[0] * (ln / 3)
            hairs.append(p + seg)
    grey = rng.random(len(hairs)) < params["grey_hair_fraction"]
    dark = [h for h, g in zip(hairs, grey, strict=True) if not g]
    light = [h for h, g in zip(hairs, grey, strict=True) if g]
    return draw_lines(dark, resolution, 0.1), draw_lines(light, resolution, 0.1)


def stubble_cover(params, seed, ood, resolution, density):
    """Stubble coverage: short hairs on a jittered grid thinned by the beard density."""
    rng = stream(seed, ood, "stubble")
    pts = jittered_points(rng, 1.25)
    keep = rng.random(len(pts)) < lookup(density, pts)
    pts = pts[keep]
    length = mm(params["stubble_length_mm"] * rng.uniform(0.6, 1.2, len(pts)) + 0.1)
    # pointing down, fanning outwards towards the jaw's sides
    ang = np.radians(-90 - 80 * (pts[:, 0] - 0.5) + rng.normal(0, 15, len(pts)))
    d = np.stack([np.cos(ang), np.sin(ang)], 1) * length[:, None]
    strokes = list(np.stack([pts, pts + d], 1))
    return draw_lines(strokes, resolution, 0.13)


def beard_density(params, seed, ood, resolution) -> np.ndarray:
    """Where beard hair grows `(R, R)` in [0, 1], by style, patchy."""
    rng = stream(seed, ood, "stubble")
    r = min(resolution, 128)
    m = layout_masks(r)
    x, y = mm_grid(r)
    mouth_chin = blob(x, y, (anchor(CHIN)[0], 0.5 * (anchor(CHIN)[1] + anchor(NOSE_BASE)[1])),
                       22.0, 30.0)  # fmt: skip
    style = params["beard_style"]
    area = m.beard
    if style == 1:
        area = area * np.clip(mouth_chin * 1.6, 0, 1)
    elif style == 2:
        area = area * np.clip(mouth_chin * 1.2 + blob(x, y, anchor(CHIN), 15.0), 0, 1)
    patchy = np.clip(0.75 + 0.35 * noise(rng, r, 12.0), 0, 1)
    return (area * patchy).astype(np.float32)


def eye_albedo(params, seed, ood, resolution):
    """Eyeball albedo `(R, R, 3)` (linear) for the eye loops: sclera with redder corners, an
    iris with radial streaks and a dark limbal ring, the pupil."""
    rng = stream(seed, ood, "eyes")
    r = resolution
    sclera = np.array([0.50, 0.44, 0.40]) * rng.uniform(0.75, 1.0)
    iris_rgb = IRIS_COLORS[params["iris_color"]] * rng.uniform(0.8, 1.2)
    out = np.empty((r, r, 3), np.float32)
    out[:] = sclera
    # only the band of rows holding the eyes is painted
    polys = [loop_uv(loop) for loop in EYE_LOOPS]
    v_hi = max(p[:, 1].max() for p in polys) + mm(3)
    v_lo = min(p[:, 1].min() for p in polys) - mm(3)
    y0, y1 = max(0, int((1 - v_hi) * r)), min(r, int(np.ceil((1 - v_lo) * r)) + 1)
    u, v = (g[y0:y1] for g in uv_grid(r))
    band = out[y0:y1]
    harmonics = np.arange(1, 40)
    for poly in polys:
        centre = poly.mean(0) + mm(rng.normal(0, 0.7, 2))
        du, dv = (u - centre[0]) * uv_scale_mm(), (v - centre[1]) * uv_scale_mm()
        dist = np.sqrt(du**2 + dv**2)
        near = dist < 7.0
        theta = np.arctan2(dv[near], du[near])[:, None]
        coef = rng.normal(0, 1, (2, len(harmonics))) / np.sqrt(harmonics)
        streaks = np.cos(theta * harmonics) @ coef[0] + np.sin(theta * harmonics) @ coef[1]
        streaks = streaks / max(float(streaks.std()), 1e-6)
        d = dist[near][:, None]
        iris = iris_rgb * (1 + 0.3 * streaks[:, None]) * (1 - 0.5 * np.clip(d - 4.8, 0, 1))
        iris = np.where(d < params["pupil_radius_mm"], 0.01, iris)
        w = np.clip((6.0 - d) / 0.4, 0, 1)
        corner = np.clip(np.abs(du) / 14.0 - 0.5, 0, 1)[..., None] * (np.abs(du) < 20)[..., None]
        band *= 1 - 0.3 * corner * np.array([0.2, 0.6, 0.7], np.float32)  # redder corners
        band[near] = band[near] * (1 - w) + iris * w
    return out


def lash_cover(resolution: int) -> np.ndarray:
    """Coverage of the lash lines along the lids: a dark upper line, a thinner lower one."""
    lash = np.zeros((resolution, resolution), np.float32)
    for loop in EYE_LOOPS:
        upper, lower = eye_lid_arcs(loop)
        lash = np.maximum(lash, draw_lines([upper], resolution, 0.9))
        lash = np.maximum(lash, draw_lines([lower], resolution, 0.35))
    return lash
