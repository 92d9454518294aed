"""Sliding-window inference: overlapping tiles blended with a raised-cosine window, so a
network trained on patches runs on 1K-4K maps without seams and in bounded memory.

>>> net = lambda x: x * 2
>>> image = torch.rand(1, 3, 600, 600)
>>> out = sliding_window(net, [image], out_channels=3, tile=256, overlap=32)
>>> torch.allclose(out, image * 2, atol=1e-5)
True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

__all__ = ["blend_window", "even_tile", "sliding_window", "tile_starts"]


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of `tile` px covering `size` px with at least `overlap` px of
    overlap (the last tile ends at the border)."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def even_tile(size: int, max_tile: int, overlap: int) -> int:
    """The tile size for `size` px: `size` itself up to `max_tile` (one tile, the whole map),
    else the smallest size that covers `size` with as few tiles of at most `max_tile` px as
    `overlap` allows, `overlap` px apart, so the tiles overlap by `overlap` and no more
    (`tile_starts(size, tile, overlap)`: 2048 px in tiles of at most 1024 overlapping by 64 px
    are three tiles of 726 px, 1.13x the map's area in all, where tiles of 1024 would be three
    tiles and 2.25x)."""
    if size <= max_tile:
        return size
    if not 0 <= overlap < max_tile:
        raise ValueError(f"need 0 <= overlap < max_tile, got {overlap}, {max_tile}")
    count = -(-(size - overlap) // (max_tile - overlap))
    return -(-(size - overlap) // count) + overlap


def _ramp(n: int, overlap: int, ramp_start: bool, ramp_end: bool, dtype) -> torch.Tensor:
    w = torch.ones(n, dtype=dtype)
    if overlap > 0:
        k = min(overlap, n // 2)
        t = (torch.arange(k, dtype=dtype) + 0.5) / k
        ramp = 0.5 - 0.5 * torch.cos(torch.pi * t)  # raised cosine, never exactly 0
        if ramp_start:
            w[:k] = ramp
        if ramp_end:
            w[n - k :] = ramp.flip(0)
    return w


def blend_window(
    h: int, w: int, overlap: int, edges=(True, True, True, True), dtype=torch.float32
) -> torch.Tensor:
    """`(h, w)` weights: 1 inside, a raised cosine over `overlap` px at the (top, bottom, left,
    right) edges flagged in `edges` (edges on the image border stay 1)."""
    top, bottom, left, right = edges
    return _ramp(h, overlap, top, bottom, dtype)[:, None] * _ramp(w, overlap, left, right, dtype)


@torch.no_grad()
def sliding_window(
    fn: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    out_channels: int,
    tile: int = 256,
    overlap: int = 32,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Run `fn(*tiles)` over overlapping tiles of `inputs` and blend the results.

    Args:
        fn (`Callable`): maps `(N, C_i, t, t)` tiles (one per input) to
            `(N, out_channels, t, t)`.
        inputs (sequence of `torch.Tensor` of shape `(1, C_i, H, W)`): same H, W; may live on
            the CPU (views of numpy arrays are fine); only tiles are copied to `device`.
        out_channels (`int`).
        tile (`int`), overlap (`int`): tile size and overlap in pixels (`overlap < tile`).
        batch_size (`int`): tiles per call of `fn`; memory is bounded by this many tiles'
            activations plus the `(1, out_channels + 1, H, W)` float32 accumulators on the CPU.
        device, dtype: where and in what precision `fn` runs (default: the inputs').

    Returns:
        `torch.Tensor` of shape `(1, out_channels, H, W)`, float32, on the CPU,
        stored channels last (its `[0].permute(1, 2, 0)` is a contiguous `(H, W, C)` map: a 4K
        map leaves the function without another copy).
    """
    if not inputs:
        raise ValueError("no inputs")
    if not 0 <= overlap < tile:
        raise ValueError(f"need 0 <= overlap < tile, got overlap={overlap}, tile={tile}")
    h, w = inputs[0].shape[-2:]
    for x in inputs:
        if x.dim() != 4 or x.shape[0] != 1 or x.shape[-2:] != (h, w):
            raise ValueError(f"inputs must be (1, C, {h}, {w}), got {tuple(x.shape)}")
    device = torch.device(device) if device is not None else inputs[0].device
    dtype = dtype or inputs[0].dtype
    out = torch.zeros(h, w, out_channels)
    weight = torch.zeros(h, w, 1)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)
    boxes = [(y, x) for y in ys for x in xs]
    for i in range(0, len(boxes), batch_size):
        batch = boxes[i : i + batch_size]
        tiles = [
            torch.cat([x[..., y0 : y0 + th, x0 : x0 + tw] for y0, x0 in batch]).to(
                device=device, dtype=dtype
            )
            for x in inputs
        ]
        result = fn(*tiles).float().cpu()
        if result.shape[-2:] != (th, tw):
            raise ValueError(
                f"fn returned {tuple(result.shape)} for {th}x{tw} tiles; expected {th}x{tw}"
            )
        for j, (y0, x0) in enumerate(batch):
            edges = (y0 > 0, y0 + th < h, x0 > 0, x0 + tw < w)
            win = blend_window(th, tw, overlap, edges)[..., None]
            out[y0 : y0 + th, x0 : x0 + tw] += result[j].permute(1, 2, 0) * win
            weight[y0 : y0 + th, x0 : x0 + tw] += win
    return out.div_(weight).permute(2, 0, 1)[None]
