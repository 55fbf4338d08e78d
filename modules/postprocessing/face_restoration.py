"""Face restoration: GFPGAN and CodeFormer networks (loaded by spandrel) applied to each face
OpenCV finds, as A1111's "Restore faces" and its Extras sliders do.

Each face is cut out as a 512-px square turned upright by the eyes, restored, and pasted back
through a feathered mask; `visibility` blends the restored face over the original (0 leaves
the picture untouched). Only the pixels under a face's mask change.

CodeFormer's architecture comes from the optional `spandrel-extra-arches` package (its
weights and code are under the non-commercial S-Lab licence); it is used only when that
package is installed, through a spandrel registry of our own, so spandrel's global registry
is never changed. The models are read weights-only (spandrel's restricted unpickler).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from modules.postprocessing.face_detection import Face, FaceDetector

log = logging.getLogger(__name__)

GFPGAN, CODEFORMER = "GFPGAN", "CodeFormer"
RESTORER_NAMES = (CODEFORMER, GFPGAN)  # A1111's face_restoration_model choices, in its order
MODEL_FOLDERS = {GFPGAN: "GFPGAN", CODEFORMER: "Codeformer"}  # models/ subfolders (A1111's names)
CATALOG_NAMES = {GFPGAN: "gfpgan-v1.4", CODEFORMER: "codeformer-v0.1.0"}  # configs/checkpoints.json entries
MODEL_SUFFIXES = (".pth", ".safetensors", ".ckpt", ".pt")
CROP_SIZE = 512  # both networks take 512x512 faces
# Where the eye centres sit in the 512-px face crops these networks were trained on (FFHQ alignment).
TEMPLATE_EYES = ((192.98, 239.95), (318.90, 240.19))
CODEFORMER_LICENCE = "CodeFormer needs the optional spandrel-extra-arches package (its code and weights are under the non-commercial S-Lab licence)"


def codeformer_supported() -> bool:
    """Whether CodeFormer's architecture is installed (the optional spandrel-extra-arches)."""
    return importlib.util.find_spec("spandrel_extra_arches") is not None


def spandrel_registry():
    """spandrel's architectures plus, when installed, the extra ones (CodeFormer): a copy, so
    the library's global registry stays as it was."""
    from spandrel import MAIN_REGISTRY

    registry = MAIN_REGISTRY.copy()
    if codeformer_supported():
        from spandrel_extra_arches import EXTRA_REGISTRY

        registry.add(*EXTRA_REGISTRY, ignore_duplicates=True)
    return registry


# ------------------------------------------------------------------ crop, restore, paste back

def alignment(face: Face, size: int = CROP_SIZE) -> np.ndarray:
    """The 2x3 similarity transform from picture pixels to a `size` crop in which the face's
    eyes land on the template's: level, centred, at the scale the networks were trained on."""
    (lx, ly), (rx, ry) = face.eyes
    (tlx, tly), (trx, try_) = ((x * size / CROP_SIZE, y * size / CROP_SIZE) for x, y in TEMPLATE_EYES)
    distance = max(math.hypot(rx - lx, ry - ly), 1.0)
    scale = math.hypot(trx - tlx, try_ - tly) / distance
    angle = math.atan2(ry - ly, rx - lx) - math.atan2(try_ - tly, trx - tlx)
    cos, sin = scale * math.cos(angle), scale * math.sin(angle)
    mid, target = ((lx + rx) / 2, (ly + ry) / 2), ((tlx + trx) / 2, (tly + try_) / 2)
    # rotate by -angle and scale about the eyes' midpoint, then move it onto the template's
    return np.array([[cos, sin, target[0] - cos * mid[0] - sin * mid[1]],
                     [-sin, cos, target[1] + sin * mid[0] - cos * mid[1]]], dtype=np.float64)


def feather_mask(size: int = CROP_SIZE) -> np.ndarray:
    """1 inside the crop, fading to 0 over its outer eighth, so a pasted face has no seam."""
    import cv2

    border = size // 16
    mask = np.zeros((size, size), np.float32)
    mask[2 * border:-2 * border, 2 * border:-2 * border] = 1.0
    return cv2.GaussianBlur(mask, (0, 0), border)


def paste_faces(image: Image.Image, faces: list[Face], restore_crop: Callable[[np.ndarray], np.ndarray], visibility: float = 1.0) -> Image.Image:
    """`image` (RGB) with each face cut out, restored by `restore_crop` (512x512x3 uint8 in
    and out) and pasted back through a feathered mask at `visibility`. Pixels outside every
    face's mask are returned unchanged, bit for bit."""
    import cv2

    picture = np.asarray(image.convert("RGB")).copy()
    if visibility <= 0 or not faces:
        return Image.fromarray(picture)
    height, width = picture.shape[:2]
    feather = feather_mask()
    for face in faces:
        forward = alignment(face)
        crop = cv2.warpAffine(picture, forward, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
        restored = restore_crop(crop)
        back = cv2.invertAffineTransform(forward)
        pasted = cv2.warpAffine(restored, back, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
        mask = cv2.warpAffine(feather, back, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        alpha = np.clip(mask * float(min(visibility, 1.0)), 0.0, 1.0)
        inside = alpha > 0
        if not inside.any():
            continue
        a = alpha[inside][:, None]
        mixed = picture[inside].astype(np.float32) * (1 - a) + pasted[inside].astype(np.float32) * a
        picture[inside] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    return Image.fromarray(picture)


# ------------------------------------------------------------------ the networks

class FaceRestorer:
    """One restorer (GFPGAN or CodeFormer) and the model file it uses from its folder. The
    network loads on first use and stays loaded until `unload`."""

    def __init__(self, name: str, folder: Path, device: Callable[[], Any] | None = None):
        if name not in RESTORER_NAMES:
            raise ValueError(f"Unknown face restorer '{name}': choose one of {', '.join(RESTORER_NAMES)}.")
        self.name, self.folder = name, Path(folder)
        self._device = device
        self._loaded: tuple[Path, float, Any] | None = None  # (file, its mtime, spandrel descriptor)
        self._lock = threading.Lock()

    def model_file(self) -> Path | None:
        """The file to use: of the model files in the folder, those whose name says what they
        are (GFPGANv1.4.pth, codeformer-v0.1.0.pth) first, the last in name order (the newest
        version); else any model file."""
        if not self.folder.is_dir():
            return None
        files = sorted(p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)
        named = [p for p in files if self.name.lower() in p.name.lower()]
        return (named or files or [None])[-1]

    @property
    def present(self) -> bool:
        return self.model_file() is not None

    def _download_hint(self) -> str:
        return f"download '{CATALOG_NAMES[self.name]}' from the Models tab into {self.folder}"

    def load(self):
        """The spandrel descriptor of this restorer's model, loaded now if needed. A missing,
        unreadable or foreign file is a ValueError that names the catalog entry to download."""
        with self._lock:
            path = self.model_file()
            if path is None:
                raise ValueError(f"No {self.name} model in {self.folder}: {self._download_hint()}.")
            stamp = path.stat().st_mtime
            if self._loaded is not None and self._loaded[:2] == (path, stamp):
                return self._loaded[2].to(self._device() if self._device is not None else _default_device())  # back from RAM after an unload
            self._loaded = None
            descriptor = self._read(path)
            self._loaded = (path, stamp, descriptor)
            return descriptor

    def _read(self, path: Path):
        if self.name == CODEFORMER and not codeformer_supported():
            raise ValueError(f"{CODEFORMER_LICENCE}: pip install spandrel-extra-arches, or use GFPGAN.")
        from spandrel import ModelLoader, UnsupportedModelError

        from modules.models.weights_file import read_weights

        try:  # weights only: spandrel's own loader would run a .pt file through torch.jit.load
            state = read_weights(path, f"{self.name} model")
        except ValueError as exc:
            raise ValueError(f"{str(exc).rstrip('.')} (in {self.folder}): {self._download_hint()}.") from None
        try:
            descriptor = ModelLoader("cpu", registry=spandrel_registry()).load_from_state_dict(state)
        except UnsupportedModelError:
            raise ValueError(f"{path.name} in {self.folder} is not a model spandrel knows, so not a {self.name} model: {self._download_hint()}.") from None
        except Exception as exc:  # a truncated file, a pickle with more than tensors, a foreign format
            why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{path.name} in {self.folder} could not be read as a {self.name} model ({why}): {self._download_hint()}.") from None
        if descriptor.architecture.id != self.name:
            raise ValueError(f"{path.name} in {self.folder} is a {descriptor.architecture.name} model, not {self.name}: {self._download_hint()}.")
        descriptor.eval()
        device = self._device() if self._device is not None else _default_device()
        return descriptor.to(device)

    def unload(self, keep_in_ram: bool = True) -> None:
        """Move the network off the GPU (A1111's face_restoration_unload), or drop it."""
        with self._lock:
            if self._loaded is None:
                return
            if keep_in_ram:
                self._loaded[2].to("cpu")
            else:
                self._loaded = None
        _empty_cache()

    def restore_crop(self, crop: np.ndarray, weight: float = 0.5) -> np.ndarray:
        """One aligned 512x512x3 uint8 face through the network. `weight` is CodeFormer's
        fidelity: 0 restores most, 1 keeps closest to the input."""
        import torch

        descriptor = self.load()
        device = descriptor.device
        tensor = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).unsqueeze(0).to(device, torch.float32)
        tensor = tensor / 127.5 - 1.0  # both networks take RGB in [-1, 1]
        with torch.inference_mode():
            if self.name == CODEFORMER:
                out = descriptor.model(tensor, weight=float(weight))[0]
            else:  # fixed noise: the same picture restores the same way every time
                out = descriptor.model(tensor, return_rgb=False, randomize_noise=False)[0]
        out = ((out.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        return out[0].permute(1, 2, 0).cpu().numpy()


def _default_device():
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _empty_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class FaceRestoration:
    """The app's face restorers and detector. `folders` maps models/ folder names (GFPGAN,
    Codeformer, face-detection) to paths, as `modules.models.downloadable.model_folders` gives."""

    def __init__(self, folders: Mapping[str, Path], device: Callable[[], Any] | None = None, flag_dirs: Mapping[str, Path] | None = None):
        self.restorers = {name: FaceRestorer(name, Path(folders[MODEL_FOLDERS[name]]), device) for name in RESTORER_NAMES}
        self.detection_folder = Path(folders["face-detection"]) if "face-detection" in folders else None
        self.flag_dirs = dict(flag_dirs or {})  # folders set by --gfpgan-models-path / --codeformer-models-path (A1111's cmd_dir)
        self.unload_after_use = False  # A1111's face_restoration_unload
        self._detector: tuple[tuple, FaceDetector] | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_paths(cls, paths, device: Callable[[], Any] | None = None) -> "FaceRestoration":
        """From an `options.Paths`: its GFPGAN, Codeformer and face-detection folders."""
        from modules.models.downloadable import model_folders

        flags = dict(getattr(paths, "model_dirs", ()) or ())
        return cls(model_folders(paths), device, {name: flags[folder] for name, folder in MODEL_FOLDERS.items() if folder in flags})

    def available(self) -> list[str]:
        """The restorers whose model file is there (CodeFormer only with its package)."""
        return [name for name, r in self.restorers.items() if r.present and (name != CODEFORMER or codeformer_supported())]

    def describe(self) -> list[dict]:
        """GET /sdapi/v1/face-restorers: [{name, cmd_dir}] of the restorers present."""
        return [{"name": name, "cmd_dir": str(self.flag_dirs[name]) if name in self.flag_dirs else None} for name in self.available()]

    def pick(self, name: str | None) -> FaceRestorer:
        """The restorer named (A1111's face_restoration_model), else the one that is present;
        a ValueError naming what to download when there is none."""
        present = self.available()
        if name in present:
            return self.restorers[name]
        if present:
            return self.restorers[present[0]]
        wanted = name if name in self.restorers else GFPGAN
        folder = self.restorers[wanted].folder
        extra = "" if codeformer_supported() else f" ({CODEFORMER_LICENCE}.)"
        raise ValueError(f"Restore faces needs a face restoration model: download '{CATALOG_NAMES[GFPGAN]}' or "
                         f"'{CATALOG_NAMES[CODEFORMER]}' from the Models tab (no model file in {folder}).{extra}")

    def detector(self) -> FaceDetector:
        """The face detector: YuNet when its model is in the face-detection folder, else OpenCV's
        Haar cascade. Rebuilt when the YuNet file appears or changes."""
        from modules.postprocessing.face_detection import YUNET_FILE

        yunet = self.detection_folder / YUNET_FILE if self.detection_folder is not None else None
        key = (yunet.stat().st_mtime, yunet.stat().st_size) if yunet is not None and yunet.is_file() else ()
        with self._lock:
            if self._detector is None or self._detector[0] != key:
                self._detector = (key, FaceDetector(self.detection_folder))
            return self._detector[1]

    def restore(self, image: Image.Image, name: str | None, visibility: float = 1.0, weight: float = 0.5, exact: bool = False) -> Image.Image:
        """`image` with its faces restored by the restorer `name` (with `exact`, that one and no
        other), blended at `visibility`. A picture without faces comes back unchanged."""
        restorer = self.restorers.get(name) if exact else self.pick(name)
        if restorer is None:
            raise ValueError(f"Unknown face restorer '{name}': choose one of {', '.join(RESTORER_NAMES)}.")
        if visibility <= 0:
            return image.copy()
        restorer.load()  # a missing or broken model is an error even for a picture without faces
        faces = self.detector().detect(image)
        try:
            result = paste_faces(image, faces, lambda crop: restorer.restore_crop(crop, weight), visibility)
        finally:
            if self.unload_after_use:
                restorer.unload()
        if image.mode == "RGBA":
            result.putalpha(image.getchannel("A"))
        return result

    def unload(self) -> None:
        for restorer in self.restorers.values():
            restorer.unload(keep_in_ram=False)

    def use_settings(self, changed: Mapping[str, Any]) -> None:
        """The config.json values this object uses: face_restoration_unload."""
        if "face_restoration_unload" in changed:
            self.unload_after_use = bool(changed["face_restoration_unload"])


def extras_restore(image: Image.Image, faces: FaceRestoration | None, gfpgan_visibility: float, codeformer_visibility: float,
                   codeformer_weight: float) -> tuple[Image.Image, dict[str, str]]:
    """The Extras tab's GFPGAN then CodeFormer steps, each only when its visibility is above 0,
    with A1111's postprocessing keys for what ran."""
    from modules.generation.params import format_number

    info: dict[str, str] = {}
    if gfpgan_visibility <= 0 and codeformer_visibility <= 0:
        return image, info
    if faces is None:
        raise ValueError("Face restoration is not available in this server.")
    if gfpgan_visibility > 0:
        image = faces.restore(image, GFPGAN, gfpgan_visibility, exact=True)
        info["GFPGAN visibility"] = format_number(round(gfpgan_visibility, 3))
    if codeformer_visibility > 0:
        image = faces.restore(image, CODEFORMER, codeformer_visibility, codeformer_weight, exact=True)
        info["CodeFormer visibility"] = format_number(round(codeformer_visibility, 3))
        info["CodeFormer weight"] = format_number(round(codeformer_weight, 3))
    return image, info
