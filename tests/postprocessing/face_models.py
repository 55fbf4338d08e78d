"""Test material for face restoration: a face drawn in the test that OpenCV's shipped Haar
cascade finds, and random-weight GFPGAN / CodeFormer files in the real layouts (spandrel's
own architecture classes), written where the app looks for them."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

FACE_CENTRE = (192, 192)


def drawn_face(size: int = 384, radius: int = 60) -> Image.Image:
    """A flat cartoon face (skin oval, hair, brows, eyes, nose, mouth) on a blue background,
    softened a little: the frontal-face cascade finds it at its centre."""
    cx, cy = size // 2, size // 2
    r = radius
    image = Image.new("RGB", (size, size), (40, 60, 90))
    draw = ImageDraw.Draw(image)
    draw.ellipse((cx - r, cy - int(r * 1.3), cx + r, cy + int(r * 1.3)), fill=(210, 170, 140))
    draw.ellipse((cx - r - 5, cy - int(r * 1.45), cx + r + 5, cy - int(r * 0.7)), fill=(50, 35, 25))
    for side in (-1, 1):
        ex, ey = cx + side * int(r * 0.42), cy - int(r * 0.15)
        draw.rectangle((ex - int(r * 0.3), ey - int(r * 0.32), ex + int(r * 0.3), ey - int(r * 0.24)), fill=(70, 50, 40))
        draw.ellipse((ex - int(r * 0.22), ey - int(r * 0.1), ex + int(r * 0.22), ey + int(r * 0.1)), fill=(250, 250, 250))
        draw.ellipse((ex - int(r * 0.1), ey - int(r * 0.1), ex + int(r * 0.1), ey + int(r * 0.1)), fill=(30, 20, 20))
    draw.polygon([(cx, cy - int(r * 0.1)), (cx - int(r * 0.12), cy + int(r * 0.35)), (cx + int(r * 0.12), cy + int(r * 0.35))], fill=(190, 145, 120))
    draw.ellipse((cx - int(r * 0.35), cy + int(r * 0.55), cx + int(r * 0.35), cy + int(r * 0.72)), fill=(150, 60, 60))
    return image.filter(ImageFilter.GaussianBlur(2))


def write_gfpgan(path: Path, seed: int = 0) -> Path:
    """GFPGANv1Clean with the parameters spandrel uses for GFPGAN v1.4, random weights."""
    import torch
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(seed)
    model = GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, decoder_load_path=None, fix_decoder=False, num_mlp=8,
                   input_is_latent=True, different_w=True, narrow=1, sft_half=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": model.state_dict()}, path)  # wrapped as TencentARC ships it
    return path


def write_codeformer(path: Path, seed: int = 0) -> Path:
    """CodeFormer in its real layout with a small transformer (spandrel reads the sizes from
    the weights): the 512-px autoencoder is the release's, the rest is smaller to save time."""
    import torch
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(seed)
    model = CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=64, latent_size=256, connect_list=["32", "64", "128", "256"],
                       fix_modules=["quantize", "generator"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": model.state_dict()}, path)
    return path


def write_compact_upscaler(path: Path) -> Path:
    """A small real-ESRGAN-compact (SRVGG) upscaler: a model of another architecture."""
    import torch
    from spandrel.architectures.Compact import Compact

    model = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
