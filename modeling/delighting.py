"""`DelightingNet`: the unwrapped texture (light baked in) -> diffuse albedo (AvatarMe's
de-lighting), as a residual on the backbone's first-order de-lit albedo."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from modeling.blocks import TinyUNet

__all__ = ["DelightingNet"]


class DelightingNet(ModelMixin, ConfigMixin):
    """Texture + first-order de-lit albedo + shape normals + ambient occlusion -> diffuse albedo.

    The first-order de-lighting (`modeling.lighting.first_order_maps`) divides out a 2nd-order
    SH light; what it leaves (specular highlights, shadows and occlusion it misses, light bleeding
    under the skin, the light's colour) is a local correction that a small fully convolutional
    network learns, so the output is `delit_albedo + unet(inputs)`.

    Args:
        channels (`tuple[int, ...]`): U-Net width per level.

    >>> net = DelightingNet(channels=(8, 16))
    >>> x = torch.rand(1, 3, 64, 64)
    >>> net(x, x, x, x[:, :1]).shape
    torch.Size([1, 3, 64, 64])
    """

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.unet = TinyUNet(10, 3, tuple(channels))

    def forward(
        self,
        texture: torch.Tensor,
        delit_albedo: torch.Tensor,
        shape_normals: torch.Tensor,
        ao: torch.Tensor,
    ) -> torch.Tensor:
        """Args:
            texture (`torch.Tensor` of shape `(B, 3, H, W)`): sRGB in [0, 1], light baked in.
            delit_albedo (`(B, 3, H, W)`): sRGB, the first-order de-lighting of `texture`.
            shape_normals (`(B, 3, H, W)`): object-space shape normals, (n + 1) / 2.
            ao (`(B, 1, H, W)`): ambient occlusion in [0, 1].

        Returns:
            `torch.Tensor` of shape `(B, 3, H, W)`: diffuse albedo, sRGB (not clamped; clamp to
            [0, 1] for display).
        """
        x = torch.cat([texture, delit_albedo, shape_normals, ao], 1) * 2 - 1
        return delit_albedo + self.unet(x)
