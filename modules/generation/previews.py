"""Live preview pictures from a sampler's latents, by A1111's `show_progress_type`.

- Full: the model's VAE (the real picture; costs a full decode per preview).
- Approx cheap: a fixed linear latent-to-RGB projection per model family, at latent size and
  stretched to the picture's size; nearly free. Families without published factors (the
  demo and test models, whose VAEs are their own) get a projection fitted once against
  their VAE by least squares, kept for as long as that VAE is loaded; where no linear
  projection fits (the demo model's small VAE spreads colour across its latents: the best
  fit is ~60/255 off), such a model's previews are Full decodes, said once in the log.
- TAESD: madebyollin's tiny decoder (diffusers' DecoderTiny) from models/VAE-approx, under
  A1111's file names; when the file is missing, Approx cheap, with one log line.

No gradio here: the worker calls `LivePreviews.image` when a preview is due.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from PIL import Image

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

FULL, APPROX_CHEAP, TAESD, APPROX_NN = "Full", "Approx cheap", "TAESD", "Approx NN"
PREVIEW_METHODS = (FULL, APPROX_CHEAP, TAESD, APPROX_NN)  # Approx NN: A1111's name, kept for its config.json; drawn as Approx cheap


MAX_FIT_ERROR = 16.0  # mean /255 error of a fitted projection on its own pictures above which it is not used


@dataclass(frozen=True)
class Projection:
    """rgb (in [-1, 1]) = latents (as the sampler holds them) x factors + bias."""

    factors: tuple[tuple[float, float, float], ...]  # one row per latent channel
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)
    error: float = 0.0  # a fitted one: its mean error in /255 on the pictures it was fitted to


# Published latent-to-RGB factors for sampler-space latents: SD 1.x/2.x from keturn's fit
# (huggingface forums, "decoding latents to RGB without upscaling", refined as ComfyUI ships
# it), SDXL, SD3 and Flux as ComfyUI's latent_formats lists them. Numbers, not code.
_SD1 = Projection(((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721), (-0.2120, -0.2616, -0.7177)))
FAMILY_PROJECTIONS: dict[str, Projection] = {
    "sd1": _SD1,
    "sd2": _SD1,
    "sdxl": Projection(((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362), (-0.3165, -0.2492, -0.2188)),
                       (0.1084, -0.0175, -0.0011)),
    "sd3": Projection((
        (-0.0922, -0.0175, 0.0749), (0.0311, 0.0633, 0.0954), (0.1994, 0.0927, 0.0458), (0.0856, 0.0339, 0.0902),
        (0.0587, 0.0272, -0.0496), (-0.0006, 0.1104, 0.0309), (0.0978, 0.0306, 0.0427), (-0.0042, 0.1038, 0.1358),
        (-0.0194, 0.0020, 0.0669), (-0.0488, 0.0130, -0.0268), (0.0922, 0.0988, 0.0951), (-0.0278, 0.0524, -0.0542),
        (0.0332, 0.0456, 0.0895), (-0.0069, -0.0030, -0.0810), (-0.0596, -0.0465, -0.0293), (-0.1448, -0.1463, -0.1189),
    ), (0.2394, 0.2135, 0.1925)),
    "flux": Projection((
        (-0.0346, 0.0244, 0.0681), (0.0034, 0.0210, 0.0687), (0.0275, -0.0668, -0.0433), (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329), (0.0004, 0.0383, 0.0115), (0.0405, 0.0861, 0.0915), (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180), (0.1008, 0.0755, -0.0421), (-0.0515, 0.0201, 0.0011), (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749), (-0.1264, -0.0522, -0.1103), (-0.0280, -0.0881, -0.0499), (-0.1262, -0.0982, -0.0778),
    ), (-0.0329, -0.0718, -0.0851)),
}

# TAESD decoders per family, by A1111's file names (models/VAE-approx); a .safetensors of the
# same stem (or diffusers' AutoencoderTiny file renamed to it) is read too.
TAESD_FILES: dict[str, str] = {"sd1": "taesd_decoder", "sd2": "taesd_decoder", "sdxl": "taesdxl_decoder"}
TAESD_SUFFIXES = (".pth", ".safetensors")


def taesd_file(folder: Path | None, arch: str) -> Path | None:
    """The TAESD decoder file for a model family in `folder`, if there is one."""
    stem = TAESD_FILES.get(arch)
    if folder is None or stem is None:
        return None
    for suffix in TAESD_SUFFIXES:
        path = Path(folder) / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def load_taesd_decoder(path: Path, latent_channels: int = 4):
    """diffusers' DecoderTiny with the weights in `path`: A1111's taesd*_decoder.pth (keys of
    madebyollin's Sequential, which starts with a Clamp layer, so its indices are one ahead of
    DecoderTiny's), or a diffusers AutoencoderTiny / DecoderTiny state. Read weights-only;
    ValueError naming the file when it is not a TAESD decoder."""
    import torch
    from diffusers.models.autoencoders.vae import DecoderTiny

    from modules.models.weights_file import read_weights

    try:
        state = read_weights(path, "The file")
    except ValueError as exc:  # any unreadable file is the same message to the user
        raise ValueError(f"{path.name} could not be read as a TAESD decoder ({exc})") from None
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} holds no tensor dictionary: it is not a TAESD decoder")
    if any(k.startswith("decoder.layers.") for k in state):
        state = {k.removeprefix("decoder."): v for k, v in state.items() if k.startswith("decoder.layers.")}
    elif not any(k.startswith("layers.") for k in state):
        renamed = {}
        for key, value in state.items():
            index, _, rest = key.partition(".")
            if not index.isdigit() or int(index) < 1:
                raise ValueError(f"{path.name} has a key {key!r} that no TAESD decoder has")
            renamed[f"layers.{int(index) - 1}.{rest}"] = value
        state = renamed
    decoder = DecoderTiny(in_channels=latent_channels, out_channels=3, num_blocks=(3, 3, 3, 1), block_out_channels=(64, 64, 64, 64),
                          upsampling_scaling_factor=2, act_fn="relu", upsample_fn="nearest")
    try:
        decoder.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path.name} does not fit a TAESD decoder for {latent_channels}-channel latents: "
                         f"{str(exc).splitlines()[0]}") from None
    return decoder.eval()


def fit_projection(vae, count: int = 24, size: int = 64, seed: int = 0) -> Projection:
    """A least-squares latent-to-RGB projection for a VAE without published factors: smooth
    random colour pictures are encoded, and each latent pixel is matched to the mean colour of
    the picture area it stands for."""
    import torch
    import torch.nn.functional as F

    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    size = max(size, 4 * scale)
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((count, 3, 4, 4), generator=generator) * 2 - 1
    pictures = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    param = next(vae.parameters())
    with torch.inference_mode():
        latents = vae.encode(pictures.to(param.device, param.dtype)).latent_dist.mode().float().cpu()
    if vae.config.get("shift_factor") is not None:
        latents = latents - vae.config.shift_factor
    latents = latents * vae.config.scaling_factor  # as the sampler holds them
    target = F.avg_pool2d(pictures, scale)
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    x = torch.cat([x, torch.ones((x.shape[0], 1))], dim=1).double()
    y = target.permute(0, 2, 3, 1).reshape(-1, 3).double()
    solution = torch.linalg.lstsq(x, y).solution
    error = float(((x @ solution).clamp(-1, 1) - y).abs().mean() * 127.5)
    solution = solution.float()
    return Projection(tuple(tuple(row) for row in solution[:-1].tolist()), tuple(solution[-1].tolist()), error)


def approximate(latents: "torch.Tensor", projection: Projection, size: tuple[int, int] | None = None) -> Image.Image:
    """The first latent of `latents` [B, C, h, w] as a picture through `projection`,
    stretched (bilinear) to `size` (width, height) when given."""
    import torch

    sample = latents[0].float()
    factors = torch.tensor(projection.factors, dtype=sample.dtype, device=sample.device)
    bias = torch.tensor(projection.bias, dtype=sample.dtype, device=sample.device)
    rgb = torch.einsum("chw,cr->hwr", sample, factors) + bias
    pixels = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    image = Image.fromarray(pixels, "RGB")
    return image.resize(size, Image.Resampling.BILINEAR) if size and size != image.size else image


def to_picture(image: "torch.Tensor") -> Image.Image:
    """A decoded [1, 3, H, W] tensor in [-1, 1] as a PIL picture."""
    import torch

    pixels = ((image[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels, "RGB")


class LivePreviews:
    """Makes the previews for the method in the settings; holds what it built for the loaded
    model (a fitted projection, a TAESD decoder) until the model or the file changes."""

    def __init__(self, taesd_dir: Path | None = None, method: str = APPROX_CHEAP):
        self.taesd_dir = taesd_dir
        self.method = method
        self._fitted: tuple[weakref.ref, Projection] | None = None
        self._taesd: tuple[tuple, object] | None = None
        self._told: set[tuple] = set()  # fallbacks already logged, so each is said once

    def use_settings(self, changed: dict) -> None:
        if "show_progress_type" in changed:
            self.method = changed["show_progress_type"]

    def image(self, model, latents: "torch.Tensor", full: Callable[["torch.Tensor"], Image.Image]) -> Image.Image:
        """A preview of the first of `latents` (sampler space) for `model` (a LoadedModel);
        `full` decodes with the model's VAE, for the Full method."""
        import torch

        latents = latents[:1].detach()
        if self.method == FULL:
            return full(latents)
        scale = 2 ** (len(model.vae.config.block_out_channels) - 1)
        size = (latents.shape[-1] * scale, latents.shape[-2] * scale)
        if self.method == TAESD:
            decoder = self._taesd_decoder(model)
            if decoder is not None:
                param = next(decoder.parameters())
                with torch.inference_mode():
                    return to_picture(decoder(latents.to(param.device, param.dtype)))
        projection = self.projection(model)
        if projection.error > MAX_FIT_ERROR:
            self._tell(("unfit", model.arch, projection.error), f"Live previews: no linear colour projection fits the {model.arch} VAE "
                       f"(best fit {projection.error:.0f}/255 off), so its previews are Full decodes.")
            return full(latents)
        return approximate(latents, projection, size)

    def projection(self, model) -> Projection:
        """The family's published factors, else one fitted to the model's VAE (once per VAE)."""
        known = FAMILY_PROJECTIONS.get(model.arch)
        if known is not None and len(known.factors) == model.vae.config.latent_channels:
            return known
        vae = model.vae
        if self._fitted is None or self._fitted[0]() is not vae:
            self._fitted = (weakref.ref(vae), fit_projection(vae))
        return self._fitted[1]

    def _taesd_decoder(self, model):
        path = taesd_file(self.taesd_dir, model.arch)
        if path is None:
            self._tell(("missing", model.arch, self.taesd_dir),
                       f"No TAESD decoder for {model.arch} models in {self.taesd_dir}"
                       + (f" (madebyollin's {TAESD_FILES[model.arch]}.pth goes there)" if model.arch in TAESD_FILES else "")
                       + ": live previews use Approx cheap.")
            return None
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size, str(model.device), model.vae_dtype, model.vae.config.latent_channels)
        if self._taesd is None or self._taesd[0] != key:
            try:
                decoder = load_taesd_decoder(path, model.vae.config.latent_channels).to(model.device, model.vae_dtype)
            except ValueError as exc:
                self._tell(("bad",) + key, f"{exc}: live previews use Approx cheap.")
                return None
            self._taesd = (key, decoder)
            log.info("Live previews: TAESD decoder %s", path)
        return self._taesd[1]

    def _tell(self, key: tuple, message: str) -> None:
        if key not in self._told:
            self._told.add(key)
            log.warning("%s", message)
