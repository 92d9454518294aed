"""Small building blocks shared by the reflectance networks (`modeling.networks.delighting`,
`modeling.networks.specular`, `modeling.networks.normals`): a tiny U-Net and a few fixed image ops.

Every network is fully convolutional, so it runs on any size; `TinyUNet` pads to a multiple of
its total stride internally (replicate padding) and crops back. Colour and coordinate
conventions come from `rendering.color` (e.g. `luminance(rgb, axis=1)`) and `rendering.camera`.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from rendering.camera import uv_texel_centers

__all__ = [
    "NETWORK_PRECISIONS",
    "ConvBlock",
    "GlobalContext",
    "TinyUNet",
    "check_network_precision",
    "compute_dtype",
    "gaussian_blur",
    "network_compute_dtype",
    "uv_coordinates",
]

# How the networks' convolutions run at inference (a pipeline's config `network_precision`):
# "auto": in bfloat16 where the device runs it natively (a CPU with AVX512-BF16 or AMX, through
# oneDNN: 2x faster per U-Net on 2 cores; a CUDA GPU with bfloat16), else as the weights are;
# "float32": as the weights are; "bfloat16": always (slow where it is emulated). Only the conv
# trunks run in the lower precision: what they predict is cast back, and the residuals are
# added to the inputs in float32, so the maps keep float32 steps (no bfloat16 banding in the
# 16-bit PNGs). On the synthetic test split every reflectance metric is the same to 0.01 dB /
# 0.01 degree (`python -m training.evaluate_reflectance`, 12 faces at 256 px).
NETWORK_PRECISIONS = ("auto", "float32", "bfloat16")
_COMPUTE_DTYPE: contextvars.ContextVar[torch.dtype | None] = contextvars.ContextVar(
    "network_compute_dtype", default=None
)


def check_network_precision(precision: str) -> str:
    if precision not in NETWORK_PRECISIONS:
        raise ValueError(
            f"network_precision must be one of {NETWORK_PRECISIONS}, got {precision!r}"
        )
    return precision


def bfloat16_native(device: torch.device | str) -> bool:
    """Whether `device` runs bfloat16 convolutions in hardware (CPU: oneDNN's check for
    AVX512-BF16 / AMX; CUDA: `torch.cuda.is_bf16_supported`)."""
    device = torch.device(device)
    if device.type == "cpu":
        return bool(
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return False


def network_compute_dtype(
    precision: str, device: torch.device | str, dtype: torch.dtype
) -> torch.dtype | None:
    """The dtype the conv trunks run in for `precision` (`NETWORK_PRECISIONS`) on `device` with
    weights in `dtype`; `None`: the weights' own (no autocast)."""
    check_network_precision(precision)
    if precision == "float32" or dtype != torch.float32:
        return None  # a pipeline moved to half precision by its user runs as moved
    if precision == "bfloat16" or bfloat16_native(device):
        return torch.bfloat16
    return None


@contextlib.contextmanager
def compute_dtype(dtype: torch.dtype | None) -> Iterator[None]:
    """Within it, `TinyUNet` runs its convs in `dtype` at inference
    (`None`: as their weights are); outputs come back in the input's dtype."""
    token = _COMPUTE_DTYPE.set(dtype)
    try:
        yield
    finally:
        _COMPUTE_DTYPE.reset(token)


def autocast_trunk(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast to the `compute_dtype` in effect, at inference only (training and gradient
    checks stay exact); a null context otherwise."""
    dtype = _COMPUTE_DTYPE.get()
    if dtype is None or torch.is_grad_enabled() or dtype == x.dtype:
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, dtype=dtype)


def _groups(channels: int) -> int:
    return max(1, min(8, channels // 4))


class ConvBlock(nn.Module):
    """conv3x3 -> [GroupNorm] -> SiLU, twice (GroupNorm only with `norm=True`)."""

    def __init__(self, in_channels: int, out_channels: int, norm: bool = False):
        super().__init__()
        layers = []
        for c_in in (in_channels, out_channels):
            layers.append(nn.Conv2d(c_in, out_channels, 3, padding=1, padding_mode="replicate"))
            if norm:
                layers.append(nn.GroupNorm(_groups(out_channels), out_channels))
            layers.append(nn.SiLU())
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, constants: torch.Tensor | None = None) -> torch.Tensor:
        """`x` `(B, C, H, W)`; `constants` `(B, K)`, *optional*: K more input channels, each
        constant over the image, after `x`'s (the first conv's `in_channels` is C + K). A
        constant channel stays constant under replicate padding, so its share of the first
        conv is a per-image bias: the same output as the channels expanded and concatenated,
        up to float rounding, without convolving K full-size channels."""
        inference = not torch.is_grad_enabled()
        for i, layer in enumerate(self.body):
            if isinstance(layer, nn.Conv2d):  # the layer's own conv, padding done here
                padded = replicate_pad(x) if inference else F.pad(x, (1, 1, 1, 1), "replicate")
                weight, extra = layer.weight, None
                if i == 0 and constants is not None:
                    c = x.shape[1]
                    weight, extra = weight[:, :c], constants @ weight[:, c:].sum(dim=(2, 3)).T
                x = F.conv2d(padded, weight, layer.bias)
                if extra is not None:
                    x = x + extra[:, :, None, None]
            elif isinstance(layer, nn.SiLU) and inference:
                x = F.silu(x, inplace=True)  # x is the conv's (or the norm's) own output
            else:
                x = layer(x)
        return x


def replicate_conv(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` for a 3x3 `layer` with padding 1 in mode "replicate"; at inference the padding
    is `replicate_pad`'s, in `x`'s dtype and memory format (the same values)."""
    if torch.is_grad_enabled():
        return layer(x)
    return F.conv2d(replicate_pad(x), layer.weight, layer.bias)


def replicate_pad(x: torch.Tensor) -> torch.Tensor:
    """`F.pad(x, (1, 1, 1, 1), mode="replicate")` of `(B, C, H, W)`, the same values in the same
    memory format, by copies into an empty tensor: PyTorch's replication-pad kernel is about
    twice as slow on channels-last tensors (which the reflectance stage runs on)."""
    b, c, h, w = x.shape
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.empty(b, c, h + 2, w + 2, dtype=x.dtype, device=x.device, memory_format=fmt)
    y[..., 1:-1, 1:-1] = x
    y[..., 1:-1, 0], y[..., 1:-1, -1] = x[..., 0], x[..., -1]
    y[..., 0, :], y[..., -1, :] = y[..., 1, :], y[..., -2, :]
    return y


class TinyUNet(nn.Module):
    """A U-Net with `len(channels)` levels (average-pool down, bilinear up, skip concatenation).

    Args:
        in_channels (`int`), out_channels (`int`).
        channels (`tuple[int, ...]`): width per level, e.g. `(16, 32, 64)`.
        norm (`bool`): GroupNorm after each conv. Off in the shipped networks: GroupNorm's
            statistics span the whole input, so a tile's output would depend on the tile (and a
            64 px training patch would see other statistics than a 256 px inference tile);
            without it the network is strictly local and the sliding window reproduces the
            full-image output away from tile borders.

    `forward(x, constants=None)`: `(B, in_channels, H, W)` -> `(B, out_channels, H, W)` (any H,
    W); with `constants` `(B, K)`, `x` has `in_channels - K` channels and the last K input
    channels are those constants over the whole image (`ConvBlock.forward`: computed as a bias,
    without expanding them).
    """

    def __init__(self, in_channels: int, out_channels: int, channels=(16, 32, 64), norm=False):
        super().__init__()
        channels = tuple(int(c) for c in channels)
        self.stride = 2 ** (len(channels) - 1)
        self.down = nn.ModuleList()
        prev = in_channels
        for c in channels:
            self.down.append(ConvBlock(prev, c, norm))
            prev = c
        self.up = nn.ModuleList()
        for c in reversed(channels[:-1]):
            self.up.append(ConvBlock(prev + c, c, norm))
            prev = c
        self.head = nn.Conv2d(prev, out_channels, 1)
        nn.init.zeros_(self.head.weight)  # start as the identity of the residual it predicts
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, constants: torch.Tensor | None = None) -> torch.Tensor:
        with autocast_trunk(x):
            return self._forward(x, constants).to(x.dtype)

    def _forward(self, x: torch.Tensor, constants: torch.Tensor | None) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.stride
        ph, pw = (-h) % s, (-w) % s
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.avg_pool2d(x, 2)
            x = block(x, constants) if i == 0 else block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            with torch.autocast(x.device.type, enabled=False):  # in x's dtype: autocast
                # would upsample a bfloat16 trunk in float32 (and the cat after it), ~2x slower
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)[..., :h, :w]


class GlobalContext(nn.Module):
    """A whole-map encoder: the maps average-pooled (`pooled`), three stride-2 convs,
    global average pooling, a linear layer -> one vector per map.

    What a patch cannot tell (the camera's exposure, how strong the highlights are over the
    whole face) is computed once from the whole map and given to every tile, so the sliding
    window stays exact.

    Args:
        in_channels (`int`), out_features (`int`), width (`int`): channels of the first convs.

    `GlobalContext.pooled(x, size)`: `(B, C, H, W)` -> `(B, C, size, size)` (the whole map,
    once); `forward(pooled)`: -> `(B, out_features)`.
    """

    def __init__(self, in_channels: int, out_features: int, width: int = 24):
        super().__init__()
        layers, prev = [], in_channels
        for c in (width, width, 2 * width):
            layers += [nn.Conv2d(prev, c, 3, stride=2, padding=1), nn.SiLU()]
            prev = c
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(prev, out_features)

    @staticmethod
    def pooled(x: torch.Tensor, size: int = 64) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, size)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(pooled * 2 - 1).mean(dim=(2, 3)))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel (replicate borders)."""
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def uv_coordinates(height: int, width: int, dtype=torch.float32) -> torch.Tensor:
    """`(1, 2, H, W)` texture coordinates of a UV map's texel centres: u left to right, v
    bottom to top (row 0 is v ~ 1, the project's convention). The networks take them as input so
    they can learn regional priors of the fixed UV layout (T-zone, lips, brows)
    (`rendering.camera.uv_texel_centers`, channels first)."""
    return uv_texel_centers(height, width, dtype).permute(2, 0, 1).contiguous()[None]
