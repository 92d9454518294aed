"""`DelightingNet`: the unwrapped texture (light baked in) -> diffuse albedo (AvatarMe's
de-lighting), as a correction of the backbone's first-order de-lighting in the image formation
model (linear RGB: texture = albedo x shading + specular)."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from modeling.blocks import TinyUNet
from rendering.render import linear_to_srgb, srgb_to_linear

__all__ = ["DelightingNet"]

NUM_STATS = 12


class DelightingNet(ModelMixin, ConfigMixin):
    """Texture + first-order de-lit albedo + shape normals + ambient occlusion -> diffuse albedo.

    The first-order de-lighting (`modeling.lighting.first_order_maps`) divides a 2nd-order SH
    light (with AO) out of the texture. What it leaves follows the image formation model of
    the skin shader: in linear RGB, `texture = gain * (albedo * shading + specular)`, where the
    shading the SH light misses (directional light, occlusion, light bleeding under the skin)
    is smooth and the specular highlights add to it. So the network predicts, per texel, a
    log-shading correction `s` and a specular term `h` (both in the de-lit albedo's linear
    units) plus a small sRGB residual `r` (for texels the camera clipped):

        albedo = srgb((delit_linear - h) * exp(g - s)) + r

    Albedo detail (pores, freckles, brows, lip edges) passes through the division unchanged
    instead of being re-synthesised. What is global, the camera's exposure and white balance
    (the first-order step fixes the light's scale and colour only up to them), is the
    per-channel log-gain `g`, which a small MLP computes from per-map statistics
    (`global_stats`: visibility-weighted mean and spread of the texture and the de-lit albedo),
    which the U-Net also sees as constant channels. Computing them once per map keeps the
    sliding window exact. With the zero-initialised heads the network starts as the identity
    (the first-order albedo).

    Args:
        channels (`tuple[int, ...]`): U-Net width per level.

    >>> net = DelightingNet(channels=(8, 16))
    >>> x = torch.rand(1, 3, 64, 64)
    >>> stats = DelightingNet.global_stats(x, x, torch.ones(1, 1, 64, 64))
    >>> net(x, x, x, x[:, :1], stats).shape
    torch.Size([1, 3, 64, 64])
    """

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.unet = TinyUNet(10 + NUM_STATS, 9, tuple(channels))
        self.global_head = nn.Sequential(nn.Linear(NUM_STATS, 32), nn.SiLU(), nn.Linear(32, 3))
        nn.init.zeros_(self.global_head[-1].weight)
        nn.init.zeros_(self.global_head[-1].bias)

    @staticmethod
    def global_stats(
        texture: torch.Tensor, delit_albedo: torch.Tensor, visibility: torch.Tensor
    ) -> torch.Tensor:
        """`(B, 12)`: visibility-weighted mean and standard deviation per channel of the
        texture and the de-lit albedo (whole maps `(B, C, H, W)`, visibility `(B, 1, H, W)`)."""
        w = visibility / visibility.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        stats = []
        for x in (texture, delit_albedo):
            mean = (x * w).sum(dim=(2, 3))
            var = (((x - mean[..., None, None]) ** 2) * w).sum(dim=(2, 3))
            stats += [mean, var.clamp_min(0).sqrt()]
        return torch.cat(stats, 1)

    def forward(
        self,
        texture: torch.Tensor,
        delit_albedo: torch.Tensor,
        shape_normals: torch.Tensor,
        ao: torch.Tensor,
        stats: torch.Tensor,
    ) -> torch.Tensor:
        """Args:
            texture (`torch.Tensor` of shape `(B, 3, H, W)`): sRGB in [0, 1], light baked in.
            delit_albedo (`(B, 3, H, W)`): sRGB, the first-order de-lighting of `texture`.
            shape_normals (`(B, 3, H, W)`): object-space shape normals, (n + 1) / 2.
            ao (`(B, 1, H, W)`): ambient occlusion in [0, 1].
            stats (`(B, 12)`): `global_stats` of the whole maps (not of a tile).

        Returns:
            `torch.Tensor` of shape `(B, 3, H, W)`: diffuse albedo, sRGB (not clamped; clamp to
            [0, 1] for display).
        """
        b, _, h, w = texture.shape
        gain = self.global_head(stats * 2 - 1)[:, :, None, None]
        constant = (stats * 2 - 1)[:, :, None, None].expand(b, NUM_STATS, h, w)
        x = torch.cat(
            [torch.cat([texture, delit_albedo, shape_normals, ao], 1) * 2 - 1, constant], 1
        )
        log_shading, specular, residual = self.unet(x).split(3, dim=1)
        albedo_linear = (srgb_to_linear(delit_albedo) - 0.1 * specular) * torch.exp(
            gain - log_shading
        )
        return linear_to_srgb(albedo_linear) + 0.1 * residual
