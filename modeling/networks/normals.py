"""`DetailNormalsNet`: grey albedo + shape normals + texture high-pass -> specular and diffuse
detail normals (tangent space)."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from modeling.networks.blocks import (  # noqa: F401 (uv_coordinates: the doctest)
    TinyUNet,
    gaussian_blur,
    uv_coordinates,
)
from rendering.color import luminance

__all__ = ["DetailNormalsNet"]


class DetailNormalsNet(ModelMixin, ConfigMixin):
    """Grey diffuse albedo + shape normals + luminance high-passes of the texture and the albedo
    -> specular normals and diffuse normals (AvatarMe's normal networks).

    Pores and wrinkles show in the photo as small shading changes that the de-lighting removes
    from the albedo; the network reads them from the texture's high-pass (the albedo's
    high-pass tells pigment, e.g. freckles, from relief). The normals are tangent space on the
    mesh's smooth frame (+x along +u, +y along +v, +z out), the output `(n + 1) / 2` with `n`
    the unit vector `normalize((0, 0, 1) + unet(inputs))` for each of the two maps. The texel's
    UV coordinates are an input too (wrinkles and pores have their places in the layout).

    Args:
        channels (`tuple[int, ...]`): U-Net width per level.
        highpass_sigma (`float`): pixels; the Gaussian subtracted for the high-passes.

    >>> net = DetailNormalsNet(channels=(8, 16))
    >>> x = torch.rand(1, 3, 64, 64)
    >>> specular, diffuse = net(x, x, x, uv_coordinates(64, 64)).split(3, dim=1)
    >>> specular.shape
    torch.Size([1, 3, 64, 64])
    """

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (16, 32, 64), highpass_sigma: float = 2.0):
        super().__init__()
        self.unet = TinyUNet(8, 6, tuple(channels))

    def forward(
        self,
        diffuse_albedo: torch.Tensor,
        shape_normals: torch.Tensor,
        texture: torch.Tensor,
        uv: torch.Tensor,
    ) -> torch.Tensor:
        """Args:
            diffuse_albedo (`torch.Tensor` of shape `(B, 3, H, W)`): sRGB (used in grey).
            shape_normals (`(B, 3, H, W)`): object-space shape normals, (n + 1) / 2.
            texture (`(B, 3, H, W)`): the unwrapped photo, sRGB.
            uv (`(B or 1, 2, H, W)`): the texels' UV coordinates
                (`modeling.networks.blocks.uv_coordinates` of the whole map, cropped like the other
                inputs).

        Returns:
            `torch.Tensor` of shape `(B, 6, H, W)`: specular normals (channels 0-2) and diffuse
            normals (3-5), tangent space, each encoded (n + 1) / 2 with `n` unit length.
        """
        sigma = self.config.highpass_sigma
        grey = luminance(diffuse_albedo, axis=1)
        lum = luminance(texture, axis=1)
        x = torch.cat(
            [
                grey * 2 - 1,
                shape_normals * 2 - 1,
                (lum - gaussian_blur(lum, sigma)) * 8,
                (grey - gaussian_blur(grey, sigma)) * 8,
                uv.expand(len(texture), -1, -1, -1) * 2 - 1,
            ],
            1,
        )
        raw = self.unet(x)
        flat = torch.zeros_like(raw[:, :3])
        flat[:, 2] = 1
        return torch.cat([_unit(flat + raw[:, :3]), _unit(flat + raw[:, 3:])], 1) * 0.5 + 0.5


def _unit(v: torch.Tensor) -> torch.Tensor:
    """`F.normalize(v, dim=1)` (eps 1e-12) for `(B, 3, H, W)`, as a sum of three squares: the
    generic norm's strided reduction over 3 channels cost as much as a U-Net layer."""
    x, y, z = v.unbind(1)
    return v * torch.rsqrt((x * x + y * y + z * z).clamp_min(1e-24))[:, None]
