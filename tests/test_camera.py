"""The coordinate conventions of `rendering.camera` agree with each other and with OpenCV."""

import cv2
import numpy as np
import torch

from rendering.camera import (
    affine_to_index,
    ndc_to_pixels,
    pixel_centers,
    pixels_to_ndc,
    uv_texel_centers,
    uv_to_pixels,
)


def test_texel_centres_are_pixel_centres_of_the_uv_image():
    height, width = 5, 7
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    pixels = uv_to_pixels(uv_texel_centers(height, width, torch.float64).numpy(), width, height)
    np.testing.assert_allclose(pixels, pixel_centers(rows, cols), atol=1e-12)


def test_ndc_and_pixels_round_trip_and_corners():
    ndc = torch.tensor([[-1.0, 1.0], [1.0, -1.0], [0.3, -0.7]], dtype=torch.float64)
    pixels = ndc_to_pixels(ndc, 40, 30)
    torch.testing.assert_close(pixels[:2], torch.tensor([[0.0, 0.0], [40.0, 30.0]]).double())
    torch.testing.assert_close(pixels_to_ndc(pixels, 40, 30), ndc)


def test_affine_to_index_makes_warp_affine_follow_pixel_coordinates():
    # A ramp image whose values are the array indices (column, row): warping it by a map of
    # pixel coordinates must give, at each output pixel centre, the index of the source point.
    size = 32
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    ramp = np.stack([cols, rows, np.zeros_like(rows)], -1).astype(np.float32)
    affine = np.array([[2.0, 0.0, -5.3], [0.0, 2.0, -3.1]])  # source pixel -> output pixel
    out = cv2.warpAffine(ramp, affine_to_index(affine), (size, size), flags=cv2.INTER_LINEAR)
    centres = pixel_centers(rows, cols)  # output pixel centres
    source = (centres - affine[:, 2]) / 2.0  # back to source pixel coordinates
    inside = np.all((source > 0.5) & (source < size - 0.5), axis=-1)
    np.testing.assert_allclose(out[inside][:, :2], source[inside] - 0.5, atol=1 / 32)
