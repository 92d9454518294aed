"""FLAME, loaded from a user's converted file: shape, expression and pose -> vertices (LBS).

FLAME (Li et al. 2017, https://flame.is.tue.mpg.de) may not be redistributed: the project never
ships it. A user with a licence converts their `generic_model.pkl` once with
`python -m scripts.convert_flame` (a restricted unpickler: see `scripts/convert_flame.py`) into a
plain `.npz`, which is all this module reads (`np.load(..., allow_pickle=False)`).

FLAME's frame: metres, +y up, the face towards +z, the subject's left towards +x. Joints (as
FLAME's `kintree_table`): 0 root (global pose), 1 neck, 2 jaw, 3 left eye, 4 right eye
(smplx's `leye_pose`, `reye_pose`; FLAME's `eye_pose` is joints 3 and 4, in that order).

The converted file holds (V vertices, F triangles, T UV vertices, J = 5 joints):

- `v_template` `(V, 3)`, `faces` `(F, 3)`, `shapedirs` `(V, 3, S)`, `exprdirs` `(V, 3, E)`,
  `posedirs` `(V, 3, 9 (J - 1))`, `j_regressor` `(J, V)`, `parents` `(J,)` (-1 for the root),
  `weights` `(V, J)`;
- optional `uvs` `(T, 2)` and `uv_faces` `(F, 3)` (FLAME's texture layout);
- optional landmark embedding `landmark_faces` `(L,)`, `landmark_bary` `(L, 3)`,
  `landmark_ibug` `(L,)` (which of the 68 iBUG points each is), and the dynamic contour
  `dynamic_landmark_faces` `(79, 17)`, `dynamic_landmark_bary` `(79, 17, 3)` (kept for other
  tools; the fit uses MediaPipe's points);
- the MediaPipe correspondence built by the converter
  (`modeling.reconstruction.flame_correspondence.build_mediapipe_correspondence`):
  `mediapipe_faces` `(7305,)`, `mediapipe_bary` `(7305, 3)`: the point of FLAME's surface
  under each vertex of the project's dense face (`modeling.face_model.topology`; the first 468
  are MediaPipe's landmarks), how much each counts in a fit `mediapipe_weight` `(7305,)` (0
  where the two surfaces part: the closed eye and mouth fans of the dense face), and the rigid
  transform `to_object_rotation` `(3, 3)`, `to_object_translation` `(3,)` from FLAME's frame
  to the project's object space (`p_object = R p_flame + t`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from modeling.errors import AvatarInputError
from modeling.face_model.topology import Topology, load_topology

NUM_JOINTS = 5
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
REQUIRED_KEYS = ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "j_regressor",
                 "parents", "weights")  # fmt: skip
FORMAT_VERSION = 1
MIRROR_TOLERANCE = 0.01  # UV units: 10 texels at 1024 px


class FlameModelError(AvatarInputError):
    """A FLAME file is missing, is not a FLAME model, or lacks what a use of it needs."""


@dataclass(frozen=True, eq=False)  # hashed by identity (its `layout` is a cache key)
class FlameModel:
    """A converted FLAME model (numpy, read-only; shapes in the module docstring)."""

    v_template: np.ndarray
    faces: np.ndarray
    shapedirs: np.ndarray
    exprdirs: np.ndarray
    posedirs: np.ndarray
    j_regressor: np.ndarray
    parents: np.ndarray
    weights: np.ndarray
    uvs: np.ndarray | None = None
    uv_faces: np.ndarray | None = None
    landmark_faces: np.ndarray | None = None
    landmark_bary: np.ndarray | None = None
    landmark_ibug: np.ndarray | None = None
    dynamic_landmark_faces: np.ndarray | None = None
    dynamic_landmark_bary: np.ndarray | None = None
    mediapipe_faces: np.ndarray | None = None
    mediapipe_bary: np.ndarray | None = None
    mediapipe_weight: np.ndarray | None = None
    to_object_rotation: np.ndarray | None = None
    to_object_translation: np.ndarray | None = None
    source: str = ""

    @property
    def num_vertices(self) -> int:
        return len(self.v_template)

    @property
    def num_shape(self) -> int:
        return self.shapedirs.shape[-1]

    @property
    def num_expression(self) -> int:
        return self.exprdirs.shape[-1]

    @property
    def has_uvs(self) -> bool:
        return self.uvs is not None

    @property
    def has_correspondence(self) -> bool:
        return self.mediapipe_faces is not None

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array of the model by its file key (what `save_flame` writes)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "source"}
        return {k: v for k, v in out.items() if v is not None}

    def with_arrays(self, **arrays) -> FlameModel:
        """A copy with some arrays replaced or added (checked as `load_flame` checks them)."""
        return flame_from_arrays({**self.arrays(), **arrays}, self.source)

    @cached_property
    def joint_template(self) -> np.ndarray:
        """`(J, 3)` joints of the template (no shape)."""
        return self.j_regressor @ self.v_template

    @cached_property
    def pupils(self) -> np.ndarray:
        """`(2,)` vertices at the front of the left (joint 3) and right (joint 4) eyeballs: of
        the vertices skinned (almost) only to the eye's joint, the one farthest towards +z."""
        out = []
        for joint in (3, 4):
            ball = np.flatnonzero(self.weights[:, joint] > 0.9)
            if len(ball) == 0:
                raise FlameModelError(f"no vertex is skinned to FLAME's eye joint {joint}")
            out.append(ball[np.argmax(self.v_template[ball, 2])])
        return np.array(out)

    @cached_property
    def layout(self) -> FlameLayout:
        """The maps' UV layout on FLAME (`FlameLayout`); needs the converted model's UVs."""
        if not self.has_uvs:
            raise FlameModelError(
                f"the FLAME model {self.source or ''} has no UV layout, so no maps can be made "
                "on it: convert it again with --uvs head_template.obj (or FLAME's texture-space "
                ".npz with vt/ft); fitting alone (modeling.reconstruction.flame_fit) works "
                "without"
            )
        if not self.has_correspondence:
            raise FlameModelError(
                f"the FLAME model {self.source or ''} has no MediaPipe correspondence: convert "
                "it with python -m scripts.convert_flame"
            )
        return FlameLayout.build(self, load_topology())

    def tensors(self, device=None, dtype=torch.float32) -> FlameTensors:
        """The model's arrays as tensors for `lbs`."""
        return FlameTensors.from_model(self, device, dtype)


@dataclass(frozen=True)
class FlameTensors:
    """`FlameModel`'s arrays as torch tensors (what `lbs` reads).

    Attributes:
        v_template (`(V, 3)`), dirs (`(S + E, 3 V)`: shape then expression directions, one
            per row, so that the first S' or E' are a contiguous slice),
        posedirs (`(9 (J - 1), 3 V)`), weights (`(V, J)`), parents (`tuple[int, ...]`),
        num_shape (`int`): S; joint_template (`(J, 3)`), joint_dirs (`(S + E, 3 J)`): the
        joint regressor applied to the template and the directions (joints are linear in the
        coefficients), so that `lbs` can pose a subset of the vertices (`subset`).
    """

    v_template: torch.Tensor
    dirs: torch.Tensor
    posedirs: torch.Tensor
    weights: torch.Tensor
    parents: tuple[int, ...]
    num_shape: int
    joint_template: torch.Tensor
    joint_dirs: torch.Tensor

    @classmethod
    def from_model(cls, model: FlameModel, device=None, dtype=torch.float32) -> FlameTensors:
        def t(x):
            return torch.tensor(np.asarray(x), dtype=dtype, device=device)

        posedirs = model.posedirs.reshape(-1, model.posedirs.shape[-1]).T  # (36, 3V)
        dirs = np.concatenate([model.shapedirs, model.exprdirs], -1)  # (V, 3, L)
        joint_dirs = np.einsum("jv,vcl->ljc", model.j_regressor, dirs)
        return cls(
            v_template=t(model.v_template),
            dirs=t(dirs.reshape(-1, dirs.shape[-1]).T),
            posedirs=t(posedirs),
            weights=t(model.weights),
            parents=tuple(int(p) for p in model.parents),
            num_shape=model.num_shape,
            joint_template=t(model.joint_template),
            joint_dirs=t(joint_dirs.reshape(len(joint_dirs), -1)),
        )

    def subset(self, vertices: np.ndarray) -> FlameTensors:
        """The same model posing only `vertices` `(N,)` (the joints still from all)."""
        idx = torch.as_tensor(np.asarray(vertices), dtype=torch.long, device=self.dirs.device)

        def rows(x):  # (K, 3V) -> (K, 3N)
            return x.reshape(len(x), -1, 3)[:, idx].reshape(len(x), -1).contiguous()

        return replace(self, v_template=self.v_template[idx], dirs=rows(self.dirs),
                       posedirs=rows(self.posedirs), weights=self.weights[idx])  # fmt: skip


def rodrigues(rotvec: torch.Tensor) -> torch.Tensor:
    """Rotation vectors `(..., 3)` (axis x angle, radians) -> rotation matrices `(..., 3, 3)`;
    differentiable at 0 (the angle is taken of `rotvec + 1e-8`, as FLAME's and SMPL's code)."""
    angle = torch.linalg.norm(rotvec + 1e-8, dim=-1, keepdim=True)
    axis = rotvec / angle
    cos, sin = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + sin * k + (1 - cos) * (k @ k)


def lbs(
    model: FlameTensors,
    shape: torch.Tensor,
    expression: torch.Tensor,
    pose: torch.Tensor,
    translation: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """FLAME's linear blend skinning, batched and differentiable.

    Args:
        model (`FlameTensors`).
        shape (`(B, S')`), expression (`(B, E')`): coefficients of the first S' <= S shape and
            E' <= E expression directions (the others are 0).
        pose (`(B, J, 3)`): rotation vectors of the joints (global, neck, jaw, left eye, right
            eye), each relative to its parent.
        translation (`(B, 3)`, *optional*): added to every vertex and joint (FLAME's `transl`).
    Returns:
        vertices `(B, V, 3)` and posed joints `(B, J, 3)`, FLAME's frame, metres.

    The steps: template + shape and expression blend shapes; joints regressed from that
    shape; pose-corrective blend shapes driven by the joints' rotation matrices minus the
    identity (root excluded); the kinematic chain; linear blend skinning of the corrected mesh.
    """
    batch, num_joints = pose.shape[0], len(model.parents)
    if pose.shape[1:] != (num_joints, 3):
        raise ValueError(f"pose must be (B, {num_joints}, 3), got {tuple(pose.shape)}")
    s, e, n_shape = shape.shape[-1], expression.shape[-1], model.num_shape
    if s > n_shape or e > model.dirs.shape[0] - n_shape:
        raise ValueError(
            f"the model has {n_shape} shape and {model.dirs.shape[0] - n_shape} expression "
            f"components, got {s} and {e}"
        )

    # row slices of the (S + E, 3V) basis: views, no copy of the large matrix
    def blend(basis):  # (S + E, K) -> (B, K)
        return shape @ basis[:s] + expression @ basis[n_shape : n_shape + e]

    v_shaped = model.v_template + blend(model.dirs).reshape(batch, -1, 3)
    joints = model.joint_template + blend(model.joint_dirs).reshape(batch, num_joints, 3)
    rot = rodrigues(pose)  # (B, J, 3, 3)
    eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
    pose_feature = (rot[:, 1:] - eye).reshape(batch, -1)
    v_posed = v_shaped + (pose_feature @ model.posedirs).reshape(batch, -1, 3)

    parents = model.parents
    rel = torch.cat([joints[:, :1], joints[:, 1:] - joints[:, list(parents[1:])]], 1)
    local = _homogeneous(rot, rel)  # (B, J, 4, 4)
    chain = [local[:, 0]]
    for j in range(1, num_joints):  # a fixed, short chain: the loop is over 5 joints
        chain.append(chain[parents[j]] @ local[:, j])
    world = torch.stack(chain, 1)
    posed_joints = world[:, :, :3, 3]
    # Transforms relative to the rest pose: subtract the rotated rest-pose joint.
    offset = (world[:, :, :3, :3] @ joints[..., None])[..., 0]
    relative = torch.cat([world[:, :, :3, :3], (posed_joints - offset)[..., None]], -1)
    per_vertex = torch.einsum("vj,bjmn->bvmn", model.weights, relative)  # (B, V, 3, 4)
    vertices = (per_vertex[..., :3] @ v_posed[..., None])[..., 0] + per_vertex[..., 3]
    if translation is not None:
        vertices = vertices + translation[:, None]
        posed_joints = posed_joints + translation[:, None]
    return vertices, posed_joints


def _homogeneous(rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """`(B, J, 3, 3)` + `(B, J, 3)` -> `(B, J, 4, 4)` rigid transforms."""
    top = torch.cat([rot, trans[..., None]], -1)
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1
    return torch.cat([top, bottom], -2)


def surface_points(vertices, faces: np.ndarray, bary: np.ndarray):
    """Points given by triangles `faces` `(N,)` (indices into the mesh's triangles, already
    resolved: `(N, 3)` vertex indices) and barycentric weights `bary` `(N, 3)` on `vertices`
    `(..., V, 3)` (numpy or torch) -> `(..., N, 3)`."""
    if isinstance(vertices, torch.Tensor):
        w = torch.as_tensor(np.array(bary) if isinstance(bary, np.ndarray) else bary,
                            dtype=vertices.dtype, device=vertices.device)  # fmt: skip
        idx = torch.as_tensor(np.array(faces) if isinstance(faces, np.ndarray) else faces,
                              dtype=torch.long, device=vertices.device)  # fmt: skip
        return (vertices[..., idx, :] * w[..., None]).sum(-2)
    return (vertices[..., faces, :] * bary[..., None]).sum(-2)


@dataclass(frozen=True, eq=False)  # hashed by identity: `uv_atlas` and `skin_mask` cache on it
class FlameLayout:
    """FLAME as a UV layout the project's map stages take where they take a `Topology`.

    FLAME's UV vertices are not its vertices (the layout has seams): the layout's mesh is
    FLAME's split at the seams, one vertex per UV vertex.

    Attributes:
        dense_faces (`(F, 3)` int32): FLAME's triangles over the split vertices (its `uv_faces`).
        dense_uvs (`(T, 2)` float64): the split vertices' UVs.
        split_source (`(T,)` int64): FLAME vertex of each split vertex.
        base_uvs (`(471, 2)`): UVs of FLAME's points under the project's 471 base face vertices
            (from the MediaPipe correspondence), so that `skin_exclusion` (the topology's eye,
            brow and lip loops) cuts the same regions out of FLAME's maps (`skin_mask`).
        skin_exclusion (`tuple` of int arrays): the topology's.
        mirror_error (`float`): how far the layout is from left/right symmetric about u = 0.5,
            which the maps' completion assumes (it fills texels the photo did not show from
            their mirror texels): the median UV distance, over the dense face's vertices,
            between the UV under a vertex and the mirrored UV under its mirror partner.
    """

    dense_faces: np.ndarray
    dense_uvs: np.ndarray
    split_source: np.ndarray
    base_uvs: np.ndarray
    skin_exclusion: tuple
    faces: np.ndarray  # (F, 3) FLAME's own triangles over its vertices
    mirror_error: float = 0.0

    @property
    def num_dense(self) -> int:
        return len(self.dense_uvs)

    @property
    def symmetric(self) -> bool:
        """Whether mirroring in UV space finds a texel's mirror texel (`MIRROR_TOLERANCE`)."""
        return self.mirror_error <= MIRROR_TOLERANCE

    @classmethod
    def build(cls, model: FlameModel, topology: Topology) -> FlameLayout:
        split_source = split_vertices(model.faces, model.uv_faces, len(model.uvs))
        n_base = len(topology.base_uvs)
        uvs = surface_points(model.uvs.astype(np.float64), model.uv_faces[model.mediapipe_faces],
                             model.mediapipe_bary)  # fmt: skip
        mirrored = uvs[topology.dense_symmetry] * [-1, 1] + [1, 0]
        return cls(
            dense_faces=model.uv_faces.astype(np.int32),
            dense_uvs=model.uvs.astype(np.float64),
            split_source=split_source,
            base_uvs=uvs[:n_base],
            skin_exclusion=topology.skin_exclusion,
            faces=model.faces.astype(np.int64),
            mirror_error=float(np.median(np.linalg.norm(uvs - mirrored, axis=1))),
        )


def split_vertices(faces: np.ndarray, uv_faces: np.ndarray, num_uvs: int) -> np.ndarray:
    """`(T,)`: the mesh vertex of each UV vertex, from triangles `faces` and `uv_faces` `(F, 3)`
    that list the same corners (UV vertices no triangle uses map to vertex 0)."""
    if faces.shape != uv_faces.shape:
        raise FlameModelError(
            f"the UV layout has {len(uv_faces)} triangles, the model {len(faces)}: not this "
            "model's layout"
        )
    if uv_faces.min() < 0 or uv_faces.max() >= num_uvs:
        raise FlameModelError("the UV layout's triangles index UV vertices it does not have")
    source = np.full(num_uvs, -1, np.int64)
    source[uv_faces.ravel()] = faces.ravel()
    if (source[uv_faces.ravel()] != faces.ravel()).any():
        raise FlameModelError("a UV vertex is used by two different model vertices")
    return np.maximum(source, 0)


def flame_from_arrays(arrays: dict, source: str = "") -> FlameModel:
    """Check a converted model's arrays (shapes, consistency) -> `FlameModel`."""
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise FlameModelError(
            f"{source or 'the file'} is not a converted FLAME model (missing {', '.join(missing)}"
            "); convert FLAME's generic_model.pkl with python -m scripts.convert_flame"
        )
    a = {k: np.asarray(v) for k, v in arrays.items() if k in FlameModel.__dataclass_fields__}
    v = a["v_template"].shape[0]
    j = a["parents"].shape[0]
    expect = {
        "v_template": (v, 3),
        "shapedirs": (v, 3, None),
        "exprdirs": (v, 3, None),
        "posedirs": (v, 3, 9 * (j - 1)),
        "j_regressor": (j, v),
        "weights": (v, j),
        "faces": (None, 3),
    }
    for key, shape in expect.items():
        got = a[key].shape
        fits = len(got) == len(shape) and all(
            s is None or s == g for s, g in zip(shape, got, strict=True)
        )
        if not fits:
            want = tuple("*" if s is None else s for s in shape)
            raise FlameModelError(f"{source or 'the model'}: {key} has shape {got}, not {want}")
    if j != NUM_JOINTS:
        raise FlameModelError(f"a FLAME model has {NUM_JOINTS} joints, this one {j}")
    if a["faces"].min() < 0 or a["faces"].max() >= v:
        raise FlameModelError("the model's faces index vertices it does not have")
    if ("uvs" in a) != ("uv_faces" in a):
        raise FlameModelError("uvs and uv_faces come together")
    if "uvs" in a:
        split_vertices(a["faces"], a["uv_faces"], len(a["uvs"]))  # raises when inconsistent
    floats = {"v_template", "shapedirs", "exprdirs", "posedirs", "j_regressor", "weights", "uvs",
              "landmark_bary", "dynamic_landmark_bary", "mediapipe_bary", "mediapipe_weight",
              "to_object_rotation", "to_object_translation"}  # fmt: skip
    for key, value in a.items():
        value = value.astype(np.float64 if key in floats else np.int64)
        value.setflags(write=False)
        a[key] = value
    return FlameModel(**a, source=str(source))


def load_flame(path: str | Path) -> FlameModel:
    """Load a FLAME model converted by `python -m scripts.convert_flame` (a plain `.npz`, read
    with `allow_pickle=False`: nothing in it can run code).

    Raises `FlameModelError` (a `ValueError`) naming the path when it is missing, is FLAME's
    original pickle (convert it first), or is not a converted FLAME model.

    >>> model = load_flame("flame.npz")  # doctest: +SKIP
    >>> model.v_template.shape
    (5023, 3)
    """
    path = Path(path)
    if not path.is_file():
        raise FlameModelError(f"no FLAME model at {path} (the path does not exist)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic[:1] == b"\x80" or path.suffix == ".pkl":
        raise FlameModelError(
            f"{path} is a pickle: convert FLAME's generic_model.pkl once with "
            f"python -m scripts.convert_flame {path} flame.npz, and load the .npz"
        )
    if magic != b"PK\x03\x04":
        raise FlameModelError(f"{path} is not a converted FLAME model (not an .npz file)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as err:
        raise FlameModelError(f"{path} is not a readable converted FLAME model: {err}") from err
    version = int(arrays.pop("format_version", FORMAT_VERSION))
    if version > FORMAT_VERSION:
        raise FlameModelError(f"{path} was written by a newer converter (format {version})")
    return flame_from_arrays(arrays, str(path))


def save_flame(model: FlameModel, path: str | Path) -> Path:
    """Write a `FlameModel` as the converted `.npz` (`load_flame` reads it back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # np.savez would append .npz to another suffix
        np.savez(f, format_version=np.int64(FORMAT_VERSION), **model.arrays())
    return path
