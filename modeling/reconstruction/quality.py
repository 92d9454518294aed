"""Never silently wrong: measures of how far a reconstruction can be trusted, and the warnings a
user sees (`AvatarPipelineOutput.warnings`, printed by the CLI, shown by the demo) when one is
out of its normal range.

The ranges come from the benchmark's real photos (`bench/RESULTS.md`: fit skin PSNR 25.9-34.0
dB after fitting, faces 90-400 px wide) and from the failure cases they guard: a face the fit
cannot explain (occluded, painted, a wrong landmark fit), a photo too dark or too bright for its
colour to be recovered, a face too small for the maps to hold detail.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modeling.inputs.face_tracker import FaceLandmarks
from modeling.reconstruction.geometry import FaceGeometry
from rendering.color import luminance

MIN_FIT_PSNR = 22.0  # dB, skin PSNR of the fitted render
MAX_LANDMARK_RESIDUAL = 0.05  # of the face's size (landmark box diagonal)
MIN_SKIN_BRIGHTNESS = 0.12  # mean sRGB luminance of the seen skin
MAX_CLIPPED_SKIN = 0.2  # fraction of the seen skin with a channel at the top of the range
MIN_FACE_WIDTH = 80  # pixels (eyes about 15 px wide: little detail to unwrap)
MIN_SEEN_SKIN = 0.25  # fraction of the skin texels the photo saw
# Degrees the face turns away from the camera, as estimated. MediaPipe's landmarks make a turn
# too small (their depth flattens, their 2-D positions drift) and the photometric fit does not
# undo it (`python -m bench.bench_turned`: 5-7 degrees short at a true 40, 12-17 at 55, 23-36
# at 70, where the estimate can read as little as 38), so an estimate of 35 may be anything
# from a true 40 to a profile.
MAX_RELIABLE_TURN = 35.0


@dataclass(frozen=True)
class ViewQuality:
    """Measures of one photo's reconstruction (`None`: not measured, e.g. no fit).

    Attributes:
        fit_psnr (`float` or `None`): skin PSNR (dB) of the fitted render against the photo.
        landmark_residual (`float`): mean distance of the mesh's landmark vertices, projected,
            from the detected landmarks, over the face's size.
        skin_brightness (`float`): mean sRGB luminance of the skin the photo saw.
        clipped_skin (`float`): fraction of that skin with a channel at 0.98 or more.
        face_width (`float`): width of the face's landmark box, pixels.
        seen_skin (`float`): fraction of the skin texels the photo saw (visibility-weighted).
        turn (`float`): degrees between the face's forward axis and the direction to the
            camera, as estimated (0: frontal).
    """

    fit_psnr: float | None
    landmark_residual: float
    skin_brightness: float
    clipped_skin: float
    face_width: float
    seen_skin: float
    turn: float = 0.0


def measure_view(
    landmarks: FaceLandmarks,
    geometry: FaceGeometry,
    texture_seen: np.ndarray,
    visibility: np.ndarray,
    skin_texels: np.ndarray,
    fit_psnr: float | None = None,
) -> ViewQuality:
    """Args:
    landmarks, geometry: the photo's face and its (fitted) camera and mesh.
    texture_seen (`(R, R, 3)` sRGB), visibility (`(R, R)`): the photo unwrapped, before
        completion (`FirstOrderMaps`).
    skin_texels (`(R, R)` bool): the layout's skin (`modeling.reconstruction.texture.skin_mask`).
    fit_psnr (`float`, *optional*): from `FitResult.psnr_after`.
    """
    points = landmarks.points[:, :2]
    projected = geometry.camera.project(geometry.vertices_camera[: len(points)])
    size = float(np.linalg.norm(landmarks.box[2:] - landmarks.box[:2]))
    residual = float(np.linalg.norm(projected - points, axis=1).mean()) / max(size, 1e-9)
    weights = (visibility * skin_texels).reshape(-1)
    total = max(float(weights.sum()), 1e-9)
    colours = texture_seen.reshape(-1, 3)
    return ViewQuality(
        fit_psnr=fit_psnr,
        landmark_residual=residual,
        skin_brightness=float(weights @ luminance(colours)) / total,
        clipped_skin=float(weights @ (colours.max(axis=1) >= 0.98)) / total,
        face_width=landmarks.width,
        seen_skin=total / max(float(skin_texels.sum()), 1.0),
        turn=face_turn(geometry),
    )


def face_turn(geometry: FaceGeometry) -> float:
    """Degrees between the face's forward axis (object +z) and the direction from the face's
    centre to the camera: 0 for a frontal face, 90 for a profile."""
    forward = np.asarray(geometry.camera.rotation) @ np.array([0.0, 0.0, 1.0])
    centre = geometry.vertices_camera.mean(0)
    to_camera = -centre / np.linalg.norm(centre)
    return float(np.degrees(np.arccos(np.clip(forward @ to_camera, -1.0, 1.0))))


def warnings_for(quality: ViewQuality, photo_name: str = "the photo") -> list[str]:
    """The user-facing warnings for one photo's measures (empty when all are in range)."""
    out = []
    q = quality
    if q.fit_psnr is not None and q.fit_psnr < MIN_FIT_PSNR:
        out.append(
            f"the fit is poor in {photo_name} (skin PSNR {q.fit_psnr:.1f} dB, expected at least "
            f"{MIN_FIT_PSNR:.0f}): the face may be covered, painted, strongly lit or not a real "
            "face; check the render"
        )
    if q.landmark_residual > MAX_LANDMARK_RESIDUAL:
        out.append(
            f"the fitted face lies {100 * q.landmark_residual:.0f} % of the face's size from the "
            f"landmarks found in {photo_name}: the shape or the pose may be wrong"
        )
    if q.skin_brightness < MIN_SKIN_BRIGHTNESS:
        out.append(
            f"{photo_name} is very dark on the face (brightness {100 * q.skin_brightness:.0f} %):"
            " the albedo is noisy and its colour unreliable"
        )
    if q.clipped_skin > MAX_CLIPPED_SKIN:
        out.append(
            f"{photo_name} is blown out on the face ({100 * q.clipped_skin:.0f} % of the skin at"
            " full brightness): the albedo there is flat and too bright"
        )
    if q.face_width < MIN_FACE_WIDTH:
        out.append(
            f"the face is small in {photo_name} ({q.face_width:.0f} px wide): the maps hold no "
            "more detail than that"
        )
    if q.seen_skin < MIN_SEEN_SKIN:
        out.append(
            f"{photo_name} shows little of the face ({100 * q.seen_skin:.0f} % of the skin): most "
            "of the texture is completed, not seen"
        )
    if q.turn > MAX_RELIABLE_TURN:
        out.append(
            f"the face is turned about {q.turn:.0f} degrees from the camera in {photo_name}: "
            "beyond ~45 degrees the landmarks make the turn too small, so the far side's shape "
            "and texture are guesses; a more frontal photo, or several photos, give a truer head"
        )
    return out
