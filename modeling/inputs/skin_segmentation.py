"""What of one tracked face the photo really shows: a photo-space skin mask.

Three cues, multiplied:

- **person**: MediaPipe's selfie segmentation (background and whatever is not the person). It
  is ignored when it disagrees with the tracked face (under half of the face's central region
  segmented as person: a face on a flat backdrop with no body, e.g. a render), since the face
  mesh found a face there.
- **hands**: MediaPipe's hand landmarks; each hand's 21 points -> convex hull, dilated by a
  tenth of the hand's size (fingers are wider than their joints).
- **skin colour**: a per-photo Gaussian in log-chromaticity + log-luminance (linear RGB),
  seeded from landmark regions that are nearly always skin (cheek centres, forehead, nose
  bridge), widened along the saturation direction (shading saturates skin; hair, frames and
  backgrounds move across it). The seeds are robust: a seed region whose median colour is far
  from the others' (a fringe over the forehead, a glasses bridge) is dropped, and the Gaussian
  is refitted on the nearest 90 % of the kept pixels. Luminance gets a wider, asymmetric
  tolerance (shading darkens skin far more than it changes its chromaticity). The per-pixel
  likelihood is then cleaned (small specks and holes removed), pulled back from what it
  rejected (pixels at an occluder's edge mix both colours) and softened. Thin dark lines
  (glasses frames, strands of hair: far below the local luminance envelope, which the
  tolerance for shading and the cleaning would let through) are rejected on their own.

After the photometric fit, `refine_with_shading` cuts out a **cast shadow** (a cap's brim, a
hand's shadow): skin-coloured, so the colour model keeps it, but darker than the fitted light
explains; the pipeline then fits the face again without it.

The face's own non-skin parts (eyes, brows, lips, nostrils: landmark hulls) are part of the
face's texture, not occluders: there the colour cue only rejects chromaticity far off the skin's
saturation line (a blue face mask over the lips), not darkness or greyness (brows, pupils,
sclera), so dark glasses frames that cross them are kept. Outside the face (the face-oval
hull, grown a little) the mask is 0: it says which pixels show *this* face's surface.

>>> with SkinSegmenter() as segmenter:  # doctest: +SKIP
...     mask = segmenter.mask(photo, landmarks)  # (H, W) float32 in [0, 1]
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

import cv2
import numpy as np
from scipy import ndimage
from skimage.filters import sobel
from skimage.segmentation import watershed

from modeling.errors import FaceCoveredError
from modeling.inputs.face_tracker import FaceLandmarks, _native_logs_hidden, mp
from rendering.color import luminance, srgb_to_linear

_CONNECTIONS = mp.solutions.face_mesh_connections


def _indices(connections) -> tuple[int, ...]:
    return tuple(sorted({i for edge in connections for i in edge}))


FACE_OVAL = _indices(_CONNECTIONS.FACEMESH_FACE_OVAL)
# The face's own non-skin parts: the colour cue does not apply there (grown by 2 % of the face
# width, the brows not at all: glasses frames often cross just above them).
FEATURES = (
    _indices(_CONNECTIONS.FACEMESH_LEFT_EYE),
    _indices(_CONNECTIONS.FACEMESH_RIGHT_EYE),
    _indices(_CONNECTIONS.FACEMESH_LEFT_EYEBROW),
    _indices(_CONNECTIONS.FACEMESH_RIGHT_EYEBROW),
    _indices(_CONNECTIONS.FACEMESH_LIPS),
    (48, 64, 98, 97, 2, 326, 327, 294, 278, 240, 460),  # nostrils
)
_BROWS = (2, 3)  # their indices in FEATURES
# Seed regions (MediaPipe face-mesh indices): each a disc around the mean of its points.
SEED_REGIONS = {
    "left_cheek": (205, 50, 187),
    "right_cheek": (425, 280, 411),
    "forehead": (151, 108, 337),
    "nose_bridge": (6, 197, 195),
}
_MIN_REDNESS = 0.02  # log(R/G) of a plausible skin seed region
_GREY = 0.05  # |log(R/G)|, |log(B/G)| under which every seed region is grey: a grey photo
# Under this share of the face shown as skin there is too little to reconstruct from.
MIN_SKIN_FRACTION = 0.2
_SEED_RADIUS = 0.05  # of the face width
_FACE_MARGIN = 0.03  # face-oval hull growth, of the face width
_GROW_DIRECTIONS = 64  # `_hull_mask`: the growing disk as a 64-gon (0.1 % of its radius off)
_WORK_WIDTH = 160  # face width (pixels) at which the colour model runs
_MIN_CHROMA_SIGMA = 0.04  # log units
# Shaded skin is more saturated (light that scattered longer in it), lit skin less: its
# chromaticity moves along the line from neutral grey through the skin's, by this much more
# (log units) than across it; hair and frames move across it (a fringe's B/G drops).
_SATURATION_SIGMA = 0.15
_LUMA_SIGMA = (0.45, 0.3)  # minimum log-luminance std below / above the skin mean
_MAHALANOBIS = (2.5, 4.0)  # distance at which the colour likelihood starts / ends falling
_FEATURE_TOLERANCE = 3.5  # on eyes, brows, lips and nostrils: chromaticity only, x3.5
# Thin dark lines (`_not_thin_lines`):
_LINE_RADIUS = 0.02  # of the face width: lines thinner than twice this are "thin"
_LINE_DEPTH = (0.45, 0.75)  # log-luminance below the local envelope: starts / ends rejecting
_GLASSES_ZONE = 0.18  # of the face width: the eyes' and brows' hull grown by it
# Cast shadows (`refine_with_shading`):
_SHADOW_RADIUS = 0.04  # of the face width: the median filter's radius
_SHADOW_STEP = 0.6  # log-luminance between the two levels (x 0.55)
_SHADOW_MIN_SHARE = 0.08  # of the skin looked at, for each level
# Under this share of the face left as skin, the shadow found is not trusted (half the first
# pass's minimum: the fit already ran; the unwrapping needs only some skin to set the light).
_MIN_REFINED_FRACTION = MIN_SKIN_FRACTION / 2
_SHADOW_PENUMBRA = 0.02  # of the face width: the shadow grown by it
_SHADOW_SKIN = 0.1  # first-pass colour likelihood looked at (shadowed skin is often partial)
# The shadow: darker than the lit level by this share of the step. A quarter catches more of
# a rendered shadow's edge (a light fitted with the shadow in it is tilted toward it, which
# narrows the step there), but on real skin (three bench photos with the bench's cap shadow
# painted on) it also takes the darker lit skin: nose sides, smile folds (lit skin kept 0.91 /
# 0.79 / 0.53 with a half).
_SHADOW_CUT = 0.5
_MIN_RELATIVE_SHADING = 0.25  # of the skin's median: darker is too dark to divide by
_LIT_ISLAND = 0.25  # of the largest lit part of the face: smaller parts in a shadow are in it
_SHADOW_CORE_RADIUS = 0.03  # of the face width: pixels this far inside a level are surely in it
_MIN_SHADOW_PIXELS = 200  # skin pixels (at the work scale) to look at
_MIN_LINE_AREA = 0.02**2 * 4  # of the face width squared: smaller rejected specks are filled


@dataclass(frozen=True)
class SkinSegmentation:
    """One face's skin mask and its cues, all `(H, W)` float32 in [0, 1] (photo pixels).

    Attributes:
        mask: skin of this face that the photo shows (1), not (0): `face * person * (1 -
            hands) * colour`.
        face: the face-oval hull of the landmarks, grown by `_FACE_MARGIN` of the face width.
        person: selfie segmentation (ones when it was ignored, see the module docstring).
        hands: the hand mask (1 on a hand).
        colour: skin-colour likelihood (chromaticity only on eyes, brows, lips and nostrils;
            0 off the face).
        seeds_used (`tuple[str, ...]`): the `SEED_REGIONS` the colour model was fitted on
            (empty when none showed a skin colour: the colour cue, and so the mask, is 0).
        cast_shadow (`(H, W)` float32 or `None`): a cast shadow found after the fit
            (`refine_with_shading`; 1 in it, grown by its penumbra), also cut from `colour`;
            `None`: none was found, or not looked for.
    """

    mask: np.ndarray
    face: np.ndarray
    person: np.ndarray
    hands: np.ndarray
    colour: np.ndarray
    seeds_used: tuple[str, ...]
    cast_shadow: np.ndarray | None = None

    @property
    def skin_fraction(self) -> float:
        """Mean of `mask` over the face region: how much of the face the photo shows."""
        return float(self.mask[self.face > 0.5].mean()) if (self.face > 0.5).any() else 0.0


class SkinSegmenter:
    """Photo-space skin masks of tracked faces (module docstring). Thread-safe; the MediaPipe
    graphs are built on first use and released by `close()`, as `FaceTracker`'s.

    Args:
        selfie_model (`int`): MediaPipe selfie segmentation's `model_selection`: 0 (general,
            256 x 256) or 1 (landscape, 144 x 256, the default: on the 12 public bench
            portraits it segments 99.0 % of the face hulls as person (min 97.2 %), model 0
            90.4 % (it misses the grey einstein photo entirely), and 4.1 % of the top corners
            off the face against 7.0 %; `python -m bench.bench_occlusion`).
        max_num_hands (`int`): hands looked for (0: no hand cue).
    """

    def __init__(self, selfie_model: int = 1, max_num_hands: int = 2):
        if selfie_model not in (0, 1):
            raise ValueError(f"selfie_model must be 0 or 1, got {selfie_model!r}")
        self.selfie_model = selfie_model
        self.max_num_hands = max_num_hands
        self._lock = threading.Lock()
        self._selfie = None
        self._hands = None

    def segment(self, image: np.ndarray, landmarks: FaceLandmarks) -> SkinSegmentation:
        """The skin mask of the face `landmarks` in `image`.

        Args:
            image (`np.ndarray` of shape `(H, W, 3)`, uint8): RGB photo.
            landmarks (`FaceLandmarks`): the face, tracked in `image`.

        Raises:
            ValueError: `image` is not a uint8 RGB array, or `landmarks` belong to an image
                of another size.
        """
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3):  # fmt: skip
            raise ValueError("SkinSegmenter.segment expects a uint8 (H, W, 3) RGB array")
        if tuple(landmarks.image_size) != image.shape[:2]:
            raise ValueError(
                f"the landmarks were tracked in a {landmarks.image_size} image, not in this "
                f"{image.shape[:2]} one"
            )
        image = np.ascontiguousarray(image)
        face = _face_region(landmarks, image.shape[:2])
        with self._lock, _native_logs_hidden():
            person = self._person(image, landmarks)
            hands = self._hand_mask(image)
        colour, seeds = skin_colour_likelihood(image, landmarks)
        mask = face * person * (1 - hands) * colour
        return SkinSegmentation(
            mask.astype(np.float32), face, person, hands, colour.astype(np.float32), seeds
        )

    def mask(
        self, image: np.ndarray, landmarks: FaceLandmarks, min_skin_fraction: float = 0.0
    ) -> np.ndarray:
        """`segment(image, landmarks).mask`: `(H, W)` float32 in [0, 1].

        Raises:
            FaceCoveredError: under `min_skin_fraction` of the face region is skin
                (`SkinSegmentation.skin_fraction`; the pipeline asks for `MIN_SKIN_FRACTION`).
        """
        found = self.segment(image, landmarks)
        check_skin_fraction(found, min_skin_fraction)
        return found.mask

    def close(self) -> None:
        """Release the MediaPipe graphs (rebuilt if `segment` is called again)."""
        with self._lock:
            for graph in (self._selfie, self._hands):
                if graph is not None:
                    graph.close()
            self._selfie = self._hands = None

    def __enter__(self) -> SkinSegmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def _person(self, image: np.ndarray, landmarks: FaceLandmarks) -> np.ndarray:
        """Selfie segmentation `(H, W)` float32, or ones where it missed the tracked face."""
        if self._selfie is None:
            self._selfie = mp.solutions.selfie_segmentation.SelfieSegmentation(
                model_selection=self.selfie_model
            )
        result = self._selfie.process(image).segmentation_mask
        ones = np.ones(image.shape[:2], np.float32)
        if result is None:
            return ones
        person = np.clip(np.asarray(result, np.float32), 0, 1)
        core = _hull_mask(landmarks.points[list(SEED_REGIONS["nose_bridge"]) + [1, 4, 151]],
                          image.shape[:2], grow=0.1 * landmarks.width)  # fmt: skip
        if person[core > 0].mean() < 0.5:  # the segmentation did not see this face
            return ones
        return person

    def _hand_mask(self, image: np.ndarray) -> np.ndarray:
        """`(H, W)` float32: 1 inside each detected hand's dilated convex hull."""
        hands = np.zeros(image.shape[:2], np.float32)
        if self.max_num_hands <= 0:
            return hands
        if self._hands is None:
            self._hands = mp.solutions.hands.Hands(
                static_image_mode=True, max_num_hands=self.max_num_hands,
                min_detection_confidence=0.5,
            )  # fmt: skip
        height, width = image.shape[:2]
        for hand in self._hands.process(image).multi_hand_landmarks or []:
            points = np.array([(p.x * width, p.y * height) for p in hand.landmark])
            size = float(np.linalg.norm(points.max(0) - points.min(0)))
            hands = np.maximum(hands, _hull_mask(points, (height, width), grow=0.1 * size))
        return hands


def check_skin_fraction(segmentation: SkinSegmentation, min_skin_fraction: float) -> None:
    """Raise `FaceCoveredError` if under `min_skin_fraction` of the face region is skin."""
    if segmentation.skin_fraction < min_skin_fraction:
        raise FaceCoveredError(
            f"only {100 * segmentation.skin_fraction:.0f} % of the face is visible skin (at "
            f"least {100 * min_skin_fraction:.0f} % is needed): a mask, hands or hair cover it"
        )


def skin_colour_likelihood(
    image: np.ndarray, landmarks: FaceLandmarks
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-pixel skin-colour likelihood of the face `landmarks` (module docstring).

    Args:
        image (`(H, W, 3)` uint8): RGB photo; landmarks (`FaceLandmarks`): the face in it.

    Returns:
        `(H, W)` float32 in [0, 1] (0 off the face region; a chromaticity-only test on its
        eyes, brows, lips and nostrils) and the names of the seed regions used.
    """
    height, width = image.shape[:2]
    work = _WorkCrop.around(landmarks, (height, width))
    if work is None:
        return np.zeros((height, width), np.float32), ()
    features = _colour_features(work.crop(image))
    samples, used = _seed_samples(features, work.points, work.face_width)
    if samples is None:  # no seed region shows skin: the face is covered (or out of the photo)
        return np.zeros((height, width), np.float32), ()
    mean, inv_cov, luma_sigma = _fit_gaussian(samples)
    likelihood, d2 = _gaussian_likelihood(features, mean, inv_cov, luma_sigma)
    likelihood = _clean(likelihood, work.face_width) * _not_thin_lines(features, work)
    likelihood = np.maximum(likelihood, _on_features(features, mean, d2, work))
    return work.paste(likelihood) * work.face, used


def refine_with_shading(
    segmentation: SkinSegmentation,
    image: np.ndarray,
    landmarks: FaceLandmarks,
    shading: np.ndarray,
) -> SkinSegmentation:
    """The skin mask with a cast shadow cut out, found with the fitted light (occlusion-aware
    fitting's alternation, once: Egger et al., IJCV 2018).

    The colour model tolerates shading, so skin in the shadow of a cap's brim, a hand or hair
    passes it, and the light cannot explain it: its albedo comes out dark. Divided by the
    fitted shading, the skin's luminance is nearly constant at large scale, and a cast shadow
    is a second, darker level with an edge. So: the photo's log-luminance minus the fitted
    shading's, on the skin the first pass saw (likelihood over `_SHADOW_SKIN`) off the
    features and away from the mesh's border, filled in elsewhere by the nearest such pixel,
    median-filtered over `_SHADOW_RADIUS` of the face width (creases and pores are thinner:
    they vanish; a shadow's edge stays); its two levels (Otsu's threshold); a cast shadow when
    each holds at least `_SHADOW_MIN_SHARE` of that skin and their medians differ by more
    than `_SHADOW_STEP` (on the 12 public bench photos the largest difference is 0.50, on the
    bench's rendered cap shadows 0.61 to 1.0). The shadow is the darker level's side of the
    photo's edges (a watershed from the cores of the two levels: the fitted light errs most
    at grazing angles, smoothly, and a shadow ends at a step), grown into the features it
    covers by their own luminance, closed, and grown by its penumbra as `_clean` does; the
    colour model is fitted again on the skin the first pass kept outside it (its seed
    regions may have been in the shadow).

    Args:
        segmentation (`SkinSegmentation`): `SkinSegmenter.segment(image, landmarks)`.
        image (`(H, W, 3)` uint8): the photo; landmarks: the face in it.
        shading (`(H, W, 3)` float32 linear): the fitted SH shading x ambient occlusion
            (`rendering.render.shading_image`), 0 off the mesh; any positive scale.

    Returns:
        `segmentation` itself when no cast shadow was found (or it would leave under
        `_MIN_REFINED_FRACTION` of the face), else a copy with the shadow cut from `colour` and
        `mask` and given as `cast_shadow`. A light fitted with the shadow in it is biased
        toward it: estimate it again without.
    """
    work = _WorkCrop.around(landmarks, image.shape[:2])
    if work is None or not segmentation.seeds_used:
        return segmentation
    first = work.crop(segmentation.colour, interpolation=cv2.INTER_LINEAR)
    seen = first > _SHADOW_SKIN
    regions = work.feature_regions(grow_brows=True)
    features = np.max(regions, axis=0) > 0.5
    shade = luminance(work.crop(shading, interpolation=cv2.INTER_LINEAR)).astype(np.float32)
    colours = _colour_features(work.crop(image))
    shadow = _cast_shadow(colours[..., 2], shade, seen, features, work.face_width)
    if shadow is None:
        return segmentation
    # an eye, brow, lip or nostril with the shadow on most of the skin around it goes with it
    r = max(1, round(_SHADOW_RADIUS * work.face_width))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    for region in regions:
        ring = (cv2.dilate(region, kernel) > 0.5) & (region < 0.5) & seen & ~features
        if ring.any() and shadow[ring].mean() > 0.5:
            shadow = np.maximum(shadow, region)
    # its penumbra, and the photo's pixels that the unwrapping samples across its edge: a
    # half-dark texel at the edge of a large hole would colour all of the hole's completion
    penumbra = max(1, round(_SHADOW_PENUMBRA * work.face_width))
    shadow = cv2.dilate(
        shadow, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * penumbra + 1,) * 2)
    )
    keep = _clean(1 - shadow, work.face_width, fill_below=_MIN_LINE_AREA)
    cast = 1 - work.paste(keep) * work.face
    lit = seen & ~features & (shadow < 0.5) & (first > 0.5)
    colour = _colour_from_lit_skin(colours, work, lit, segmentation.colour)
    colour = (colour * (1 - cast)).astype(np.float32)
    mask = segmentation.face * segmentation.person * (1 - segmentation.hands) * colour
    refined = replace(segmentation, mask=mask.astype(np.float32), colour=colour,
                      cast_shadow=cast.astype(np.float32))  # fmt: skip
    return refined if refined.skin_fraction >= _MIN_REFINED_FRACTION else segmentation


def _colour_from_lit_skin(features, work: _WorkCrop, lit, first_colour) -> np.ndarray:
    """`(H, W)` float32: the colour cue again, its Gaussian fitted on the `features` (the
    work crop's `_colour_features`) of the skin the first pass kept outside the shadow (`lit`
    `(h, w)` bool); `first_colour`, the first pass's own, when too little of it is left. The
    first pass's seed regions may lie in the shadow (a cap's brim covers the forehead and the
    nose bridge), which centres its model between shadowed and lit skin, and drops lit
    skin."""
    if lit.sum() < _MIN_SHADOW_PIXELS:
        return first_colour
    mean, inv_cov, luma_sigma = _fit_gaussian(features[lit])
    likelihood, d2 = _gaussian_likelihood(features, mean, inv_cov, luma_sigma)
    likelihood = _clean(likelihood, work.face_width) * _not_thin_lines(features, work)
    likelihood = np.maximum(likelihood, _on_features(features, mean, d2, work))
    return work.paste(likelihood) * work.face


def _cast_shadow(log_luma, shade, seen, features, face_width: float) -> np.ndarray | None:
    """`(h, w)` float32, 1 in the cast shadow, or `None` (`refine_with_shading`). `seen`: the
    first pass's skin and features, `features`: the features' regions (bool `(h, w)`)."""
    skin = seen & ~features
    if skin.sum() < _MIN_SHADOW_PIXELS:
        return None
    lit = shade > _MIN_RELATIVE_SHADING * np.median(shade[skin])
    border = max(1, round(0.03 * face_width))  # the mesh's outline is not the face's
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * border + 1,) * 2)
    valid = (cv2.erode(lit.astype(np.uint8), kernel) > 0) & skin
    if valid.sum() < _MIN_SHADOW_PIXELS:
        return None
    delit = log_luma - np.log(np.maximum(shade, 1e-4))
    lo = float(np.median(delit[valid])) - 3.0  # 8-bit codes over [lo, lo + 4] log units
    raw = np.clip((delit - lo) * (255 / 4), 0, 255).astype(np.uint8)
    # filled in elsewhere by the nearest valid pixel (not by a smooth inpainting, which
    # carries the other side of an edge across an outline: the lit nose past a shaded brow)
    fine = raw[_nearest(valid)]
    r = max(1, round(_SHADOW_RADIUS * face_width))
    code = cv2.medianBlur(fine, 2 * r + 1)
    values = code[valid]
    threshold, _ = cv2.threshold(values.reshape(-1, 1), 0, 255,
                                 cv2.THRESH_BINARY + cv2.THRESH_OTSU)  # fmt: skip
    dark, bright = values[values < threshold], values[values >= threshold]
    if min(len(dark), len(bright)) < _SHADOW_MIN_SHARE * len(values):
        return None
    step = (float(np.median(bright)) - float(np.median(dark))) * 4 / 255
    if step < _SHADOW_STEP:
        return None
    cut = float(np.median(bright)) - _SHADOW_CUT * step * 255 / 4
    # surely in or out: the valid pixels as far inside either level as `_SHADOW_CORE_RADIUS`;
    # the rest goes to the side it joins without crossing an edge (a watershed of the photo's
    # log-luminance gradient): the fitted light errs most at grazing angles, where it makes a
    # smooth ramp that a threshold cuts anywhere, and a cast shadow ends at a step, at the
    # mesh's border and on the features too
    dark_side = code < threshold
    core = max(1, round(_SHADOW_CORE_RADIUS * face_width))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * core + 1,) * 2)
    markers = np.zeros(code.shape, np.int32)
    for label, side in ((1, dark_side), (2, ~dark_side)):
        markers[cv2.erode((valid & side).astype(np.uint8), kernel) > 0] = label
    if (markers == 1).any() and (markers == 2).any():
        elevation = sobel(cv2.GaussianBlur(log_luma.astype(np.float32), (0, 0), 1.0))
        # on the mesh; off it (the face region may reach past it) as the nearest pixel on it
        on_mesh = shade > 0
        shadow = watershed(elevation, markers, mask=on_mesh) == 1
        shadow |= _lit_islands(on_mesh & ~shadow)
        shadow = shadow[_nearest(on_mesh)].astype(np.uint8)
    else:
        shadow = (code < cut).astype(np.uint8)
    # grown into what the median filter rounded off (corners, narrow parts) near it, the
    # features by their own luminance (filled in from the skin around, an eye half in the
    # shadow came out lit), and closed (a shadow's outline is smooth)
    own = np.where(seen & features & lit, raw, fine)
    wide = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * r + 1,) * 2)
    near = cv2.dilate(shadow, wide) > 0
    shadow = (shadow > 0) | (near & (cv2.medianBlur(own, 3) < cut))
    shadow = cv2.morphologyEx(shadow.astype(np.uint8), cv2.MORPH_CLOSE, wide) > 0
    return shadow.astype(np.float32)


def _lit_islands(lit: np.ndarray) -> np.ndarray:
    """`(h, w)` bool: the parts of `lit` `(h, w)` bool (8-connected) under
    `_LIT_ISLAND` of its largest part: the fitted light's error at grazing angles can lift
    a patch of a shadow over the threshold, and a cap's, a hand's or hair's shadow leaves
    the lit skin in one piece."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(lit.astype(np.uint8), 8)
    if count <= 2:
        return np.zeros_like(lit)
    areas = stats[1:, cv2.CC_STAT_AREA]
    small = np.concatenate([[False], areas < _LIT_ISLAND * areas.max()])
    return small[labels]


def _nearest(where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays `(h, w)` x 2 of the nearest pixel of `where` `(h, w)` bool, per pixel."""
    rows, cols = ndimage.distance_transform_edt(~where, return_distances=False,
                                                return_indices=True)  # fmt: skip
    return rows, cols


def _not_thin_lines(features: np.ndarray, work: _WorkCrop) -> np.ndarray:
    """`(h, w)` float32: 0 on thin dark lines around the eyes, off the face's features; 1
    elsewhere.

    The colour model must tolerate shading (a factor of several between a lit cheek and a
    shaded one) and its cleaning closes over thin structures, so glasses frames of a
    skin-like hue (bronze, gold, tortoiseshell) pass it. Their depth below the local
    luminance envelope (a morphological black-hat) is large. So is a deep smile fold's, which
    is skin (its texture, and the detail normals made from it, need it), so the test looks
    only where glasses sit: around the eyes and brows (`_GLASSES_ZONE`). The features and
    their edges are left out (lash lines and a brow's soft edge are thin dark lines too);
    what is rejected is pulled back from as by `_clean`, whose closing is replaced by
    filling only rejected specks (pores, noise)."""
    lines = _thin_line_likelihood(features[..., 2], work.face_width)
    shape = (work.size[1], work.size[0])
    around_eyes = [i for region in FEATURES[:4] for i in region]  # eyes and brows
    zone = _hull_mask(work.points[around_eyes], shape, _GLASSES_ZONE * work.face_width)
    outside = (zone < 0.5) | (work.features_mask(grow_brows=True) > 0.5)
    lines = np.where(outside, np.float32(1), lines)
    return _clean(lines.astype(np.float32), work.face_width, fill_below=_MIN_LINE_AREA)


def _thin_line_likelihood(log_luma: np.ndarray, face_width: float) -> np.ndarray:
    """`(h, w)` float32: 0 on thin dark lines (black-hat depth of the log-luminance over
    `_LINE_RADIUS` of the face width beyond `_LINE_DEPTH[1]`), 1 where under `_LINE_DEPTH[0]`,
    a ramp between."""
    r = max(1, round(_LINE_RADIUS * face_width))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    depth = cv2.morphologyEx(log_luma, cv2.MORPH_CLOSE, kernel) - log_luma
    lo, hi = _LINE_DEPTH
    return np.clip((hi - depth) / (hi - lo), 0, 1).astype(np.float32)


@dataclass(frozen=True)
class _WorkCrop:
    """The crop around a face's region, scaled so the face is `_WORK_WIDTH` px wide (or less:
    never enlarged), where the colour model runs. `points`: the landmarks `(N, 2)` in it."""

    x0: int
    x1: int
    y0: int
    y1: int
    size: tuple[int, int]  # (width, height) of the scaled crop
    points: np.ndarray
    face_width: float
    face: np.ndarray  # (H, W) the photo's face region

    @classmethod
    def around(cls, landmarks: FaceLandmarks, shape: tuple[int, int]) -> _WorkCrop | None:
        face = _face_region(landmarks, shape)
        ys, xs = np.nonzero(face)
        if len(xs) == 0:
            return None
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        scale = min(1.0, _WORK_WIDTH / max(landmarks.width, 1.0))
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        factor = np.array([size[0] / (x1 - x0), size[1] / (y1 - y0)])
        points = (landmarks.points[:, :2] - [x0, y0]) * factor
        return cls(x0, x1, y0, y1, size, points, landmarks.width * factor[0], face)

    @property
    def scaled(self) -> bool:
        return self.size != (self.x1 - self.x0, self.y1 - self.y0)

    def crop(self, image: np.ndarray, interpolation=cv2.INTER_AREA) -> np.ndarray:
        """The crop of a photo-sized `(H, W, ...)` array, scaled."""
        crop = np.ascontiguousarray(image[self.y0 : self.y1, self.x0 : self.x1])
        return cv2.resize(crop, self.size, interpolation=interpolation) if self.scaled else crop

    def paste(self, crop: np.ndarray) -> np.ndarray:
        """A scaled `(h, w)` float crop back into a photo-sized `(H, W)` float32 array of 0."""
        if self.scaled:
            crop = cv2.resize(crop, (self.x1 - self.x0, self.y1 - self.y0),
                              interpolation=cv2.INTER_LINEAR)  # fmt: skip
        out = np.zeros(self.face.shape, np.float32)
        out[self.y0 : self.y1, self.x0 : self.x1] = crop
        return out

    def features_mask(self, grow_brows: bool = False) -> np.ndarray:
        """`(h, w)` float32: the face's eyes, lips and nostrils (grown by 2 % of the face
        width) and brows (not grown, unless `grow_brows`) in the crop."""
        return np.max(self.feature_regions(grow_brows), axis=0)

    def feature_regions(self, grow_brows: bool = False) -> list[np.ndarray]:
        """`features_mask`, one `(h, w)` float32 mask per region of `FEATURES`."""
        shape = (self.size[1], self.size[0])
        return [
            _hull_mask(self.points[list(region)], shape,
                       0.0 if i in _BROWS and not grow_brows else 0.02 * self.face_width)
            for i, region in enumerate(FEATURES)
        ]  # fmt: skip


def _gaussian_likelihood(features, mean, inv_cov, luma_sigma):
    """Colour likelihood `(h, w)` in [0, 1] under the skin Gaussian (`_MAHALANOBIS`), and the
    chromaticity's squared Mahalanobis distance `(h, w)`."""
    diff = features - mean
    chroma = diff[..., :2]
    d2 = np.einsum("...i,ij,...j->...", chroma, inv_cov, chroma)
    luma = diff[..., 2] / np.where(diff[..., 2] < 0, luma_sigma[0], luma_sigma[1])
    distance = np.sqrt(d2 + luma**2)
    lo, hi = _MAHALANOBIS
    return np.clip((hi - distance) / (hi - lo), 0, 1).astype(np.float32), d2


def _on_features(features, mean, d2, work: _WorkCrop, feature_mask=None) -> np.ndarray:
    """`(h, w)` float32: the likelihood on the face's own eyes, brows, lips and nostrils (0
    elsewhere). Their colours (red lips, white sclera, dark brows and pupils) lie along the
    saturation line or near grey: only chromaticity far off it (a blue face mask over the
    lips) is rejected, with a wider tolerance and no luminance test. Grey is as far as they
    go: a chromaticity beyond it, on the far side from the skin's (blue, green), is rejected."""
    feature_mask = work.features_mask() if feature_mask is None else feature_mask
    lo, hi = _MAHALANOBIS
    k = _FEATURE_TOLERANCE
    likelihood = np.clip((k * hi - np.sqrt(d2)) / (k * (hi - lo)), 0, 1)
    saturation = mean[:2] / max(float(np.linalg.norm(mean[:2])), 1e-6)
    along = features[..., :2] @ saturation  # 0 at grey, |mean| at the skin's chromaticity
    likelihood *= np.clip((along + 0.15) / 0.1, 0, 1)
    return (feature_mask * likelihood).astype(np.float32)


def _colour_features(image: np.ndarray) -> np.ndarray:
    """`(h, w, 3)` uint8 sRGB -> `(h, w, 3)` float32: log(R/G), log(B/G), log(luminance),
    in linear RGB."""
    lin = srgb_to_linear(image.astype(np.float32) / 255.0) + 1e-3
    return np.stack(
        [np.log(lin[..., 0] / lin[..., 1]), np.log(lin[..., 2] / lin[..., 1]),
         np.log(luminance(lin))],
        axis=-1,
    ).astype(np.float32)  # fmt: skip


def _seed_samples(features: np.ndarray, points: np.ndarray, face_width: float):
    """Features `(M, 3)` of the seed regions that agree with each other, and their names;
    `(None, ())` when no region in the photo has a skin colour."""
    radius = max(1.5, _SEED_RADIUS * face_width)
    h, w = features.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    regions = {}
    for name, idx in SEED_REGIONS.items():
        cx, cy = points[list(idx)].mean(0)
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        if inside.sum() >= 3:
            regions[name] = features[inside]
    medians = {k: np.median(v, axis=0) for k, v in regions.items()}
    # Skin reflects red more than green, green more than blue (in white light, which a camera's
    # white balance makes of most light): a region that does not (a blue face mask over both
    # cheeks, black frames) cannot set the centre, or two covered regions out of four would
    # pull it halfway to the cover; with none that does, no skin is seen.
    plausible = [m for m in medians.values() if m[0] > _MIN_REDNESS and m[1] < 0]
    if all(np.abs(m[:2]).max() < _GREY for m in medians.values()):  # a black-and-white photo
        plausible = list(medians.values())
    if not plausible:
        return None, ()
    centre = np.median(np.stack(plausible), axis=0)
    # Drop regions whose median is far from the others' (hair over the forehead, glasses):
    # chromaticity off by > 0.15 (log units, ~16 %) or luminance by > 0.7 (a factor 2).
    kept = [
        k for k, m in medians.items()
        if np.abs(m[:2] - centre[:2]).max() <= 0.15 and abs(m[2] - centre[2]) <= 0.7
    ]  # fmt: skip
    if not kept:  # no two regions agree: take the one nearest the centre
        kept = [min(medians, key=lambda k: np.abs(medians[k] - centre).sum())]
    return np.concatenate([regions[k] for k in kept]), tuple(kept)


def _fit_gaussian(samples: np.ndarray):
    """Chromaticity mean and inverse covariance `(2, 2)`, luminance std below / above the mean,
    from seed features `(M, 3)`; refitted on the nearest 90 %."""
    mean = np.median(samples, axis=0)
    for _ in range(2):
        cov = np.cov(samples[:, :2].T) + np.eye(2) * _MIN_CHROMA_SIGMA**2
        inv = np.linalg.inv(cov)
        d = samples - mean
        dist = np.einsum("ni,ij,nj->n", d[:, :2], inv, d[:, :2]) + (d[:, 2] / 0.3) ** 2
        near = samples[dist <= np.quantile(dist, 0.9)]
        if len(near) >= 3:
            samples = near
        mean = samples.mean(0)
    cov = np.cov(samples[:, :2].T) + np.eye(2) * _MIN_CHROMA_SIGMA**2
    saturation = mean[:2] / max(float(np.linalg.norm(mean[:2])), 1e-6)
    cov = cov + _SATURATION_SIGMA**2 * np.outer(saturation, saturation)
    luma_std = float(samples[:, 2].std())
    luma_sigma = (max(luma_std, _LUMA_SIGMA[0]), max(luma_std, _LUMA_SIGMA[1]))
    return mean.astype(np.float32), np.linalg.inv(cov).astype(np.float32), luma_sigma


def _clean(likelihood: np.ndarray, face_width: float, fill_below: float | None = None):
    """Remove specks and holes smaller than ~2 % of the face width (pores, highlights, stray
    hairs) with a closing and an opening, then pull the skin back from what was rejected by
    as much and soften the edge inwards: pixels at an occluder's edge mix its colour with the
    skin's (strands of a fringe, a frame's anti-aliasing) and would bleed into the maps.

    `fill_below` (a share of the face width squared): instead of the closing (which also
    fills thin lines: glasses frames), fill only rejected areas smaller than this."""
    r = max(1, round(0.02 * face_width))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    if fill_below is None:
        out = cv2.morphologyEx(likelihood, cv2.MORPH_CLOSE, kernel)
    else:
        out = _fill_small_holes(likelihood, fill_below * face_width**2)
    out = cv2.morphologyEx(out, cv2.MORPH_OPEN, kernel)
    out = cv2.erode(out, kernel)
    return np.minimum(out, cv2.GaussianBlur(out, (0, 0), r / 2))


def _fill_small_holes(likelihood: np.ndarray, max_area: float) -> np.ndarray:
    """Rejected areas (likelihood < 0.5, 8-connected) of under `max_area` pixels set to 1."""
    rejected = (likelihood < 0.5).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(rejected, connectivity=8)
    small = np.zeros(count, bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] < max_area
    return np.where(small[labels], np.float32(1), likelihood)


def _face_region(landmarks: FaceLandmarks, shape: tuple[int, int]) -> np.ndarray:
    """`(H, W)` float32: the hull of all the landmarks grown by `_FACE_MARGIN` of the face
    width. Frontal, that is the face oval's hull; turned, the oval's far side runs behind the
    nose, and the nose and the cheek beside it lie outside the oval's hull."""
    return _hull_mask(landmarks.points[:, :2], shape, _FACE_MARGIN * landmarks.width)


def _hull_mask(points: np.ndarray, shape: tuple[int, int], grow: float = 0.0) -> np.ndarray:
    """`(H, W)` float32: 1 inside the convex hull of `points` `(N, 2)` (pixels), grown by
    `grow` pixels: the hull of the points moved `grow` along `_GROW_DIRECTIONS` directions
    (a convex region grown by a disk is convex: no dilation, whose cost grows with the photo's
    area times the disk's, 78 s for a 3,000 px wide face in a 37-megapixel photo)."""
    points = np.asarray(points, np.float64)[:, :2]
    grow = round(grow)  # whole pixels, as the elliptic kernel it replaced
    if grow > 0:
        angles = np.arange(_GROW_DIRECTIONS) * (2 * np.pi / _GROW_DIRECTIONS)
        # the polygon's edges just outside the circle (its inscribed radius is `grow`)
        radius = grow / np.cos(np.pi / _GROW_DIRECTIONS)
        disk = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
        points = (points[:, None] + disk[None]).reshape(-1, 2)
    mask = np.zeros(shape, np.uint8)
    hull = cv2.convexHull(np.round(points * 16).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(np.float32)
