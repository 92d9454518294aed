"""Time the differentiable rendering ops (forward + backward) on the dense face mesh.

    python -m bench.bench_differentiable [--repeats 10] [--distance 0.5]   # from the repo root

The mean frontal face (`load_topology().frontal_shape`, lifted to the dense mesh, 14,464
triangles) 0.5 m in front of `PinholeCamera.from_fov(256, 256)` (40 degrees), rendered at 256^2
and 512^2 with the same camera: barycentrics recomputed from `pos`, UVs interpolated, a 512^2
albedo map sampled, the silhouette antialiased, and the gradient of a photometric L2 loss taken
w.r.t. the positions and the map (`interpolate(..., pos=)` computes the barycentrics inside).
Rasterization (not differentiable) and `barycentrics` alone are timed on their own. Times are
the best of `--repeats` runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from modeling.face_model.topology import load_topology
from rendering.antialias import antialias, antialias_construct_topology_hash
from rendering.camera import PinholeCamera
from rendering.differentiable import barycentrics, interpolate, texture
from rendering.rasterize import rasterize


def face_scene(distance: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`[1, V, 4]` float32 clip positions, `[F, 3]` int64 faces, `[V, 2]` float32 UVs."""
    topology = load_topology()
    vertices = topology.lift(topology.frontal_shape[:468])
    camera = PinholeCamera.from_fov(256, 256, translation=np.array([0.0, 0.0, -distance]))
    clip = camera.camera_to_clip(camera.object_to_camera(vertices))
    return (
        torch.tensor(clip[None], dtype=torch.float32),
        torch.tensor(topology.dense_faces, dtype=torch.int64),
        torch.tensor(topology.dense_uvs, dtype=torch.float32),
    )


def best_time(fn, repeats: int) -> float:
    """Fastest of `repeats` runs after a warm-up: on a shared machine the minimum is the least
    disturbed by other processes."""
    fn()  # warm-up (numba cache load, allocator, topology hash)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--distance", type=float, default=0.5, help="metres from the camera")
    args = parser.parse_args()

    pos0, tri, uvs = face_scene(args.distance)
    topology_hash = antialias_construct_topology_hash(tri)
    albedo0 = torch.rand(512, 512, 3, generator=torch.Generator().manual_seed(0))
    print(f"mesh: {tri.shape[0]} triangles, torch threads: {torch.get_num_threads()}")
    for res in (256, 512):
        rast = rasterize(pos0, tri, (res, res))
        covered = rast[..., 3] > 0
        target = torch.rand(1, res, res, 3, generator=torch.Generator().manual_seed(1))
        stages = {}

        def forward(stages=stages, rast=rast, target=target):
            pos = pos0.clone().requires_grad_(True)
            albedo = albedo0.clone().requires_grad_(True)
            t1 = time.perf_counter()
            uv = interpolate(uvs, rast, tri, pos=pos)
            t2 = time.perf_counter()
            color = texture(albedo, uv)
            t3 = time.perf_counter()
            color = antialias(color, rast, pos, tri, topology_hash)
            t4 = time.perf_counter()
            loss = ((color - target) ** 2).mean()
            stages.setdefault("interpolate(pos=)", []).append(t2 - t1)
            stages.setdefault("texture", []).append(t3 - t2)
            stages.setdefault("antialias", []).append(t4 - t3)
            return loss, pos, albedo

        def forward_backward():
            loss, pos, albedo = forward()
            loss.backward()
            assert pos.grad is not None and albedo.grad is not None

        def bary_forward_backward(rast=rast):
            pos = pos0.clone().requires_grad_(True)
            barycentrics(pos, tri, rast).sum().backward()

        t_rast = best_time(lambda res=res: rasterize(pos0, tri, (res, res)), args.repeats)
        t_bary = best_time(bary_forward_backward, args.repeats)
        t_fwd = best_time(lambda: forward(), args.repeats)
        t_all = best_time(forward_backward, args.repeats)
        parts = ", ".join(f"{k} {min(v) * 1e3:.1f}" for k, v in stages.items())
        print(
            f"{res:4d}x{res:<4d} (coverage {covered.float().mean():.0%}): rasterize "
            f"{t_rast * 1e3:6.1f} ms | forward {t_fwd * 1e3:6.1f} ms | forward+backward "
            f"{t_all * 1e3:6.1f} ms | forward stages (ms): {parts} | barycentrics alone, "
            f"forward+backward {t_bary * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
