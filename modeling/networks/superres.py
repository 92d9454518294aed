"""`SuperResolutionNet`: a low-resolution UV map -> the same map x4 with skin detail."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from modeling.networks.blocks import autocast_trunk, replicate_conv

__all__ = ["SuperResolutionNet"]


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="replicate")


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels), nn.SiLU(), _conv(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, _, second = self.body
        return x + replicate_conv(second, F.silu(replicate_conv(first, x)))


class SuperResolutionNet(ModelMixin, ConfigMixin):
    """x`scale` super-resolution of an sRGB UV map (AvatarMe's first network: the unwrapped
    texture is super-resolved before de-lighting, so 2K-4K maps get skin detail the photo lacks).

    The output is the bicubic upsampling plus a learned residual: a conv trunk at the low
    resolution (conv3x3, `num_blocks` residual blocks of two conv3x3 with a SiLU, no
    normalisation) and a zero-initialised conv3x3 to `3 * scale**2` channels rearranged by
    `PixelShuffle`, so a fresh network is exactly the bicubic upsampling. All the work happens
    at the input resolution, which keeps x4 to 4096 px cheap on a CPU. Strictly local (receptive
    field `receptive_field` input px, no normalisation, no UV coordinates: the detail is inferred
    from the content, not from where it sits in the layout), so a sliding window with that much
    margin reproduces the whole-map output exactly.

    Args:
        channels (`int`): trunk width.
        num_blocks (`int`): residual blocks in the trunk.
        scale (`int`): upscaling factor.

    >>> net = SuperResolutionNet(channels=8, num_blocks=1)
    >>> x = torch.rand(1, 3, 16, 16)
    >>> net(x).shape
    torch.Size([1, 3, 64, 64])
    >>> torch.equal(net(x), net.upsample(x))  # zero-initialised head: bicubic at first
    True
    """

    @register_to_config
    def __init__(self, channels: int = 32, num_blocks: int = 3, scale: int = 4):
        super().__init__()
        self.head = _conv(3, channels)
        self.body = nn.Sequential(*[_ResBlock(channels) for _ in range(num_blocks)])
        self.tail = _conv(channels, 3 * scale**2)
        self.shuffle = nn.PixelShuffle(scale)
        nn.init.zeros_(self.tail.weight)  # start as the bicubic baseline
        nn.init.zeros_(self.tail.bias)

    @property
    def receptive_field(self) -> int:
        """Input pixels on each side that one output pixel depends on (the convs' radius plus
        the bicubic kernel's)."""
        return 2 + 2 * self.config.num_blocks + 2

    def upsample(self, image: torch.Tensor) -> torch.Tensor:
        """The baseline: bicubic x`scale` (not clamped)."""
        return F.interpolate(
            image, scale_factor=self.config.scale, mode="bicubic", align_corners=False
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Args:
            image (`torch.Tensor` of shape `(B, 3, h, w)`): sRGB in [0, 1] (texture or albedo).

        Returns:
            `torch.Tensor` of shape `(B, 3, h * scale, w * scale)`, sRGB, not clamped.
        """
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, h, w), got {tuple(image.shape)}")
        with autocast_trunk(image):
            features = replicate_conv(self.head, image * 2 - 1)
            trunk = replicate_conv(self.tail, self.body(features) + features)
            residual = self.shuffle(trunk).to(image.dtype)
        return self.upsample(image) + residual
