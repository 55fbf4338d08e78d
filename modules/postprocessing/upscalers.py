"""Model upscalers: super-resolution networks (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT and every
other layout spandrel knows) from A1111's folders, as entries of the Extras and hires-fix
upscaler lists.

Listing reads file names only, so start-up stays fast; a model is read on first use, weights
only (torch's weights-only unpickler, or safetensors), and handed to spandrel, which works out
the architecture. Inference runs tile by tile (A1111's `ESRGAN_tile`, `ESRGAN_tile_overlap`)
with the overlaps blended, so large pictures fit in memory and show no seams.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from PIL import Image

from modules.models.weights_file import read_weights, short_reason
from modules.generation.upscaling import Upscaler, UpscaleInterrupted, UpscalerRegistry, UpscaleWatch, builtin_upscalers

if TYPE_CHECKING:
    import torch
    from spandrel import ImageModelDescriptor

log = logging.getLogger(__name__)

SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")
MAX_PASSES = 3  # a 2x model reaches 8x in three passes; A1111 stops there too
DEFAULT_TILE, DEFAULT_OVERLAP = 192, 8  # A1111's ESRGAN_tile and ESRGAN_tile_overlap

# The names A1111 users know for the well-known files, by (folder, file stem): (name, scale).
KNOWN_MODELS: Mapping[tuple[str, str], tuple[str, int]] = MappingProxyType({
    ("RealESRGAN", "RealESRGAN_x4plus"): ("R-ESRGAN 4x+", 4),
    ("RealESRGAN", "RealESRGAN_x4plus_anime_6B"): ("R-ESRGAN 4x+ Anime6B", 4),
    ("RealESRGAN", "RealESRGAN_x2plus"): ("R-ESRGAN 2x+", 2),
    ("RealESRGAN", "realesr-general-x4v3"): ("R-ESRGAN General 4xV3", 4),
    ("RealESRGAN", "realesr-general-wdn-x4v3"): ("R-ESRGAN General WDN 4xV3", 4),
    ("RealESRGAN", "realesr-animevideov3"): ("R-ESRGAN AnimeVideo", 4),
    ("SwinIR", "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN"): ("SwinIR 4x", 4),
    ("DAT", "DAT_x2"): ("DAT x2", 2),
    ("DAT", "DAT_x3"): ("DAT x3", 3),
    ("DAT", "DAT_x4"): ("DAT x4", 4),
})
FACE_ARCHITECTURES = ("GFPGAN", "RestoreFormer", "CodeFormer")  # spandrel ids of face restorers
_SCALE_IN_NAME = re.compile(r"(?:^|[^a-z0-9])(?:x([1-8])|([1-8])x)(?![0-9])")


def scale_from_name(stem: str) -> int:
    """The factor a file name announces ("4x-UltraSharp", "RealESRGAN_x2plus"), else 4: the
    list shows it before the model is read; the model's own scale replaces it once loaded."""
    found = _SCALE_IN_NAME.search(stem.lower())
    return int(found.group(1) or found.group(2)) if found else 4


@dataclass(frozen=True)
class TileSettings:
    """A1111's `ESRGAN_tile` (input pixels a side, 0: the whole picture at once) and
    `ESRGAN_tile_overlap` (input pixels shared by neighbouring tiles, blended)."""

    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP


class UpscalerModels:
    """Reads model files and keeps the last `keep` loaded (an upscaler model can hold hundreds
    of MB of GPU memory next to the checkpoint). fp16 on CUDA where the architecture allows it,
    float32 elsewhere. Thread-safe: Extras and hires fix may ask from different threads."""

    def __init__(self, device: "torch.device | str | None" = None, half: bool = True, keep: int = 1, tiles: TileSettings = TileSettings(),
                 console: bool = True, device_id: int | None = None):
        self._device = device
        self._device_id = device_id or 0  # the CUDA card when `device` is left to be found
        self.half = half
        self.keep = max(1, keep)
        self.tiles = tiles
        self.console = console
        self._loaded: OrderedDict[tuple[str, float], ImageModelDescriptor] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def device(self) -> "torch.device":
        import torch

        if self._device is None:
            self._device = torch.device("cuda", self._device_id) if torch.cuda.is_available() else torch.device("cpu")
        return torch.device(self._device)

    def use_settings(self, changed: dict) -> None:
        """The settings store's values (ESRGAN_tile, ESRGAN_tile_overlap) from the next tile on."""
        tile, overlap = changed.get("ESRGAN_tile", self.tiles.tile), changed.get("ESRGAN_tile_overlap", self.tiles.overlap)
        self.tiles = TileSettings(int(tile), int(overlap))

    def load(self, path: Path) -> "ImageModelDescriptor":
        """The model in `path`, read now unless it is still loaded (and unchanged on disk).
        ValueError naming the file and the reason for anything that is not a 3-channel
        super-resolution model."""
        path = Path(path)
        try:
            key = (str(path), path.stat().st_mtime)
        except OSError:
            raise ValueError(f"Upscaler model {path.name} is gone from {path.parent}.") from None
        with self._lock:
            model = self._loaded.pop(key, None)
            if model is None:
                self._free()  # the old one first: two large models need not fit at once
                model = self._place(read_upscaler(path))
            self._loaded[key] = model
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
            return model

    def _place(self, model: "ImageModelDescriptor") -> "ImageModelDescriptor":
        import torch

        model = model.to(self.device).eval()
        if self.device.type == "cuda" and self.half and model.supports_half:
            model = model.to(torch.float16)
        return model

    def _free(self) -> None:
        """Drop all but the newest `keep - 1` models and give their memory back."""
        while len(self._loaded) >= self.keep:
            self._loaded.popitem(last=False)
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    def unload(self) -> None:
        """Free every loaded upscaler model (they load again on next use)."""
        with self._lock:
            self._loaded.clear()
            self._free()

    @property
    def loaded(self) -> list[str]:
        return [name for name, _ in self._loaded]


def read_upscaler(path: Path) -> "ImageModelDescriptor":
    """The super-resolution model in `path`, on the CPU in float32. Reads tensors only: a
    pickle that needs any other Python object is refused, not run. The architecture is
    detected before anything is built, so a face model in the wrong folder costs no memory."""
    from spandrel import MAIN_REGISTRY, ImageModelDescriptor, canonicalize_state_dict

    state = canonicalize_state_dict(read_weights(path, "Upscaler model"))
    arch = next((a.architecture for a in MAIN_REGISTRY.architectures("detection") if a.architecture.detect(state)), None)
    if arch is None:
        raise ValueError(f"Upscaler model {path.name}: unknown layout; spandrel recognises no architecture in it.")
    if arch.id in FACE_ARCHITECTURES:
        raise ValueError(f"Upscaler model {path.name} is a {arch.name} face restoration model, not an upscaler: "
                         "it belongs in models/GFPGAN or models/Codeformer.")
    try:
        model = arch.load(state)
    except Exception as exc:  # a known layout with missing or misshapen tensors
        raise ValueError(f"Upscaler model {path.name}: its weights do not fit the {arch.name} architecture they resemble ({short_reason(exc)}).") from None
    if not isinstance(model, ImageModelDescriptor):
        raise ValueError(f"Upscaler model {path.name} is a {arch.name} {model.purpose.lower()} model, not an upscaler.")
    if model.purpose == "FaceSR":
        raise ValueError(f"Upscaler model {path.name} is a {arch.name} face restoration model, not an upscaler: "
                         "it belongs in models/GFPGAN or models/Codeformer.")
    if model.purpose != "SR" or model.scale < 2:
        raise ValueError(f"Upscaler model {path.name} is a {arch.name} {model.scale}x restoration model, not an upscaler.")
    if model.input_channels != 3 or model.output_channels != 3:
        raise ValueError(f"Upscaler model {path.name} works on {model.input_channels}-channel pictures; only RGB upscalers are used.")
    return model


# ------------------------------------------------------------------------------ inference

def upscale_tiled(model: "ImageModelDescriptor", image: Image.Image, tiles: TileSettings, watch: UpscaleWatch | None = None,
                  console: bool = False) -> Image.Image:
    """One pass of `model` over `image` (RGB), tile by tile. Tiles overlap by `tiles.overlap`
    input pixels; in the overlaps each tile's weight falls off linearly towards its edge, so
    neighbours blend without seams. Stops between tiles when the watch says so."""
    import numpy as np
    import torch
    from tqdm import tqdm

    scale = model.scale
    width, height = image.size
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
    boxes = tile_boxes(width, height, tiles)
    out = torch.zeros(1, 3, height * scale, width * scale)
    weight = torch.zeros(1, 1, height * scale, width * scale)
    overlap = min(tiles.overlap, tiles.tile // 2) * scale if len(boxes) > 1 else 0
    bar = tqdm(total=len(boxes), desc="Upscaling tiles", unit="tile", disable=not console or len(boxes) == 1, leave=False)
    try:
        for done, (left, top, right, bottom) in enumerate(boxes, 1):
            if watch is not None and watch.stop is not None and watch.stop():
                raise UpscaleInterrupted()
            part = pixels[:, :, top:bottom, left:right].to(model.device, model.dtype)
            result = model(part).float().cpu()
            ramp = _ramp(result.shape[-1], result.shape[-2], overlap, left > 0, right < width, top > 0, bottom < height)
            box = (slice(None), slice(None), slice(top * scale, bottom * scale), slice(left * scale, right * scale))
            out[box] += result * ramp
            weight[box] += ramp
            bar.update(1)
            if watch is not None and watch.on_tile is not None:
                watch.on_tile(done, len(boxes))
    finally:
        bar.close()
    array = (out / weight).clamp_(0, 1).mul_(255).round_().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return Image.fromarray(array, "RGB")


def tile_boxes(width: int, height: int, tiles: TileSettings) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of each tile in input pixels, rows top to bottom: as few
    tiles as cover each side with at least `overlap` shared, spread evenly from edge to edge."""
    size = tiles.tile
    if size <= 0 or (width <= size and height <= size):
        return [(0, 0, width, height)]
    overlap = max(0, min(tiles.overlap, size // 2))

    def starts(length: int) -> list[int]:
        if length <= size:
            return [0]
        count = -(-(length - overlap) // (size - overlap))  # ceil
        return [round(i * (length - size) / (count - 1)) for i in range(count)]

    return [(x, y, min(x + size, width), min(y + size, height)) for y in starts(height) for x in starts(width)]


def _ramp(width: int, height: int, overlap: int, left: bool, right: bool, top: bool, bottom: bool) -> "torch.Tensor":
    """A tile's blending weight: 1 inside, falling linearly (never to 0) across `overlap`
    output pixels on each side that has a neighbour."""
    import torch

    def axis(length: int, start: bool, end: bool) -> torch.Tensor:
        weights = torch.ones(length)
        span = min(overlap, length // 2)
        if span > 0:
            rise = (torch.arange(span, dtype=torch.float32) + 0.5) / span
            if start:
                weights[:span] = rise
            if end:
                weights[length - span:] = rise.flip(0)
        return weights

    return (axis(height, top, bottom)[:, None] * axis(width, left, right)[None, :])[None, None]


# ------------------------------------------------------------------------------ the list

class ModelUpscaler(Upscaler):
    """One model file as an upscaler list entry. Repeats the model until the picture is at
    least the asked size (at most three passes), then a Lanczos resize gives the exact size,
    as A1111 does: 2x with a 4x model is one 4x pass and a resize down."""

    def __init__(self, name: str, path: Path, folder: str, models: UpscalerModels, watch: UpscaleWatch | None = None):
        self.name, self.path, self.folder, self.models, self.watch = name, Path(path), folder, models, watch
        self.model_name = folder
        self.model_path = str(self.path)
        self.scale = KNOWN_MODELS.get((folder, self.path.stem), (None, scale_from_name(self.path.stem)))[1]

    def watched(self, watch: UpscaleWatch) -> "ModelUpscaler":
        copy = ModelUpscaler(self.name, self.path, self.folder, self.models, watch)
        copy.scale = self.scale
        return copy

    def load(self) -> "ImageModelDescriptor":
        model = self.models.load(self.path)
        self.scale = model.scale
        return model

    def upscale(self, image: Image.Image, scale: float) -> Image.Image:
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        result = image.convert("RGB")
        if target[0] > result.width or target[1] > result.height:
            model = self.load()
            for _ in range(MAX_PASSES):
                result = upscale_tiled(model, result, self.models.tiles, self.watch, self.models.console)
                if result.width >= target[0] and result.height >= target[1]:
                    break
        return result if result.size == target else result.resize(target, Image.Resampling.LANCZOS)


def scan_upscalers(folders: Iterable[tuple[str, Path]], models: UpscalerModels, taken: Iterable[str] = ()) -> list[ModelUpscaler]:
    """Every model file in the folders (not their subfolders), folder by folder in name order,
    named as A1111 names them. A name already taken (a built-in, a latent mode, a file of the
    same stem elsewhere) gets its folder or suffix added, so every file stays reachable."""
    used = {name.casefold() for name in taken}
    found: list[ModelUpscaler] = []
    for folder, directory in folders:
        try:
            files = sorted((p for p in Path(directory).iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES), key=lambda p: p.name.lower())
        except OSError:
            continue  # no such folder: nothing of that kind
        for path in files:
            base = KNOWN_MODELS.get((folder, path.stem), (path.stem, 0))[0]
            name = next((n for n in (base, f"{base} ({folder})", f"{base} ({folder}, {path.suffix[1:]})") if n.casefold() not in used), None)
            if name is None:
                continue
            used.add(name.casefold())
            found.append(ModelUpscaler(name, path, folder, models))
    return found


class UpscalerLibrary:
    """The app's upscaler list: the built-ins, then the model files of `folders` ((A1111
    folder name, path) pairs). A folder whose modification time changed (a file added,
    downloaded or removed) is rescanned when the list is next asked for; `refresh` rescans
    now. A rescan swaps in a new registry; jobs holding the old one finish with it.
    `reserved` names (hires fix's latent modes) are not given to files."""

    def __init__(self, folders: Iterable[tuple[str, Path]], models: UpscalerModels | None = None, reserved: Iterable[str] = ()):
        self.folders = tuple((name, Path(path)) for name, path in folders)
        self.models = models or UpscalerModels()
        self.reserved = tuple(reserved)
        self._registry = UpscalerRegistry()
        self._stamp: tuple = ()
        self.refresh()

    @property
    def registry(self) -> UpscalerRegistry:
        if self._folder_stamp() != self._stamp:
            self.refresh()
        return self._registry

    def _folder_stamp(self) -> tuple:
        def mtime(path: Path) -> int | None:
            try:
                return path.stat().st_mtime_ns
            except OSError:
                return None

        return tuple(mtime(path) for _, path in self.folders)

    def refresh(self) -> UpscalerRegistry:
        self._stamp = self._folder_stamp()
        builtins = builtin_upscalers()
        files = scan_upscalers(self.folders, self.models, [*self.reserved, *(u.name for u in builtins)])
        self._registry = UpscalerRegistry([*builtins, *files])
        return self._registry

    def model_upscalers(self) -> list[ModelUpscaler]:
        registry = self.registry
        return [registry.get(name) for name in registry.names if isinstance(registry.get(name), ModelUpscaler)]

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(u.name for u in self.model_upscalers())

    def realesrgan_models(self) -> list[dict[str, Any]]:
        """GET /sdapi/v1/realesrgan-models: A1111's {name, path, scale} for models/RealESRGAN."""
        return [{"name": u.name, "path": u.model_path, "scale": u.scale} for u in self.model_upscalers() if u.folder == "RealESRGAN"]


def library_for(paths, cpu: bool = False, half: bool = True, console: bool = True, reserved: Iterable[str] = (),
                device_id: int | None = None) -> UpscalerLibrary:
    """The library over A1111's upscaler folders of an `options.Paths`: on CUDA when there is
    one (GPU `device_id`, --device-id; unless `cpu`: A1111's --use-cpu esrgan/all), fp16 there unless not `half`."""
    from modules.options import UPSCALER_FOLDERS

    return UpscalerLibrary([(name, paths.model_dir(name)) for name in UPSCALER_FOLDERS],
                           UpscalerModels("cpu" if cpu else None, half, console=console, device_id=device_id), reserved=reserved)


def job_watch(control, progress=None, skip: bool = False) -> UpscaleWatch:
    """A watch for a job: stops on interrupt (and on skip with `skip`; `control` is a
    RunControl) and counts tiles as the job's steps (`progress` is the job's Progress)."""

    def on_tile(done: int, total: int) -> None:
        if progress is not None:
            progress.step, progress.steps = done, total

    if control is None:
        stop = None
    else:
        stop = control.stop_requested if skip else (lambda: control.interrupted)
    return UpscaleWatch(on_tile=on_tile, stop=stop)
