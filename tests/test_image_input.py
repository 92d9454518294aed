import io
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile
from skimage import data

from modeling.errors import (
    CorruptImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
)
from modeling.inputs.photo import BACKGROUND_GREY, load_image


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **kwargs)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims `width` x `height` RGB, with a few bytes of pixel data."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_path_bytes_and_pil_give_the_same_pixels(astronaut, tmp_path):
    path = tmp_path / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    from_path = load_image(path)
    assert from_path.dtype == np.uint8 and from_path.shape == (512, 512, 3)
    np.testing.assert_array_equal(from_path, astronaut)
    np.testing.assert_array_equal(load_image(str(path)), astronaut)
    np.testing.assert_array_equal(load_image(path.read_bytes()), astronaut)
    np.testing.assert_array_equal(load_image(Image.open(path)), astronaut)


def test_numpy_inputs_are_converted_and_never_mutated(astronaut):
    original = astronaut.copy()
    out = load_image(astronaut)
    out[:] = 0
    np.testing.assert_array_equal(astronaut, original)

    floats = astronaut.astype(np.float32) / 255.0
    np.testing.assert_array_equal(load_image(floats), astronaut)

    grey = astronaut[:, :, 0]
    for array in (grey, grey[:, :, None]):
        out = load_image(array)
        assert out.shape == (512, 512, 3)
        np.testing.assert_array_equal(out[:, :, 2], grey)

    rgba = np.dstack([astronaut, np.zeros((512, 512), np.uint8)])
    rgba[:10, :10, 3] = 255
    out = load_image(rgba)
    np.testing.assert_array_equal(out[:10, :10], astronaut[:10, :10])
    assert np.all(out[20:, 20:] == BACKGROUND_GREY)


def test_torch_tensors(astronaut):
    chw = torch.from_numpy(astronaut).permute(2, 0, 1).float() / 255.0
    np.testing.assert_array_equal(load_image(chw), astronaut)
    np.testing.assert_array_equal(load_image(chw[None]), astronaut)
    with pytest.raises(NotAnImageError, match="shape"):
        load_image(torch.zeros(2, 3, 64, 64))


def test_pil_modes(astronaut, tmp_path):
    rgb = Image.fromarray(astronaut)

    grey = load_image(rgb.convert("L"))
    assert np.array_equal(grey[:, :, 0], grey[:, :, 1]) and np.array_equal(
        grey[..., 0], grey[..., 2]
    )

    cmyk_path = tmp_path / "cmyk.jpg"
    rgb.convert("CMYK").save(cmyk_path, quality=95)
    assert Image.open(cmyk_path).mode == "CMYK"
    assert np.abs(load_image(cmyk_path).astype(int) - astronaut).mean() < 3

    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    assert np.abs(load_image(palette).astype(int) - astronaut).mean() < 10
    transparent = palette.copy()
    transparent.info["transparency"] = int(np.asarray(palette)[0, 0])
    gif_path = tmp_path / "transparent.gif"
    transparent.save(gif_path, transparency=transparent.info["transparency"])
    assert tuple(load_image(gif_path)[0, 0]) == (BACKGROUND_GREY,) * 3

    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    half = load_image(rgba).astype(int)
    expected = astronaut * (128 / 255) + BACKGROUND_GREY * (127 / 255)
    assert np.abs(half - expected).max() <= 1
    la = rgb.convert("LA")
    la.putalpha(0)
    assert np.all(load_image(la) == BACKGROUND_GREY)


def test_high_bit_depth(tmp_path):
    ramp = np.linspace(0, 65535, 256 * 256).reshape(256, 256).astype(np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I;16")
    out = load_image(path)
    np.testing.assert_array_equal(out[:, :, 0], np.rint(ramp / 257.0).astype(np.uint8))
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255

    wide = Image.fromarray((ramp.astype(np.int32) - 1000) * 10)  # mode I, beyond 16 bits
    assert wide.mode == "I"
    out = load_image(wide)
    assert out.min() == 0 and out.max() == 255
    floats = Image.fromarray(ramp.astype(np.float32) / 65535.0)
    assert floats.mode == "F"
    assert np.abs(load_image(floats)[:, :, 0].astype(int) - ramp / 257.0).max() <= 1


def test_exif_orientation_is_applied(astronaut, tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_jpeg_bytes(Image.fromarray(np.rot90(astronaut)), exif=exif))
    out = load_image(path)
    assert out.shape == astronaut.shape
    assert np.abs(out.astype(int) - astronaut).mean() < 3


def test_not_an_image(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a photo\n")
    with pytest.raises(NotAnImageError, match="notes.txt"):
        load_image(text)
    with pytest.raises(NotAnImageError):
        load_image(np.random.default_rng(0).bytes(5000))
    with pytest.raises(NotAnImageError, match="list"):
        load_image([[0, 1], [2, 3]])
    with pytest.raises(NotAnImageError, match="shape"):
        load_image(np.zeros((100, 100, 2), np.uint8))
    with pytest.raises(NotAnImageError, match="dtype"):
        load_image(np.zeros((100, 100, 3), np.int64))
    with pytest.raises(NotAnImageError, match=r"\[0, 1\]"):
        load_image(np.full((100, 100, 3), 2.0))
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.jpg")


@pytest.mark.parametrize("allow_truncated", [False, True])
def test_truncated_jpeg_is_corrupt(astronaut, tmp_path, monkeypatch, allow_truncated):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", allow_truncated)
    encoded = _jpeg_bytes(Image.fromarray(astronaut))
    path = tmp_path / "cut.jpg"
    path.write_bytes(encoded[: len(encoded) // 2])
    with pytest.raises(CorruptImageError, match="cut.jpg"):
        load_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is allow_truncated


def test_huge_header_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(60000, 60000))
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match="bomb.png"):
        load_image(path)
    # Below Pillow's own bomb limit: our max_pixels check, from the header.
    with pytest.raises(ImageTooLargeError, match="8000x8000"):
        load_image(_png_header_only(8000, 8000))
    # Pillow's DecompressionBombWarning (above its 89 Mpx default) also becomes our error.
    with pytest.raises(ImageTooLargeError):
        load_image(_png_header_only(10000, 10000), max_pixels=200_000_000)
    assert time.perf_counter() - start < 1.0


def test_size_limits(astronaut):
    with pytest.raises(ImageTooLargeError, match="512x512"):
        load_image(astronaut, max_pixels=100_000)
    with pytest.raises(ImageTooSmallError, match="80x50"):
        load_image(astronaut[:50, :80])
    assert load_image(astronaut[:50, :80], min_side=32).shape == (50, 80, 3)
