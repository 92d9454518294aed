"""AvatarMe's reflectance chain on whole UV maps: de-lighting (diffuse albedo) -> specular
albedo and detail normals, each network run by sliding window (`modeling.networks.tiling`) on
the caller's device and dtype.

The maps come in and go out as `(R, R, C)` float32 numpy arrays on the CPU; only tiles visit the
device, so 4K maps run in bounded memory.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from modeling.errors import WeightsError
from modeling.networks.blocks import compute_dtype, network_compute_dtype, uv_coordinates
from modeling.networks.delighting import DelightingNet
from modeling.networks.normals import DetailNormalsNet
from modeling.networks.specular import SpecularAlbedoNet
from modeling.networks.tiling import even_tile, sliding_window
from rendering.mesh import decode_normals, encode_normals

# Maps up to TILE_SIZE px run whole (one call per network); larger ones in tiles of at most
# TILE_SIZE px overlapping by TILE_OVERLAP px (`even_tile`), one at a time: at most ~0.9 GB of
# activations (the de-lighting U-Net, ~830 bytes a pixel), and the tile borders hidden. The
# networks' outputs hardly depend on the tiling (whole 1024 px maps vs tiles of 512 px: at
# most 1.5e-4 apart), but the area they run on does: tiles of 512 px overlapping by 64 px
# covered a 1024 px map 2.25x over (2048 px: 1.56x; now 1.13x).
TILE_SIZE, TILE_OVERLAP, TILE_BATCH = 1024, 64, 1
# The largest maps the reflectance networks run on (a pipeline's config `network_resolution`);
# larger ones get the networks' outputs by guided upsampling (`_guided_network_maps`).
NETWORK_RESOLUTION = 512


def check_network_resolution(resolution: int | None) -> int | None:
    if resolution is not None and (
        not isinstance(resolution, int | np.integer) or isinstance(resolution, bool)
        or resolution < 64
    ):  # fmt: skip
        raise ValueError(f"network_resolution must be None or an integer >= 64, got {resolution!r}")
    return resolution


def _layout(maps: np.ndarray, max_tile: int, overlap: int) -> tuple[int, int]:
    """Tile size and overlap for `sliding_window` over `(R, R, C)` maps: `even_tile`'s, and no
    overlap when one tile is the whole map."""
    size = max(np.shape(maps)[:2])
    tile = even_tile(size, max_tile, overlap)
    return tile, overlap if tile < size else 0


def _tensor(x: np.ndarray) -> torch.Tensor:
    """`(R, R, C)` numpy -> `(1, C, R, R)` view; `sliding_window` copies it tile by tile."""
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)).permute(2, 0, 1)[None]


def _channels_last(fn):
    """`fn` run on tiles in channels-last memory format: oneDNN's convolutions take it
    without reordering, 1.6-1.8x faster per U-Net on 2 CPU cores (same values, bench_speed)."""

    def run(*tiles: torch.Tensor) -> torch.Tensor:
        return fn(*(t.contiguous(memory_format=torch.channels_last) for t in tiles))

    return run


def _finite(out: torch.Tensor, name: str, inputs: list[torch.Tensor]) -> torch.Tensor:
    """`out`, the output of component `name` on `inputs`, if it is finite. Otherwise a
    `WeightsError` naming the component (finite inputs: the weights are to blame), or a
    `ValueError` when the inputs were not finite either. One pass over the map: cheap next to
    the network."""
    if bool(torch.isfinite(out).all()):
        return out
    if not all(bool(torch.isfinite(x).all()) for x in inputs):
        raise ValueError(f"the input maps of component {name!r} contain NaN or infinite values")
    raise WeightsError(
        f"component {name!r} produced non-finite values (NaN or infinity) from finite input "
        f"maps: its weights may be corrupt"
    )


def _numpy(out: torch.Tensor) -> np.ndarray:
    """`(1, C, R, R)` -> `(R, R, C)` float32 in [0, 1] (`out` is clamped in place; stored
    channels last, as `sliding_window` returns it, it is not copied)."""
    return np.ascontiguousarray(out[0].clamp_(0, 1).permute(1, 2, 0).numpy())


@torch.no_grad()
def reflectance_maps(
    texture: np.ndarray,
    albedo: np.ndarray,
    shape_maps: dict[str, np.ndarray],
    visibility: np.ndarray,
    *,
    delighting: DelightingNet | None = None,
    specular: SpecularAlbedoNet | None = None,
    normals: DetailNormalsNet | None = None,
    chart: np.ndarray | None = None,
    white_balance: str = "camera",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    precision: str = "auto",
    max_resolution: int | None = None,
) -> dict[str, np.ndarray]:
    """The given networks over the first-order maps.

    Args:
        texture, albedo (`(R, R, 3)` float sRGB): the unwrapped photo and its first-order de-lit
            albedo.
        shape_maps (`dict`): `shape_normals` `(R, R, 3)` and `ambient_occlusion` `(R, R, 1)`.
        visibility (`(R, R)` or `(R, R, 1)`): how well the photo saw each texel.
        delighting, specular, normals: the networks (each optional).
        chart (`(R, R)` bool, *optional*): the texels the mesh covers (the specular map's level
            is set on them; `None`: all).
        white_balance (`str`): the de-lighting network's mode
            (`modeling.networks.delighting.WHITE_BALANCE_MODES`).
        device, dtype: where the tiles run (the pipeline's).
        precision (`str`): what the convs run in (`modeling.networks.blocks.NETWORK_PRECISIONS`:
            "auto" is bfloat16 where the device has it natively, with float32 outputs).
        max_resolution (`int`, *optional*): the networks run on maps of at most this many
            pixels (`_guided_network_maps`); `None`: on the maps as given.
    Returns:
        `dict` of `(R, R, C)` float32 maps: `diffuse_albedo_first_order`, and those of the given
        networks (`diffuse_albedo`, `specular_albedo`, `specular_normals`, `diffuse_normals`);
        empty without networks.
    Raises:
        `WeightsError` naming the component when a network's output is not finite while its
        inputs are (its weights are corrupt); `ValueError` when the inputs are not finite.
    """
    if delighting is None and specular is None and normals is None:
        return {}
    nets = (delighting, specular, normals, white_balance, device, dtype)
    size = np.shape(texture)[0]
    with compute_dtype(network_compute_dtype(precision, device, dtype)):
        if max_resolution is None or size <= max_resolution:
            out = _network_maps(texture, albedo, shape_maps, visibility, *nets)
        else:
            out = _guided_network_maps(texture, albedo, shape_maps, visibility, max_resolution,
                                       *nets)  # fmt: skip
    maps = {"diffuse_albedo_first_order": albedo, **out}
    if specular is not None:
        maps["specular_albedo"] = specular.with_prior_level(out["specular_albedo"], chart)
    return maps


# The networks' outputs are corrections that vary slowly over the face: run on the maps at half
# or a quarter of their size and brought back as `_guided_network_maps` does, they are as close
# to the truth as run at full size, or closer (synthetic test split in bfloat16, 6 faces at
# 1024 px, full size -> from 512 / 256 px: diffuse albedo 23.670 -> 23.676 / 23.682 dB,
# specular albedo 29.47 -> 29.75 / 29.80 dB, specular normals 2.698 -> 2.678 / 2.676 degrees,
# diffuse normals 0.904 -> 0.876 / 0.866 degrees; the same at 512 px from 256 px), and 4-16x
# cheaper. The photo's own detail stays: it is in the full-size first-order albedo, to which
# the de-lighting's correction is added.
def _area(x: np.ndarray, size: int) -> np.ndarray:
    """`(R, R[, C])` -> `(size, size[, C])`, each texel the mean of those it covers."""
    y = cv2.resize(np.ascontiguousarray(x, np.float32), (size, size), interpolation=cv2.INTER_AREA)
    return y.reshape(size, size, *np.shape(x)[2:])


def _bilinear(x: np.ndarray, size: int) -> np.ndarray:
    """`(r, r[, C])` -> `(size, size[, C])`, bilinear between texel centres."""
    y = cv2.resize(np.ascontiguousarray(x, np.float32), (size, size),
                   interpolation=cv2.INTER_LINEAR)  # fmt: skip
    return y.reshape(size, size, *np.shape(x)[2:])


def network_size(size: int, max_resolution: int) -> int:
    """The size the networks run at for `size` px maps: `size` divided by the smallest integer
    that brings it to `max_resolution` or less (rounded up), e.g. 4096 -> 512 for 512."""
    return -(-size // -(-size // max_resolution))


def _guided_network_maps(texture, albedo, shape_maps, visibility, max_resolution, *nets):
    """`_network_maps` run on the maps area-averaged to `network_size`, brought back to the
    maps' size R: the diffuse albedo as the full-size first-order albedo plus the de-lighting's
    correction (bilinear), the level-free specular albedo bilinear, the normals bilinear and
    renormalised."""
    size = np.shape(texture)[0]
    small = network_size(size, max_resolution)
    low_albedo = _area(albedo, small)
    low = _network_maps(
        _area(texture, small),
        low_albedo,
        {k: _area(v, small) for k, v in shape_maps.items()},
        _area(np.reshape(visibility, (size, size)), small),
        *nets,
    )
    out = {}
    if "diffuse_albedo" in low:
        correction = _bilinear(low["diffuse_albedo"] - low_albedo, size)
        out["diffuse_albedo"] = np.clip(correction + albedo, 0, 1, out=correction)
    if "specular_albedo" in low:
        out["specular_albedo"] = _bilinear(low["specular_albedo"], size)
    for key in ("specular_normals", "diffuse_normals"):
        if key in low:
            out[key] = encode_normals(decode_normals(_bilinear(low[key], size)))
    return out


def _network_maps(texture, albedo, shape_maps, visibility, delighting, specular, normals,
                  white_balance, device, dtype) -> dict[str, np.ndarray]:  # fmt: skip
    """The networks' maps at the maps' size (the specular albedo before its level is set)."""
    tile, overlap = _layout(texture, TILE_SIZE, TILE_OVERLAP)

    def run(net, name, inputs, channels):
        out = sliding_window(_channels_last(net), inputs, channels, tile, overlap, TILE_BATCH,
                             device=device, dtype=dtype)  # fmt: skip
        return _numpy(_finite(out, name, inputs))

    def on_device(x: torch.Tensor) -> torch.Tensor:
        return x.to(device, dtype)

    tex, shape, delit = _tensor(texture), _tensor(shape_maps["shape_normals"]), _tensor(albedo)
    vis = _tensor(visibility.reshape(*visibility.shape[:2], 1))
    maps = {}
    if delighting is not None:
        # whole-map statistics, computed once: the tiles then agree on the global correction
        stats = on_device(delighting.global_stats(tex, delit, vis))

        def delight(*tiles):
            return delighting(*tiles, stats.expand(len(tiles[0]), -1), white_balance)

        ao = _tensor(shape_maps["ambient_occlusion"])
        maps["diffuse_albedo"] = run(delight, "delighting", [tex, delit, shape, ao, vis], 3)
    diffuse = _tensor(maps.get("diffuse_albedo", albedo))
    uv = uv_coordinates(*diffuse.shape[-2:])
    if specular is not None:
        context = on_device(specular.context_maps(tex, delit, shape, vis))

        def specular_tiles(*tiles):  # the whole-map context, pooled once, for every tile
            return specular(*tiles, context.expand(len(tiles[0]), -1, -1, -1))

        maps["specular_albedo"] = run(specular_tiles, "specular", [diffuse, shape, tex, uv], 1)
    if normals is not None:
        detail = run(normals, "normals", [diffuse, shape, tex, uv], 6)
        maps["specular_normals"] = np.ascontiguousarray(detail[..., :3])
        maps["diffuse_normals"] = np.ascontiguousarray(detail[..., 3:])
    return maps
