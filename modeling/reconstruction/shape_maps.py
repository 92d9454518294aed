"""Shape maps: the fitted mesh's normals (object and tangent space) and ambient occlusion baked
into complete UV maps (the reflectance networks' geometry inputs, and the exports' fallbacks)."""

from __future__ import annotations

import numpy as np

from modeling.face_model.topology import Topology
from modeling.reconstruction.geometry import FaceGeometry
from modeling.reconstruction.texture import UVAtlas, complete_uv_map
from rendering.mesh import encode_normals

# (0, 0, 1) in tangent space, as a normal map stores it
FLAT_TANGENT_NORMAL = np.array([0.5, 0.5, 1.0], np.float32)


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
        mesh's MikkTSpace frame, `rendering.mesh.vertex_tangents`, as the GLB's TANGENT; (n+1)/2:
        flat) and `ambient_occlusion` (1 channel).
    """
    faces = topology.dense_faces
    n_obj = atlas.interpolate(geometry.normals_object, faces)
    n_obj /= np.maximum(np.linalg.norm(n_obj, axis=1, keepdims=True), 1e-12)
    ao_texels = atlas.interpolate(ao[:, None], faces)
    # one completion for both maps (the same chart, so the same pull-push weights)
    both = atlas.to_image(np.concatenate([encode_normals(n_obj), ao_texels], 1))
    both = complete_uv_map(both, atlas.chart.astype(np.float32), use_mirror=False)[0]
    size = atlas.resolution
    return {
        "shape_normals": np.ascontiguousarray(both[..., :3]),
        # The shape in its own tangent frame: the texel's interpolated normal is the frame's
        # normal, so the map is flat by construction (computed through MikkTSpace frames it
        # came out within 4e-7 of (0.5, 0.5, 1), at 3 s for 4096 px); detail normals (the
        # reflectance networks) are relative to the same frame.
        "shape_normals_tangent": np.broadcast_to(FLAT_TANGENT_NORMAL, (size, size, 3)).copy(),
        "ambient_occlusion": np.ascontiguousarray(both[..., 3:]),
    }
