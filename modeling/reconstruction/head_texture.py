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
from modeling.reconstruction.texture import UVAtlas, pull_push_fill
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
        `(R, R, C)` float32: face texels unchanged, ring texels from the border's colours; the
        padding off the charts is the face's fill next to the face's chart (as it came) and a
        fill of the ring's charts next to those.
    """
    border = _skin_like(sample_uv_map(image, head.topology.dense_uvs[head.face_border]))
    weights = head.ring_colour_weights
    ring = weights @ border + (1 - weights.sum(1, keepdims=True)) * border.mean(0)
    face = sample_uv_map(image, head.topology.dense_uvs)
    unique = np.concatenate([face, ring])
    skin = unique[
        np.r_[head.skin_source, np.zeros(len(head.dense_uvs) - len(head.skin_source), int)]
    ]
    in_ring = head.ring_charts[atlas.faces]
    flat = image.reshape(-1, image.shape[-1]).copy()
    ring_texels = atlas.texels[in_ring]
    flat[ring_texels] = barycentric_interpolate(
        skin, head.dense_faces, atlas.faces[in_ring], atlas.bary[in_ring]
    )
    filled = flat.reshape(image.shape)
    ring = np.zeros(image.shape[0] * image.shape[1], bool)
    ring[ring_texels] = True
    ring = ring.reshape(image.shape[:2])
    face = atlas.chart & ~ring
    # Each chart gets its own padding, so that bilinear lookups and mipmaps at a chart's edge
    # see that chart's colours: a texel off the charts takes the pull-push fill of the ring's
    # charts if a ring chart is its nearest, else keeps the face's fill it came with.
    ring_fill = pull_push_fill(filled, ring.astype(np.float32))
    to_ring = cv2.distanceTransform((~ring).astype(np.uint8), cv2.DIST_L2, 3)
    to_face = cv2.distanceTransform((~face).astype(np.uint8), cv2.DIST_L2, 3)
    padding = np.where((to_ring < to_face)[..., None], ring_fill, image)
    return np.where(atlas.chart[..., None], filled, padding).astype(np.float32)


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
