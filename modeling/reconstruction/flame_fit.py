"""FLAME fitted to the project's reconstruction: shape, expression and pose.

The project's fit (`modeling.reconstruction.fitting.fit_photos`) gives each photo's camera and
one dense face (7,305 vertices, object space) that reproduces the photos. FLAME follows it: its
parameters are fitted so that FLAME's points under the dense face's vertices (the
correspondence) land on them in 3-D and, projected by each photo's camera, on the detected
landmarks; the eyeballs turn so that their pupils project onto the detected iris centres.
Priors keep shape, expression and the neck, jaw and eye rotations small. (The correspondence
is built once per model by `modeling.reconstruction.flame_correspondence`.) The maps are then
unwrapped onto FLAME's mesh in FLAME's UV layout by the same stages as the bundled head's.
(No photometric refinement of FLAME's parameters: the dense face is already fitted to the
photos' pixels, and FLAME's fit matches it.)
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from modeling.face_model.flame import (
    FlameLayout,
    FlameModel,
    FlameModelError,
    FlameTensors,
    lbs,
    surface_points,
)
from modeling.face_model.topology import NUM_LANDMARKS
from modeling.reconstruction.fitting import MIN_AMBIENT_OCCLUSION
from modeling.reconstruction.geometry import FaceGeometry
from rendering.camera import PinholeCamera
from rendering.mesh import vertex_normals
from rendering.shading import bake_ambient_occlusion

# Loss weights of `fit_flame` (data terms in millimetres and face-size-normalised pixels).
FIT_WEIGHTS = {
    "surface": 1.0,  # mean squared distance (mm^2) to the dense face, weighted
    "landmarks": 10.0,  # 100 x mean squared landmark error / face size^2, per photo
    "iris": 10.0,
    "shape": 1e-2,
    "expression": 1e-2,
    "neck_pose": 10.0,  # radians^2: the dense face alone barely tells the neck from the root
    "jaw_pose": 1.0,
    "eye_pose": 1e-2,  # the eyes' roll is unobservable (a pupil is a point)
}


@contextmanager
def one_thread():
    """Small problems (a few thousand vertices): on a shared 2-core machine one thread is
    several times faster than two (threading overhead), as in `fitting.fit`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass
class FlameCoefficients:
    """FLAME's parameters being optimised (batch 1), float64 leaf tensors: `shape` `(1, S')`,
    `expression` `(1, E')`, `global_pose`, `neck`, `jaw` `(1, 3)`, `eyes` `(1, 6)`,
    `translation` `(1, 3)`. The translation is held in millimetres (`translation_m` gives
    metres): in metres its gradient would be a thousand times the others' and L-BFGS would
    crawl."""

    shape: torch.Tensor
    expression: torch.Tensor
    global_pose: torch.Tensor
    neck: torch.Tensor
    jaw: torch.Tensor
    eyes: torch.Tensor
    translation: torch.Tensor

    @classmethod
    def zeros(cls, num_shape: int, num_expression: int, batch: int = 1) -> FlameCoefficients:
        def z(n):
            return torch.zeros(batch, n, dtype=torch.float64, requires_grad=True)

        return cls(z(num_shape), z(num_expression), z(3), z(3), z(3), z(6), z(3))

    @property
    def translation_m(self) -> torch.Tensor:
        return self.translation * 1e-3

    def pose(self) -> torch.Tensor:
        """`(B, 5, 3)` rotation vectors in FLAME's joint order."""
        return torch.cat([self.global_pose, self.neck, self.jaw, self.eyes], -1).reshape(-1, 5, 3)

    def tensors(self) -> list[torch.Tensor]:
        """All the leaf tensors (what the optimiser updates)."""
        return [self.shape, self.expression, self.global_pose, self.neck, self.jaw, self.eyes,
                self.translation]  # fmt: skip


@dataclass
class FlameParameters:
    """A fitted FLAME head, in FLAME's conventions (what other FLAME tools read).

    Attributes:
        shape (`(S',)`), expression (`(E',)`): coefficients of the first S' shape and E'
            expression components.
        global_pose, neck_pose, jaw_pose (`(3,)` each), eye_pose (`(6,)`: left then right
            eye, FLAME's joints 3 and 4): axis-angle rotations, radians.
        translation (`(3,)`): FLAME's `transl`, metres.
        to_object_rotation (`(3, 3)`), to_object_translation (`(3,)`): FLAME's frame -> the
            output mesh's object space (`p_object = R p_flame + t`; the model's, from the
            converter).
        vertices (`(V, 3)` float32): the fitted FLAME mesh, FLAME's frame.
        surface_residual_mm (`float`): weighted RMS distance from FLAME's corresponding points
            to the dense face it was fitted to; landmark_residual (`list[float]`): per photo,
            mean landmark distance over the landmark box diagonal.
    """

    shape: np.ndarray
    expression: np.ndarray
    global_pose: np.ndarray
    neck_pose: np.ndarray
    jaw_pose: np.ndarray
    eye_pose: np.ndarray
    translation: np.ndarray
    to_object_rotation: np.ndarray
    to_object_translation: np.ndarray
    vertices: np.ndarray
    surface_residual_mm: float = 0.0
    landmark_residual: list = field(default_factory=list)

    def vertices_object(self) -> np.ndarray:
        """`(V, 3)` float64: the fitted mesh in the output's object space."""
        rot, trans = self.to_object_rotation, self.to_object_translation
        return self.vertices.astype(np.float64) @ rot.T + trans

    def camera_for_flame(self, camera: PinholeCamera) -> PinholeCamera:
        """An output's object-to-camera `PinholeCamera` as FLAME-frame-to-camera: the same
        intrinsics, the pose composed with `to_object_*` (so FLAME's vertices, posed and
        translated by these parameters, project onto the photo)."""
        rot = camera.rotation @ self.to_object_rotation
        trans = camera.rotation @ self.to_object_translation + camera.translation
        return PinholeCamera(camera.fx, camera.fy, camera.cx, camera.cy, camera.width,
                             camera.height, rot, trans)  # fmt: skip

    def arrays(self, cameras: list[PinholeCamera] = ()) -> dict[str, np.ndarray]:
        """The parameters (and the photos' FLAME-frame cameras, where given) as arrays:
        `camera_rotation` `(P, 3, 3)`, `camera_translation` `(P, 3)`, `camera_intrinsics`
        `(P, 4)` (fx, fy, cx, cy, pixels), `camera_image_size` `(P, 2)` (width, height)."""
        out = {
            "shape": self.shape,
            "expression": self.expression,
            "global_pose": self.global_pose,
            "neck_pose": self.neck_pose,
            "jaw_pose": self.jaw_pose,
            "eye_pose": self.eye_pose,
            "translation": self.translation,
            "to_object_rotation": self.to_object_rotation,
            "to_object_translation": self.to_object_translation,
        }
        if cameras:
            cams = [self.camera_for_flame(c) for c in cameras]
            out["camera_rotation"] = np.stack([c.rotation for c in cams])
            out["camera_translation"] = np.stack([c.translation for c in cams])
            out["camera_intrinsics"] = np.array([[c.fx, c.fy, c.cx, c.cy] for c in cams])
            out["camera_image_size"] = np.array([[c.width, c.height] for c in cams])
        return {k: np.asarray(v, np.float64) for k, v in out.items()}

    def save(self, folder, cameras: list[PinholeCamera] = ()) -> dict[str, Path]:
        """Write `flame_params.npz` and `flame_params.json` (the same arrays, as lists, and
        the conventions) into `folder`; returns their paths."""
        folder = Path(folder)
        arrays = self.arrays(cameras)
        npz = folder / "flame_params.npz"
        with open(npz, "wb") as f:
            np.savez(f, **arrays)
        doc = {
            "model": "FLAME",
            "conventions": (
                "FLAME's frame (metres, +y up, face towards +z); poses axis-angle (radians); "
                "eye_pose = left eye (joint 3) then right eye (joint 4); vertices = "
                "FLAME(shape, expression, pose) + translation; a photo's camera maps them: "
                "p_cam = camera_rotation @ p + camera_translation, camera looking down -z, +y "
                "up (OpenGL); pixel = (fx x / -z + cx, -fy y / -z + cy), origin top-left"
            ),
            **{k: v.tolist() for k, v in arrays.items()},
            "surface_residual_mm": self.surface_residual_mm,
            "landmark_residual": list(self.landmark_residual),
        }
        path = folder / "flame_params.json"
        path.write_text(json.dumps(doc, indent=1))
        return {"flame_npz": npz, "flame_json": path}


def fit_flame(
    model: FlameModel,
    face_vertices: np.ndarray,
    cameras: list[PinholeCamera],
    landmarks: list[np.ndarray],
    iris: list[np.ndarray | None] | None = None,
    num_shape: int = 100,
    num_expression: int = 50,
    max_iterations: int = 200,
    weights: dict | None = None,
) -> FlameParameters:
    """Fit FLAME's shape, expression, pose and translation to a reconstructed face.

    Args:
        model (`FlameModel`): with its MediaPipe correspondence (`scripts.convert_flame`).
        face_vertices (`(7305, 3)`): the fitted dense face, object space, metres.
        cameras (`list[PinholeCamera]`): each photo's object-to-camera camera.
        landmarks (`list` of `(468, 2)`): each photo's detected landmarks, pixels.
        iris (`list` of `(10, 3)` or `None`, *optional*): each photo's iris landmarks
            (`FaceLandmarks.iris`: the subject's right centre and rim, then the left's); the
            eyes turn to them.
        num_shape, num_expression (`int`): components fitted (at most the model's; the
            others stay 0). 100 and 50, as DECA and EMOCA: the face alone constrains the
            later components little (on a FLAME-sized synthetic model all 300 + 100 give the
            same mesh error, 0.12 mm, and take longer).
        max_iterations (`int`): L-BFGS iterations of each of the two stages.
        weights (`dict`, *optional*): overrides of `FIT_WEIGHTS`.
    Returns:
        `FlameParameters`.
    """
    if not model.has_correspondence:
        raise FlameModelError("the FLAME model has no MediaPipe correspondence: convert it "
                              "with python -m scripts.convert_flame")  # fmt: skip
    if len(cameras) != len(landmarks):
        raise ValueError(f"{len(cameras)} cameras for {len(landmarks)} landmark sets")
    with one_thread():
        return _fit_flame(model, face_vertices, cameras, landmarks, iris, num_shape,
                          num_expression, max_iterations, weights)  # fmt: skip


def _fit_flame(model, face_vertices, cameras, landmarks, iris, num_shape, num_expression,
               max_iterations, weights) -> FlameParameters:  # fmt: skip
    w = {**FIT_WEIGHTS, **(weights or {})}
    tensors = model.tensors(dtype=torch.float64)
    params = FlameCoefficients.zeros(
        min(num_shape, model.num_shape), min(num_expression, model.num_expression)
    )
    problem = _FitProblem.build(model, tensors, face_vertices, cameras, landmarks, iris)
    # Rigid first (the correspondence's transform starts close), then everything.
    for stage in ([params.global_pose, params.translation], params.tensors()):
        optimizer = torch.optim.LBFGS(stage, max_iter=max_iterations,
                                      line_search_fn="strong_wolfe")  # fmt: skip

        def closure(optimizer=optimizer):
            optimizer.zero_grad()
            loss = problem.loss(params, w)
            loss.backward()
            return loss

        optimizer.step(closure)
    return problem.result(params)


@dataclass
class _FitProblem:
    """What `fit_flame` matches (torch float64)."""

    tensors: FlameTensors  # of the vertices the losses see
    full: FlameTensors
    rot0: torch.Tensor
    trans0: torch.Tensor
    corners: torch.Tensor  # (7305, 3) FLAME vertices of each correspondence's triangle
    bary: torch.Tensor
    weight: torch.Tensor  # (7305,) normalised
    target: torch.Tensor  # (7305, 3) object space
    rotations: list
    translations: list
    intrinsics: list
    landmarks: list
    sizes: list
    pupils: np.ndarray
    iris: list

    @classmethod
    def build(cls, model, tensors, face_vertices, cameras, landmarks, iris) -> _FitProblem:
        def t(x):
            return torch.tensor(np.asarray(x, np.float64))

        weight = model.mediapipe_weight
        weight = np.ones(len(model.mediapipe_faces)) if weight is None else weight
        # Pose only the vertices the losses see (FLAME's face and pupils, not the scalp).
        corners = model.faces[model.mediapipe_faces]
        # The subject's left pupil, then the right: the left lies towards +x (both frames),
        # whichever of FLAME's eye joints carries it.
        x = (model.v_template[model.pupils] @ model.to_object_rotation.T)[:, 0]
        pupils = model.pupils if x[0] > x[1] else model.pupils[::-1]
        used, inverse = np.unique(np.r_[corners.ravel(), pupils], return_inverse=True)
        corners, pupils = inverse[: corners.size].reshape(-1, 3), inverse[corners.size :]
        sizes = [
            max(float(np.linalg.norm(np.ptp(np.asarray(lm)[:, :2], 0))), 1.0) for lm in landmarks
        ]
        iris = list(iris) if iris is not None else [None] * len(cameras)
        return cls(
            tensors=tensors.subset(used),
            full=tensors,
            rot0=t(model.to_object_rotation),
            trans0=t(model.to_object_translation),
            corners=torch.as_tensor(corners),
            bary=t(model.mediapipe_bary),
            weight=t(weight / max(weight.sum(), 1e-9)),
            target=t(face_vertices),
            rotations=[t(c.rotation) for c in cameras],
            translations=[t(c.translation) for c in cameras],
            intrinsics=[(c.fx, c.fy, c.cx, c.cy) for c in cameras],
            landmarks=[t(np.asarray(lm)[:NUM_LANDMARKS, :2]) for lm in landmarks],
            sizes=sizes,
            pupils=pupils,
            iris=[None if i is None else t(np.asarray(i)[[5, 0], :2]) for i in iris],
        )

    def vertices_object(self, params: FlameCoefficients, full: bool = False):
        """FLAME's vertices the losses see `(N, 3)` (`full`: all, `(V, 3)`) in FLAME's frame
        and in object space."""
        verts, _ = lbs(self.full if full else self.tensors, params.shape, params.expression,
                       params.pose(), params.translation_m)  # fmt: skip
        return verts[0], verts[0] @ self.rot0.T + self.trans0

    def _project(self, points_object: torch.Tensor, view: int) -> torch.Tensor:
        cam = points_object @ self.rotations[view].T + self.translations[view]
        fx, fy, cx, cy = self.intrinsics[view]
        depth = (-cam[:, 2]).clamp_min(1e-6)
        return torch.stack([fx * cam[:, 0] / depth + cx, -fy * cam[:, 1] / depth + cy], 1)

    def loss(self, params: FlameCoefficients, w: dict) -> torch.Tensor:
        _, verts = self.vertices_object(params)
        points = surface_points(verts, self.corners, self.bary)
        residual = ((points - self.target) * 1000) ** 2
        loss = w["surface"] * (self.weight * residual.sum(-1)).sum()
        n_views = len(self.landmarks)
        for view in range(n_views):
            px = self._project(points[:NUM_LANDMARKS], view)
            err = ((px - self.landmarks[view]) ** 2).sum(-1).mean() / self.sizes[view] ** 2
            loss = loss + w["landmarks"] * 100 * err / n_views
            if self.iris[view] is not None:
                pupils = self._project(verts[self.pupils], view)
                err = ((pupils - self.iris[view]) ** 2).sum(-1).mean() / self.sizes[view] ** 2
                loss = loss + w["iris"] * 100 * err / n_views
        loss = loss + w["shape"] * (params.shape**2).sum()
        loss = loss + w["expression"] * (params.expression**2).sum()
        loss = loss + w["neck_pose"] * (params.neck**2).sum()
        loss = loss + w["jaw_pose"] * (params.jaw**2).sum()
        return loss + w["eye_pose"] * (params.eyes**2).sum()

    @torch.no_grad()
    def result(self, params: FlameCoefficients) -> FlameParameters:
        verts_flame, _ = self.vertices_object(params, full=True)
        _, verts = self.vertices_object(params)
        points = surface_points(verts, self.corners, self.bary)
        dist2 = (((points - self.target) * 1000) ** 2).sum(-1)
        residuals = []
        for view in range(len(self.landmarks)):
            px = self._project(points[:NUM_LANDMARKS], view)
            err = (px - self.landmarks[view]).norm(dim=-1).mean() / self.sizes[view]
            residuals.append(float(err))

        def a(x):
            return x.detach().numpy()[0].astype(np.float64)

        return FlameParameters(
            shape=a(params.shape),
            expression=a(params.expression),
            global_pose=a(params.global_pose),
            neck_pose=a(params.neck),
            jaw_pose=a(params.jaw),
            eye_pose=a(params.eyes),
            translation=a(params.translation_m),
            to_object_rotation=self.rot0.numpy().copy(),
            to_object_translation=self.trans0.numpy().copy(),
            vertices=verts_flame.numpy().astype(np.float32),
            surface_residual_mm=float(torch.sqrt((self.weight * dist2).sum())),
            landmark_residual=residuals,
        )


def flame_geometry(params: FlameParameters, camera: PinholeCamera,
                   layout: FlameLayout) -> FaceGeometry:  # fmt: skip
    """The fitted FLAME mesh as a `FaceGeometry` over the layout's split vertices (normals of
    the unsplit mesh, so no seam shows in the shading) seen by `camera`."""
    unique = params.vertices_object()
    normals = vertex_normals(unique, layout.faces)[layout.split_source]
    vertices = unique[layout.split_source]
    cam_vertices = camera.object_to_camera(vertices)
    normals_camera = normals @ np.asarray(camera.rotation).T
    return FaceGeometry(camera, cam_vertices, vertices, normals_camera, normals)


def flame_ambient_occlusion(params: FlameParameters, layout: FlameLayout) -> np.ndarray:
    """`(T,)` ambient occlusion of the fitted FLAME mesh at the layout's split vertices (baked
    on the unsplit mesh), floored as the dense face's."""
    unique = params.vertices_object()
    ao = bake_ambient_occlusion(unique, layout.faces, vertex_normals(unique, layout.faces))
    return np.maximum(ao, MIN_AMBIENT_OCCLUSION)[layout.split_source]


__all__ = [
    "FIT_WEIGHTS",
    "FlameCoefficients",
    "FlameParameters",
    "fit_flame",
    "flame_ambient_occlusion",
    "flame_geometry",
]
