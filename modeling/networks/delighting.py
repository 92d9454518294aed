"""`DelightingNet`: the unwrapped texture (light baked in) -> diffuse albedo (AvatarMe's
de-lighting), as a correction of the backbone's first-order de-lighting in the image formation
model (linear RGB: texture = albedo x shading + specular)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from modeling.networks.blocks import TinyUNet
from rendering.color import linear_to_srgb, luminance, srgb_to_linear

__all__ = ["DelightingNet", "WHITE_BALANCE_MODES", "check_white_balance"]

# "camera": keep the photo's white balance (the network corrects the exposure, one gain for the
# three channels); "skin_prior": the network also re-balances the colour toward the skin colours
# it was trained on (see `DelightingNet.global_gain`).
WHITE_BALANCE_MODES = ("camera", "skin_prior")


def check_white_balance(mode: str) -> str:
    """`mode` if it is one of `WHITE_BALANCE_MODES`, else a `ValueError` naming them."""
    if mode not in WHITE_BALANCE_MODES:
        raise ValueError(f"white_balance must be one of {WHITE_BALANCE_MODES}, got {mode!r}")
    return mode


TEXTURE_QUANTILES = (0.1, 0.5, 0.9, 0.98, 0.995)  # of the seen texture's luminance
ALBEDO_QUANTILES = (0.1, 0.5, 0.9)  # of the seen de-lit albedo's luminance
STATS_SIZE = 128  # quantiles on maps area-resized to this size: the same at every resolution
NUM_STATS = 12 + len(TEXTURE_QUANTILES) + len(ALBEDO_QUANTILES)


class DelightingNet(ModelMixin, ConfigMixin):
    """Texture + first-order de-lit albedo + shape normals + ambient occlusion -> diffuse albedo.

    The first-order de-lighting (`modeling.reconstruction.first_order.first_order_maps`)
    divides a 2nd-order SH light (with AO) out of the texture. What it leaves follows the image
    formation model of the skin shader: in linear RGB, `texture = gain * (albedo * shading +
    specular)`, where the shading the SH light misses (directional light, occlusion, light bleeding
    under the skin) is smooth and the specular highlights add to it. So the network predicts, per
    texel, a log-shading correction `s` and a specular term `h` (both in the de-lit albedo's linear
    units) plus a small sRGB residual `r` (for texels the camera clipped):

        albedo = srgb((delit_linear - h) * exp(g - s)) + r

    Albedo detail (pores, freckles, brows, lip edges) passes through the division unchanged
    instead of being re-synthesised. What is global, the camera's exposure and white balance
    (the first-order step fixes the light's scale and colour only up to them), is the
    per-channel log-gain `g`, which a small MLP computes from per-map statistics
    (`global_stats`: visibility-weighted mean and spread of the texture and the de-lit albedo,
    quantiles of their luminance on the seen texels: how a camera's metering set the level),
    which the U-Net also sees as constant channels. Computing them once per map keeps the
    sliding window exact. The visibility is an input: where the photo saw the skin, its detail
    is the albedo's; where the backbone completed the map (mirrored or pulled in from the
    seen texels), it is a guess. With the zero-initialised heads the network starts as the
    identity (the first-order albedo).

    Args:
        channels (`tuple[int, ...]`): U-Net width per level.

    >>> net = DelightingNet(channels=(8, 16))
    >>> x = torch.rand(1, 3, 64, 64)
    >>> vis = torch.ones(1, 1, 64, 64)
    >>> stats = DelightingNet.global_stats(x, x, vis)
    >>> net(x, x, x, x[:, :1], vis, stats).shape
    torch.Size([1, 3, 64, 64])
    """

    @register_to_config
    def __init__(self, channels: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.unet = TinyUNet(11 + NUM_STATS, 9, tuple(channels))
        self.global_head = nn.Sequential(
            nn.Linear(NUM_STATS, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 3)
        )
        nn.init.zeros_(self.global_head[-1].weight)
        nn.init.zeros_(self.global_head[-1].bias)

    @staticmethod
    def global_stats(
        texture: torch.Tensor, delit_albedo: torch.Tensor, visibility: torch.Tensor
    ) -> torch.Tensor:
        """`(B, NUM_STATS)` of whole maps `(B, C, H, W)` (visibility `(B, 1, H, W)`):
        visibility-weighted mean and standard deviation per channel of the texture and the de-lit
        albedo (12), then `TEXTURE_QUANTILES` and `ALBEDO_QUANTILES` of their luminance over the
        texels seen (visibility > 0.5; all texels if none), on maps area-resized to
        `STATS_SIZE` px."""
        w = visibility / visibility.sum(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        stats = []
        for x in (texture, delit_albedo):
            mean = (x * w).sum(dim=(2, 3))
            var = (((x - mean[..., None, None]) ** 2) * w).sum(dim=(2, 3))
            stats += [mean, var.clamp_min(0).sqrt()]
        size = (min(STATS_SIZE, texture.shape[-2]), min(STATS_SIZE, texture.shape[-1]))
        small = [F.interpolate(x.float(), size=size, mode="area")
                 for x in (texture, delit_albedo, visibility)]  # fmt: skip
        quantiles = []
        for tex, delit, vis in zip(*small, strict=True):
            seen = vis[0] > 0.5
            if not seen.any():
                seen = torch.ones_like(seen)
            row = []
            for x, q in ((tex, TEXTURE_QUANTILES), (delit, ALBEDO_QUANTILES)):
                lum = luminance(x, axis=0)[0][seen]
                row.append(torch.quantile(lum, torch.tensor(q, dtype=lum.dtype, device=lum.device)))
            quantiles.append(torch.cat(row))
        stats.append(torch.stack(quantiles).to(texture.dtype))
        return torch.cat(stats, 1)

    def global_gain(self, stats: torch.Tensor, white_balance: str = "skin_prior") -> torch.Tensor:
        """`(B, 3)`: the per-channel log-gain (linear RGB) the map's statistics `(B, NUM_STATS)`
        call for: camera exposure and white balance, which the first-order step leaves.

        With `white_balance="skin_prior"` the three channels' gains are the network's: it
        re-balances the colour as its training data taught it, where the camera's white balance
        left part of the light's colour (`training.render_pairs`), so the skin colours it was
        trained on decide what is white. On photos a camera white-balanced, that prior's bias
        becomes a cast (the synthetic skin is yellower than measured skin: on the public photos
        it moved a* by -4 to -7 and b* by +2 to +8), and it colourises a black-and-white photo.
        With `"camera"` (the pipeline's default) the gain is the same for the three channels,
        the luminance-weighted mean of the network's log-gains: the exposure is corrected and
        the photo's white balance kept. Training uses "skin_prior" (the network as learned).
        """
        gain = self.global_head(stats * 2 - 1)
        if check_white_balance(white_balance) == "camera":
            gain = self.camera_gain(gain)
        return gain

    @staticmethod
    def camera_gain(gain: torch.Tensor) -> torch.Tensor:
        """`(B, 3)`: per-channel log-gains `(B, 3)` made one gain for the three channels, their
        luminance-weighted mean (the "camera" white balance: exposure only)."""
        return luminance(gain, axis=1).expand_as(gain)

    def zero_gain_terms(
        self,
        texture: torch.Tensor,
        delit_albedo: torch.Tensor,
        shape_normals: torch.Tensor,
        ao: torch.Tensor,
        visibility: torch.Tensor,
        stats: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The U-Net's part of `forward` (same arguments): `(base, log_shading, residual)`, each
        `(B, 3, H, W)`, with which the albedo under a log-gain `g` is
        `linear_to_srgb(base * exp(g - log_shading)) + residual` (`base`: the de-lit albedo less
        the specular term, linear RGB; `residual`: sRGB)."""
        maps = torch.cat([texture, delit_albedo, shape_normals, ao, visibility], 1)
        # the statistics are the U-Net's last NUM_STATS input channels, constant over the image
        constant = (stats * 2 - 1).expand(len(texture), -1)
        log_shading, specular, residual = self.unet(maps * 2 - 1, constant).split(3, dim=1)
        return srgb_to_linear(delit_albedo) - 0.1 * specular, log_shading, 0.1 * residual

    def forward(
        self,
        texture: torch.Tensor,
        delit_albedo: torch.Tensor,
        shape_normals: torch.Tensor,
        ao: torch.Tensor,
        visibility: torch.Tensor,
        stats: torch.Tensor,
        white_balance: str = "skin_prior",
    ) -> torch.Tensor:
        """Args:
            texture (`torch.Tensor` of shape `(B, 3, H, W)`): sRGB in [0, 1], light baked in.
            delit_albedo (`(B, 3, H, W)`): sRGB, the first-order de-lighting of `texture`.
            shape_normals (`(B, 3, H, W)`): object-space shape normals, (n + 1) / 2.
            ao (`(B, 1, H, W)`): ambient occlusion in [0, 1].
            visibility (`(B, 1, H, W)`): how well the photo saw each texel, in [0, 1].
            stats (`(B, NUM_STATS)`): `global_stats` of the whole maps (not of a tile).
            white_balance (`str`): "skin_prior" (the network as trained) or "camera" (keep
                the photo's white balance; see `global_gain`).

        Returns:
            `torch.Tensor` of shape `(B, 3, H, W)`: diffuse albedo, sRGB (not clamped; clamp to
            [0, 1] for display).
        """
        gain = self.global_gain(stats, white_balance)[:, :, None, None]
        base, log_shading, residual = self.zero_gain_terms(
            texture, delit_albedo, shape_normals, ao, visibility, stats
        )
        return linear_to_srgb(base * torch.exp(gain - log_shading)) + residual
