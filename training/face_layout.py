"""Where things are in our UV layout, and how big a texel is on the face.

Anchors are MediaPipe landmark indices on the subject's right (their mirror partners come from
the topology's symmetry map); masks are rasterized from the topology's `skin_exclusion` loops
(eyes, brows, lips) and from landmark polylines (beard line, inner lips), cached per resolution.
UV coordinates follow `rendering.camera`: origin bottom-left, row 0 of a map is v = 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from modeling.face_model.topology import NUM_LANDMARKS, Topology, load_topology
from modeling.reconstruction.texture import uv_atlas
from rendering.mesh import face_normals

# Order of `Topology.skin_exclusion` (see scripts/build_topology.py).
EYE_LOOPS, BROW_LOOPS, LIPS_LOOP = (0, 1), (2, 3), 4
# Subject's right-side anchors (landmark indices).
CHEEK, LOWER_CHEEK = 50, 205
NOSE_TIP, NOSE_BASE, NOSE_BRIDGE, NOSE_ROOT = 4, 1, 6, 168
ALA = 129
GLABELLA, FOREHEAD, FOREHEAD_TOP = 9, 151, 10
CHIN, CHIN_TOP = 152, 199
OUTER_EYE_CORNER, INNER_EYE_CORNER = 33, 133
MOUTH_CORNER = 61
# Beard line from the sideburn to the philtrum, subject's right.
BEARD_LINE = (127, 137, 147, 187, 207, 206, 203, 98, 97, 2)
# Nasolabial fold from the nose wing down past the mouth corner, subject's right.
NASOLABIAL = (129, 206, 216, 212)
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178,
              88, 95)  # fmt: skip


@lru_cache(maxsize=1)
def uv_scale_mm(topology: Topology | None = None) -> float:
    """Millimetres on the mean face per unit of UV (square root of the dense mesh's area over
    its UV area; about 245 mm: a 256 map has ~0.96 mm texels, a 1024 map ~0.24 mm)."""
    topology = topology or load_topology()
    verts = topology.lift(topology.frontal_shape[:NUM_LANDMARKS])
    faces = topology.dense_faces
    area = 0.5 * np.linalg.norm(face_normals(verts, faces, normalize=False), axis=1).sum()
    uv = topology.dense_uvs
    e1, e2 = uv[faces[:, 1]] - uv[faces[:, 0]], uv[faces[:, 2]] - uv[faces[:, 0]]
    uv_area = 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).sum()
    return float(np.sqrt(area / uv_area) * 1000.0)


def texel_size_mm(resolution: int) -> float:
    """Size of one texel of an R x R map on the mean face, in mm."""
    return uv_scale_mm() / resolution


def mirror(index: int) -> int:
    """The subject's-left partner of a landmark."""
    return int(load_topology().base_symmetry[index])


def anchor(index: int) -> np.ndarray:
    """`(2,)` UV of a base vertex."""
    return np.asarray(load_topology().base_uvs[index], np.float64)


def both_sides(index: int) -> np.ndarray:
    """`(2, 2)` UV of a landmark and of its mirror partner."""
    return np.stack([anchor(index), anchor(mirror(index))])


def to_pixels(uv: np.ndarray, resolution: int) -> np.ndarray:
    """UV `(..., 2)` -> continuous pixel coordinates `(x, y)` of an R x R map."""
    uv = np.asarray(uv, np.float64)
    return np.stack([uv[..., 0] * resolution, (1 - uv[..., 1]) * resolution], -1)


def fill_polygons(polygons_uv: list[np.ndarray], resolution: int) -> np.ndarray:
    """`(R, R)` float32 mask of the union of UV polygons (anti-aliased edges)."""
    canvas = np.zeros((resolution, resolution), np.uint8)  # OpenCV anti-aliases 8-bit only
    pts = [np.round(to_pixels(p, resolution) * 16).astype(np.int32) for p in polygons_uv]
    cv2.fillPoly(canvas, pts, 255, lineType=cv2.LINE_AA, shift=4)
    return canvas.astype(np.float32) / 255.0


def loop_uv(loop: int) -> np.ndarray:
    """`(K, 2)` UV polygon of one of the topology's skin-exclusion loops."""
    topology = load_topology()
    return np.asarray(topology.base_uvs[topology.skin_exclusion[loop]], np.float64)


def eye_lid_arcs(loop: int) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lid polylines `(K, 2)` of an eye loop, from corner to corner."""
    pts = loop_uv(loop)
    a, b = int(np.argmin(pts[:, 0])), int(np.argmax(pts[:, 0]))
    rolled = np.roll(pts, -a, axis=0)
    b = (b - a) % len(pts)
    first, second = rolled[: b + 1], np.concatenate([rolled[b:], rolled[:1]])[::-1]
    if first[:, 1].mean() >= second[:, 1].mean():
        return first, second
    return second, first


def beard_polygon() -> np.ndarray:
    """UV polygon of the beard area: below the beard line on both sides, down past the chin
    (closed outside the chart so the chart's border never cuts it)."""
    right = np.stack([anchor(i) for i in BEARD_LINE])
    left = np.stack([anchor(mirror(i)) for i in BEARD_LINE])[::-1]
    bottom = np.array([[1.02, right[0, 1]], [1.02, -0.02], [-0.02, -0.02], [-0.02, right[0, 1]]])
    return np.concatenate([right, left[1:], bottom])


def _closed_curve(points_uv: np.ndarray, per_segment: int = 6) -> np.ndarray:
    """Closed Catmull-Rom curve through a polygon's vertices (rounds its corners)."""
    p = np.asarray(points_uv, np.float64)
    t = np.linspace(0, 1, per_segment, endpoint=False)[:, None]
    out = []
    for i in range(len(p)):
        p0, p1, p2, p3 = p[i - 1], p[i], p[(i + 1) % len(p)], p[(i + 2) % len(p)]
        out.append(
            0.5
            * (
                2 * p1
                + (p2 - p0) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (3 * p1 - p0 - 3 * p2 + p3) * t**3
            )
        )
    return np.concatenate(out)


@dataclass(frozen=True)
class LayoutMasks:
    """Fixed masks `(R, R)` float32 of one resolution (smooth where noted).

    Attributes:
        chart: texels covered by the mesh (hard).
        eyes, brows, lips: the skin-exclusion loops, filled (anti-aliased).
        mouth: inside the inner lip contour.
        beard: the beard area less the lips (blurred ~3 mm).
        forehead: above the brows (blurred).
    """

    chart: np.ndarray
    eyes: np.ndarray
    brows: np.ndarray
    lips: np.ndarray
    mouth: np.ndarray
    beard: np.ndarray
    forehead: np.ndarray


def gaussian_blur_mm(image: np.ndarray, sigma_mm: float, resolution: int) -> np.ndarray:
    """Gaussian blur with a standard deviation given in mm on the face (no-op below 0.3 texel)."""
    sigma = sigma_mm / texel_size_mm(resolution)
    if sigma < 0.3:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


@lru_cache(maxsize=8)
def layout_masks(resolution: int) -> LayoutMasks:
    r = resolution
    chart = uv_atlas(max(r, 64)).chart
    if chart.shape[0] != r:
        chart = cv2.resize(chart.astype(np.uint8), (r, r), interpolation=cv2.INTER_NEAREST) > 0
    eyes = fill_polygons([loop_uv(i) for i in EYE_LOOPS], r)
    brows = fill_polygons([loop_uv(i) for i in BROW_LOOPS], r)
    lips = fill_polygons([loop_uv(LIPS_LOOP)], r)
    inner = np.stack([anchor(i) for i in INNER_LIPS])
    mouth = gaussian_blur_mm(fill_polygons([_closed_curve(inner)], r), 0.8, r)
    beard = fill_polygons([beard_polygon()], r)
    beard = gaussian_blur_mm(beard, 3.0, r) * (1 - gaussian_blur_mm(lips, 1.0, r))
    brow_top = max(loop_uv(i)[:, 1].max() for i in BROW_LOOPS)
    v = 1 - (np.arange(r) + 0.5) / r
    forehead = np.repeat(np.clip((v - brow_top + 0.01) / 0.03, 0, 1)[:, None], r, 1)
    out = LayoutMasks(
        chart.astype(np.float32),
        eyes,
        brows,
        lips,
        mouth,
        beard.astype(np.float32),
        forehead.astype(np.float32),
    )
    for value in vars(out).values():
        value.setflags(write=False)
    return out


def uv_grid(resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """`(R, R)` u and v of the texel centres (row 0 = v ~ 1)."""
    c = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
    u, v = np.meshgrid(c, 1 - c)
    return u, v
