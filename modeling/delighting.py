"""`DelightingNet`: the unwrapped texture (light baked in) -> diffuse albedo (AvatarMe's
de-lighting), as a residual on the backbone's first-order de-lit albedo."""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from modeling.blocks import TinyUNet

__all__ = ["DelightingNet"]

NUM_STATS = 12


class DelightingNet(ModelMixin, ConfigMixin):
    """Texture + first-order de-lit albedo + shape normals + ambient occlusion -> diffuse albedo.

    The first-order de-lighting (`modeling.lighting.first_order_maps`) divides out a 2nd-order
    SH light; what it leaves (specular highlights, shadows and occlusion it misses, light
    bleeding under the skin) is a local correction that a small fully convolutional network
    learns: the output is `delit_albedo * gain + offset + unet(inputs)`. What is global (the
    first-order step fixes the light's scale and colour only up to the camera's exposure and
    white balance) is learnt from per-map statistics (`global_stats`: visibility-weighted mean
    and spread of the texture and the de-lit albedo), which a small MLP turns into the
    per-channel `gain` and `offset`, and which the U-Net also sees as constant channels.
    Computing them once per map keeps the sliding window exact.

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
        self.unet = TinyUNet(10 + NUM_STATS, 3, tuple(channels))
        self.global_head = nn.Sequential(nn.Linear(NUM_STATS, 32), nn.SiLU(), nn.Linear(32, 6))
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
        gain, offset = self.global_head(stats * 2 - 1)[:, :, None, None].split(3, dim=1)
        base = delit_albedo * torch.exp(gain) + offset
        constant = (stats * 2 - 1)[:, :, None, None].expand(b, NUM_STATS, h, w)
        x = torch.cat(
            [torch.cat([texture, delit_albedo, shape_normals, ao], 1) * 2 - 1, constant], 1
        )
        return base + self.unet(x)
