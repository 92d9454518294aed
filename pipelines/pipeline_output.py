"""What `AvatarPipeline` returns: the mesh, the UV maps, and one `ViewOutput` per photo."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from diffusers.utils import BaseOutput

from modeling.face_model.head import HeadMesh
from modeling.inputs.face_tracker import FaceLandmarks
from modeling.reconstruction.fitting import FitResult
from modeling.reconstruction.flame_fit import FlameParameters
from modeling.reconstruction.quality import ViewQuality
from rendering.camera import PinholeCamera


@dataclass
class FaceMesh:
    """Attributes:
    vertices (`(V, 3)` float32): object (head) space, metres, +y up, face towards +z.
    faces (`(F, 3)` int32): CCW seen from outside.
    uvs (`(V, 2)` float32): texture coordinates, origin bottom-left.
    normals (`(V, 3)` float32): unit vertex normals.
    """

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    normals: np.ndarray


@dataclass
class ViewOutput:
    """One photo of the reconstruction.

    Attributes:
        camera (`PinholeCamera`): intrinsics of the photo and object-to-camera pose.
        lighting (`np.ndarray` of shape `(3, 9)`): SH coefficients of the light in camera space
            (linear RGB, see `rendering.sh`), white and averaging shading 1 on the skin; with the
            de-lighting network, scaled per channel to its `diffuse_albedo` (least squares over
            the visible texels), so that albedo x lighting still reproduces the photo.
        render (`np.ndarray` `(H, W, 3)` float32 or PIL): albedo x lighting rendered over the
            photo where it shows the face's skin (`skin_mask`; occluders stay in front).
        render_mask (`np.ndarray` `(H, W)` bool): pixels covered by the face.
        skin_mask (`np.ndarray` `(H, W)` float32 in [0, 1] or `None`): what of the photo is
            this face's skin (`modeling.inputs.skin_segmentation`: not background, a hand,
            hair or glasses); only those pixels were unwrapped into the maps.
        image (`np.ndarray` `(H, W, 3)` uint8): the input photo, upright RGB.
        landmarks (`FaceLandmarks`): the tracked face.
        quality (`ViewQuality`): how far this photo's reconstruction can be trusted (fit PSNR,
            landmark residual, exposure, face size, skin seen).
        quarter_turns (`int`): counter-clockwise quarter turns that made the face upright for
            the reconstruction (`modeling.inputs.orientation`); every field above is for the
            photo as given.
    """

    camera: PinholeCamera
    lighting: np.ndarray
    render: np.ndarray
    render_mask: np.ndarray
    image: np.ndarray
    landmarks: FaceLandmarks
    quality: ViewQuality | None = None
    quarter_turns: int = 0
    skin_mask: np.ndarray | None = None


def _first_view(name: str) -> property:
    """A read-only attribute that reads the first view's `name` (one photo: the only one)."""
    return property(lambda self: getattr(self.views[0], name), doc=f"`views[0].{name}`")


@dataclass
class AvatarPipelineOutput(BaseOutput):
    """Output of `AvatarPipeline`.

    Attributes:
        mesh (`FaceMesh`): in object space: the head's skin (face, scalp, ears, neck, eye
            sockets; `head.skin`) with `head=True`, else the dense face mesh (7,305 vertices).
            The maps are in its UV layout (the face's texels are the same either way).
        maps (`dict[str, np.ndarray | PIL.Image.Image]`): UV maps `(R, R, C)` float32 in [0, 1]
            (or PIL images with `output_type="pil"`): `texture` (the photo unwrapped and
            completed, sRGB), `diffuse_albedo` (sRGB), `shape_normals` (object space, (n+1)/2),
            `shape_normals_tangent` (tangent space, (n+1)/2), `ambient_occlusion` and
            `visibility` (1 channel each), `skin_mask` (1 channel: what the photos showed of
            each texel as skin, the geometric visibility times the photo's skin mask); with the
            reflectance networks also `diffuse_albedo_first_order` (the backbone's;
            `diffuse_albedo` is then the network's), `specular_albedo` (1 channel),
            `specular_normals` and `diffuse_normals` (tangent space on the mesh's smooth frame,
            (n+1)/2).
        views (`list[ViewOutput]`): one per photo (several photos of one person share the mesh
            and the maps); `camera`, `lighting`, `render`, `render_mask`, `skin_mask`, `image` and
            `landmarks` read the first.
        timings (`dict[str, float]`): seconds per stage.
        fit (`FitResult` or `None`): the photometric fit (losses, masked PSNR before/after),
            `None` with `num_fit_steps=0`.
        head (`HeadMesh` or `None`): the full head (`modeling.face_model.head`): skin, eyeballs
            (with their `eye_texture`), mouth bag, the 52 ARKit facial actions as morph
            targets; `None` with `head=False`.
        warnings (`list[str]`): what makes this reconstruction doubtful (poor fit, dark or
            blown-out photo, small face, little skin seen; `modeling.reconstruction.quality`);
            empty when nothing does. The CLI prints them, the demo shows them.
        flame (`FlameParameters` or `None`): with a FLAME head (`head_model="flame"`): the
            fitted FLAME parameters (shape, expression, poses, translation; FLAME's frame), and
            `mesh` is FLAME's (split at its UV seams), the maps in FLAME's UV layout.
    """

    mesh: FaceMesh
    maps: dict
    views: list[ViewOutput]
    timings: dict
    fit: FitResult | None = None
    warnings: list[str] = field(default_factory=list)
    head: HeadMesh | None = None
    flame: FlameParameters | None = None

    camera = _first_view("camera")
    lighting = _first_view("lighting")
    render = _first_view("render")
    render_mask = _first_view("render_mask")
    skin_mask = _first_view("skin_mask")
    image = _first_view("image")
    landmarks = _first_view("landmarks")
