"""Photometric fitting: time, convergence and how much it improves the match to the photo.

    python -m bench.bench_fitting [--repeats 3] [--steps 80] [--size 256]

Prints, for `examples/astronaut.jpg` (a real photo) and a synthetic render with known pose,
light and albedo: fit seconds (median), steps taken, ms per step, masked (skin) PSNR of the
rendered reconstruction before and after fitting, landmark error (the fitted mesh's 468
landmark vertices projected vs the detected or true landmarks, mean over the landmark box
diagonal); for the synthetic face also the recovered pose error (degrees), light (mean
relative shading error) and albedo error.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from bench.synthetic import render_view, synthetic_albedo
from modeling.face_model.topology import NUM_LANDMARKS, load_topology
from modeling.inputs.face_tracker import largest_face
from modeling.inputs.photo import load_image
from modeling.reconstruction.fitting import fit_photos
from modeling.reconstruction.geometry import FaceGeometry, fit_camera_and_shape
from modeling.reconstruction.texture import skin_mask
from rendering.camera import PinholeCamera
from rendering.color import srgb_to_linear
from rendering.mesh import vertex_normals
from rendering.sh import sh_shading

TARGET_SECONDS = 3.0


def _timed_fit(images, landmarks, geometries, topology, steps, size, repeats):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fit_photos(images, landmarks, geometries, topology, steps, render_size=size)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def landmark_error(result, camera: PinholeCamera, topology, landmarks) -> float:
    """Mean distance (pixels) between the fitted mesh's 468 landmark vertices projected with the
    fitted pose and the detected (or true) landmarks, over the landmark box diagonal, in %."""
    geometry = result.geometry(0, camera, topology)
    pixels = geometry.camera.project(geometry.vertices_camera[:NUM_LANDMARKS])
    points = landmarks.points[:, :2]
    diagonal = np.linalg.norm(points.max(0) - points.min(0))
    return float(100 * np.linalg.norm(pixels - points, axis=1).mean() / diagonal)


def _perturb(geometry: FaceGeometry, topology, degrees=(4.0, -4.0, 2.0)) -> FaceGeometry:
    c = geometry.camera
    rot = Rotation.from_euler("xyz", degrees, degrees=True).as_matrix() @ c.rotation
    cam = PinholeCamera(c.fx, c.fy, c.cx, c.cy, c.width, c.height, rot, c.translation)
    verts = cam.object_to_camera(geometry.vertices_object)
    normals = vertex_normals(verts, topology.dense_faces)
    return FaceGeometry(cam, verts, geometry.vertices_object, normals, normals @ rot)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--size", type=int, default=256, help="render resolution")
    args = parser.parse_args()
    print(
        f"machine: {os.cpu_count()} cpus, torch threads {torch.get_num_threads()}, "
        f"{platform.platform()}, torch {torch.__version__}"
    )
    topology = load_topology()

    photo = load_image("examples/astronaut.jpg")
    lm = largest_face(photo)
    geometry = fit_camera_and_shape(lm, topology)
    image = photo.astype(np.float32) / 255
    fit_photos([image], [lm], [geometry], topology, 5, render_size=args.size)  # warm-up
    seconds, res = _timed_fit(
        [image], [lm], [geometry], topology, args.steps, args.size, args.repeats
    )
    print(f"\nastronaut.jpg, render {args.size}^2, up to {args.steps} steps:")
    print(
        f"  fit {seconds:.2f} s ({res.steps} steps, {1000 * seconds / res.steps:.0f} ms/step); "
        f"skin PSNR {res.psnr_before[0]:.2f} -> {res.psnr_after[0]:.2f} dB; landmark error "
        f"{landmark_error(res, geometry.camera, topology, lm):.3f} % of the face diagonal"
    )
    verdict = "PASS" if seconds <= TARGET_SECONDS else "FAIL"
    print(f"  target: fit <= {TARGET_SECONDS:.0f} s at {args.size}^2 -> {verdict}")

    truth = synthetic_albedo(128)
    view = render_view(topology, truth, (20, -5, 0), (0.6, 0.4, 0.7))
    start_geometry = _perturb(fit_camera_and_shape(view.landmarks, topology), topology)
    seconds, res = _timed_fit(
        [view.image], [view.landmarks], [start_geometry], topology, 120, args.size, 1
    )
    rot_err = np.degrees(
        Rotation.from_matrix(res.rotations[0] @ view.camera.rotation.T).magnitude()
    )
    init_err = np.degrees(
        Rotation.from_matrix(start_geometry.camera.rotation @ view.camera.rotation.T).magnitude()
    )
    normals = vertex_normals(
        view.camera.object_to_camera(view.vertices_object), topology.dense_faces
    )
    facing = normals[normals[:, 2] > 0.3]
    light_err = np.abs(sh_shading(facing, res.sh[0]) / sh_shading(facing, view.sh) - 1).mean()
    skin = skin_mask(128, topology)
    fitted = srgb_to_linear(res.albedo)[skin]
    scale = (fitted * truth[skin]).sum(0) / (fitted**2).sum(0)
    albedo_err = np.abs(fitted * scale - truth[skin]).mean()
    print("\nsynthetic face (known pose/light/albedo), start pose 6 deg off, 120 steps:")
    print(
        f"  fit {seconds:.2f} s ({res.steps} steps); pose error {init_err:.2f} -> {rot_err:.2f} "
        f"deg; light shading error {100 * light_err:.1f} %; albedo MAE (linear, scale-aligned) "
        f"{albedo_err:.3f}; skin PSNR {res.psnr_before[0]:.2f} -> {res.psnr_after[0]:.2f} dB; "
        f"landmark error {landmark_error(res, view.camera, topology, view.landmarks):.3f} %"
    )


if __name__ == "__main__":
    main()
