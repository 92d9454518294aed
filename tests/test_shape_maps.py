"""Shape maps: the object-space normals and AO baked and completed, and the tangent-space map
flat, as the mesh's own MikkTSpace frames give it."""

from types import SimpleNamespace

import numpy as np

from modeling.face_model.topology import NUM_LANDMARKS, load_topology
from modeling.reconstruction.shape_maps import FLAT_TANGENT_NORMAL, shape_maps
from modeling.reconstruction.texture import uv_atlas
from rendering.mesh import decode_normals, to_tangent_space, vertex_normals, vertex_tangents


def test_shape_maps_bake_the_normals_and_the_tangent_map_is_the_frames_own():
    topology = load_topology()
    vertices = topology.lift(topology.frontal_shape[:NUM_LANDMARKS])
    normals = vertex_normals(vertices, topology.dense_faces)
    ao = np.linspace(0.5, 1.0, len(vertices))
    atlas = uv_atlas(256, topology)
    maps = shape_maps(SimpleNamespace(normals_object=normals), atlas, topology, ao)
    assert {k: v.shape for k, v in maps.items()} == {
        "shape_normals": (256, 256, 3),
        "shape_normals_tangent": (256, 256, 3),
        "ambient_occlusion": (256, 256, 1),
    }
    assert all(v.dtype == np.float32 for v in maps.values())
    chart = atlas.chart
    baked = decode_normals(maps["shape_normals"][chart])
    texel_normals = atlas.interpolate(normals, topology.dense_faces)
    texel_normals /= np.linalg.norm(texel_normals, axis=1, keepdims=True)
    assert np.abs(baked - atlas.to_image(texel_normals)[chart]).max() < 1e-3
    ao_texels = atlas.interpolate(ao[:, None], topology.dense_faces)
    assert np.abs(maps["ambient_occlusion"][chart] - atlas.to_image(ao_texels)[chart]).max() < 1e-6
    assert (maps["shape_normals_tangent"] == FLAT_TANGENT_NORMAL).all()
    # what the MikkTSpace frames give, computed the long way
    tangents = vertex_tangents(vertices, topology.dense_faces, topology.dense_uvs, normals)
    long_way = to_tangent_space(
        texel_normals, atlas.interpolate(tangents, topology.dense_faces), texel_normals
    )
    assert np.abs(long_way - [0.0, 0.0, 1.0]).max() < 1e-5
