"""The diffusers ``UNet2DModel`` configuration equivalent to a scorekit DDPM U-Net (no diffusers import)."""

from __future__ import annotations

from typing import Any


def uniform_norm_groups(ch: int, ch_mult: tuple[int, ...] | list[int], norm_groups: int = 0) -> int | None:
    """The one GroupNorm group count of every layer (diffusers' ``norm_num_groups``), or None when the layers
    differ (model.norm_groups = 0 with channels 32 does not divide: gcd(32, channels) groups there)."""
    if norm_groups:
        return norm_groups
    return 32 if all(ch * m % 32 == 0 for m in ch_mult) else None


def unet2d_kwargs(*, resolution: int, in_ch: int, out_ch: int, ch: int, ch_mult: tuple[int, ...],
                  num_res_blocks: int, attn_resolutions: tuple[int, ...], dropout: float,
                  norm_groups: int = 32) -> dict[str, Any]:
    """Keyword arguments of ``diffusers.UNet2DModel`` that build the same network as ``UNet(**same)``.

    TF-style asymmetric downsampling padding (``downsample_padding=0``), GroupNorm eps 1e-6 with one group
    count everywhere, the sinusoidal embedding with [sin, cos] order and shift 1, one attention head of full
    width.
    """
    res = [resolution // 2**i for i in range(len(ch_mult))]
    down = tuple("AttnDownBlock2D" if r in attn_resolutions else "DownBlock2D" for r in res)
    up = tuple("AttnUpBlock2D" if r in attn_resolutions else "UpBlock2D" for r in reversed(res))
    return dict(sample_size=resolution, in_channels=in_ch, out_channels=out_ch,
                block_out_channels=tuple(ch * m for m in ch_mult), down_block_types=down, up_block_types=up,
                layers_per_block=num_res_blocks, norm_eps=1e-6, norm_num_groups=norm_groups, downsample_padding=0,
                flip_sin_to_cos=False, freq_shift=1, attention_head_dim=None, dropout=dropout, act_fn="silu",
                time_embedding_type="positional", center_input_sample=False, add_attention=True)
