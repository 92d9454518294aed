"""The head's skin outside the face: geometry for the shape maps, colour completed from the face.

The photo shows hair, not scalp, and rarely the ears or the neck under good light, so the ring
(scalp, ears, neck) takes no texel from the photo: its colour is the face border's colour spread
harmonically over the head (`HeadModel.ring_colour_weights`; border colours far from their
median, such as a fringe of hair, are pulled to it), fading to the border's mean towards
the neck cut. Being a function on the surface, it is continuous across the ring's UV charts and
meets the face's texels exactly at the face's border, so no seam shows under any light. A bald,
skin-coloured scalp is the honest default: hair is out of scope.
"""

from __future__ import annotations

import cv2
import numpy as np

from modeling.face_model.head import HeadMesh, HeadModel, eye_texture, iris_colour
from modeling.reconstruction.geometry import FaceGeometry
from modeling.reconstruction.texture import UVAtlas
from rendering.render import barycentric_interpolate, sample_uv_map


def skin_geometry(face: FaceGeometry, head: HeadMesh) -> FaceGeometry:
    """The head's skin as a `FaceGeometry` seen by the face's camera (for `shape_maps`)."""
    camera = face.camera
    vertices = head.skin.vertices.astype(np.float64)
    normals = head.skin.normals.astype(np.float64)
    return FaceGeometry(
        camera, camera.object_to_camera(vertices), vertices, normals @ camera.rotation.T, normals
    )


def complete_head_map(image: np.ndarray, head: HeadModel, atlas: UVAtlas) -> np.ndarray:
    """A face UV map `(R, R, C)` with the ring's texels filled from the face's border.

    Args:
        image (`(R, R, C)` float32): a map whose face texels are final (photo colours, albedo).
        head (`HeadModel`): the layout; atlas (`UVAtlas`): `uv_atlas(R, head)`.
    Returns:
        `(R, R, C)` float32 (a new array): face texels unchanged, ring texels from the border's
        colours; the padding off the charts is the face's fill next to the face's chart (as it
        came) and the nearest ring texel's colour next to the ring's charts.
    """
    border = _skin_like(sample_uv_map(image, head.topology.dense_uvs[head.face_border]))
    weights = head.ring_colour_weights
    ring = weights @ border + (1 - weights.sum(1, keepdims=True)) * border.mean(0)
    face = sample_uv_map(image, head.topology.dense_uvs)
    unique = np.concatenate([face, ring])
    skin = unique[
        np.r_[head.skin_source, np.zeros(len(head.dense_uvs) - len(head.skin_source), int)]
    ]
    out = np.array(image, dtype=np.float32)  # the only full-size copy (400 MB at 4096 x 6)
    flat = out.reshape(-1, out.shape[-1])
    in_ring = head.ring_charts[atlas.faces]
    ring_texels = atlas.texels[in_ring]
    flat[ring_texels] = barycentric_interpolate(
        skin, head.dense_faces, atlas.faces[in_ring], atlas.bary[in_ring]
    )
    _pad_ring_charts(flat, ring_texels, atlas)
    return out


def _pad_ring_charts(flat: np.ndarray, ring_texels: np.ndarray, atlas: UVAtlas) -> None:
    """Give each texel off the charts whose nearest chart is a ring chart the colour of its
    nearest ring texel, in place (`flat` `(R * R, C)`): so bilinear lookups and mipmaps at a
    chart's edge see that chart's colours. Texels nearer the face's chart keep the face's fill
    they came with. (A nearest-texel dilation: one distance transform with labels, instead of
    a pull-push over the whole map, which took most of the head stage at 4096 px.)"""
    size = atlas.resolution
    ring = np.zeros(size * size, bool)
    ring[ring_texels] = True
    ring = ring.reshape(size, size)
    face = atlas.chart & ~ring
    to_ring, labels = cv2.distanceTransformWithLabels(
        (~ring).astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
    )
    to_face = cv2.distanceTransform((~face).astype(np.uint8), cv2.DIST_L2, 3)
    pad = ~atlas.chart & (to_ring < to_face)
    source = np.zeros(int(labels.max()) + 1, np.int64)  # each ring texel's label -> its index
    source[labels[ring]] = np.flatnonzero(ring)
    flat[np.flatnonzero(pad)] = flat[source[labels[pad]]]


def _skin_like(colours: np.ndarray, spread: float = 0.15) -> np.ndarray:
    """Border colours `(B, C)` pulled towards their median where they stray from it (hair or
    background at the border, e.g. a fringe on the forehead): weight `exp(-(d / spread)^2)`
    with `d` the mean absolute log-ratio to the median."""
    median = np.median(colours, axis=0)
    stray = np.abs(np.log(colours + 0.02) - np.log(median + 0.02)).mean(1, keepdims=True)
    keep = np.exp(-((stray / spread) ** 2))
    return keep * colours + (1 - keep) * median


def photo_eye_texture(image: np.ndarray, face: FaceGeometry, head: HeadModel, iris=None):
    """The eyeball texture with the iris colour seen in the photo `(H, W, 3)` float in [0, 1]
    (both eye openings, projected by the fitted camera; `iris` `(10, 3)` pixels: MediaPipe's
    iris landmarks, right eye first, when tracked)."""
    pixels = [face.camera.project(face.vertices_camera[loop]) for loop in head.eye_loops.values()]
    irises = [None, None] if iris is None else [iris[:5], iris[5:]]
    colours = [iris_colour(image, p, i) for p, i in zip(pixels, irises, strict=True)]
    return eye_texture(np.mean(colours, axis=0))


def iris_gaze(head: HeadMesh, face: FaceGeometry, iris: np.ndarray) -> np.ndarray:
    """`(2, 3)` object-space gaze directions (right eye, left eye): from each eyeball's centre
    to where the camera ray through the tracked iris centre (`iris` `(10, 3)` pixels) meets the
    ball (or passes nearest to it)."""
    camera = face.camera
    rotation = np.asarray(camera.rotation, np.float64)
    gaze = []
    for centre, pixel in zip(head.eye_centres, iris[[0, 5], :2], strict=True):
        c = camera.object_to_camera(centre[None])[0]
        ray = camera.unproject(pixel[None], np.ones(1))[0]
        ray /= np.linalg.norm(ray)
        along = ray @ c
        disc = along**2 - c @ c + head.eye_radius**2
        point = ray * (along - np.sqrt(disc) if disc > 0 else along)
        direction = point - c
        gaze.append(rotation.T @ (direction / max(np.linalg.norm(direction), 1e-12)))
    return np.array(gaze)
