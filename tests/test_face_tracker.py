from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from skimage import data

from modeling.errors import ImageTooSmallError, NoFaceFoundError, NotAnImageError
from modeling.inputs.face_tracker import (
    REFINED_EYE_CONTOURS,
    FaceLandmarks,
    FaceTracker,
    _pyramid_sizes,
    _tile_starts,
    _tile_stride,
    _with_refined_eyes,
    largest_face,
)

NOSE_TIP, RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 1, 33, 263


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def tracker():
    with FaceTracker() as tracker:
        yield tracker


@pytest.fixture(scope="module")
def reference(astronaut, tracker) -> FaceLandmarks:
    return tracker.detect(astronaut)[0]


def _pasted(image: np.ndarray, size: int, canvas_hw: tuple[int, int], at: tuple[int, int]):
    """`image` resized to `size` x `size`, pasted with its top-left at `at` (x, y) on grey."""
    canvas = np.full((*canvas_hw, 3), 128, np.uint8)
    enlarge = size > image.shape[1]
    small = cv2.resize(
        image, (size, size), interpolation=cv2.INTER_CUBIC if enlarge else cv2.INTER_AREA
    )
    canvas[at[1] : at[1] + size, at[0] : at[0] + size] = small
    return canvas


def _expected(reference: FaceLandmarks, size: int, at: tuple[int, int]) -> np.ndarray:
    return reference.points * (size / reference.image_size[1]) + [at[0], at[1], 0]


def test_astronaut_has_one_face_in_the_right_place(astronaut, tracker, reference):
    faces = tracker.detect(astronaut)
    assert len(faces) == 1
    points = reference.points
    assert points.shape == (468, 3) and points.dtype == np.float64
    assert reference.image_size == (512, 512)
    assert np.all((points[:, 0] > 160) & (points[:, 0] < 285))
    assert np.all((points[:, 1] > 60) & (points[:, 1] < 190))
    assert points[RIGHT_EYE_OUTER, 0] < points[NOSE_TIP, 0] < points[LEFT_EYE_OUTER, 0]
    assert points[NOSE_TIP, 2] < np.median(points[:, 2])  # the nose tip is closest
    np.testing.assert_allclose(reference.box[:2], points[:, :2].min(axis=0))
    np.testing.assert_allclose(reference.box[2:], points[:, :2].max(axis=0))
    assert 80 < reference.width < 110
    with pytest.raises(ValueError):
        reference.points[0, 0] = 0.0  # read-only


def test_irises_are_tracked_inside_their_eyes_and_follow_a_turn(astronaut, tracker, reference):
    from modeling.inputs.orientation import turn_landmarks

    iris = reference.iris
    assert iris is not None and iris.shape == (10, 3)
    for centre, corners in ((iris[0], (33, 133)), (iris[5], (362, 263))):  # right, left eye
        x0, x1 = sorted(reference.points[list(corners), 0])
        assert x0 < centre[0] < x1
        rim = np.linalg.norm(iris[1:5, :2] - iris[0, :2], axis=1) if centre is iris[0] else None
        if rim is not None:
            assert 0.02 < rim.mean() / reference.width < 0.08  # an iris, not the whole eye
    turned = turn_landmarks(reference, 1)
    back = turn_landmarks(turned, -1)
    np.testing.assert_allclose(back.iris, iris, atol=1e-9)
    with pytest.raises(ValueError):
        reference.iris[0, 0] = 0.0  # read-only


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_no_face(tracker, kind):
    rng = np.random.default_rng(0)
    image = (
        np.full((600, 600, 3), 200, np.uint8)
        if kind == "blank"
        else rng.integers(0, 256, (600, 600, 3), dtype=np.uint8)
    )
    with pytest.raises(NoFaceFoundError, match="No face found"):
        tracker.detect(image)


def test_two_faces_largest_first(astronaut, tracker):
    image = np.full((512, 812, 3), 128, np.uint8)
    image[:, :512] = astronaut
    image[100:400, 512:] = cv2.resize(astronaut, (300, 300), interpolation=cv2.INTER_AREA)
    faces = tracker.detect(image)
    assert len(faces) == 2
    assert faces[0].width > faces[1].width
    assert faces[0].box[2] < 512 < faces[1].box[0]


def test_small_face_is_found_by_full_range_fallback(astronaut, tracker, reference):
    size, at = 400, (466, 300)  # face about 75 px wide in a 1000 x 1400 image
    image = _pasted(astronaut, size, (1000, 1400), at)
    assert tracker._run_mesh(image) == []  # the face mesh alone misses it
    faces = tracker.detect(image)
    assert len(faces) == 1 and faces[0].image_size == (1000, 1400)
    error = np.abs(faces[0].points - _expected(reference, size, at))
    assert error[:, :2].max() < 4 and error[:, 2].max() < 4
    assert error[:, :2].mean() < 1


def test_distant_face_is_found_in_tiles(astronaut, reference):
    size, at = 200, (466, 600)  # face about 37 px wide in 1400 x 1400: missed by full-image passes
    image = _pasted(astronaut, size, (1400, 1400), at)
    with FaceTracker(min_face_size=32) as tracker:
        assert tracker._detect_boxes(image) == []
        face = tracker.detect(image)[0]
    assert np.abs(face.points - _expected(reference, size, at))[:, :2].max() < 4


@pytest.mark.parametrize(
    "face, canvas_hw",
    [
        # the 7000 px cases take 1-2 s each (the pyramid search): full runs only
        pytest.param(66, (7000, 7000), marks=pytest.mark.slow),
        (100, (4000, 3000)),
        pytest.param(400, (7000, 7000), marks=pytest.mark.slow),
        (512, (4000, 3000)),
    ],
)
def test_small_face_in_a_large_photo_is_found(astronaut, tracker, reference, face, canvas_hw):
    # the whole photo scaled so that its face is `face` px wide, 1-13 % of the long side: 2-25 px
    # in the whole-image passes' 128-192 px views (the smaller ones are found in the pyramid)
    size = round(512 * face / reference.width)
    at = ((canvas_hw[1] - size) * 3 // 10, (canvas_hw[0] - size) * 6 // 10)
    faces = tracker.detect(_pasted(astronaut, size, canvas_hw, at))
    assert len(faces) == 1 and faces[0].image_size == canvas_hw
    truth = _expected(reference, size, at)
    error = np.linalg.norm(faces[0].points[:, :2] - truth[:, :2], axis=1)
    assert error.mean() < 0.03 * face  # 0.7-1.1 % on composites


def test_small_face_found_by_the_whole_image_mesh_is_meshed_again(astronaut, tracker, reference):
    size, at = round(512 * 450 / reference.width), (400, 1100)  # face 450 px, 11 % of 4000
    image = np.random.default_rng(0).integers(0, 256, (4000, 3000, 3), dtype=np.uint8)
    image[at[1] : at[1] + size, at[0] : at[0] + size] = _pasted(
        astronaut, size, (size, size), (0, 0)
    )
    assert len(tracker._run_mesh(image)) == 1  # found by the face mesh on the whole image: 3.0 %
    truth = _expected(reference, size, at)[:, :2]
    error = np.linalg.norm(tracker.detect(image)[0].points[:, :2] - truth, axis=1)
    assert error.mean() < 0.015 * 450  # 0.7 % once meshed again on a crop


@pytest.mark.slow  # the whole pyramid of a 24 Mpx photo, ~1.3 s
def test_large_photo_without_a_face(tracker):
    noise = np.random.default_rng(0).integers(0, 256, (4000, 6000, 3), dtype=np.uint8)
    with pytest.raises(NoFaceFoundError, match="No face found"):
        tracker.detect(noise)


@pytest.mark.parametrize("hw", [(7071, 7071), (4000, 3000), (2000, 25000), (20000, 300)])
def test_pyramid_holds_every_face_whole_in_a_tile_at_a_findable_width(hw):
    height, width = hw
    sizes = _pyramid_sizes(height, width, min_face_size=64)
    # every width from 64 px to where the whole-image pass sees the face 16 px wide (of 192)
    for face in np.geomspace(64, max(hw) * 16 / 192, 40):
        in_level = [face * level_width / width for _, level_width in sizes]
        assert any(15.5 < w < 32.5 for w in in_level), (face, in_level)
    for level in sizes:
        # tiles overlap by 48 px (> a 32 px face's detection box), on levels up to 1024 px by half
        overlap = 96 if max(level) <= 1024 else 48
        for length in level:
            side = min(192, length)
            starts = _tile_starts(length, side, _tile_stride(*level))
            assert starts[0] == 0 and starts[-1] + side == length
            assert np.all(np.diff(starts) <= side - overlap)


def test_too_small_face(astronaut, tracker):
    image = _pasted(astronaut, 200, (400, 400), (100, 100))  # face about 37 px wide
    with pytest.raises(ImageTooSmallError, match=r"only 3\d pixels wide; at least 64"):
        tracker.detect(image)


def test_largest_face_and_reuse(astronaut, tracker, reference):
    np.testing.assert_array_equal(largest_face(astronaut, tracker).points, reference.points)
    np.testing.assert_allclose(largest_face(astronaut).points, reference.points, atol=1e-6)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: tracker.detect(astronaut)[0], range(4)))
    for face in results:
        np.testing.assert_array_equal(face.points, reference.points)
    local = FaceTracker()
    local.detect(astronaut)
    local.close()
    np.testing.assert_allclose(local.detect(astronaut)[0].points, reference.points, atol=1e-6)
    local.close()


def test_rejects_non_rgb_arrays(tracker):
    with pytest.raises(NotAnImageError):
        tracker.detect(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(NotAnImageError):
        tracker.detect(np.zeros((100, 100, 4), np.uint8))


def test_refined_eyes_change_only_the_eye_contours(astronaut, reference):
    with FaceTracker(refine_eyes=False) as plain_tracker:
        plain = plain_tracker.detect(astronaut)[0]
    eyes = list(REFINED_EYE_CONTOURS)
    assert len(eyes) == 32 and LEFT_EYE_OUTER in eyes and RIGHT_EYE_OUTER in eyes
    others = np.setdiff1d(np.arange(468), eyes)
    np.testing.assert_array_equal(reference.points[others], plain.points[others])
    moved = np.linalg.norm(reference.points[eyes, :2] - plain.points[eyes, :2], axis=1)
    assert 0 < moved.mean() < 0.03 * reference.width  # the same contours, placed anew
    # the refined contour is still an eye: each eye's points lie around its own corners
    for corner in (RIGHT_EYE_OUTER, LEFT_EYE_OUTER):
        near = np.linalg.norm(reference.points[eyes, :2] - reference.points[corner, :2], axis=1)
        assert (near < 0.25 * reference.width).sum() == 16


def test_refined_eyes_need_the_same_face(reference):
    far = FaceLandmarks.from_points(reference.points + [400, 0, 0], reference.image_size)
    assert _with_refined_eyes([reference], [far])[0] is reference
    assert _with_refined_eyes([reference], [])[0] is reference
