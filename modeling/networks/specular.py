"""`SpecularAlbedoNet`: diffuse albedo (+ shape normals, texture) -> specular albedo."""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from modeling.networks.blocks import (  # noqa: F401 (uv_coordinates: doctest)
    GlobalContext,
    TinyUNet,
    gaussian_blur,
    uv_coordinates,
)
from rendering.color import luminance

__all__ = ["SpecularAlbedoNet"]

CONTEXT_CHANNELS = 10  # texture, first-order albedo, shape normals, visibility
CONTEXT_SIZE = 64  # px the whole maps are pooled to


class SpecularAlbedoNet(ModelMixin, ConfigMixin):
    """Diffuse albedo + shape normals + texture -> specular albedo (1 channel, the shader's
    units, `rendering.shading`: skin about 0.05-0.25).

    AvatarMe infers specular albedo from the diffuse albedo (hair, brows and stubble are dark
    and dull, lips and the T-zone differ); the texture's luminance high-pass adds what the photo
    shows of the specular itself (highlights on the oily T-zone, dull pores). The texel's UV
    coordinates are an input too: the oily T-zone, the lips and the brows sit at fixed places
    of the layout. How shiny the face is overall is a property of the whole map, not of a
    patch: a `GlobalContext` encoder sees the whole texture, first-order albedo, shape normals
    and visibility (`context_maps`, pooled to 64 x 64 once per map) and gives the U-Net
    constant channels and the per-face log-level `g`:

        specular = (mean_specular + unet(inputs, context)) * exp(g)

    Args:
        channels (`tuple[int, ...]`): U-Net width per level.
        mean_specular (`float`): the training set's mean specular albedo.
        highpass_sigma (`float`): pixels; the Gaussian subtracted for the high-pass.
        context_features (`int`): size of the whole-map context vector.

    >>> net = SpecularAlbedoNet(channels=(8, 16))
    >>> x = torch.rand(1, 3, 64, 64)
    >>> context = net.context_maps(x, x, x, torch.ones(1, 1, 64, 64))
    >>> net(x, x, x, uv_coordinates(64, 64), context).shape
    torch.Size([1, 1, 64, 64])
    """

    @register_to_config
    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 64),
        mean_specular: float = 0.3,
        highpass_sigma: float = 2.0,
        context_features: int = 8,
    ):
        super().__init__()
        self.context = GlobalContext(CONTEXT_CHANNELS, context_features + 1)
        self.unet = TinyUNet(10 + context_features, 1, tuple(channels))
        nn.init.zeros_(self.context.head.weight)
        nn.init.zeros_(self.context.head.bias)

    def with_prior_level(self, specular, chart):
        """The predicted map with its mean over the UV chart set to the training set's
        (`mean_specular`), clipped to [0, 1]: what the pipeline and the evaluation use.

        How shiny a face is overall (its mean specular albedo) is confounded on one photo with
        the light's strength and the exposure; on the validation split the network's per-face
        level was further from the truth than the training mean (1024 px, 12 faces:
        27.69 dB for the constant, 26.91 for the network, 28.35 for the network's map at the
        constant's level), while its spatial structure (T-zone, lips, brows, pores) is right.

        Args:
            specular (`np.ndarray` of shape `(R, R, 1)`): `forward`'s output as a map.
            chart (`np.ndarray` `(R, R)` bool, *optional*): texels covered by the mesh
                (`UVAtlas.chart`); `None`: every texel.
        """
        level = float(specular.mean() if chart is None else specular[chart].mean())
        return np.clip(specular - level + self.config.mean_specular, 0, 1).astype(np.float32)

    @staticmethod
    def context_maps(
        texture: torch.Tensor,
        delit_albedo: torch.Tensor,
        shape_normals: torch.Tensor,
        visibility: torch.Tensor,
    ) -> torch.Tensor:
        """`(B, 10, 64, 64)`: the whole maps (`(B, 3|3|3|1, H, W)`: texture, first-order de-lit
        albedo, shape normals, visibility) pooled, to be given to every tile's `forward`."""
        # pooled map by map, then stacked: the same values as pooling the stacked maps, without
        # a full-size copy of the 10 channels (640 MB at 4096 px)
        maps = (texture, delit_albedo, shape_normals, visibility)
        return torch.cat([GlobalContext.pooled(x, CONTEXT_SIZE) for x in maps], 1)

    def forward(
        self,
        diffuse_albedo: torch.Tensor,
        shape_normals: torch.Tensor,
        texture: torch.Tensor,
        uv: torch.Tensor,
        context: torch.Tensor,
    ) -> torch.Tensor:
        """Args:
            diffuse_albedo (`torch.Tensor` of shape `(B, 3, H, W)`): sRGB in [0, 1].
            shape_normals (`(B, 3, H, W)`): object-space shape normals, (n + 1) / 2.
            texture (`(B, 3, H, W)`): the unwrapped photo, sRGB.
            uv (`(B or 1, 2, H, W)`): the texels' UV coordinates
                (`modeling.networks.blocks.uv_coordinates` of the whole map, cropped like the other
            inputs). context (`(B or 1, 10, 64, 64)`): `context_maps` of the whole maps (not of a
            tile).

        Returns:
            `torch.Tensor` of shape `(B, 1, H, W)`: specular albedo (not clamped).
        """
        b = len(texture)
        lum = luminance(texture, axis=1)
        highpass = (lum - gaussian_blur(lum, self.config.highpass_sigma)) * 8
        uv = uv.expand(b, -1, -1, -1) * 2 - 1
        vector = self.context(context).expand(b, -1)
        log_level, features = vector[:, :1], vector[:, 1:]
        x = torch.cat([diffuse_albedo * 2 - 1, shape_normals * 2 - 1, lum * 2 - 1, highpass, uv], 1)
        level = torch.exp(log_level)[:, :, None, None]
        # the context features are the U-Net's last input channels, constant over the image
        return (self.config.mean_specular + self.unet(x, features)) * level
