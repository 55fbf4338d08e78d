"""Tiled VAE: decode and encode large pictures band by band, so their memory stays that of a
band rather than of the whole picture (SDXL at 2048x2048 on an 8 GB card).

Why not diffusers' `enable_tiling`: its tiles each normalise with their own GroupNorm
statistics and see only themselves in the middle block's attention, so tiles disagree in
colour and the blended seams show; on the demo model at 512 px its result is 19/255 off the
untiled picture on average. Here the VAE's layers run one after another over horizontal
bands of the whole picture: each convolution reads its few neighbour rows (so a band's
edges are exact), each GroupNorm uses statistics gathered over every band first, and the
middle block (attention included) runs whole at latent resolution, where it is small. The
result equals the untiled one up to float rounding; only the largest activations are cut
into bands, and on a CUDA card short of memory they wait in system RAM between layers.

Below the size threshold nothing here runs: the VAE's own `encode`/`decode` do, and the
pictures stay bit-identical. A1111 has no such built-in (its users add an extension).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

DEFAULT_BAND_PIXELS = 512 * 512  # each band holds about this many pixels of a layer's activation


@dataclass(frozen=True)
class VaeTiling:
    """When to tile: pictures of more than `megapixels` (0: never). `band_pixels` is how many
    pixels of one layer's activation a band holds (smaller: less memory, more steps)."""

    megapixels: float = 0.0
    band_pixels: int = DEFAULT_BAND_PIXELS

    def applies(self, height: int, width: int) -> bool:
        return self.megapixels > 0 and height * width > self.megapixels * 1_000_000


def decode(vae, latents: torch.Tensor, tiling: VaeTiling | None = None) -> torch.Tensor:
    """`vae.decode(latents)` as a tensor in [-1, 1]; tiled above the threshold."""
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    if tiling is None or not tiling.applies(latents.shape[-2] * scale, latents.shape[-1] * scale):
        return vae.decode(latents, return_dict=False)[0]
    return _Banded(vae, tiling.band_pixels).decode(latents)


def encode_mode(vae, pixels: torch.Tensor, tiling: VaeTiling | None = None) -> torch.Tensor:
    """The mode (mean) of `vae.encode(pixels)`'s latent distribution; tiled above the threshold."""
    if tiling is None or not tiling.applies(pixels.shape[-2], pixels.shape[-1]):
        return vae.encode(pixels).latent_dist.mode()
    return _Banded(vae, tiling.band_pixels).encode(pixels)


class _Banded:
    """diffusers' AutoencoderKL Encoder/Decoder forward, layer by layer over row bands."""

    def __init__(self, vae, band_pixels: int):
        hook = getattr(vae, "_hf_hook", None)  # --medvram/--lowvram: bring the VAE to the GPU, as diffusers' encode/decode do
        if hook is not None and hasattr(hook, "pre_forward"):
            hook.pre_forward(vae)
        self.vae = vae
        self.band_pixels = max(1024, int(band_pixels))
        self.device = next(vae.parameters()).device
        self.store = self.device

    def _park_if_short(self, batch: int, height: int, width: int) -> None:
        """On CUDA, keep whole activations in system RAM unless the card has room for four of
        the largest (the full-size ones), so a small card only ever holds a band."""
        if self.device.type != "cuda":
            return
        channels = max(self.vae.config.block_out_channels[:2])
        largest = batch * channels * height * width * next(self.vae.parameters()).element_size()
        free, _ = torch.cuda.mem_get_info(self.device)
        self.store = self.device if free > 4 * largest + (1 << 30) else torch.device("cpu")

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        vae, dec = self.vae, self.vae.decoder
        scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self._park_if_short(latents.shape[0], latents.shape[2] * scale, latents.shape[3] * scale)
        z = latents.to(self.device)
        if vae.post_quant_conv is not None:
            z = vae.post_quant_conv(z)
        x = dec.mid_block(dec.conv_in(z), None).to(self.store)  # latent size: attention sees the whole picture
        upscale_dtype = next(iter(dec.up_blocks.parameters())).dtype
        x = x.to(upscale_dtype)
        for block in dec.up_blocks:
            for resnet in block.resnets:
                x = self._resnet(x, resnet)
            for upsampler in block.upsamplers or ():
                x = self._conv(x, upsampler.conv, upsample=True)
        x = self._conv(x, dec.conv_out, pre=self._norm_act(x, dec.conv_norm_out, dec.conv_act))
        return x.to(latents.device)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        vae, enc = self.vae, self.vae.encoder
        self._park_if_short(*pixels.shape[:1], *pixels.shape[2:])
        x = self._conv(pixels.to(self.store), enc.conv_in)
        for block in enc.down_blocks:
            for resnet in block.resnets:
                x = self._resnet(x, resnet)
            for downsampler in block.downsamplers or ():
                x = self._downsample(x, downsampler)
        x = enc.mid_block(x.to(self.device))
        x = enc.conv_out(enc.conv_act(enc.conv_norm_out(x)))
        if vae.quant_conv is not None:
            x = vae.quant_conv(x)
        return x.chunk(2, dim=1)[0].to(pixels.device)  # DiagonalGaussianDistribution.mode(): the mean half

    # -------------------------------------------------------------- layers

    def _rows(self, x: torch.Tensor) -> int:
        return max(4, self.band_pixels // x.shape[-1])

    def _resnet(self, x: torch.Tensor, block) -> torch.Tensor:
        """ResnetBlock2D without a time embedding (the VAE's): norm, act, conv, twice, plus the shortcut."""
        if block.time_emb_proj is not None or block.upsample or block.downsample:
            raise ValueError("tiled VAE: this VAE's resnet blocks are not the plain kind it knows how to band")
        h = self._conv(x, block.conv1, pre=self._norm_act(x, block.norm1, block.nonlinearity))
        h = self._conv(h, block.conv2, pre=self._norm_act(h, block.norm2, block.nonlinearity))
        if block.conv_shortcut is None:
            h.add_(x)
        else:  # a 1x1 conv: added band by band, never a whole tensor of its own
            rows = self._rows(x)
            for r in range(0, x.shape[2], rows):
                band = block.conv_shortcut(x[:, :, r : r + rows].to(self.device))
                h[:, :, r : r + rows] += band.to(self.store)
        return h.div_(block.output_scale_factor)

    def _downsample(self, x: torch.Tensor, down) -> torch.Tensor:
        """Downsample2D: with a conv and padding 0 it pads right and bottom by one first."""
        if not down.use_conv:
            raise ValueError("tiled VAE: pooling downsamplers are not supported")
        pad = down.padding
        return self._conv(x, down.conv, pads=(0, 1, 0, 1) if pad == 0 else (pad,) * 4)

    def _norm_act(self, x: torch.Tensor, norm, act) -> Callable[[torch.Tensor], torch.Tensor]:
        """GroupNorm with statistics over the whole activation (gathered band by band), then `act`."""
        n = x.shape[0]
        groups = norm.num_groups
        # float64 running statistics (n x groups numbers); MPS has no float64, so they stay on the CPU there
        stats_device = torch.device("cpu") if self.device.type == "mps" else self.device
        mean = torch.zeros(n, groups, dtype=torch.float64, device=stats_device)
        spread = torch.zeros_like(mean)  # sum of squared deviations, merged band by band (Chan et al.)
        count = 0
        rows = self._rows(x)
        for r in range(0, x.shape[2], rows):
            band = x[:, :, r : r + rows].to(self.device, torch.float32).reshape(n, groups, -1)
            var_b, mean_b = torch.var_mean(band, dim=-1, correction=0)
            m = band.shape[-1]
            delta = mean_b.to(stats_device, torch.float64) - mean
            mean += delta * (m / (count + m))
            spread += var_b.to(stats_device, torch.float64) * m + delta.square() * (count * m / (count + m))
            count += m
        inv_std = torch.rsqrt(spread / count + norm.eps)

        def apply(band: torch.Tensor) -> torch.Tensor:
            shape = band.shape
            grouped = band.reshape(n, groups, -1)
            normed = ((grouped - mean[..., None].to(band.device, band.dtype)) * inv_std[..., None].to(band.device, band.dtype)).reshape(shape)
            if norm.affine:
                normed = normed * norm.weight[None, :, None, None] + norm.bias[None, :, None, None]
            return act(normed)

        return apply

    def _conv(self, x: torch.Tensor, conv, pre: Callable | None = None, upsample: bool = False,
              pads: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """conv(pre(x)) (x nearest-upsampled 2x first with `upsample`, as Upsample2D does)
        computed in bands of output rows; each band reads the input rows its kernel reaches,
        with zeros past the picture's edge exactly where the conv's own padding puts them."""
        k, s = conv.kernel_size[0], conv.stride[0]
        if pads is None:
            pads = (conv.padding[0], conv.padding[0], conv.padding[1], conv.padding[1])
        top, bottom, left, right = pads
        height = x.shape[2] * (2 if upsample else 1)
        out_height = (height + top + bottom - k) // s + 1
        out = None
        rows = max(1, self._rows(x) // (2 if upsample else 1))
        for o0 in range(0, out_height, rows):
            o1 = min(out_height, o0 + rows)
            i0, i1 = o0 * s - top, (o1 - 1) * s - top + k  # input rows this band reads, before clipping
            a, b = max(i0, 0), min(i1, height)
            if upsample:
                src = x[:, :, a // 2 : (b - 1) // 2 + 1].to(self.device)
                src = F.interpolate(src, scale_factor=2.0, mode="nearest")
                piece = src[:, :, a - 2 * (a // 2) : a - 2 * (a // 2) + (b - a)]
            else:
                piece = x[:, :, a:b].to(self.device)
            if pre is not None:
                piece = pre(piece)
            piece = F.pad(piece, (left, right, a - i0, i1 - b))
            result = F.conv2d(piece, conv.weight, conv.bias, stride=s, padding=0)
            if out is None:
                out = torch.empty((x.shape[0], result.shape[1], out_height, result.shape[3]), dtype=result.dtype, device=self.store)
            out[:, :, o0:o1] = result.to(self.store)
        return out
