"""The photo-space skin mask rejects what covers the face and keeps its skin, and the unwrapping
it gates keeps the occluders' colours out of the maps (synthetic faces: the truth is known)."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bench.bench_occlusion import own_features
from bench.synthetic import render_view, synthetic_albedo, true_geometry
from modeling.face_model.topology import load_topology
from modeling.inputs.face_tracker import FaceLandmarks
from modeling.inputs.skin_segmentation import (
    FEATURES,
    SkinSegmenter,
    _face_region,
    _hull_mask,
    refine_with_shading,
)
from modeling.reconstruction.first_order import first_order_maps
from modeling.reconstruction.texture import skin_mask
from rendering.color import linear_to_srgb, srgb_to_linear
from rendering.render import rasterize_view, shading_image

ROOT = Path(__file__).resolve().parents[1]
HAIR = (0.36, 0.22, 0.12)  # sRGB: a brown fringe
FRAME = (0.07, 0.07, 0.09)  # sRGB: a black glasses frame


@pytest.fixture(scope="module")
def topo():
    return load_topology()


@pytest.fixture(scope="module")
def view(topo):
    return render_view(topo, synthetic_albedo(128), light_direction=(0.3, 0.3, 0.9), size=256)


@pytest.fixture(scope="module")
def segmenter():
    with SkinSegmenter() as segmenter:
        yield segmenter


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def fringe(landmarks: FaceLandmarks) -> np.ndarray:
    """`(H, W)` bool: a block over the forehead, from above the face down to the brows' top."""
    p = landmarks.points[:, :2]
    brow_top = p[[105, 334, 66, 296], 1].min()
    mask = np.zeros(landmarks.image_size, bool)
    x0, x1 = int(landmarks.box[0]) - 5, int(landmarks.box[2]) + 5
    mask[: int(brow_top - 0.06 * landmarks.width), x0:x1] = True
    return mask


def glasses(landmarks: FaceLandmarks) -> np.ndarray:
    """`(H, W)` bool: two rectangular frames around the eyes and a bridge over the nose."""
    p = landmarks.points[:, :2]
    mask = np.zeros(landmarks.image_size, np.uint8)
    thick = max(2, round(0.04 * landmarks.width))
    margin = 0.08 * landmarks.width
    boxes = []
    for eye in (FEATURES[0], FEATURES[1]):
        (x0, y0), (x1, y1) = p[list(eye)].min(0) - margin, p[list(eye)].max(0) + margin
        boxes.append((x0, y0, x1, y1))
        cv2.rectangle(mask, (round(x0), round(y0)), (round(x1), round(y1)), 1, thick)
    (a, b) = sorted(boxes)
    y = round((a[1] + a[3]) / 2 - 0.02 * landmarks.width)
    cv2.line(mask, (round(a[2]), y), (round(b[0]), y), 1, thick)
    return mask.astype(bool)


def _paint(image: np.ndarray, where: np.ndarray, color) -> np.ndarray:
    out = image.copy()
    out[where] = color
    return out


@pytest.mark.parametrize("occluder", ["fringe", "glasses"])
def test_mask_rejects_an_occluder_and_keeps_the_clean_skin(view, segmenter, occluder):
    lm = view.landmarks
    where, color = (fringe(lm), HAIR) if occluder == "fringe" else (glasses(lm), FRAME)
    photo = _to_uint8(_paint(view.image, where, color))
    seg = segmenter.segment(photo, lm)
    assert seg.mask.shape == photo.shape[:2] and seg.mask.dtype == np.float32
    assert 0 <= seg.mask.min() and seg.mask.max() <= 1
    face = seg.face > 0
    occluded = where & face & ~own_features(lm)
    assert occluded.sum() > 100
    assert (seg.mask[occluded] < 0.5).mean() > 0.95
    # The clean skin: on the face, away from the occluder and from the face's border.
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (21, 21))
    near = cv2.dilate(where.astype(np.uint8), grow) > 0
    inner = cv2.erode(face.astype(np.uint8), grow) > 0
    clean = inner & ~near & (np.abs(view.image - 0.3).max(-1) > 0.02)  # the face, not backdrop
    assert clean.sum() > 2000
    assert (seg.mask[clean] > 0.5).mean() > 0.9


def test_mask_rejects_the_background(view, segmenter):
    seg = segmenter.segment(_to_uint8(view.image), view.landmarks)
    backdrop = np.abs(view.image - 0.3).max(-1) < 1e-6  # the render's flat background
    assert backdrop.sum() > 1000
    assert (seg.mask[backdrop] < 0.5).mean() > 0.99
    assert seg.skin_fraction > 0.6


def test_unwrapping_with_the_mask_keeps_the_occluder_out_of_the_albedo(view, segmenter, topo):
    """Leakage: the fraction of skin texels whose albedo moved toward the fringe's colour."""
    lm = view.landmarks
    photo = _to_uint8(_paint(view.image, fringe(lm), HAIR))
    image = photo.astype(np.float32) / 255
    geometry = true_geometry(view, load_topology())
    raster = rasterize_view(geometry.camera, geometry.vertices_camera, topo.dense_faces)
    mask = segmenter.mask(photo, lm)
    clean = first_order_maps(view.image, geometry, raster, 128, topo)
    plain = first_order_maps(image, geometry, raster, 128, topo)
    gated = first_order_maps(image, geometry, raster, 128, topo, photo_mask=mask)
    skin = skin_mask(128, topo)

    def leakage(maps) -> float:
        # darker than the clean albedo by > 0.12 and browner (less blue): the fringe's colour;
        # after the best per-channel scale (albedo and light share one, set on the skin seen)
        albedo, truth = maps.albedo[skin], clean.albedo[skin]
        albedo = albedo * (albedo * truth).sum(0) / (albedo**2).sum(0)
        drop = truth - albedo
        return float(((drop.mean(-1) > 0.12) & (drop[:, 2] > drop[:, 0])).mean())

    assert leakage(plain) > 0.05  # the test's fringe does reach the maps without the mask
    assert leakage(gated) < 0.01, leakage(gated)
    # The UV skin mask: what the photo showed as skin, in [0, 1], less than without the mask.
    assert gated.skin_seen.shape == (128, 128)
    assert 0 <= gated.skin_seen.min() and gated.skin_seen.max() <= 1
    assert gated.skin_seen[skin].mean() < plain.skin_seen[skin].mean() - 0.05


def test_clear_errors_for_bad_input(view, segmenter):
    photo = _to_uint8(view.image)
    with pytest.raises(ValueError, match="uint8"):
        segmenter.segment(photo.astype(np.float32), view.landmarks)
    with pytest.raises(ValueError, match="tracked in"):
        segmenter.segment(photo[:100], view.landmarks)
    with pytest.raises(ValueError, match="selfie_model"):
        SkinSegmenter(selfie_model=2)


def test_face_region_is_the_grown_hull_of_the_landmarks(view):
    region = _face_region(view.landmarks, view.landmarks.image_size)
    x0, y0, x1, y1 = view.landmarks.box
    ys, xs = np.nonzero(region)
    assert xs.min() < x0 and xs.max() > x1 - 1 and ys.min() < y0 and ys.max() > y1 - 1
    assert xs.min() > x0 - 0.05 * view.landmarks.width


def test_pipeline_outputs_the_skin_masks_and_keeps_a_fringe_out_of_the_maps():
    from pipelines import AvatarPipeline

    photo = np.asarray(Image.open(ROOT / "examples" / "synthetic_mean_face.jpg").convert("RGB"))
    pipe = AvatarPipeline.from_pretrained(ROOT / "weights_config")
    pipe.set_progress_bar_config(disable=True)
    lm = pipe.detect_faces(photo)[0]
    occluded = _paint(photo, fringe(lm), (np.array(HAIR) * 255).astype(np.uint8))
    out = pipe(occluded, resolution=128, num_fit_steps=0, head=False)
    assert out.skin_mask.shape == photo.shape[:2] and out.skin_mask.dtype == np.float32
    assert (out.skin_mask[fringe(lm) & ~own_features(lm)] < 0.5).mean() > 0.95
    uv = out.maps["skin_mask"]
    assert uv.shape == (128, 128, 1) and 0 <= uv.min() and uv.max() <= 1
    texture = out.maps["texture"][skin_mask(128, load_topology())]
    hair_like = np.abs(texture - np.array(HAIR)).max(-1) < 0.1
    assert hair_like.mean() < 0.01, hair_like.mean()


def test_photometric_fit_with_the_mask_ignores_the_occluder(view, segmenter, topo):
    """A few fitting steps: the fitted albedo, re-estimated from the photo halfway, takes the
    fringe's colour without the mask and not with it; the crop of the mask follows the photo's."""
    from modeling.reconstruction.fitting import fit_photos, prepare_view

    lm = view.landmarks
    photo = _to_uint8(_paint(view.image, fringe(lm), HAIR))
    image = photo.astype(np.float32) / 255
    mask = segmenter.mask(photo, lm)
    geometry = true_geometry(view, load_topology())
    fit_view = prepare_view(image, lm, geometry.camera, 96, mask)
    assert fit_view.mask.shape == (96, 96) and fit_view.mask.max() <= 1
    # the crop holds the face: the mask's crop keeps about as much of it as the mask
    kept = float(fit_view.mask.sum()) * (1.6 * max(lm.box[2:] - lm.box[:2]) / 96) ** 2
    assert abs(kept / mask.sum() - 1) < 0.1

    skin = skin_mask(128, topo)
    raster = rasterize_view(geometry.camera, geometry.vertices_camera, topo.dense_faces)
    clean_albedo = first_order_maps(view.image, geometry, raster, 128, topo).albedo[skin]

    def hair_texels(masks) -> float:
        fit = fit_photos([image], [lm], [geometry], topo, num_steps=5, render_size=96,
                         masks=masks)  # fmt: skip
        drop = clean_albedo - fit.albedo[skin]
        return float(((drop.mean(-1) > 0.12) & (drop[:, 2] > drop[:, 0])).mean())

    assert hair_texels(None) > 0.02
    assert hair_texels([mask]) < 0.005


def test_a_mostly_covered_face_is_a_clear_error_a_half_covered_one_is_not(view, segmenter):
    from bench.bench_occlusion import occluder
    from modeling.errors import FaceCoveredError
    from modeling.inputs.skin_segmentation import MIN_SKIN_FRACTION

    lm = view.landmarks
    masked = _to_uint8(_paint(view.image, occluder("face mask", lm), (0.55, 0.75, 0.85)))
    half = segmenter.segment(masked, lm)
    assert MIN_SKIN_FRACTION < half.skin_fraction < 0.7
    assert segmenter.mask(masked, lm, MIN_SKIN_FRACTION).shape == masked.shape[:2]
    for top in (168, 151):  # all but the forehead and the upper eyes; all but the hair line
        covered = np.ones(lm.image_size, bool)
        covered[: int(lm.points[top, 1])] = False
        covered_photo = _to_uint8(_paint(view.image, covered, (0.55, 0.75, 0.85)))
        with pytest.raises(FaceCoveredError, match="visible skin"):
            segmenter.mask(covered_photo, lm, MIN_SKIN_FRACTION)


def test_a_black_and_white_photo_is_all_skin_not_covered(view, segmenter):
    grey = _to_uint8(np.repeat(view.image.mean(-1, keepdims=True), 3, -1))
    seg = segmenter.segment(grey, view.landmarks)
    assert len(seg.seeds_used) >= 3 and seg.skin_fraction > 0.6


def test_mask_rejects_thin_wire_frames_and_keeps_the_clean_skin(view, segmenter):
    """Wire glasses (1.5 % of the face wide, bronze: a skin-like hue, darker): the colour
    model's tolerance for shading and its closing would let such thin lines through; their
    depth below the local luminance rejects them, and the skin around them stays."""
    from bench.bench_occlusion import COLORS, occluder
    from modeling.inputs.skin_segmentation import _colour_features, _not_thin_lines, _WorkCrop

    lm = view.landmarks
    where = occluder("wire glasses", lm)
    photo = _to_uint8(_paint(view.image, where, COLORS["wire glasses"]))
    seg = segmenter.segment(photo, lm)
    frames = where & (seg.face > 0) & ~own_features(lm)
    assert frames.sum() > 50
    assert (seg.mask[frames] < 0.5).mean() > 0.95
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (21, 21))
    near = cv2.dilate(where.astype(np.uint8), grow) > 0
    inner = cv2.erode((seg.face > 0).astype(np.uint8), grow) > 0
    clean = inner & ~near & ~own_features(lm) & (np.abs(view.image - 0.3).max(-1) > 0.02)
    assert clean.sum() > 1000 and (seg.mask[clean] > 0.5).mean() > 0.9
    # it is the line test that rejects them (without it the frames pass)
    work = _WorkCrop.around(lm, photo.shape[:2])
    lines = work.paste(_not_thin_lines(_colour_features(work.crop(photo)), work))
    assert (lines[frames] < 0.5).mean() > 0.95
    # a clean face has no thin dark lines off its features
    clean_photo = _to_uint8(view.image)
    work = _WorkCrop.around(lm, clean_photo.shape[:2])
    lines = work.paste(_not_thin_lines(_colour_features(work.crop(clean_photo)), work))
    assert (lines[clean] > 0.5).mean() > 0.99


def _cast_shadow_photo(view, topo, yaw=0.0):
    """A cap's brim's shadow (`bench.bench_occlusion`): the skin's light x 0.3 over the
    forehead, brows and eyes; -> (photo uint8, shadow (H, W) bool, view)."""
    from bench.bench_occlusion import occluder

    if yaw:
        view = render_view(topo, synthetic_albedo(128), yaw_pitch_roll=(yaw, 0, 0),
                           light_direction=(0.3, 0.3, 0.9), size=256)  # fmt: skip
    where = occluder("cast shadow", view.landmarks)
    image = view.image.copy()
    image[where] = linear_to_srgb(srgb_to_linear(image[where]) * 0.3)
    return _to_uint8(image), where, view


def _first_light_shading(photo, mask, view, topo):
    """The SH shading `(H, W, 3)` of the light that the unwrapping with `mask` estimates."""
    geometry = true_geometry(view, topo)
    raster = rasterize_view(geometry.camera, geometry.vertices_camera, topo.dense_faces)
    first = first_order_maps(photo.astype(np.float32) / 255, geometry, raster, 128, topo,
                             photo_mask=mask)  # fmt: skip
    ones = np.ones(len(geometry.vertices_camera))
    return shading_image(raster, topo.dense_faces, geometry.normals_camera, ones,
                         first.lighting)  # fmt: skip


@pytest.mark.parametrize("yaw", [0.0, 45.0, 60.0])
def test_refinement_cuts_out_a_cast_shadow(view, segmenter, topo, yaw):
    """The colour model keeps skin in a cast shadow; divided by the light it is a second,
    darker level, and is cut out (with the eyes and brows in it), the lit skin kept."""
    photo, where, shot = _cast_shadow_photo(view, topo, yaw)
    lm = shot.landmarks
    first = segmenter.segment(photo, lm)
    refined = refine_with_shading(first, photo, lm, _first_light_shading(photo, first.mask,
                                                                          shot, topo))  # fmt: skip
    assert refined is not first and refined.cast_shadow is not None
    shadowed = where & (first.face > 0)
    assert (first.mask[shadowed] > 0.5).mean() > 0.3  # the first pass keeps much of it
    assert (refined.mask[shadowed] > 0.05).mean() < 0.02
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (21, 21))
    lit = ~(cv2.dilate(where.astype(np.uint8), grow) > 0) & (first.face > 0)
    lit &= ~own_features(lm) & (first.mask > 0.5)
    assert (refined.mask[lit] > 0.5).mean() > 0.95
    np.testing.assert_allclose(refined.mask, first.face * first.person * (1 - first.hands)
                               * refined.colour, atol=1e-6)  # fmt: skip


def test_refinement_finds_no_shadow_on_a_clean_face(view, segmenter, topo):
    photo = _to_uint8(view.image)
    first = segmenter.segment(photo, view.landmarks)
    shading = _first_light_shading(photo, first.mask, view, topo)
    assert refine_with_shading(first, photo, view.landmarks, shading) is first
    # nothing to divide by (no mesh): nothing found
    assert refine_with_shading(first, photo, view.landmarks, np.zeros_like(shading)) is first


def _pipeline_with_a_cap_shadow(example: str):
    """The pipeline on `examples/<example>` with the bench's cap shadow painted on (the skin's
    light x 0.3): -> (pipeline, photo, its landmarks, the shadow (H, W) bool, the output)."""
    from bench.bench_occlusion import occluder
    from pipelines import AvatarPipeline

    photo = np.asarray(Image.open(ROOT / "examples" / example).convert("RGB"))
    pipe = AvatarPipeline.from_pretrained(ROOT / "weights_config")
    pipe.set_progress_bar_config(disable=True)
    lm = pipe.detect_faces(photo)[0]
    where = occluder("cast shadow", lm)
    image = photo.astype(np.float32) / 255
    image[where] = linear_to_srgb(srgb_to_linear(image[where]) * 0.3)
    out = pipe(_to_uint8(image), resolution=128, num_fit_steps=20, head=False)
    return pipe, photo, lm, where, out


def test_pipeline_cuts_a_cast_shadow_out_of_the_skin_mask_and_the_albedo():
    pipe, photo, lm, where, out = _pipeline_with_a_cap_shadow("synthetic_mean_face.jpg")
    assert "skin_refinement" in out.timings
    on_face = where & (pipe.skin_segmenter.segment(photo, lm).face > 0)
    assert (out.skin_mask[on_face] > 0.05).mean() < 0.05
    clean = pipe(photo, resolution=128, num_fit_steps=20, head=False)
    skin = skin_mask(128, load_topology())
    ours = out.maps["diffuse_albedo_first_order"][skin]
    ref = clean.maps["diffuse_albedo_first_order"][skin]
    ours = ours * (ours * ref).sum(0) / (ours**2).sum(0)
    darker = ours.mean(-1) < 0.8 * ref.mean(-1)
    assert darker.mean() < 0.05, darker.mean()


def test_pipeline_cuts_a_cap_shadow_out_of_a_real_face_and_keeps_its_lit_skin():
    """The bench's cap shadow painted on a real photo (real skin, creases, real light): the
    shadowed skin leaves the mask, the lit skin the first pass took stays."""
    pipe, photo, lm, where, out = _pipeline_with_a_cap_shadow("astronaut.jpg")
    clean = pipe.skin_segmenter.segment(photo, lm)
    shadowed = where & (clean.face > 0)
    lit = (clean.face > 0) & ~where & (clean.mask > 0.5)
    assert (out.skin_mask[shadowed] < 0.5).mean() > 0.95
    assert (out.skin_mask[lit] > 0.5).mean() > 0.8


def test_a_grown_hull_is_the_hull_dilated_by_a_disk():
    """`_hull_mask` grows the hull without a dilation (whose cost is the photo's area times
    the disk's): the same region as `cv2.dilate` with an elliptic kernel, to a pixel."""
    rng = np.random.default_rng(5)
    points = rng.uniform(60, 140, (30, 2))
    for grow in (3, 17, 40):
        ours = _hull_mask(points, (200, 200), grow) > 0
        plain = (_hull_mask(points, (200, 200)) > 0).astype(np.uint8)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        dilated = cv2.dilate(plain, kernel) > 0
        ring = cv2.dilate(dilated.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        ring &= ~(cv2.erode(dilated.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
        assert np.all(ours[~ring] == dilated[~ring]), grow  # they differ only on the border
        assert abs(int(ours.sum()) - int(dilated.sum())) < 0.02 * dilated.sum()
