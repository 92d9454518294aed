"""`AvatarPipeline`: one photo of a face (or several of one person) -> mesh, camera, lighting
and UV maps.

Stages, in the order `__call__` runs them: input (`modeling.inputs.photo`) -> face tracking
(`modeling.inputs.face_tracker`) -> camera and shape (`modeling.reconstruction.geometry`) ->
skin mask (`modeling.inputs.skin_segmentation`) -> photometric fit
(`modeling.reconstruction.fitting`) -> the skin mask refined with the fitted light (cast
shadows, `refine_with_shading`) -> UV unwrapping with visibility and
first-order de-lighting (`modeling.reconstruction.first_order`) -> shape maps
(`modeling.reconstruction.shape_maps`) -> reflectance networks
(`modeling.networks.reflectance`) -> render over the photo (`rendering.render`).

Large maps: with the config's `unwrap_resolution="auto"`, maps of 2048 px and more are
unwrapped and first-order de-lit no finer than the photo holds detail (at a half or a quarter of
the resolution for most photos; `modeling.reconstruction.texture.choose_unwrap_size`) and
upsampled; "full" unwraps at the maps' resolution. (The x4 super-resolution network that did
this step until 2026-12 added nothing measurable over bicubic upsampling and was dropped.)

Device placement: the reflectance networks are registered components, so `pipe.to("cuda")` (or
a dtype) moves them as in diffusers; the tiles are copied to `pipe.device` one batch at a time
and the maps come back to the CPU as float32 numpy arrays.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np
from diffusers import DiffusionPipeline

from modeling.export import to_pil
from modeling.face_model.flame import FlameLayout
from modeling.face_model.head import (
    HeadModel,
    aim_eyes,
    head_mesh,
    load_head_model,
    skin_ambient_occlusion,
)
from modeling.face_model.head_models import load_head_choice
from modeling.face_model.topology import Topology, load_topology
from modeling.inputs.face_tracker import FaceLandmarks, FaceTracker, select_face
from modeling.inputs.orientation import detect_upright, turn_axes, turn_camera, turn_landmarks
from modeling.inputs.photo import load_image
from modeling.inputs.skin_segmentation import (
    MIN_SKIN_FRACTION,
    SkinSegmentation,
    SkinSegmenter,
    check_skin_fraction,
    refine_with_shading,
)
from modeling.networks.blocks import check_network_precision
from modeling.networks.delighting import check_white_balance
from modeling.networks.reflectance import (
    NETWORK_RESOLUTION,
    check_network_resolution,
    reflectance_maps,
)
from modeling.reconstruction.first_order import (
    FirstOrderMaps,
    albedo_light_gain,
    first_order_maps,
    fuse_first_order_maps,
    fuse_skin_seen,
)
from modeling.reconstruction.fitting import FitResult, face_ambient_occlusion, fit_photos
from modeling.reconstruction.flame_fit import (
    FlameParameters,
    fit_flame,
    flame_ambient_occlusion,
    flame_geometry,
)
from modeling.reconstruction.geometry import FaceGeometry, fit_camera_and_shape
from modeling.reconstruction.head_texture import (
    complete_head_map,
    iris_gaze,
    photo_eye_texture,
    skin_geometry,
)
from modeling.reconstruction.quality import ViewQuality, measure_view, warnings_for
from modeling.reconstruction.shape_maps import shape_maps
from modeling.reconstruction.texture import (
    check_resolution,
    check_unwrap_mode,
    choose_unwrap_size,
    photo_pixels_per_uv,
    skin_mask,
    upsample_maps,
    uv_atlas,
)
from pipelines.pipeline_output import AvatarPipelineOutput, FaceMesh, ViewOutput
from pipelines.weights import (
    HUB_UPLOAD_ARGS,
    check_component_weights,
    pretrained_folder,
    upgrade_model_index,
    upload_to_hub,
    write_hub_layout,
    write_manifest,
)
from rendering.render import ViewRaster, rasterize_view, render_over_photo, shading_image
from rendering.sh import rotate_sh

__all__ = ["AvatarPipeline", "CallSettings", "StageTimer", "View"]


@dataclass(frozen=True)
class View:
    """One photo on its way through the stages (the pipeline's working state).

    Attributes:
        photo (`(H, W, 3)` uint8): the RGB photo, turned so that the face is upright.
        landmarks (`FaceLandmarks`): the tracked face.
        geometry (`FaceGeometry`): camera and mesh (from the landmarks, then fitted).
        lighting (`(3, 9)` or `None`): the fit's SH light; `None`: estimated when unwrapping.
        raster (`ViewRaster` or `None`): the mesh rasterized into the photo (unwrapping).
        first_order (`FirstOrderMaps` or `None`): the photo unwrapped and first-order de-lit.
        quarter_turns (`int`): counter-clockwise quarter turns that made the photo as given
            upright (`modeling.inputs.orientation`); outputs are turned back.
        segmentation (`SkinSegmentation` or `None`): what of the upright photo is this
            face's skin, with its cues (`modeling.inputs.skin_segmentation`); its `mask`,
            `skin_mask`, gates the unwrapping.
    """

    photo: np.ndarray
    landmarks: FaceLandmarks
    geometry: FaceGeometry
    lighting: np.ndarray | None = None
    raster: ViewRaster | None = None
    first_order: FirstOrderMaps | None = None
    quarter_turns: int = 0
    segmentation: SkinSegmentation | None = None

    @property
    def skin_mask(self) -> np.ndarray | None:
        """`(H, W)` float32 in [0, 1] or `None`: `segmentation.mask`."""
        return None if self.segmentation is None else self.segmentation.mask

    @cached_property
    def image(self) -> np.ndarray:
        """`(H, W, 3)` float32 sRGB in [0, 1]."""
        return self.photo.astype(np.float32) / 255.0


@dataclass(frozen=True)
class CallSettings:
    """One call's checked arguments, the config's defaults filled in."""

    images: list
    resolution: int
    num_fit_steps: int
    unwrap: str
    white_balance: str
    head: bool


class StageTimer:
    """`with timer("fit"): ...` adds the block's seconds to `timer.timings["fit"]`."""

    def __init__(self):
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


class AvatarPipeline(DiffusionPipeline):
    """Photo -> render-ready 3D face.

    Components (optional; `weights_config/` ships all three), from `modeling.networks`:
    `delighting` (`delighting.DelightingNet`), `specular` (`specular.SpecularAlbedoNet`),
    `normals` (`normals.DetailNormalsNet`). Without them the maps are the first-order ones only.

    Config `unwrap_resolution` (`str` or `int`): "auto" (default: maps of 2048 px and more are
    unwrapped no finer than the photo's detail, at least at a quarter of the resolution, and
    upsampled), "full", or a size in px (at most the maps'; the maps are upsampled from it).
    Config `white_balance` (`str`): "camera" (default: the de-lighting network corrects the
    exposure and keeps the photo's white balance) or
    "skin_prior" (it also re-balances the colour toward the skin colours it was trained on; see
    `modeling.networks.delighting.DelightingNet.global_gain`). Config `network_precision`
    (`str`): "auto" (default: the networks' convs run in bfloat16 where the device does it in
    hardware, e.g. a CPU with AVX512-BF16, about twice as fast; the maps stay float32),
    "float32" (exactly as the weights are) or "bfloat16" (`modeling.networks.blocks`).
    Config `network_resolution` (`int` or `None`): the reflectance networks run on maps of at
    most this size (default 512), larger maps get their outputs by guided upsampling, as close
    to the truth on the synthetic test split as running them at full size
    (`modeling.networks.reflectance._guided_network_maps`); `None`: always at full size.

    Head model (`head_model`, `flame_model_path`; `modeling.face_model.head_models`): the
    bundled open head (default), or a user's licensed FLAME, converted once with
    `python -m scripts.convert_flame`: the mesh is then FLAME's, fitted to the reconstructed
    face (`modeling.reconstruction.flame_fit`), the maps are in FLAME's UV layout and
    `out.flame` holds FLAME's parameters. Neither is part of the config: a saved pipeline never
    names or holds the user's FLAME file.

    Every stage is a function in `modeling/` or `rendering/`; `__call__` runs them in order on
    one `View` per photo.

    >>> from pipelines import AvatarPipeline
    >>> pipe = AvatarPipeline.from_pretrained("weights_config")
    >>> out = pipe("examples/astronaut.jpg", resolution=1024)
    >>> out.maps["diffuse_albedo"].shape
    (1024, 1024, 3)
    >>> flame = AvatarPipeline.from_pretrained(
    ...     "weights_config", head_model="flame", flame_model_path="flame.npz")  # doctest: +SKIP
    """

    _optional_components = ["delighting", "specular", "normals"]

    def __init__(
        self,
        delighting=None,
        specular=None,
        normals=None,
        resolution: int = 1024,
        fov_degrees: float = 40.0,
        max_num_faces: int = 5,
        min_face_size: int = 64,
        num_fit_steps: int = 80,
        fit_resolution: int = 256,
        unwrap_resolution: str | int = "auto",
        white_balance: str = "camera",
        head: bool = True,
        network_precision: str = "auto",
        network_resolution: int | None = NETWORK_RESOLUTION,
        head_model: str = "bundled",
        flame_model_path: str | Path | None = None,
    ):
        super().__init__()
        # not in the config: FLAME's file stays the user's (never saved with the pipeline)
        self.flame = load_head_choice(head_model, flame_model_path)
        check_resolution(resolution)
        check_unwrap_mode(unwrap_resolution)
        check_white_balance(white_balance)
        check_network_precision(network_precision)
        check_network_resolution(network_resolution)
        self.register_modules(delighting=delighting, specular=specular, normals=normals)
        self.register_to_config(
            resolution=resolution,
            fov_degrees=fov_degrees,
            max_num_faces=max_num_faces,
            min_face_size=min_face_size,
            num_fit_steps=num_fit_steps,
            fit_resolution=fit_resolution,
            unwrap_resolution=unwrap_resolution,
            white_balance=white_balance,
            head=head,
            network_precision=network_precision,
            network_resolution=network_resolution,
        )
        self._tracker: FaceTracker | None = None
        self._skin_segmenter: SkinSegmenter | None = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs):
        """Load from a local folder, or from a Hub repo id (`owner/name`) through
        `huggingface_hub.snapshot_download` (respects `HF_HUB_OFFLINE` and `cache_dir`). A path
        that is not a folder is never tried as a repo id (`pipelines.weights.local_folder`).
        The files are verified against the folder's `weights_manifest.json` first; a missing,
        changed or unreadable file raises `WeightsError` naming the component and the file."""
        path = pretrained_folder(
            pretrained_model_name_or_path,
            cache_dir=kwargs.pop("cache_dir", None),
            revision=kwargs.pop("revision", None),
            token=kwargs.pop("token", None),
        )
        check_component_weights(path)
        return super().from_pretrained(str(path), **kwargs)

    def save_pretrained(self, save_directory: str | Path, *, push_to_hub: bool = False, **kwargs):
        """diffusers' `save_pretrained`, then the code that lets diffusers alone load the folder
        (`pipeline.py` and each component's module, importing the installed package:
        `pipelines.weights.write_hub_layout`), then `weights_manifest.json` (size and SHA-256 of
        every component file and of that code, verified by `from_pretrained`). With
        `push_to_hub=True` the folder is uploaded after the manifest is written (`repo_id`,
        `token`, `private`, `commit_message`, `create_pr` as in diffusers); diffusers' own upload
        would run before it and replace the folder's model card.

        >>> pipe.save_pretrained("avatar")  # doctest: +SKIP
        >>> DiffusionPipeline.from_pretrained("avatar", trust_remote_code=True)  # doctest: +SKIP
        """
        hub = {k: kwargs.pop(k) for k in HUB_UPLOAD_ARGS if k in kwargs}
        super().save_pretrained(save_directory, **kwargs)
        write_hub_layout(save_directory, type(self))
        write_manifest(save_directory)
        if push_to_hub:
            upload_to_hub(save_directory, **hub)

    @classmethod
    def load_config(cls, *args, **kwargs):
        """diffusers' `load_config`, with the classes named as this code imports them: the Hub
        layout's `pipeline.py` and component modules, and older folders' component paths, map
        to the installed modules (`pipelines.weights.upgrade_model_index`), so loading runs
        none of the folder's code."""
        loaded = super().load_config(*args, **kwargs)
        if isinstance(loaded, tuple):
            return (upgrade_model_index(loaded[0]), *loaded[1:])
        return upgrade_model_index(loaded)

    @property
    def unwrap_resolution(self) -> str | int:
        """The config's `unwrap_resolution` ("auto" for folders saved before it existed)."""
        return self.config.get("unwrap_resolution", "auto")

    @property
    def network_precision(self) -> str:
        """The config's `network_precision` ("auto" for folders saved before it existed)."""
        return self.config.get("network_precision", "auto")

    @property
    def network_resolution(self) -> int | None:
        """The config's `network_resolution` (`NETWORK_RESOLUTION` for folders saved before
        it existed)."""
        return self.config.get("network_resolution", NETWORK_RESOLUTION)

    @property
    def tracker(self) -> FaceTracker:
        if self._tracker is None:
            self._tracker = FaceTracker(
                max_num_faces=self.config.max_num_faces, min_face_size=self.config.min_face_size
            )
        return self._tracker

    @property
    def skin_segmenter(self) -> SkinSegmenter:
        if self._skin_segmenter is None:
            self._skin_segmenter = SkinSegmenter()
        return self._skin_segmenter

    def detect_faces(self, image) -> list[FaceLandmarks]:
        """All faces in a photo (path, PIL, array), largest first, found with the photo turned
        so that the largest is upright (`modeling.inputs.orientation`)."""
        turns, faces = detect_upright(self.tracker, load_image(image))
        return [turn_landmarks(face, -turns) for face in faces]

    def check_inputs(self, image, resolution, num_fit_steps, unwrap_resolution, white_balance,
                     output_type, head=None) -> CallSettings:  # fmt: skip
        """Validate the call's arguments (before any work) and fill in the config's defaults."""
        if output_type not in ("np", "pil"):
            raise ValueError(f"output_type must be 'np' or 'pil', got {output_type!r}")
        images = list(image) if isinstance(image, list | tuple) else [image]
        if not images:
            raise ValueError("no photo given")
        resolution = check_resolution(resolution or self.config.resolution)
        if self.flame is not None and head is False:
            raise ValueError("head=False gives the face patch alone; this pipeline builds "
                             "FLAME's head (head_model='flame')")  # fmt: skip
        return CallSettings(
            images=images,
            resolution=resolution,
            num_fit_steps=self.config.num_fit_steps if num_fit_steps is None else num_fit_steps,
            unwrap=check_unwrap_mode(
                self.unwrap_resolution if unwrap_resolution is None else unwrap_resolution
            ),
            white_balance=check_white_balance(white_balance or self.config.white_balance),
            head=bool(self.config.get("head", True) if head is None else head),
        )

    def __call__(  # not under no_grad: the photometric fit needs gradients
        self,
        image,
        *,
        resolution: int | None = None,
        face_index: int = 0,
        num_fit_steps: int | None = None,
        unwrap_resolution: str | int | None = None,
        white_balance: str | None = None,
        head: bool | None = None,
        output_type: str = "np",
        return_dict: bool = True,
    ):
        """Reconstruct one face from one photo, or one person from several photos.

        Args:
            image (`str`, `Path`, `PIL.Image.Image`, `np.ndarray` `(H, W, 3)` uint8 or float in
                [0, 1], or `torch.Tensor` `(3, H, W)`; or a `list` of them): the photo, or
                several photos of the same person (one identity: shape and albedo are shared,
                each photo gets its own pose and light, FitMe's multi-image setting).
            resolution (`int`, *optional*): UV map size, 64..4096 (default: the config's).
            face_index (`int`): which face in each photo, counting from the largest (0).
            num_fit_steps (`int`, *optional*): photometric fitting steps (0: geometry from the
                landmarks only; default: the config's).
            unwrap_resolution (`str` or `int`, *optional*): "auto", "full" or a size in px
                (default: the config's; see the class docstring).
            white_balance (`str`, *optional*): "camera" or "skin_prior" (default: the config's;
                see the class docstring).
            head (`bool`, *optional*): build the full head (scalp, ears, neck, eyeballs, mouth;
                `modeling.face_model.head`) around the fitted face, and the maps in its UV layout
                (default: the config's, `True`); `False` gives the face patch alone.
            output_type (`str`): `"np"` (float32 arrays) or `"pil"` (maps and renders as images).
            return_dict (`bool`): return an `AvatarPipelineOutput` (else a tuple of its fields).
        """
        run = self.check_inputs(image, resolution, num_fit_steps, unwrap_resolution,
                                white_balance, output_type, head)  # fmt: skip
        resolution, topology, timer = run.resolution, load_topology(), StageTimer()
        with self.progress_bar(total=5) as progress:  # closed on errors too
            with timer("input"):
                photos = [load_image(im) for im in run.images]
            with timer("face_tracking"):
                tracked = [_track_upright(self.tracker, photo, face_index) for photo in photos]
            progress.update()
            with timer("camera_and_shape"):
                fov = self.config.fov_degrees
                views = [
                    View(photo, lm, fit_camera_and_shape(lm, topology, fov), quarter_turns=k)
                    for k, photo, lm in tracked
                ]
            with timer("skin_segmentation"):
                views = [_segmented(v, self.skin_segmenter) for v in views]
            progress.update()
            views, ao, fit = self._fit(views, topology, run.num_fit_steps, timer)
            with timer("skin_refinement"):  # cast shadows, found with the fitted light
                refined = [_refine_skin(v, topology, ao) for v in views]
            if fit is not None and any(r.lighting is None for r in refined):
                # a cast shadow was found: fit again without it (occlusion-aware fitting
                # alternates the two; once is enough here), from where the fit ended
                refined = [replace(r, raster=None) for r in refined]
                refined, ao, fit = self._fit(refined, topology, run.num_fit_steps, timer)
            views = refined
            face_views, flame = views, None
            if self.flame is not None:  # FLAME's mesh and layout from here on
                with timer("flame_fit"):
                    views, topology, ao, flame = _flame_views(views, self.flame)
            progress.update()
            with timer("unwrap_and_delight"):
                unwrap_size = choose_unwrap_size(  # the photo's detail: only asked at 2048+ px
                    run.unwrap,
                    resolution,
                    lambda: max(photo_pixels_per_uv(v.geometry, topology) for v in views),
                )
                views = [_unwrap(v, unwrap_size, topology, ao) for v in views]
                texture, albedo, visibility = fuse_first_order_maps([v.first_order for v in views])
                skin_seen = _uv_skin_mask(views, resolution)
                if unwrap_size < resolution:
                    texture, albedo, visibility = upsample_maps(
                        texture, albedo, visibility, resolution
                    )
            progress.update()
            with timer("head"):
                head_model = load_head_model() if run.head and flame is None else None
                head, layout, skin, ao_skin = _head(views[0], head_model, topology, ao)
                atlas = uv_atlas(resolution, layout)
                face_albedo = albedo  # the render over the photo shows the face alone
                if head is not None:  # one pass for both maps (channels stacked)
                    both = complete_head_map(
                        np.concatenate([texture, albedo], -1), head_model, atlas
                    )
                    texture, albedo = both[..., :3], both[..., 3:]
                    visibility = visibility * atlas.chart  # the ring is never seen
            with timer("normal_maps"):
                shape = shape_maps(skin, atlas, layout, ao_skin)
            with timer("reflectance"):
                reflectance = self.reflectance_maps(
                    texture, albedo, shape, visibility, atlas.chart, run.white_balance,
                    head_model is not None,
                )  # fmt: skip
                # the light, re-expressed for the exported albedo (albedo x light ~ the photo)
                gain = albedo_light_gain(albedo, reflectance.get("diffuse_albedo"), visibility)
            with timer("render"):
                qualities = [_measure(v, i, fit, topology, face_views[i].geometry)
                             for i, v in enumerate(views)]  # fmt: skip
                outputs = [
                    _view_output(v, q, topology, face_albedo, ao, gain)
                    for v, q in zip(views, qualities, strict=True)
                ]
            progress.update()
        maps = {
            "texture": texture,
            "diffuse_albedo": albedo,
            **shape,
            "visibility": visibility[..., None],
            "skin_mask": skin_seen[..., None],
            **reflectance,  # replaces diffuse_albedo with the network's
        }
        out = AvatarPipelineOutput(
            _face_mesh(skin, layout), maps, outputs, timer.timings, fit,
            warnings=_warnings(qualities) + _layout_warnings(topology), head=head, flame=flame,
        )  # fmt: skip
        out = _as_pil(out) if output_type == "pil" else out
        return out if return_dict else tuple(out.values())

    def _fit(self, views: list[View], topology: Topology, num_steps: int, timer: StageTimer):
        """The photometric fit (`num_steps` > 0) -> views with the fitted geometry and light,
        the fitted mesh's per-vertex ambient occlusion `(V,)`, the `FitResult` (or `None`)."""
        if num_steps <= 0:
            with timer("ambient_occlusion"):
                ao = face_ambient_occlusion(views[0].geometry.vertices_object, topology)
            return views, ao, None
        with timer("fit"), self.progress_bar(total=num_steps) as bar:
            fit = fit_photos(
                [v.image for v in views],
                [v.landmarks for v in views],
                [v.geometry for v in views],
                topology,
                num_steps=num_steps,
                render_size=self.config.fit_resolution,
                callback=lambda step, loss: bar.update(),
                device=self.device,
                masks=[v.skin_mask for v in views],
            )
        views = [
            replace(v, geometry=fit.geometry(i, v.geometry.camera, topology), lighting=fit.sh[i])
            for i, v in enumerate(views)
        ]
        return views, fit.ambient_occlusion, fit

    def reflectance_maps(
        self, texture, albedo, shape_maps, visibility, chart=None, white_balance="camera",
        head=None,
    ) -> dict[str, np.ndarray]:  # fmt: skip
        """The loaded reflectance networks over the first-order maps
        (`modeling.networks.reflectance.reflectance_maps`), by sliding window on `self.device` /
        `self.dtype`; for maps in the head's layout (`head`, default: the config's) the diffuse
        and specular albedo of the ring are then completed from the face's border
        (`complete_head_map`). `chart` (`(R, R)` bool) defaults to the layout's. `__call__`
        runs it; call it again on an output's maps to change `white_balance` without refitting:

        >>> maps = out.maps  # doctest: +SKIP
        >>> shape = {k: maps[k] for k in ("shape_normals", "ambient_occlusion")}  # doctest: +SKIP
        >>> pipe.reflectance_maps(maps["texture"], maps["diffuse_albedo_first_order"], shape,
        ...                       maps["visibility"], white_balance="skin_prior")  # doctest: +SKIP
        """
        use_head = self.config.get("head", True) if head is None else head
        if self.flame is not None:  # FLAME's own layout, nothing to complete around a face
            use_head, layout = False, self.flame.layout
        else:
            layout = load_head_model() if use_head else load_topology()
        atlas = uv_atlas(np.asarray(texture).shape[0], layout)
        if chart is None:  # the layout's own chart, as `__call__` passes it
            chart = atlas.chart
        maps = reflectance_maps(
            texture,
            albedo,
            shape_maps,
            visibility,
            delighting=self.delighting,
            specular=self.specular,
            normals=self.normals,
            chart=chart,
            white_balance=white_balance,
            device=self.device,
            dtype=self.dtype,
            precision=self.network_precision,
            max_resolution=self.network_resolution,
        )
        if not use_head:
            return maps
        # the ring as the networks' face border, seamless
        names = [k for k in ("diffuse_albedo", "specular_albedo") if k in maps]
        if names:
            stacked = [maps[k] for k in names]
            done = complete_head_map(np.concatenate(stacked, -1), layout, atlas)
            splits = np.cumsum([m.shape[-1] for m in stacked])[:-1]
            maps.update(zip(names, np.split(done, splits, axis=-1), strict=True))
        return maps


def _track_upright(tracker: FaceTracker, photo: np.ndarray, face_index: int):
    """Face number `face_index` of the photo turned upright -> (quarter turns, the turned photo
    `(H', W', 3)` uint8, its `FaceLandmarks`)."""
    turns, faces = detect_upright(tracker, photo)
    return turns, np.ascontiguousarray(np.rot90(photo, turns)), select_face(faces, face_index)


def _measure(view: View, index: int, fit: FitResult | None, topology: Topology,
             face: FaceGeometry | None = None) -> ViewQuality:  # fmt: skip
    """How far photo `index`'s reconstruction can be trusted (`modeling.reconstruction.quality`);
    `face`: the fitted dense face whose landmarks are measured (default: the view's mesh)."""
    first = view.first_order
    return measure_view(
        view.landmarks,
        view.geometry if face is None else face,
        first.texture_seen,
        first.visibility,
        skin_mask(first.visibility.shape[0], topology),
        None if fit is None else float(fit.psnr_after[index]),
    )


def _layout_warnings(layout) -> list[str]:
    """A FLAME layout that is not left/right symmetric: the completion's mirroring is wrong."""
    if not isinstance(layout, FlameLayout) or layout.symmetric:
        return []
    return [
        "FLAME's UV layout is not left/right symmetric (mirror error "
        f"{layout.mirror_error:.3f} in UV units): what the photo did not show was completed "
        "from the wrong texels; check the maps' unseen side"
    ]


def _warnings(qualities: list[ViewQuality]) -> list[str]:
    count = len(qualities)
    names = ["the photo"] if count == 1 else [f"photo {i + 1}" for i in range(count)]
    return [w for q, name in zip(qualities, names, strict=True) for w in warnings_for(q, name)]


def _flame_views(views: list[View], flame) -> tuple:
    """FLAME fitted to the views' reconstructed face (`fit_flame`; several photos share it) ->
    (the views with FLAME's mesh as their geometry, FLAME's `FlameLayout`, its per-vertex
    ambient occlusion `(T,)`, the `FlameParameters`)."""
    face = np.mean([v.geometry.vertices_object for v in views], axis=0)
    params: FlameParameters = fit_flame(
        flame,
        face,
        [v.geometry.camera for v in views],
        [v.landmarks.points[:, :2] for v in views],
        [v.landmarks.iris for v in views],
    )
    layout: FlameLayout = flame.layout
    views = [replace(v, geometry=flame_geometry(params, v.geometry.camera, layout), raster=None)
             for v in views]  # fmt: skip
    return views, layout, flame_ambient_occlusion(params, layout), params


def _segmented(view: View, segmenter: SkinSegmenter) -> View:
    """The view with its photo's skin mask (`FaceCoveredError` under `MIN_SKIN_FRACTION`)."""
    segmentation = segmenter.segment(view.photo, view.landmarks)
    check_skin_fraction(segmentation, MIN_SKIN_FRACTION)
    return replace(view, segmentation=segmentation)


def _refine_skin(view: View, topology: Topology, ao: np.ndarray) -> View:
    """The view's skin mask without a cast shadow that its fitted light reveals
    (`refine_with_shading`), and its mesh rasterized for the unwrapping. With a shadow cut
    out, the light (fitted with the shadow in it) is dropped (`lighting=None`): the pipeline
    fits again, or without a fit the unwrapping estimates it."""
    if view.segmentation is None or view.lighting is None:
        return view
    g = view.geometry
    raster = rasterize_view(g.camera, g.vertices_camera, topology.dense_faces)
    shading = shading_image(raster, topology.dense_faces, g.normals_camera, ao, view.lighting)
    refined = refine_with_shading(view.segmentation, view.photo, view.landmarks, shading)
    if refined is view.segmentation:
        return replace(view, raster=raster)
    return replace(view, segmentation=refined, raster=raster, lighting=None)


def _unwrap(view: View, resolution: int, topology: Topology, ao: np.ndarray) -> View:
    """The view with its photo unwrapped into R x R UV maps and first-order de-lit (its mesh
    rasterized unless `view.raster` already holds it)."""
    g = view.geometry
    raster = view.raster
    if raster is None:
        raster = rasterize_view(g.camera, g.vertices_camera, topology.dense_faces)
    maps = first_order_maps(view.image, g, raster, resolution, topology, view.lighting, ao=ao,
                            photo_mask=view.skin_mask)  # fmt: skip
    return replace(view, raster=raster, first_order=maps)


def _uv_skin_mask(views: list[View], resolution: int) -> np.ndarray:
    """`(R, R)` float32: what the photos showed of each texel as skin (`fuse_skin_seen`),
    at the maps' resolution (the unwrapping may run at a quarter of it)."""
    seen = fuse_skin_seen([v.first_order for v in views])
    if seen.shape[0] != resolution:
        seen = cv2.resize(seen, (resolution, resolution), interpolation=cv2.INTER_LINEAR)
    return np.clip(seen, 0, 1).astype(np.float32)


def _view_output(view: View, quality: ViewQuality, topology: Topology, albedo: np.ndarray,
                 ao: np.ndarray, light_gain: np.ndarray) -> ViewOutput:  # fmt: skip
    """The render over the photo with the first-order albedo and the photo's own light (where
    the photo shows the face's skin: what the skin mask rejected, hair, glasses, a hand, stays
    in front), and the light re-expressed for the exported albedo; all turned back to the photo
    as given."""
    lighting = view.first_order.lighting
    render, mask = render_over_photo(
        view.image, view.raster, topology.dense_faces, topology.dense_uvs,
        view.geometry.normals_camera, ao, albedo, lighting,
    )  # fmt: skip
    if view.skin_mask is not None:
        render = view.image + (render - view.image) * view.skin_mask[..., None]
    k = view.quarter_turns
    return ViewOutput(
        camera=turn_camera(view.geometry.camera, k),
        lighting=rotate_sh(lighting * light_gain[:, None], turn_axes(k)).astype(np.float32),
        render=np.ascontiguousarray(np.rot90(render, -k)),
        render_mask=np.ascontiguousarray(np.rot90(mask, -k)),
        skin_mask=_turned_back(view.skin_mask, k),
        image=np.ascontiguousarray(np.rot90(view.photo, -k)),
        landmarks=turn_landmarks(view.landmarks, -k),
        quality=quality,
        quarter_turns=k,
    )


def _turned_back(image: np.ndarray | None, k: int) -> np.ndarray | None:
    """An upright-photo image `(H, W, ...)` turned back to the photo as given (`None` stays)."""
    return None if image is None else np.ascontiguousarray(np.rot90(image, -k))


def _head(view: View, head_model: HeadModel | None, topology: Topology, ao: np.ndarray):
    """The full head around the first view's fitted face (`None` without `head_model`) ->
    (`HeadMesh` with the photo's iris colour, the maps' UV layout (`HeadModel` or `Topology`),
    the mesh baked into the shape maps as a `FaceGeometry`, its per-vertex ambient occlusion)."""
    if head_model is None:
        return None, topology, view.geometry, ao
    head = head_mesh(view.geometry.vertices_object, head_model)
    iris = view.landmarks.iris
    if iris is not None:
        head = aim_eyes(head, iris_gaze(head, view.geometry, iris))
    texture = photo_eye_texture(view.image, view.geometry, head_model, iris)
    head = replace(head, eye_texture=texture)
    skin = skin_geometry(view.geometry, head)
    return head, head_model, skin, skin_ambient_occlusion(ao, head_model)


def _face_mesh(geometry: FaceGeometry, topology: Topology | HeadModel) -> FaceMesh:
    return FaceMesh(
        geometry.vertices_object.astype(np.float32),
        topology.dense_faces.astype(np.int32),
        topology.dense_uvs.astype(np.float32),
        geometry.normals_object.astype(np.float32),
    )


def _as_pil(out: AvatarPipelineOutput) -> AvatarPipelineOutput:
    """Maps and renders as PIL images (`output_type="pil"`)."""
    maps = {k: to_pil(v) for k, v in out.maps.items()}
    views = [replace(v, render=to_pil(v.render)) for v in out.views]
    return replace(out, maps=maps, views=views)
