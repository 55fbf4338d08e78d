"""Command-line flags (A1111's names), the data folders they point at, and output settings.

Parsed once in `webui.py` into plain frozen values that are handed to whatever needs them;
nothing here is a global that code reads behind the app's back.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, fields
from pathlib import Path

log = logging.getLogger(__name__)

REPO_DIR = Path(__file__).resolve().parent.parent

# A1111 flags that users keep in COMMANDLINE_ARGS and that need nothing from us: accepted quietly.
ACCEPTED_NO_OP = (
    "--skip-torch-cuda-test", "--skip-python-version-check", "--skip-prepare-environment", "--skip-version-check",
    "--opt-sdp-attention", "--opt-sdp-no-mem-attention", "--opt-split-attention", "--opt-sub-quad-attention",
    "--disable-nan-check", "--upcast-sampling",
    "--lowram",
)


class _DeviceIds(argparse.Action):
    """--device-id 1 (as A1111), 0,1 or all: `device_id` keeps the first index for the code that
    uses one GPU, `device_ids` the list (("all",) for every visible GPU) for the Ray workers."""

    def __call__(self, parser, namespace, values, option_string=None):
        text = str(values).strip()
        if text == "all":
            namespace.device_id, namespace.device_ids = None, ("all",)
            return
        try:
            ids = tuple(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            parser.error(f"{option_string}: expected a GPU index, a list such as 0,1, or 'all'; got {text!r}")
        if not ids or min(ids) < 0:
            parser.error(f"{option_string}: expected a GPU index, a list such as 0,1, or 'all'; got {text!r}")
        namespace.device_id, namespace.device_ids = ids[0], ids


def ray_mode(args: argparse.Namespace) -> bool:
    """Whether generation jobs run on Ray workers: --ray-address, or several --device-id."""
    ids = getattr(args, "device_ids", ())
    return bool(getattr(args, "ray_address", None)) or ids == ("all",) or len(ids) > 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="webui.py", description="Stable Diffusion web UI (A1111-compatible flags).")
    net = p.add_argument_group("server")
    net.add_argument("--listen", action="store_true", help="serve on 0.0.0.0 so other machines on the LAN can connect")
    net.add_argument("--server-name", default=None, help="host name or address to bind (overrides --listen)")
    net.add_argument("--port", type=int, default=None, help="port (default 7860)")
    net.add_argument("--autolaunch", action="store_true", help="open the page in the default browser once it answers (local starts only)")
    net.add_argument("--theme", choices=("light", "dark"), default=None, help="force the page's light or dark theme (default: the browser's)")
    net.add_argument("--share", action="store_true",
                     help="open gradio's public share tunnel (a *.gradio.live link anyone can open: use --gradio-auth)")
    net.add_argument("--cloudflared", action="store_true",
                     help="open a Cloudflare quick tunnel (*.trycloudflare.com; a cloudflared on PATH or the pycloudflared package)")
    net.add_argument("--api", action="store_true", help="serve A1111's HTTP API (/sdapi/v1, docs at /docs) beside the page")
    net.add_argument("--nowebui", action="store_true", help="serve only the API, no page (default port 7861)")
    net.add_argument("--api-auth", default=None, help="HTTP Basic credentials for the API: user:password[,user2:password2]")
    net.add_argument("--gradio-auth", default=None, help="log-in credentials for the page: user:password[,user2:password2]")
    net.add_argument("--gradio-auth-path", default=None, help="file of page log-ins: user:password entries, one or more per line (added to --gradio-auth)")
    net.add_argument("--tls-keyfile", default=None, help="private key (PEM) for serving over HTTPS, with --tls-certfile")
    net.add_argument("--tls-certfile", default=None, help="certificate (PEM) for serving over HTTPS, with --tls-keyfile")
    net.add_argument("--disable-tls-verify", action="store_true", help="accepted for A1111 compatibility (this server makes no TLS requests of its own)")
    net.add_argument("--subpath", default=None, help="path prefix when served behind a reverse proxy, e.g. /sd")
    net.add_argument("--enable-insecure-extension-access", action="store_true",
                     help="with --listen/--share/--server-name: still allow the features that read or write folders on the server")
    net.add_argument("--cors-allow-origins", default=None, help="comma-separated origins allowed to call the server from a browser")
    net.add_argument("--cors-allow-origins-regex", default=None, help="regular expression of origins allowed to call the server")
    paths = p.add_argument_group("folders")
    paths.add_argument("--data-dir", type=Path, default=REPO_DIR, help="base folder for models/, outputs/ and settings")
    paths.add_argument("--models-dir", type=Path, default=None, help="base folder for models (default <data-dir>/models)")
    paths.add_argument("--ckpt-dir", type=Path, default=None, help="extra folder to search for checkpoints")
    paths.add_argument("--ckpt", type=Path, default=None, help="checkpoint to load at start")
    paths.add_argument("--no-hashing", action="store_true", help="do not compute SHA-256 of checkpoints (no Model hash in infotext)")
    paths.add_argument("--no-download-sd-model", action="store_true",
                       help="do not download SD 1.5 in the background at a start without a checkpoint of your own")
    paths.add_argument("--lora-dir", type=Path, default=None, help="folder of LoRA files (default <models-dir>/Lora)")
    paths.add_argument("--embeddings-dir", type=Path, default=None, help="folder of textual-inversion embeddings (default <models-dir>/embeddings)")
    paths.add_argument("--vae-dir", type=Path, default=None, help="folder of VAE files (default <models-dir>/VAE)")
    for flag, folder in EXTRA_MODEL_FLAGS.items():
        paths.add_argument(flag, type=Path, default=None, help=f"folder of {folder} models (default <models-dir>/{folder})")
    paths.add_argument("--ui-settings-file", type=Path, default=None, help="settings file (default <data-dir>/config.json)")
    paths.add_argument("--ui-config-file", type=Path, default=None, help="UI defaults file (default <data-dir>/ui-config.json)")
    paths.add_argument("--localizations-dir", type=Path, default=None,
                       help="folder of UI translations, <language>.json (default <data-dir>/localizations); the shipped ones are in configs/localizations")
    paths.add_argument("--styles-file", action="append", default=None,
                       help="styles file (repeatable, wildcards allowed; default <data-dir>/styles.csv); new styles go to the first")
    ext = p.add_argument_group("extensions")
    ext.add_argument("--disable-all-extensions", action="store_true",
                     help="prevent all extensions from running regardless of any other settings")
    ext.add_argument("--disable-extra-extensions", action="store_true",
                     help="prevent all extensions except built-in from running regardless of any other settings")
    dev = p.add_argument_group("device and precision")
    dev.add_argument("--precision", choices=("full", "half", "autocast"), default="autocast")
    dev.add_argument("--no-half", action="store_true", help="keep the model in fp32 on the GPU")
    dev.add_argument("--no-half-vae", action="store_true", help="keep the VAE in fp32 on the GPU")
    dev.add_argument("--xformers", action="store_true", help="use xformers attention where installed and usable")
    dev.add_argument("--medvram", action="store_true",
                     help="keep the model in RAM, one part on the GPU at a time (default: chosen from the card's VRAM)")
    dev.add_argument("--medvram-sdxl", action="store_true", help="--medvram for SDXL models only")
    dev.add_argument("--lowvram", action="store_true",
                     help="as --medvram, and the UNet streamed layer by layer (default: chosen from the card's VRAM)")
    dev.add_argument("--always-high-vram", action="store_true",
                     help="never offload or cap the tiled-VAE size from the card's VRAM (other memory flags still apply)")
    dev.add_argument("--always-normal-vram", action="store_true", help="Forge's name for --medvram")
    dev.add_argument("--always-low-vram", action="store_true", help="Forge's name for --lowvram")
    dev.add_argument("--use-cpu", nargs="*", default=[], help="run on the CPU ('all' or 'sd')")
    dev.add_argument("--device-id", action=_DeviceIds, default=None, metavar="ID[,ID...]|all",
                     help="CUDA device index; several (0,1) or 'all' run one Ray worker per GPU")
    fast = p.add_argument_group("speed (Settings > Optimizations; a flag wins over the setting)")
    fast.add_argument("--opt-channelslast", action="store_true", help="channels-last memory format for the UNet and VAE")
    fast.add_argument("--no-tf32", action="store_true", help="no TF32 maths on Ampere and newer NVIDIA GPUs (on by default)")
    fast.add_argument("--compile", nargs="?", const="unet", default=None, choices=("none", "unet", "unet+vae"),
                      help="torch.compile the UNet (and the VAE decoder with 'unet+vae'); the first job of each size compiles")
    fast.add_argument("--compile-mode", default=None, choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
                      help="torch.compile mode (default: the setting's, 'default')")
    fast.add_argument("--unet-in-fp8-e4m3fn", action="store_true", help="store the UNet's weights in fp8 (e4m3fn), as fp8_storage 'Enable'")
    fast.add_argument("--unet-in-fp8-e5m2", action="store_true", help="store the UNet's weights in fp8 (e5m2), as fp8_storage 'Enable'")
    ray = p.add_argument_group("Ray workers (several GPUs or machines)")
    ray.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                     help="run generation jobs on one worker per GPU of this Ray cluster ('auto': the cluster this machine joined)")
    ray.add_argument("--ray-cpu-workers", type=int, default=0, metavar="N",
                     help="also run N CPU workers on each cluster machine without GPUs (slow; for tests and benchmarks)")
    ray.add_argument("--ray-worker-threads", type=int, default=1, metavar="N", help="torch threads of each CPU worker")
    ray.add_argument("--ray-models-dir", type=Path, default=None,
                     help="a models folder every worker machine mounts at this path (default: each worker's own models/)")
    ray.add_argument("--ray-dashboard", action="store_true", help="start Ray's dashboard (off by default: it lets anyone on the network run code)")
    p.add_argument("--disable-console-progressbars", action="store_true")
    p.add_argument("--loglevel", default="INFO")
    for flag in ACCEPTED_NO_OP:
        p.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args, unknown = build_parser().parse_known_args(argv)
    if not hasattr(args, "device_ids"):
        args.device_ids = (args.device_id,) if args.device_id is not None else ()
    if unknown:
        log.warning("Ignoring unknown command-line arguments: %s", " ".join(unknown))
    return args


# A1111's flags for the postprocessing model folders, and the models/ subfolder each names.
EXTRA_MODEL_FLAGS = {
    "--esrgan-models-path": "ESRGAN", "--realesrgan-models-path": "RealESRGAN", "--swinir-models-path": "SwinIR",
    "--dat-models-path": "DAT", "--hat-models-path": "HAT", "--gfpgan-models-path": "GFPGAN",
    "--codeformer-models-path": "Codeformer", "--blip-models-path": "BLIP", "--clip-models-path": "CLIP",
    "--deepdanbooru-models-path": "deepbooru", "--face-detection-models-path": "face-detection", "--vae-approx-models-path": "VAE-approx",
    "--controlnet-dir": "ControlNet",  # the ControlNet extension's flag: scanned beside models/ControlNet
}
UPSCALER_FOLDERS = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT")  # scanned for spandrel upscalers, in this order


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    models_dir: Path
    ckpt_dirs: tuple[Path, ...]
    outputs_dir: Path
    configs_dir: Path
    lora_dir: Path | None = None  # None: <models>/Lora, and so on
    embeddings_dir: Path | None = None
    vae_dir: Path | None = None
    styles_files: tuple[Path, ...] = ()
    settings_file: Path | None = None  # None: <data>/config.json
    ui_config_file: Path | None = None  # None: <data>/ui-config.json
    model_dirs: tuple[tuple[str, Path], ...] = ()  # (models/ subfolder name, folder given by its flag)
    localizations_dir: Path | None = None  # None: <data>/localizations

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Paths":
        data = Path(args.data_dir).resolve()
        models = Path(args.models_dir).resolve() if args.models_dir else data / "models"
        ckpt_dirs = [models / "Stable-diffusion"]
        if args.ckpt_dir:
            ckpt_dirs.append(Path(args.ckpt_dir).resolve())
        styles = _styles_files(getattr(args, "styles_file", None), data)

        def folder(value) -> Path | None:
            return Path(value).resolve() if value else None

        return cls(data, models, tuple(ckpt_dirs), data / "outputs", REPO_DIR / "configs", folder(getattr(args, "lora_dir", None)),
                   folder(getattr(args, "embeddings_dir", None)), folder(getattr(args, "vae_dir", None)), styles,
                   folder(getattr(args, "ui_settings_file", None)), folder(getattr(args, "ui_config_file", None)),
                   tuple((name, folder(getattr(args, flag[2:].replace("-", "_"), None))) for flag, name in EXTRA_MODEL_FLAGS.items()
                         if getattr(args, flag[2:].replace("-", "_"), None)), folder(getattr(args, "localizations_dir", None)))

    @property
    def loras(self) -> Path:
        return self.lora_dir or self.models_dir / "Lora"

    @property
    def embeddings(self) -> Path:
        return self.embeddings_dir or self.models_dir / "embeddings"

    @property
    def vaes(self) -> Path:
        return self.vae_dir or self.models_dir / "VAE"

    def model_dir(self, name: str) -> Path:
        """The folder of one kind of model by its models/ subfolder name (`ESRGAN`, `GFPGAN`,
        `VAE-approx`, ...): the folder its A1111 flag gave, else <models-dir>/<name>."""
        return dict(self.model_dirs).get(name) or self.models_dir / name

    @property
    def localizations(self) -> Path:
        """The user's UI translations (A1111's --localizations-dir); the shipped ones are in configs/localizations."""
        return self.localizations_dir or self.data_dir / "localizations"

    @property
    def settings(self) -> Path:
        return self.settings_file or self.data_dir / "config.json"

    @property
    def ui_config(self) -> Path:
        return self.ui_config_file or self.data_dir / "ui-config.json"

    @property
    def gallery_index(self) -> Path:
        return self.data_dir / "gallery.sqlite3"

    @property
    def hash_cache(self) -> Path:
        return self.data_dir / "cache.json"

    @property
    def extensions_dir(self) -> Path:
        """User-installed extensions (A1111's <data-dir>/extensions); the shipped ones are in the repo's extensions-builtin/."""
        return self.data_dir / "extensions"

    def ensure(self) -> None:
        (self.models_dir / "Stable-diffusion").mkdir(parents=True, exist_ok=True)
        for folder in (self.loras, self.embeddings, self.vaes):
            folder.mkdir(parents=True, exist_ok=True)
        self.outputs_dir.mkdir(parents=True, exist_ok=True)


def _styles_files(patterns: list[str] | None, data_dir: Path) -> tuple[Path, ...]:
    """A1111's --styles-file: each pattern may be a wildcard; a plain path is kept even if it
    does not exist yet (new styles are saved there). Default <data-dir>/styles.csv."""
    import glob

    if not patterns:
        return (data_dir / "styles.csv",)
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(str(pattern))) if glob.has_magic(str(pattern)) else [str(pattern)]
        found += [Path(m).resolve() for m in matches if Path(m).resolve() not in found]
    return tuple(found) or (data_dir / "styles.csv",)


@dataclass(frozen=True)
class OutputSettings:
    """The saving part of the settings (config.json keys, A1111's defaults), as one value a
    change replaces whole: writers are rebuilt from it, never half-updated."""

    samples_save: bool = True
    samples_format: str = "png"
    samples_filename_pattern: str = ""
    grid_save: bool = True
    grid_format: str = "png"
    enable_pnginfo: bool = True
    jpeg_quality: int = 80
    webp_lossless: bool = False
    save_to_dirs: bool = True
    grid_save_to_dirs: bool = True
    directories_filename_pattern: str = "[date]"
    directories_max_prompt_words: int = 8
    outdir_txt2img_samples: str = "outputs/txt2img-images"
    outdir_txt2img_grids: str = "outputs/txt2img-grids"
    outdir_img2img_samples: str = "outputs/img2img-images"
    outdir_img2img_grids: str = "outputs/img2img-grids"
    outdir_extras_samples: str = "outputs/extras-images"
    use_original_name_batch: bool = True
    save_txt: bool = False  # a .txt with the infotext beside every saved image

    @classmethod
    def from_values(cls, values: dict) -> "OutputSettings":
        """From a settings dict (config.json's values); keys it lacks keep their defaults."""
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})

    def resolve(self, data_dir: Path, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else data_dir / path
