"""Shape maps: the fitted mesh's normals (object and tangent space) and ambient occlusion baked
into complete UV maps (the reflectance networks' geometry inputs, and the exports' fallbacks)."""

from __future__ import annotations

import numpy as np

from modeling.face_model.topology import Topology
from modeling.reconstruction.geometry import FaceGeometry
from modeling.reconstruction.texture import UVAtlas, complete_uv_map
from rendering.mesh import encode_normals, to_tangent_space, vertex_tangents


def shape_maps(
    geometry: FaceGeometry, atlas: UVAtlas, topology: Topology, ao: np.ndarray
) -> dict[str, np.ndarray]:
    """Bake the mesh's shape into `(R, R, C)` float32 UV maps, completed off the chart.

    Args:
        geometry (`FaceGeometry`): the fitted mesh (its object-space vertices and normals).
        atlas (`UVAtlas`): the texels of the R x R maps.
        ao (`(V,)`): per-vertex ambient occlusion.
    Returns:
        `shape_normals` (object space, (n+1)/2), `shape_normals_tangent` (tangent space: the
        mesh's MikkTSpace frame, `rendering.mesh.vertex_tangents`, as the GLB's TANGENT; (n+1)/2)
        and `ambient_occlusion` (1 channel).
    """
    faces = topology.dense_faces
    tangents = vertex_tangents(
        geometry.vertices_object, faces, topology.dense_uvs, geometry.normals_object
    )
    n_obj = atlas.interpolate(geometry.normals_object, faces)
    n_obj /= np.maximum(np.linalg.norm(n_obj, axis=1, keepdims=True), 1e-12)
    # Relative to the exported mesh's own smooth frame the shape adds no detail, so this map is
    # flat (0.5, 0.5, 1); detail normals (the reflectance networks) use the same transform.
    n_tan = to_tangent_space(n_obj, atlas.interpolate(tangents, faces), n_obj)
    chart = atlas.chart.astype(np.float32)
    per_texel = {
        "shape_normals": encode_normals(n_obj),
        "shape_normals_tangent": encode_normals(n_tan),
        "ambient_occlusion": atlas.interpolate(ao[:, None], faces),
    }
    return {
        name: complete_uv_map(atlas.to_image(values), chart, use_mirror=False)[0]
        for name, values in per_texel.items()
    }
