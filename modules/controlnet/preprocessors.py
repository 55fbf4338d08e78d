"""ControlNet preprocessors: turning a picture into the map a ControlNet reads (edges, depth, pose...).

Names, display labels, slider specs, tags and list order are the A1111 ControlNet extension's,
because units, `/controlnet/module_list`, `/controlnet/control_types` and infotexts carry them.
The ones here need no weights (opencv/numpy); the model-based ones (depth, pose, line art...)
live in `annotators.py` and load their weights from the annotator folder
(`models/ControlNetPreprocessor`). Like the extension, a preprocessor with a resolution slider
scales the picture so its short side is that resolution (padding to a multiple of 64 while the
detector runs), and returns an RGB map; the inpaint ones return RGBA (alpha = the mask).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from PIL import Image

from modules.controlnet import resize
from modules.generation.image_input import to_rgb


@dataclass(frozen=True)
class Slider:
    """One of a preprocessor's sliders; `api_json` is its `/controlnet/module_list` form."""

    label: str
    value: float
    minimum: float
    maximum: float
    step: float = 0.01

    def api_json(self) -> dict:
        return {"name": self.label, "value": self.value, "min": self.minimum, "max": self.maximum, "step": self.step}

    def settle(self, requested: float) -> float:
        """The extension's rule: a value outside the slider's range (-1 included) is the default."""
        return self.value if requested < self.minimum or requested > self.maximum else requested


RESOLUTION = Slider("Resolution", 512, 64, 2048, 8)


@dataclass(frozen=True)
class DetectContext:
    """What a detector may need besides the picture and its three numbers."""

    rng: np.random.RandomState  # seeded per job, so shuffle gives the same map for the same seed
    mask: np.ndarray | None  # HxW uint8, 255 = repaint (inpaint preprocessors)
    detector: Callable[[str], Any]  # an annotator's loaded model by its key (annotators.py), cached
    found: dict = field(default_factory=dict)  # what a detector reports beside its map ("poses": openpose's JSON)


@dataclass(frozen=True)
class Detection:
    """A preprocessor's result: the map, and for the openpose modules the poses it found in the
    extension's JSON (OpenPose's format, keypoints in 0..1 of the map; `/controlnet/detect`'s "poses")."""

    image: Image.Image
    poses: dict | None = None


# image (HxWx3 uint8 RGB), resolution, threshold a, threshold b, context -> map (HxW, HxWx3 or HxWx4 uint8)
Detect = Callable[[np.ndarray, int, float, float, DetectContext], np.ndarray]


@dataclass(frozen=True)
class Preprocessor:
    """A preprocessor as the extension lists it.

    `name` is its internal key (what `/controlnet/module_list` returns, "depth"); `label` what
    the page shows ("depth_midas"); both are accepted wherever a module is named. A `None`
    resolution means the map keeps the picture's size (or `fixed_resolution`).
    """

    name: str
    detect: Detect
    label: str = ""
    tags: tuple[str, ...] = ()
    resolution: Slider | None = RESOLUTION
    threshold_a: Slider | None = None
    threshold_b: Slider | None = None
    priority: int = 0  # the extension's sorting priority: higher comes first in lists
    weights: tuple[str, ...] = ()  # annotator files (in the annotator folder) it needs
    download: str = ""  # the catalog entry (`--download NAME`) that fetches them, if there is one
    weights_source: str = ""  # where they are published, for a download without a catalog entry
    needs_mask: bool = False
    fixed_resolution: int = 512
    aliases: tuple[str, ...] = ()  # older names the extension accepted

    @property
    def display_name(self) -> str:
        return self.label or self.name

    @property
    def control_type(self) -> str:
        """The first of its control types ("Canny"), "" when it only shows under "All"."""
        return self.tags[0] if self.tags else ""

    @property
    def sliders(self) -> tuple[Slider, ...]:
        return tuple(s for s in (self.resolution, self.threshold_a, self.threshold_b) if s is not None)


# ---- helpers shared by the detectors -------------------------------------------------------

def to_rgb_array(image: Image.Image) -> np.ndarray:
    """An RGB uint8 array, flattened as every upload is (modules.generation.image_input.to_rgb:
    transparency on white, as the extension's HWC3 does; colour profiles and 16-bit values too)."""
    return np.asarray(to_rgb(image), dtype=np.uint8)


def hwc3(x: np.ndarray) -> np.ndarray:
    if x.ndim == 2:
        x = x[:, :, None]
    if x.shape[2] == 1:
        x = np.concatenate([x, x, x], axis=2)
    return np.ascontiguousarray(x)


def scale_short_side(image: np.ndarray, resolution: int) -> np.ndarray:
    """The picture scaled so its short side is `resolution` (area when shrinking, cubic when growing)."""
    h, w = image.shape[:2]
    k = float(resolution) / float(min(h, w))
    size = (max(1, int(np.round(w * k))), max(1, int(np.round(h * k))))
    if size == (w, h):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA)


def run_padded(image: np.ndarray, resolution: int, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Run `fn` on the scaled picture padded (edge pixels) to multiples of 64, then cut the padding off."""
    scaled = scale_short_side(image, resolution)
    h, w = scaled.shape[:2]
    pad_h, pad_w = -h % 64, -w % 64
    padded = np.pad(scaled, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return np.ascontiguousarray(fn(np.ascontiguousarray(padded))[:h, :w])


# ---- the built-in detectors (no weights) ----------------------------------------------------

def _none(image, resolution, a, b, ctx):
    return image


def _canny(image, resolution, low, high, ctx):
    return run_padded(image, resolution, lambda x: cv2.Canny(x, int(low), int(high)))


def _invert(image, resolution, a, b, ctx):
    return 255 - image


def _threshold(image, resolution, level, b, ctx):
    def binarize(x):
        out = np.zeros_like(x)
        out[np.min(x, axis=2) > level] = 255
        return out
    return run_padded(image, resolution, binarize)


def _scribble_xdog(image, resolution, level, b, ctx):
    def xdog(x):
        fine = cv2.GaussianBlur(x.astype(np.float32), (0, 0), 0.5)
        coarse = cv2.GaussianBlur(x.astype(np.float32), (0, 0), 5.0)
        dog = (255 - np.min(coarse - fine, axis=2)).clip(0, 255).astype(np.uint8)
        out = np.zeros_like(x)
        out[2 * (255 - dog) > level] = 255
        return out
    return run_padded(image, resolution, xdog)


def _blur_gaussian(image, resolution, sigma, b, ctx):
    return cv2.GaussianBlur(scale_short_side(image, resolution), (0, 0), float(sigma))


def _tile_resample(image, resolution, rate, b, ctx):
    if rate < 1.1:
        return image
    h, w = image.shape[:2]
    size = (max(1, int(w / float(rate))), max(1, int(h / float(rate))))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _lineart_standard(image, resolution, a, b, ctx):
    def lines(x):
        x = x.astype(np.float32)
        blurred = cv2.GaussianBlur(x, (0, 0), 6.0)
        intensity = np.min(blurred - x, axis=2).clip(0, 255)
        strong = intensity[intensity > 8]
        intensity /= max(16.0, float(np.median(strong)) if strong.size else 16.0)
        return (intensity * 127).clip(0, 255).astype(np.uint8)
    return run_padded(image, resolution, lines)


def _color_grid(image, resolution, a, b, ctx):
    h, w = image.shape[:2]
    if h < w:
        size = (int(round(w / h * resolution)), int(resolution))
    else:
        size = (int(resolution), int(round(h / w * resolution)))
    scaled = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    cells = cv2.resize(scaled, (max(1, size[0] // 64), max(1, size[1] // 64)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(cells, size, interpolation=cv2.INTER_NEAREST)


def _noise_disk(rng: np.random.RandomState, h: int, w: int, f: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid blown up with cubic interpolation."""
    noise = rng.uniform(low=0, high=1, size=((h // f) + 2, (w // f) + 2, 1))
    noise = cv2.resize(noise, (w + 2 * f, h + 2 * f), interpolation=cv2.INTER_CUBIC)[f:f + h, f:f + w]
    noise -= np.min(noise)
    noise /= max(float(np.max(noise)), 1e-8)
    return noise[:, :, None]


def _shuffle(image, resolution, a, b, ctx):
    x = scale_short_side(image, resolution)
    h, w = x.shape[:2]
    flow_x = _noise_disk(ctx.rng, h, w, 256) * float(w - 1)
    flow_y = _noise_disk(ctx.rng, h, w, 256) * float(h - 1)
    flow = np.concatenate([flow_x, flow_y], axis=2).astype(np.float32)
    return cv2.remap(x, flow, None, cv2.INTER_LINEAR)


def _recolor(channel_of: Callable[[np.ndarray], np.ndarray]) -> Detect:
    def detect(image, resolution, gamma, b, ctx):
        channel = channel_of(image).astype(np.float32) / 255.0
        return (channel ** float(gamma) * 255.0).clip(0, 255).astype(np.uint8)
    return detect


# The extension converts with the BGR codes on an RGB picture; kept so maps match its own.
_recolor_luminance = _recolor(lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2LAB)[:, :, 0])
_recolor_intensity = _recolor(lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2HSV)[:, :, 2])


def _inpaint(image, resolution, a, b, ctx):
    if ctx.mask is None:
        raise ValueError("The inpaint preprocessors need a mask: draw one on the unit's image, or send "
                         "\"mask\" (mask_image) with the unit, white where to repaint.")
    return np.concatenate([image, ctx.mask[:, :, None]], axis=2)


_GAMMA = Slider("Gamma Correction", 1.0, 0.1, 2.0, 0.001)

BUILTIN_PREPROCESSORS: tuple[Preprocessor, ...] = (
    Preprocessor("none", _none, tags=("InstructP2P",), priority=10),
    Preprocessor("canny", _canny, tags=("Canny",), priority=100,
                 threshold_a=Slider("Low Threshold", 100, 1, 255, 1), threshold_b=Slider("High Threshold", 200, 1, 255, 1)),
    Preprocessor("invert", _invert, label="invert (from white bg & black line)",
                 tags=("Canny", "Lineart", "Scribble", "MLSD"), resolution=None, priority=20),
    Preprocessor("blur_gaussian", _blur_gaussian, tags=("Tile",), threshold_a=Slider("Sigma", 9.0, 0.01, 64.0)),
    Preprocessor("scribble_xdog", _scribble_xdog, tags=("Scribble", "SparseCtrl"), threshold_a=Slider("XDoG Threshold", 32, 1, 64)),
    Preprocessor("shuffle", _shuffle, tags=("Shuffle",), resolution=None),
    Preprocessor("inpaint", _inpaint, label="inpaint_global_harmonious", tags=("Inpaint",), resolution=None, needs_mask=True),
    Preprocessor("inpaint_only", _inpaint, tags=("Inpaint",), resolution=None, needs_mask=True, priority=100),
    Preprocessor("threshold", _threshold, threshold_a=Slider("Binarization Threshold", 127, 0, 255), aliases=("binary",)),
    Preprocessor("tile_resample", _tile_resample, tags=("Tile",), priority=100,
                 threshold_a=Slider("Down Sampling Rate", 1.0, 1.0, 8.0)),
    Preprocessor("lineart_standard", _lineart_standard, label="lineart_standard (from white bg & black line)",
                 tags=("Lineart",), priority=100),
    Preprocessor("color", _color_grid, label="t2ia_color_grid", tags=("T2I-Adapter",)),
    Preprocessor("recolor_luminance", _recolor_luminance, tags=("Recolor",), threshold_a=_GAMMA, priority=100),
    Preprocessor("recolor_intensity", _recolor_intensity, tags=("Recolor",), threshold_a=_GAMMA),
)

# Control types whose model names also match these words (the extension's filter aliases).
_TYPE_ALIASES = {
    "instructp2p": ("ip2p",), "segmentation": ("seg",), "normalmap": ("normal",),
    "t2i-adapter": ("t2i_adapter", "t2iadapter", "t2ia"), "ip-adapter": ("ip_adapter", "ipadapter"),
    "openpose": ("openpose", "densepose"), "instant-id": ("instant_id", "instantid"),
    "scribble": ("sketch",), "tile": ("blur",),
}
# Control types a "union" ControlNet (xinsir's ControlNet++) also serves.
_UNION_TYPES = ("openpose", "depth", "softedge", "scribble", "canny", "lineart", "mlsd", "normalmap",
                "segmentation", "inpaint", "tile")


def _model_filters(control_type: str) -> set[str]:
    key = control_type.lower()
    return {key, *_TYPE_ALIASES.get(key, ()), *(("union",) if key in _UNION_TYPES else ())}


class Preprocessors:
    """The preprocessors this server offers, and the annotator models they have loaded.

    Made once by the app with the annotator weights folder; `cache_size` annotator models stay
    loaded (least recently used goes first); loading and evicting them is guarded by a lock.
    """

    def __init__(self, weights_dir: str | Path | None = None, device: str = "cpu", cache_size: int = 2,
                 extra: tuple[Preprocessor, ...] | None = None):
        from modules.controlnet import annotators  # the model-based ones; they import controlnet_aux lazily

        self.weights_dir = Path(weights_dir) if weights_dir else None
        self.device = device
        self.cache_size = max(1, int(cache_size))
        self._detectors: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()  # the worker and a page preview may both load annotators
        every = BUILTIN_PREPROCESSORS + annotators.ANNOTATOR_PREPROCESSORS + tuple(extra or ())
        self._by_name: dict[str, Preprocessor] = {}
        for p in every:
            for key in (p.name, p.label, *p.aliases):
                if key:
                    self._by_name.setdefault(key, p)
                    self._by_name.setdefault(key.lower(), p)
        # The extension's order: "none" first, then by priority, then label, both descending.
        rest = sorted((p for p in every if p.name != "none"),
                      key=lambda p: str(p.priority).zfill(8) + p.display_name, reverse=True)
        self._sorted = [p for p in every if p.name == "none"][:1] + rest

    # ---- lookup ----
    def names(self, alias_names: bool = False) -> list[str]:
        """Every module, in the extension's list order: internal names, or the page's labels."""
        return [p.display_name if alias_names else p.name for p in self._sorted]

    def labels(self) -> list[str]:
        return self.names(alias_names=True)

    def all(self) -> list[Preprocessor]:
        return list(self._sorted)

    def get(self, name: str) -> Preprocessor:
        """A preprocessor by its name, label or an older alias ("depth", "depth_midas"); None/"" is "none"."""
        key = (name or "none").strip()
        found = self._by_name.get(key) or self._by_name.get(key.lower())
        if found is None:
            raise ValueError(f"Unknown ControlNet preprocessor (module) {name!r}; choose one of: {', '.join(self.labels())}.")
        return found

    # ---- parameters ----
    def settle(self, name: str, resolution: float = -1, threshold_a: float = -1, threshold_b: float = -1) -> tuple[int, float, float]:
        """The values a run uses: out-of-range ones (-1 included) become the slider's default."""
        p = self.get(name)
        res = int(p.resolution.settle(resolution)) if p.resolution else p.fixed_resolution
        a = p.threshold_a.settle(threshold_a) if p.threshold_a else threshold_a
        b = p.threshold_b.settle(threshold_b) if p.threshold_b else threshold_b
        return res, float(a), float(b)

    @staticmethod
    def pixel_perfect_resolution(image_size: tuple[int, int], width: int, height: int, resize_mode: str | int) -> int:
        return resize.pixel_perfect_resolution(image_size, width, height, resize_mode)

    # ---- running ----
    @property
    def folder(self) -> Path:
        return self.weights_dir or Path("models") / "ControlNetPreprocessor"

    def missing_weights(self, name: str) -> list[Path]:
        """The annotator files `name` needs that are not in the folder (nor one folder down)."""
        from modules.controlnet.annotators import find_weights

        return [self.folder / f for f in self.get(name).weights if find_weights(self.folder, f) is None]

    def check_weights(self, name: str) -> None:
        """A ValueError naming the missing file, its folder and the download that brings it."""
        missing = self.missing_weights(name)
        if missing:
            p = self.get(name)
            how = (f"download it with `--download {p.download}` (launch.py) or put the file there"
                   if p.download else f"put the file there (published at {p.weights_source or 'its authors'})")
            raise ValueError(f"The {p.display_name} preprocessor needs the annotator weights {missing[0].name} "
                             f"in {missing[0].parent}; {how}.")

    def _detector(self, key: str) -> Any:
        from modules.controlnet import annotators

        with self._lock:
            if key in self._detectors:
                self._detectors.move_to_end(key)
                return self._detectors[key]
            while len(self._detectors) >= self.cache_size:
                self._detectors.popitem(last=False)
            loaded = annotators.load_detector(key, self.folder, self.device)
            self._detectors[key] = loaded
            return loaded

    def unload(self) -> None:
        """Forget the loaded annotator models (they are reloaded when next needed)."""
        with self._lock:
            self._detectors.clear()

    def run(self, name: str, image: Image.Image, resolution: float = -1, threshold_a: float = -1, threshold_b: float = -1,
            mask: Image.Image | None = None, seed: int | None = None) -> Image.Image:
        """The detected map of `image`: RGB, or RGBA for the inpaint modules (alpha 255 = repaint).

        Resolution and thresholds out of the slider's range (-1) mean its default. `seed` makes
        random preprocessors (shuffle) repeatable; `mask` (white = repaint) is for inpaint.
        """
        return self.detect(name, image, resolution, threshold_a, threshold_b, mask=mask, seed=seed).image

    def detect(self, name: str, image: Image.Image, resolution: float = -1, threshold_a: float = -1, threshold_b: float = -1,
               mask: Image.Image | None = None, seed: int | None = None) -> Detection:
        """`run`, with what the detector found beside the map (openpose: the poses)."""
        p = self.get(name)
        if image is None:
            raise ValueError(f"The {p.display_name} preprocessor has no image to work on.")
        if image.width < 1 or image.height < 1:
            raise ValueError("The control image is empty.")
        self.check_weights(p.name)
        res, a, b = self.settle(p.name, resolution, threshold_a, threshold_b)
        pixels = to_rgb_array(image)
        mask_array = None
        if mask is not None:
            m = mask.convert("L")
            if m.size != image.size:
                m = m.resize(image.size, Image.Resampling.NEAREST)
            mask_array = np.where(np.asarray(m) > 127, 255, 0).astype(np.uint8)
        elif p.needs_mask and image.mode in ("RGBA", "LA"):
            # A picture with a transparent part (a canvas): the transparent part is what to repaint.
            alpha = np.asarray(image.getchannel("A"))
            if alpha.min() < 128:
                mask_array = np.where(alpha < 128, 255, 0).astype(np.uint8)
        rng = np.random.RandomState(None if seed is None else int(seed) & 0xFFFFFFFF)
        ctx = DetectContext(rng=rng, mask=mask_array, detector=self._detector)
        result = p.detect(pixels, res, a, b, ctx)
        result = np.asarray(result)
        if result.dtype != np.uint8:
            result = result.clip(0, 255).astype(np.uint8)
        if result.ndim == 3 and result.shape[2] == 4:
            picture = Image.fromarray(np.ascontiguousarray(result), "RGBA")
        else:
            picture = Image.fromarray(hwc3(result), "RGB")
        return Detection(picture, ctx.found.get("poses"))

    # ---- the extension's API shapes ----
    def module_detail(self, alias_names: bool = False) -> dict[str, dict]:
        """`/controlnet/module_list`'s `module_detail`: {module: {"model_free", "sliders"}}."""
        return {(p.display_name if alias_names else p.name): {"model_free": False, "sliders": [s.api_json() for s in p.sliders]}
                for p in self._sorted}

    def control_type_names(self) -> list[str]:
        return ["All"] + sorted({t for p in self._sorted for t in p.tags})

    def control_types(self, model_names: list[str]) -> dict[str, dict]:
        """`/controlnet/control_types`'s `control_types`: for each type, its modules, the models whose
        names match it, and the defaults the page selects."""
        models = ["None"] + [m for m in model_names if m != "None"]
        out = {}
        for control_type in self.control_type_names():
            if control_type == "All":
                out["All"] = {"module_list": self.labels(), "model_list": models,
                              "default_option": "none", "default_model": "None"}
                continue
            filters = _model_filters(control_type)
            matching = [m for m in models if m == "None" or any(f in m.lower() for f in filters)]
            default_model = "None"
            if len(matching) > 1:
                default_model = matching[1]
                for m in matching:
                    if "11" in m.split("[")[0]:
                        default_model = m
                        break
            modules = [p for p in self._sorted if control_type in p.tags or p.name == "none"]
            default = modules[1] if len(modules) > 1 else modules[0]
            out[control_type] = {"module_list": [p.display_name for p in modules], "model_list": matching,
                                 "default_option": default.display_name, "default_model": default_model}
        return out


__all__ = ["Preprocessor", "Preprocessors", "Slider", "DetectContext", "Detection", "BUILTIN_PREPROCESSORS", "RESOLUTION",
           "to_rgb_array", "run_padded", "scale_short_side", "hwc3"]
