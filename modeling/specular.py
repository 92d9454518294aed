"""`SpecularAlbedoNet`: diffuse albedo (+ shape normals, texture) -> specular albedo."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from modeling.blocks import TinyUNet, gaussian_blur, luminance, uv_coordinates  # noqa: F401 (doctest)

__all__ = ["SpecularAlbedoNet"]


class SpecularAlbedoNet(ModelMixin, ConfigMixin):
    """Diffuse albedo + shape normals + texture -> specular albedo (1 channel, the shader's
    units, `rendering.shading`: skin about 0.15-0.5).

    AvatarMe infers specular albedo from the diffuse albedo (hair, brows and stubble are dark
    and dull, lips and the T-zone differ); the texture's luminance high-pass adds what the photo
    shows of the specular itself (highlights on the oily T-zone, dull pores). The output is
    `mean_specular + unet(inputs)`, `mean_specular` being the training set's mean. The texel's
    UV coordinates are an input too: the oily T-zone, the lips and the brows sit at fixed places
    of the layout.

    Args:
        channels (`tuple[int, ...]`): U-Net width per level.
        mean_specular (`float`): the constant the residual is added to.
        highpass_sigma (`float`): pixels; the Gaussian subtracted for the high-pass.

    >>> net = SpecularAlbedoNet(channels=(8, 16))
    >>> x = torch.rand(1, 3, 64, 64)
    >>> net(x, x, x, uv_coordinates(64, 64)).shape
    torch.Size([1, 1, 64, 64])
    """

    @register_to_config
    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 64),
        mean_specular: float = 0.3,
        highpass_sigma: float = 2.0,
    ):
        super().__init__()
        self.unet = TinyUNet(10, 1, tuple(channels))

    def forward(
        self,
        diffuse_albedo: torch.Tensor,
        shape_normals: torch.Tensor,
        texture: torch.Tensor,
        uv: torch.Tensor,
    ) -> torch.Tensor:
        """Args:
            diffuse_albedo (`torch.Tensor` of shape `(B, 3, H, W)`): sRGB in [0, 1].
            shape_normals (`(B, 3, H, W)`): object-space shape normals, (n + 1) / 2.
            texture (`(B, 3, H, W)`): the unwrapped photo, sRGB.
            uv (`(B or 1, 2, H, W)`): the texels' UV coordinates (`modeling.blocks.uv_coordinates`
                of the whole map, cropped like the other inputs).

        Returns:
            `torch.Tensor` of shape `(B, 1, H, W)`: specular albedo (not clamped).
        """
        lum = luminance(texture)
        highpass = (lum - gaussian_blur(lum, self.config.highpass_sigma)) * 8
        uv = uv.expand(len(texture), -1, -1, -1) * 2 - 1
        x = torch.cat([diffuse_albedo * 2 - 1, shape_normals * 2 - 1, lum * 2 - 1, highpass, uv], 1)
        return self.config.mean_specular + self.unet(x)
