"""Load a user's photo from whatever they hand us into one RGB uint8 array, or refuse it clearly.

Transparent images are composited over neutral grey (128, 128, 128), so that neither a white nor a
black backdrop biases later lighting and colour estimates.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import warnings
import zlib
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from modeling.errors import (
    CorruptImageError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
)

BACKGROUND_GREY = 128
"""Value of the neutral grey that transparent pixels are composited over."""

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, zlib.error, IndexError)
_truncation_lock = threading.Lock()


def load_image(image, *, max_pixels: int = 50_000_000, min_side: int = 64) -> np.ndarray:
    """Decode `image` into an upright RGB image.

    Args:
        image: a path (`str` or `os.PathLike`), encoded file contents (`bytes`), a
            `PIL.Image.Image`, a `np.ndarray` of shape `(H, W)`, `(H, W, 1)`, `(H, W, 3)` (RGB) or
            `(H, W, 4)` (RGBA), uint8 or float in [0, 1], or a `torch.Tensor` of shape `(3, H, W)`
            or `(1, 3, H, W)` (also 1 or 4 channels), float in [0, 1] or uint8.
        max_pixels: refuse images with more pixels than this, judged from the header before
            any pixel is decoded.
        min_side: refuse images whose shorter side is below this.

    Returns:
        `np.ndarray` of shape `(H, W, 3)`, uint8, RGB, a new array (the caller's is never
        modified). EXIF orientation is applied.

    Raises:
        NotAnImageError, CorruptImageError, ImageTooLargeError, ImageTooSmallError.

    >>> load_image("examples/face.jpg").shape  # doctest: +SKIP
    (1024, 768, 3)
    """
    if isinstance(image, (str, os.PathLike)):
        name = os.fspath(image)
        with open(name, "rb") as f:
            return _from_pil_file(f, name, max_pixels, min_side)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _from_pil_file(io.BytesIO(bytes(image)), "the image data", max_pixels, min_side)
    if isinstance(image, Image.Image):
        name = getattr(image, "filename", None) or "the image"
        return _decode_pil(image, name, max_pixels, min_side)
    if isinstance(image, np.ndarray):
        return _from_array(image, "the array", max_pixels, min_side)
    torch = sys.modules.get("torch")  # a tensor implies torch is already imported
    if torch is not None and isinstance(image, torch.Tensor):
        return _from_tensor(image, max_pixels, min_side)
    raise NotAnImageError(
        f"Cannot read an image from a {type(image).__name__}; expected a path, bytes, "
        "a PIL image, a numpy array or a torch tensor"
    )


def _from_pil_file(fp, name: str, max_pixels: int, min_side: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            pil = Image.open(fp)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLargeError(f"{name}: image is too large to decode safely ({e})") from e
    except UnidentifiedImageError as e:
        raise NotAnImageError(f"{name} is not an image in a format we can read") from e
    except _DECODE_ERRORS as e:
        raise CorruptImageError(f"{name}: damaged image header ({e})") from e
    with pil:
        return _decode_pil(pil, name, max_pixels, min_side)


def _check_size(width: int, height: int, name: str, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name} is {width}x{height} = {width * height / 1e6:.1f} megapixels, "
            f"more than the limit of {max_pixels / 1e6:.1f} megapixels"
        )
    if min(width, height) < min_side:
        raise ImageTooSmallError(
            f"{name} is {width}x{height} pixels; its shorter side must be at least {min_side}"
        )


@contextmanager
def _strict_decoding():
    """Make Pillow raise on truncated data even if someone enabled LOAD_TRUNCATED_IMAGES."""
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    with _truncation_lock:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True


def _decode_pil(pil: Image.Image, name: str, max_pixels: int, min_side: int) -> np.ndarray:
    _check_size(*pil.size, name, max_pixels, min_side)
    try:
        with _strict_decoding():
            pil.load()
        pil = ImageOps.exif_transpose(pil)
    except _DECODE_ERRORS as e:
        raise CorruptImageError(f"{name}: damaged or truncated image data ({e})") from e
    return _pil_to_rgb(pil, name)


def _pil_to_rgb(pil: Image.Image, name: str) -> np.ndarray:
    mode = pil.mode
    if mode == "P":
        mode = "RGBA" if "transparency" in pil.info else "RGB"
        pil = pil.convert(mode)
    elif mode == "PA":
        pil, mode = pil.convert("RGBA"), "RGBA"
    if mode == "RGB":
        return np.array(pil, dtype=np.uint8)
    if mode in ("RGBA", "LA", "La", "RGBa"):
        return _composite(np.asarray(pil.convert("RGBA")))
    if mode.startswith("I;16"):
        return _grey_to_rgb(np.asarray(pil).astype(np.float64) / 257.0)
    if mode == "I":
        return _grey_to_rgb(_int_to_8bit(np.asarray(pil)))
    if mode == "F":
        return _grey_to_rgb(_float_to_8bit(np.asarray(pil)))
    try:  # L, 1, CMYK, YCbCr, RGBX, ...
        return np.array(pil.convert("RGB"), dtype=np.uint8)
    except ValueError as e:
        raise NotAnImageError(f"{name}: cannot convert image mode {pil.mode!r} to RGB") from e


def _int_to_8bit(values: np.ndarray) -> np.ndarray:
    """32-bit integer grey: kept as 8-bit if it fits, read as 16-bit if it fits, else stretched."""
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0 and hi <= 255:
        return values.astype(np.float64)
    if lo >= 0 and hi <= 65535:
        return values / 257.0
    return _stretch(values.astype(np.float64))


def _float_to_8bit(values: np.ndarray) -> np.ndarray:
    """Float grey: [0, 1] is scaled to [0, 255], any other range stretched to it."""
    values = np.nan_to_num(values.astype(np.float64))
    if values.min() >= 0.0 and values.max() <= 1.0:
        return values * 255.0
    return _stretch(values)


def _stretch(values: np.ndarray) -> np.ndarray:
    lo, hi = values.min(), values.max()
    return (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """`grey`: `(H, W)` float in [0, 255] -> `(H, W, 3)` uint8."""
    grey8 = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.repeat(grey8[:, :, None], 3, axis=2)


def _composite(rgba: np.ndarray) -> np.ndarray:
    """`rgba`: `(H, W, 4)` uint8 -> `(H, W, 3)` uint8 over the neutral grey background."""
    alpha = rgba[:, :, 3:].astype(np.float32) / 255.0
    rgb = rgba[:, :, :3].astype(np.float32) * alpha + BACKGROUND_GREY * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _from_array(array: np.ndarray, name: str, max_pixels: int, min_side: int) -> np.ndarray:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise NotAnImageError(
            f"{name} has shape {array.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)"
        )
    height, width = array.shape[:2]
    _check_size(width, height, name, max_pixels, min_side)
    if array.dtype == np.uint8:
        rgba = array.astype(np.float32)
    elif np.issubdtype(array.dtype, np.floating):
        lo, hi = float(np.min(array)), float(np.max(array))
        if not (0.0 <= lo and hi <= 1.0):  # also catches NaN
            raise NotAnImageError(
                f"{name} is float with values in [{lo:g}, {hi:g}]; float images must be in [0, 1]"
            )
        rgba = array.astype(np.float32) * 255.0
    else:
        raise NotAnImageError(f"{name} has dtype {array.dtype}; expected uint8 or float in [0, 1]")
    if rgba.shape[2] == 1:
        rgba = np.repeat(rgba, 3, axis=2)
    elif rgba.shape[2] == 4:
        alpha = rgba[:, :, 3:] / 255.0
        rgba = rgba[:, :, :3] * alpha + BACKGROUND_GREY * (1.0 - alpha)
    return np.clip(np.rint(rgba), 0, 255).astype(np.uint8)


def _from_tensor(tensor, max_pixels: int, min_side: int) -> np.ndarray:
    shape = tuple(tensor.shape)
    if len(shape) == 4 and shape[0] == 1:
        tensor = tensor[0]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
        raise NotAnImageError(
            f"the tensor has shape {shape}; expected (3, H, W) or (1, 3, H, W) (1 or 4 channels "
            "also accepted)"
        )
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.float()  # numpy has no bfloat16
    return _from_array(np.moveaxis(tensor.numpy(), 0, -1), "the tensor", max_pixels, min_side)
