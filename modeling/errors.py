"""Errors a user can cause, each with a specific message. All derive from `AvatarInputError`
(a `ValueError`), so callers (CLI, demo) can report them in one line."""


class AvatarInputError(ValueError):
    """Base class for problems with the user's input."""


class NotAnImageError(AvatarInputError):
    """The file or object is not a readable image."""


class CorruptImageError(AvatarInputError):
    """The file looks like an image but cannot be decoded."""


class ImageTooSmallError(AvatarInputError):
    """The image, or the face in it, has too few pixels to reconstruct."""


class ImageTooLargeError(AvatarInputError):
    """The image has more pixels than allowed (decompression-bomb guard)."""


class NoFaceFoundError(AvatarInputError):
    """No face was detected in the image."""


class FaceIndexError(AvatarInputError):
    """The requested face number is beyond the faces found in the image."""


class FaceCoveredError(AvatarInputError):
    """Too little of the face is skin the photo shows (a mask, a hand, hair over most of it)."""


class WeightsError(RuntimeError):
    """A pipeline component's weights are missing or corrupt (message names the component)."""
