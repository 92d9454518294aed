"""`AvatarPipeline`: one photo of a face -> mesh, camera, lighting and UV maps.

Stages (each a function in `modeling/` or `rendering/`): input -> face tracking -> camera and
shape -> UV unwrapping with visibility -> SH lighting estimate and first-order de-lighting ->
completion (mirror + pull-push) -> [x4 super-resolution of the texture and first-order albedo]
-> shape normal maps -> reflectance networks (de-lighting, specular albedo, detail normals;
sliding window) -> render over the photo.

Super-resolution (AvatarMe): with the `superres` component loaded and the config's
`super_resolution="auto"`, maps of 2048 px and more are unwrapped and first-order de-lit at a
quarter of the resolution and super-resolved x4 (`modeling.superres.SuperResolutionNet`), so
they get skin detail the photo does not have and the unwrapping costs less; "on" does so at every
resolution (a multiple of 4, at least 256), "off" never.

Device placement: the reflectance networks are registered components, so `pipe.to("cuda")` (or
a dtype) moves them as in diffusers; the tiles are copied to `pipe.device` one batch at a time
and the maps come back to the CPU as float32 numpy arrays.
"""

from __future__ import annotations

import importlib
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from modeling.blocks import uv_coordinates
from modeling.delighting import check_white_balance
from modeling.errors import FaceIndexError, WeightsError
from modeling.export import to_pil
from modeling.face_tracker import FaceLandmarks, FaceTracker
from modeling.fitting import FitResult, face_ambient_occlusion, fit_photos
from modeling.geometry import fit_camera_and_shape
from modeling.image_input import load_image
from modeling.lighting import first_order_maps, fuse_first_order_maps
from modeling.patches import sliding_window
from modeling.texture import check_resolution, complete_uv_map, uv_atlas
from modeling.topology import load_topology
from rendering.camera import PinholeCamera
from rendering.mesh import to_tangent_space, vertex_tangents
from rendering.render import (
    barycentric_interpolate,
    linear_to_srgb,
    rasterize_view,
    sample_uv_map,
    srgb_to_linear,
)
from rendering.sh import sh_shading

MAP_NAMES = (
    "texture",
    "diffuse_albedo",
    "shape_normals",
    "shape_normals_tangent",
    "ambient_occlusion",
    "visibility",
)
# Added when the reflectance networks are loaded (`weights_config/` ships them).
REFLECTANCE_MAP_NAMES = (
    "diffuse_albedo_first_order",
    "specular_albedo",
    "specular_normals",
    "diffuse_normals",
)
REFLECTANCE_COMPONENTS = ("superres", "delighting", "specular", "normals")
MAP_NETWORKS = ("delighting", "specular", "normals")  # run by `reflectance_maps`
# Sliding window of the reflectance networks: tiles of 512 px overlapping by 64 px, two at a
# time, bound the memory at 4K (about 0.4 GB of activations) and hide the tile borders.
TILE_SIZE, TILE_OVERLAP, TILE_BATCH = 512, 64, 2
# Super-resolution: 256 px input tiles (1024 px out) with the network's receptive field as
# margin, so the tiles reproduce the whole-map output exactly; at and above this resolution
# `super_resolution="auto"` super-resolves.
SR_TILE_SIZE, SR_TILE_OVERLAP, SR_MIN_RESOLUTION = 256, 8, 2048
SUPER_RESOLUTION_MODES = ("auto", "on", "off")


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
class AvatarPipelineOutput(BaseOutput):
    """Output of `AvatarPipeline`.

    Attributes:
        mesh (`FaceMesh`): the dense face mesh (7,305 vertices) in object space.
        camera (`PinholeCamera`): intrinsics of the photo and object-to-camera pose.
        lighting (`np.ndarray` of shape `(3, 9)`): SH coefficients of the light in camera space
            (linear RGB, see `rendering.sh`), white and averaging shading 1 on the skin; with the
            de-lighting network, scaled per channel to its `diffuse_albedo` (least squares over
            the visible texels), so that albedo x lighting still reproduces the photo.
        maps (`dict[str, np.ndarray | PIL.Image.Image]`): UV maps `(R, R, C)` float32 in [0, 1]
            (or PIL images with `output_type="pil"`): `texture` (the photo unwrapped and
            completed, sRGB), `diffuse_albedo` (sRGB), `shape_normals` (object space, (n+1)/2),
            `shape_normals_tangent` (tangent space, (n+1)/2), `ambient_occlusion` and
            `visibility` (1 channel each); with the reflectance networks also
            `diffuse_albedo_first_order` (the backbone's; `diffuse_albedo` is then the
            network's), `specular_albedo` (1 channel), `specular_normals` and `diffuse_normals`
            (tangent space on the mesh's smooth frame, (n+1)/2).
        render (`np.ndarray` `(H, W, 3)` float32 or PIL): albedo x lighting rendered over the
            photo.
        render_mask (`np.ndarray` `(H, W)` bool): pixels covered by the face.
        image (`np.ndarray` `(H, W, 3)` uint8): the input photo, upright RGB.
        landmarks (`FaceLandmarks`): the tracked face.
        timings (`dict[str, float]`): seconds per stage.
        fit (`FitResult` or `None`): the photometric fit (losses, masked PSNR before/after),
            `None` with `num_fit_steps=0`.
        views (`list[dict]`): per photo (several photos of one person): `camera`, `lighting`,
            `render`, `render_mask`, `image`, `landmarks`; the fields above are the first's.
    """

    mesh: FaceMesh
    camera: PinholeCamera
    lighting: np.ndarray
    maps: dict
    render: np.ndarray
    render_mask: np.ndarray
    image: np.ndarray
    landmarks: FaceLandmarks
    timings: dict
    fit: FitResult | None = None
    views: list | None = None


class _Timer:
    def __init__(self):
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def _encode_normals(n: np.ndarray) -> np.ndarray:
    return np.clip((n + 1) * 0.5, 0, 1).astype(np.float32)


class AvatarPipeline(DiffusionPipeline):
    """Photo -> render-ready 3D face.

    Components (optional; `weights_config/` ships all four): `superres`
    (`modeling.superres.SuperResolutionNet`), `delighting` (`modeling.delighting.DelightingNet`),
    `specular` (`modeling.specular.SpecularAlbedoNet`), `normals`
    (`modeling.normals.DetailNormalsNet`). Without them the maps are the first-order ones only.

    Config `super_resolution` (`str`): "auto" (default: with `superres` loaded, maps of 2048 px
    and more are unwrapped at a quarter of the resolution and super-resolved x4), "on" (at every
    resolution; needs `superres`), "off". Config `white_balance` (`str`): "camera" (default: the
    de-lighting network corrects the exposure and keeps the photo's white balance) or
    "skin_prior" (it also re-balances the colour toward the skin colours it was trained on; see
    `modeling.delighting.DelightingNet.global_gain`).

    >>> from pipelines import AvatarPipeline
    >>> pipe = AvatarPipeline.from_pretrained("weights_config")
    >>> out = pipe("examples/astronaut.jpg", resolution=1024)
    >>> out.maps["diffuse_albedo"].shape
    (1024, 1024, 3)
    """

    _optional_components = list(REFLECTANCE_COMPONENTS)

    def __init__(
        self,
        delighting=None,
        specular=None,
        normals=None,
        superres=None,
        resolution: int = 1024,
        fov_degrees: float = 40.0,
        max_num_faces: int = 5,
        min_face_size: int = 64,
        num_fit_steps: int = 80,
        fit_resolution: int = 256,
        super_resolution: str = "auto",
        white_balance: str = "camera",
    ):
        super().__init__()
        check_resolution(resolution)
        _check_super_resolution_mode(super_resolution)
        check_white_balance(white_balance)
        self.register_modules(
            delighting=delighting, specular=specular, normals=normals, superres=superres
        )
        self.register_to_config(
            resolution=resolution,
            fov_degrees=fov_degrees,
            max_num_faces=max_num_faces,
            min_face_size=min_face_size,
            num_fit_steps=num_fit_steps,
            fit_resolution=fit_resolution,
            super_resolution=super_resolution,
            white_balance=white_balance,
        )
        self._tracker: FaceTracker | None = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs):
        """Load from a local folder, or from a Hub repo id through
        `huggingface_hub.snapshot_download` (respects `HF_HUB_OFFLINE` and `cache_dir`)."""
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            path = Path(
                snapshot_download(
                    str(pretrained_model_name_or_path),
                    cache_dir=kwargs.pop("cache_dir", None),
                    revision=kwargs.pop("revision", None),
                    token=kwargs.pop("token", None),
                )
            )
        _check_component_weights(path)
        return super().from_pretrained(str(path), **kwargs)

    @property
    def tracker(self) -> FaceTracker:
        if self._tracker is None:
            self._tracker = FaceTracker(
                max_num_faces=self.config.max_num_faces, min_face_size=self.config.min_face_size
            )
        return self._tracker

    def detect_faces(self, image) -> list[FaceLandmarks]:
        """All faces in a photo (path, PIL, array), largest first."""
        return self.tracker.detect(load_image(image))

    def __call__(
        self,
        image,
        *,
        resolution: int | None = None,
        face_index: int = 0,
        num_fit_steps: int | None = None,
        super_resolution: str | None = None,
        white_balance: str | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ):
        """Reconstruct one face from one photo, or one person from several photos.

        Args:
            image (`str`, `Path`, `PIL.Image.Image`, `np.ndarray` `(H, W, 3)` uint8 or float in
                [0, 1], or `torch.Tensor` `(3, H, W)`; or a `list` of them): the photo, or
                several photos of the same person (one identity: shape and albedo are shared,
                each photo gets its own pose and light, FitMe's multi-image setting).
            resolution (`int`, *optional*): UV map size, 512..4096 (default: the config's).
            face_index (`int`): which face in each photo, counting from the largest (0).
            num_fit_steps (`int`, *optional*): photometric fitting steps (0: geometry from the
                landmarks only; default: the config's).
            super_resolution (`str`, *optional*): "auto", "on" or "off" (default: the config's;
                see the class docstring).
            white_balance (`str`, *optional*): "camera" or "skin_prior" (default: the config's;
                see the class docstring).
            output_type (`str`): `"np"` (float32 arrays) or `"pil"` (maps and render as images).
            return_dict (`bool`): return an `AvatarPipelineOutput` (else a tuple).
        """
        if output_type not in ("np", "pil"):
            raise ValueError(f"output_type must be 'np' or 'pil', got {output_type!r}")
        images = list(image) if isinstance(image, list | tuple) else [image]
        if not images:
            raise ValueError("no photo given")
        resolution = check_resolution(resolution or self.config.resolution)
        timer = _Timer()
        topology = load_topology()
        num_fit_steps = self.config.num_fit_steps if num_fit_steps is None else num_fit_steps
        use_sr = self._use_super_resolution(resolution, super_resolution)
        white_balance = check_white_balance(white_balance or self.config.white_balance)
        unwrap_resolution = resolution // 4 if use_sr else resolution
        with self.progress_bar(total=5) as progress:  # closed on errors too
            with timer("input"):
                photos = [load_image(im) for im in images]
                images_f = [p.astype(np.float32) / 255.0 for p in photos]
            with timer("face_tracking"):
                landmarks = [self._track(p, face_index) for p in photos]
            progress.update()
            with timer("camera_and_shape"):
                geometries = [
                    fit_camera_and_shape(lm, topology, self.config.fov_degrees) for lm in landmarks
                ]
            progress.update()
            lights, fit_result = [None] * len(photos), None
            if num_fit_steps > 0:
                with timer("fit"), self.progress_bar(total=num_fit_steps) as fit_bar:
                    fit_result = fit_photos(
                        images_f,
                        landmarks,
                        geometries,
                        topology,
                        num_steps=num_fit_steps,
                        render_size=self.config.fit_resolution,
                        callback=lambda step, loss: fit_bar.update(),
                        device=self.device,
                    )
                    geometries = [
                        fit_result.geometry(i, g.camera, topology) for i, g in enumerate(geometries)
                    ]
                    lights, ao = list(fit_result.sh), fit_result.ambient_occlusion
            else:
                with timer("ambient_occlusion"):
                    ao = face_ambient_occlusion(geometries[0].vertices_object, topology)
            progress.update()
            with timer("unwrap_and_delight"):
                rasts = [
                    rasterize_view(g.camera, g.vertices_camera, topology.dense_faces)
                    for g in geometries
                ]
                firsts = [
                    first_order_maps(im, g, r, unwrap_resolution, topology, light, ao=ao)
                    for im, g, r, light in zip(images_f, geometries, rasts, lights, strict=True)
                ]
                texture, albedo, visibility = fuse_first_order_maps(firsts)
            progress.update()
            if use_sr:
                with timer("super_resolution"):
                    texture, albedo, visibility = self._super_resolve(texture, albedo, visibility)
            with timer("normal_maps"):
                geometry = geometries[0]
                atlas = uv_atlas(resolution, topology) if use_sr else firsts[0].unwrapped.atlas
                shape_maps = self._shape_maps(geometry, atlas, topology, ao)
            with timer("reflectance"):
                reflectance = self.reflectance_maps(
                    texture, albedo, shape_maps, visibility, atlas.chart, white_balance
                )
                # the light, re-expressed for the exported albedo (albedo x light ~ the photo)
                light_gain = _albedo_gain(albedo, reflectance.get("diffuse_albedo"), visibility)
            with timer("render"):
                renders = [
                    self._render_over_photo(im, r, topology, albedo, f.lighting, g, ao)
                    for im, r, f, g in zip(images_f, rasts, firsts, geometries, strict=True)
                ]
            progress.update()

        mesh = FaceMesh(
            geometry.vertices_object.astype(np.float32),
            topology.dense_faces.astype(np.int32),
            topology.dense_uvs.astype(np.float32),
            geometry.normals_object.astype(np.float32),
        )
        maps = {
            "texture": texture,
            "diffuse_albedo": albedo,
            **shape_maps,
            "visibility": visibility[..., None],
            **reflectance,  # replaces diffuse_albedo with the network's
        }
        views = [
            {"camera": g.camera, "lighting": (f.lighting * light_gain[:, None]).astype(np.float32),
             "render": r,
             "render_mask": m, "image": p, "landmarks": lm}
            for g, f, (r, m), p, lm in zip(geometries, firsts, renders, photos, landmarks,
                                           strict=True)
        ]  # fmt: skip
        if output_type == "pil":
            maps = {k: to_pil(v) for k, v in maps.items()}
            for view in views:
                view["render"] = to_pil(view["render"])
        first = views[0]
        out = AvatarPipelineOutput(
            mesh=mesh,
            camera=first["camera"],
            lighting=first["lighting"],
            maps=maps,
            render=first["render"],
            render_mask=first["render_mask"],
            image=first["image"],
            landmarks=first["landmarks"],
            timings=timer.timings,
            fit=fit_result,
            views=views,
        )
        return out if return_dict else tuple(out.values())

    def _track(self, photo: np.ndarray, face_index: int) -> FaceLandmarks:
        faces = self.tracker.detect(photo)
        if not 0 <= face_index < len(faces):
            raise FaceIndexError(
                f"face number {face_index} requested, but the image has {len(faces)} "
                f"face{'s' if len(faces) != 1 else ''} (numbered from 0, largest first)"
            )
        return faces[face_index]

    @torch.no_grad()
    def reflectance_maps(
        self, texture, albedo, shape_maps, visibility, chart=None, white_balance="camera"
    ) -> dict[str, np.ndarray]:
        """The reflectance networks (those loaded) over the first-order maps, by sliding
        window on `self.device` / `self.dtype`. `__call__` runs it; call it again on an
        output's maps to change `white_balance` without refitting:

        >>> maps = out.maps  # doctest: +SKIP
        >>> shape = {k: maps[k] for k in ("shape_normals", "ambient_occlusion")}  # doctest: +SKIP
        >>> pipe.reflectance_maps(maps["texture"], maps["diffuse_albedo_first_order"], shape,
        ...                       maps["visibility"], white_balance="skin_prior")  # doctest: +SKIP

        Args:
            texture, albedo (`(R, R, 3)` float sRGB): the unwrapped photo and its first-order
                de-lit albedo.
            shape_maps (`dict`): `shape_normals` `(R, R, 3)` and `ambient_occlusion`
                `(R, R, 1)`, as in the output's maps.
            visibility (`(R, R)` or `(R, R, 1)`): how well the photo saw each texel.
            chart (`(R, R)` bool, *optional*): the texels the mesh covers (the specular map's
                level is set on them; `None`: all).
            white_balance (`str`): the de-lighting network's mode
                (`modeling.delighting.WHITE_BALANCE_MODES`).
        Returns:
            `dict` of `(R, R, C)` float32 maps: `diffuse_albedo_first_order`, and those of the
            loaded networks (`diffuse_albedo`, `specular_albedo`, `specular_normals`,
            `diffuse_normals`); empty without networks.
        """
        if all(getattr(self, name, None) is None for name in MAP_NETWORKS):
            return {}

        def tensor(x):  # (R, R, C) numpy -> (1, C, R, R) view, copied per tile only
            return torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(2, 0, 1)[None]

        def run(net, inputs, channels):
            out = sliding_window(net, inputs, channels, TILE_SIZE, TILE_OVERLAP, TILE_BATCH,
                                 device=self.device, dtype=self.dtype)  # fmt: skip
            return out[0].clamp(0, 1).permute(1, 2, 0).numpy()

        tex, shape = tensor(texture), tensor(shape_maps["shape_normals"])
        delit = tensor(albedo)
        vis = tensor(visibility.reshape(*visibility.shape[:2], 1))
        maps = {"diffuse_albedo_first_order": albedo}
        if self.delighting is not None:
            ao = tensor(shape_maps["ambient_occlusion"])
            # whole-map statistics, computed once: the tiles then agree on the global correction
            stats = self.delighting.global_stats(tex, delit, vis).to(self.device, self.dtype)

            def delighting(*tiles):
                return self.delighting(*tiles, stats.expand(len(tiles[0]), -1), white_balance)

            maps["diffuse_albedo"] = run(delighting, [tex, delit, shape, ao, vis], 3)
        diffuse = tensor(maps.get("diffuse_albedo", albedo))
        uv = uv_coordinates(*diffuse.shape[-2:])
        if self.specular is not None:
            context = self.specular.context_maps(tex, delit, shape, vis).to(self.device, self.dtype)

            def specular(*tiles):  # the whole-map context, pooled once, for every tile
                return self.specular(*tiles, context.expand(len(tiles[0]), -1, -1, -1))

            spec = run(specular, [diffuse, shape, tex, uv], 1)
            maps["specular_albedo"] = self.specular.with_prior_level(spec, chart)
        if self.normals is not None:
            detail = run(self.normals, [diffuse, shape, tex, uv], 6)
            maps["specular_normals"] = np.ascontiguousarray(detail[..., :3])
            maps["diffuse_normals"] = np.ascontiguousarray(detail[..., 3:])
        return maps

    def _use_super_resolution(self, resolution: int, mode: str | None) -> bool:
        mode = _check_super_resolution_mode(mode or self.config.super_resolution)
        net = getattr(self, "superres", None)
        if mode == "off" or (mode == "auto" and (net is None or resolution < SR_MIN_RESOLUTION)):
            return False
        if net is None:
            raise ValueError('super_resolution="on" needs the `superres` component')
        if resolution % 4 or resolution < 256:
            raise ValueError(
                f"super-resolution x4 needs a resolution that is a multiple of 4 and at least "
                f"256, got {resolution}"
            )
        return True

    @torch.no_grad()
    def _super_resolve(self, texture, albedo, visibility):
        """Texture and first-order albedo `(r, r, 3)` -> x4 by `superres` (sliding window on
        `self.device` / `self.dtype`); visibility `(r, r)` -> x4 bilinear."""
        import cv2

        net = self.superres

        def run(x):
            x = torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(2, 0, 1)[None]
            out = sliding_window(net, [x], 3, SR_TILE_SIZE, SR_TILE_OVERLAP, TILE_BATCH,
                                 device=self.device, dtype=self.dtype, scale=net.config.scale,
                                 margin=net.receptive_field)  # fmt: skip
            return np.ascontiguousarray(out[0].clamp_(0, 1).permute(1, 2, 0).numpy())

        size = visibility.shape[0] * net.config.scale
        visibility = cv2.resize(visibility.astype(np.float32), (size, size),
                                interpolation=cv2.INTER_LINEAR)  # fmt: skip
        return run(texture), run(albedo), np.clip(visibility, 0, 1)

    @staticmethod
    def _shape_maps(geometry, atlas, topology, ao) -> dict[str, np.ndarray]:
        """Shape normals (object and tangent space) and ambient occlusion as complete UV maps."""
        faces = topology.dense_faces
        tangents = vertex_tangents(
            geometry.vertices_object, faces, topology.dense_uvs, geometry.normals_object
        )
        n_obj = atlas.interpolate(geometry.normals_object, faces)
        n_obj /= np.maximum(np.linalg.norm(n_obj, axis=1, keepdims=True), 1e-12)
        # Relative to the exported mesh's own smooth frame the shape adds no detail, so this map
        # is flat (0.5, 0.5, 1); detail normals (the reflectance networks) use the same transform.
        n_tan = to_tangent_space(n_obj, atlas.interpolate(tangents, faces), n_obj)
        chart = atlas.chart.astype(np.float32)
        per_texel = {
            "shape_normals": _encode_normals(n_obj),
            "shape_normals_tangent": _encode_normals(n_tan),
            "ambient_occlusion": atlas.interpolate(ao[:, None], faces),
        }
        return {
            name: complete_uv_map(atlas.to_image(values), chart, use_mirror=False)[0]
            for name, values in per_texel.items()
        }

    @staticmethod
    def _render_over_photo(image_f, view_rast, topology, albedo_map, lighting, geometry, ao):
        """Albedo x SH shading x AO of the mesh, composited over the photo -> `(H, W, 3)`,
        mask."""
        mask = view_rast[..., 3] > 0
        face_ids = view_rast[..., 3][mask].astype(np.int64) - 1
        bary = view_rast[..., :2][mask]
        uv = barycentric_interpolate(topology.dense_uvs, topology.dense_faces, face_ids, bary)
        normals = barycentric_interpolate(
            geometry.normals_camera, topology.dense_faces, face_ids, bary
        )
        normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        albedo = srgb_to_linear(sample_uv_map(albedo_map, uv))
        occlusion = barycentric_interpolate(ao[:, None], topology.dense_faces, face_ids, bary)
        shading = np.maximum(sh_shading(normals, lighting), 0) * occlusion
        shaded = linear_to_srgb(albedo * shading)
        render = image_f.copy()
        render[mask] = shaded
        return render, mask


def _albedo_gain(first_order, network, visibility) -> np.ndarray:
    """`(3,)` per-channel gain g with lin(network) * g ~ lin(first_order) on the visible texels
    (ones without a network albedo)."""
    if network is None:
        return np.ones(3)
    w = visibility.reshape(-1)
    a = srgb_to_linear(np.clip(first_order, 0, 1)).reshape(-1, 3)
    b = srgb_to_linear(np.clip(network, 0, 1)).reshape(-1, 3)
    return (w @ (a * b)) / np.maximum(w @ (b * b), 1e-8)


def _check_super_resolution_mode(mode: str) -> str:
    if mode not in SUPER_RESOLUTION_MODES:
        raise ValueError(f"super_resolution must be one of {SUPER_RESOLUTION_MODES}, got {mode!r}")
    return mode


def _check_component_weights(folder: Path) -> None:
    """Refuse a pretrained folder whose components' weights are missing or unreadable, naming
    the component (never run on random weights); import the modules of our own components."""
    import json

    from safetensors.torch import load_file

    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise WeightsError(f"{folder} has no model_index.json")
    index = json.loads(index_path.read_text())
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list) or None in value:
            continue
        sub = folder / name
        weights = sub / "diffusion_pytorch_model.safetensors"
        if not (sub / "config.json").is_file():
            raise WeightsError(f"component {name!r}: missing {sub / 'config.json'}")
        if not weights.is_file():
            raise WeightsError(f"component {name!r}: missing weights {weights}")
        try:
            json.loads((sub / "config.json").read_text())
            tensors = load_file(str(weights))
        except Exception as err:
            raise WeightsError(f"component {name!r}: corrupt weights {weights} ({err})") from err
        if not tensors:
            raise WeightsError(f"component {name!r}: empty weights {weights}")
        library = value[0]
        if library.split(".")[0] == "modeling":
            # Our own component modules ship with this code; diffusers loads a component only
            # from a module that is already imported (it never imports what a repo names).
            importlib.import_module(library)
