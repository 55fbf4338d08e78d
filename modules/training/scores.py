"""Held-out scores for a trained LoRA: FID and KID against the training pictures, CLIP score
against the captions, and for the demo model its own judge (does the picture show the colour,
shape and background the caption asks for).

FID/KID use the standard FID Inception-v3 (TensorFlow's 2015-12-05 graph as pytorch-fid,
torch-fidelity and clean-fid port it, 2048-d pool features, TF-style bilinear resize to
299x299) through torch-fidelity, so the numbers are comparable with published ones. Weights come
only from models/ (the catalog entry `fid-inception-v3`); nothing here downloads anything, and a
missing file is a note, not an error, since scores are an extra on top of a finished run.

No gradio, no FastAPI, no module-level state: a caller that scores many times keeps one
`ScoreModels` so the networks load once.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from modules.files import atomic_path

if TYPE_CHECKING:
    import torch

CONFIGS_DIR = Path(__file__).resolve().parent.parent.parent / "configs"
INCEPTION_FOLDER = "inception"  # models/ subfolder (downloadable.MODEL_FOLDERS)
INCEPTION_ENTRY = "fid-inception-v3"  # catalog name (configs/checkpoints.json)
# torch-fidelity's and pytorch-fid's names for the same file (SHA-256 6726825d...).
INCEPTION_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
CLIP_FOLDER = "CLIP"  # the interrogator's folder and file: one CLIP for both
KID_SUBSETS = 100  # torch-fidelity's and the KID paper's defaults
KID_SUBSET_SIZE = 1000
BATCH = 16


@dataclass(frozen=True)
class Scores:
    """One evaluation of a run at `step`; a score is None when it could not be computed, and
    `notes` says why in words the Train tab shows. `count` is the number of generated pictures."""

    step: int
    fid: float | None = None
    kid: float | None = None
    kid_std: float | None = None
    clip_score: float | None = None
    judge: float | None = None
    count: int = 0
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """A JSON-ready dict (one element of scores.json)."""
        return {**asdict(self), "notes": list(self.notes)}

    @classmethod
    def from_json(cls, data: Mapping) -> "Scores":
        """Read back `to_json`'s dict; keys this version does not know are ignored, so files
        written by a later version still read."""
        if not isinstance(data, Mapping) or "step" not in data:
            raise ValueError("A scores entry must be an object with a 'step'.")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["notes"] = tuple(str(n) for n in values.get("notes") or ())
        return cls(**values)


# --------------------------------------------------------------------------- the models

def inception_file(models_dir: Path) -> Path | None:
    """The FID Inception weights in models/inception/, under either published name."""
    folder = Path(models_dir) / INCEPTION_FOLDER
    return next((folder / name for name in INCEPTION_FILES if (folder / name).is_file()), None)


def missing_inception_note(models_dir: Path) -> str:
    from modules.postprocessing.interrogate import download_hint

    folder = Path(models_dir) / INCEPTION_FOLDER
    return (f"FID and KID need the FID Inception weights {INCEPTION_FILES[0]} in {folder}, which is missing: "
            f"{download_hint(INCEPTION_ENTRY)}, or put the file there yourself.")


def load_inception(path: Path, device: str = "cpu"):
    """torch-fidelity's FID Inception-v3 with the weights in `path`, read with the weights-only
    loader (the library's own loader would unpickle anything)."""
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from modules.models.weights_file import read_weights

    state = read_weights(Path(path), "The FID Inception model")
    buffer = io.BytesIO()
    torch.save(state, buffer)  # plain tensors only: safe for the library's torch.load
    buffer.seek(0)
    try:
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=buffer)
    except RuntimeError as exc:  # load_state_dict: missing or unexpected keys, wrong shapes
        raise ValueError(f"{Path(path).name} is not the FID Inception-v3 (pytorch-fid / torch-fidelity layout): "
                         f"{str(exc).splitlines()[0]}") from None
    return model.to(device)


def clip_file(models_dir: Path) -> Path | None:
    from modules.postprocessing.interrogate import CLIP_FILE, _pick

    return _pick(Path(models_dir) / CLIP_FOLDER, CLIP_FILE, "*.safetensors")


def missing_clip_note(models_dir: Path) -> str:
    from modules.postprocessing.interrogate import CLIP_ENTRY, download_hint

    return (f"CLIP score needs CLIP weights (a .safetensors CLIPModel) in {Path(models_dir) / CLIP_FOLDER}, "
            f"which has none: {download_hint(CLIP_ENTRY)}.")


@dataclass(frozen=True)
class ClipParts:
    model: object
    tokenizer: object
    processor: object


def load_clip(path: Path, device: str = "cpu", configs_dir: Path = CONFIGS_DIR) -> ClipParts:
    """The CLIP model the interrogator uses (config read off the tensors), its tokenizer from
    the shared vocabulary and an image processor at its input size."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel

    from modules.models.loader import build_tokenizer
    from modules.models.weights_file import read_weights
    from modules.postprocessing.interrogate import _from_weights, clip_config

    tensors = read_weights(Path(path), "CLIP model")
    config = clip_config(tensors)
    model = _from_weights(CLIPModel, config, tensors, torch.device(device), torch.float32)
    size = config.vision_config.image_size
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return ClipParts(model, build_tokenizer(configs_dir), processor)


@dataclass
class ScoreModels:
    """The networks for scoring, loaded on first use from `models_dir` and kept: a training
    run that scores every N steps loads each once."""

    models_dir: Path
    device: str = "cpu"
    configs_dir: Path = CONFIGS_DIR
    _inception: object = field(default=None, repr=False)
    _clip: ClipParts | None = field(default=None, repr=False)
    _reference: tuple[str, object] | None = field(default=None, repr=False)  # (digest of the pictures, their features)

    def inception(self):
        """The FID Inception, or None when its weights are not in models/."""
        if self._inception is None:
            path = inception_file(self.models_dir)
            if path is None:
                return None
            self._inception = load_inception(path, self.device)
        return self._inception

    def clip(self) -> ClipParts | None:
        """The CLIP parts, or None when models/CLIP has no weights."""
        if self._clip is None:
            path = clip_file(self.models_dir)
            if path is None:
                return None
            self._clip = load_clip(path, self.device, self.configs_dir)
        return self._clip

    def reference_features(self, images: Sequence) -> "torch.Tensor":
        """The training pictures' Inception features, kept while the same pictures come back
        (every evaluation of a run compares with the same training set)."""
        digest = _digest(images)
        if self._reference is None or self._reference[0] != digest:
            self._reference = (digest, inception_features(self.inception(), images, self.device))
        return self._reference[1]


def _digest(images: Sequence) -> str:
    import hashlib

    hasher = hashlib.sha256()
    for image in images:
        picture = _rgb(image)
        hasher.update(f"{picture.size}".encode())
        hasher.update(picture.tobytes())
    return hasher.hexdigest()


# --------------------------------------------------------------------------- FID and KID

def _rgb(image) -> Image.Image:
    from modules.postprocessing.interrogate import opaque_rgb

    return opaque_rgb(image) if isinstance(image, Image.Image) else Image.fromarray(image).convert("RGB")


def inception_features(model, images: Sequence, device: str = "cpu") -> "torch.Tensor":
    """N x 2048 pool features. Pictures of one size go through together (training pictures
    come in several bucket sizes); each is resized to 299x299 by the network itself."""
    import numpy as np
    import torch

    by_size: dict[tuple[int, int], list] = {}
    for image in images:
        picture = np.asarray(_rgb(image), dtype=np.uint8)
        by_size.setdefault(picture.shape[:2], []).append(picture)
    chunks = []
    with torch.inference_mode():
        for pictures in by_size.values():
            for start in range(0, len(pictures), BATCH):
                batch = torch.from_numpy(np.stack(pictures[start:start + BATCH])).permute(0, 3, 1, 2).contiguous()
                chunks.append(model(batch.to(device))[0].double().cpu())
    return torch.cat(chunks) if chunks else torch.zeros((0, 2048), dtype=torch.float64)


def fid_kid(generated: "torch.Tensor", reference: "torch.Tensor", seed: int = 2020) -> tuple[float, float, float]:
    """(FID, KID mean, KID std) of two feature sets. KID's subsets shrink to the smaller set
    (a LoRA's few held-out prompts): the unbiased estimate needs only two pictures a side."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    if min(len(generated), len(reference)) < 2:
        raise ValueError(f"FID and KID need at least 2 generated and 2 training pictures (got {len(generated)} and {len(reference)}).")
    if min(len(generated), len(reference)) <= generated.shape[1]:
        fid = few_picture_fid(generated, reference)
    else:
        stats = fid_features_to_statistics(generated), fid_features_to_statistics(reference)
        fid = fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID]
    kid = kid_features_to_metric(generated, reference, kid_subsets=KID_SUBSETS, verbose=False, rng_seed=seed,
                                 kid_subset_size=min(KID_SUBSET_SIZE, len(generated), len(reference)))
    return fid, kid[KEY_METRIC_KID_MEAN], kid[KEY_METRIC_KID_STD]


def few_picture_fid(x: "torch.Tensor", y: "torch.Tensor") -> float:
    """The same Frechet distance as the library's, |mu_x - mu_y|^2 + tr Sx + tr Sy - 2 tr sqrt(Sx Sy),
    without its 2048x2048 eigen-decomposition (seconds per score on a CPU): with centred
    features A (n x d) and B (m x d) scaled so that Sx = A'A and Sy = B'B, the nonzero eigenvalues
    of Sx Sy are the squared singular values of A B', so tr sqrt(Sx Sy) is the sum of the
    singular values of that n x m matrix. Exact, and cheap while the pictures are fewer than d."""
    import torch

    x, y = x.double(), y.double()
    a = (x - x.mean(0)) / math.sqrt(len(x) - 1)
    b = (y - y.mean(0)) / math.sqrt(len(y) - 1)
    mean_term = float(((x.mean(0) - y.mean(0)) ** 2).sum())
    cross = torch.linalg.svdvals(a @ b.T).sum()
    return mean_term + float((a * a).sum() + (b * b).sum() - 2 * cross)


# --------------------------------------------------------------------------- CLIP score

def clip_score(parts: ClipParts, images: Sequence, captions: Sequence[str], device: str = "cpu") -> float:
    """The usual CLIP score: mean over pairs of max(100 x cosine(image, caption), 0); captions
    are cut at CLIP's 77 tokens."""
    import torch

    from modules.postprocessing.interrogate import _pooled

    if len(images) != len(captions):
        raise ValueError(f"CLIP score needs one caption per picture (got {len(images)} pictures and {len(captions)} captions).")
    model = parts.model
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(images), BATCH):
            pixels = parts.processor(images=[_rgb(i) for i in images[start:start + BATCH]], return_tensors="pt")["pixel_values"]
            tokens = parts.tokenizer(list(captions[start:start + BATCH]), padding="max_length", truncation=True,
                                     max_length=model.config.text_config.max_position_embeddings, return_tensors="pt")
            image_features = _pooled(model.get_image_features(pixel_values=pixels.to(device, model.dtype))).float()
            text_features = _pooled(model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                                            attention_mask=tokens["attention_mask"].to(device))).float()
            cosine = torch.nn.functional.cosine_similarity(image_features, text_features, dim=-1)
            total += float((100.0 * cosine).clamp(min=0).sum())
    return total / len(images)


# --------------------------------------------------------------------------- the demo judge

@dataclass(frozen=True)
class CaptionScene:
    """What a caption asks of a demo picture; None where it says nothing (\"a red circle\"
    leaves the background free)."""

    colour: str | None
    shape: str | None
    background: str | None


_SHAPE_NOUNS = ("shape",)  # "a red shape": the colour is the shape's
_ON = ("on",)
_ARTICLES = ("a", "an", "the")


def parse_caption(caption: str, colours: Sequence[str]) -> CaptionScene | None:
    """The demo scene a caption describes, read as the demo model's grammar has it: a colour
    word before a shape word (or "shape") is the shape's colour, one before "background" or
    after "on (a)" is the background's. None when it names nothing or contradicts itself."""
    from modules.demo.shapes import SHAPES

    text = caption.lower()
    names = {}
    for name in sorted(colours, key=len, reverse=True):  # several-word colour names become one token
        token = re.sub(r"\W+", "_", name.lower())
        names[token] = name
        text = re.sub(rf"\b{re.escape(name.lower())}\b", token, text)
    words = re.findall(r"\w+", text)
    found: dict[str, set[str]] = {"colour": set(), "shape": set(), "background": set()}
    for k, word in enumerate(words):
        following = words[k + 1] if k + 1 < len(words) else None
        if word in SHAPES:
            found["shape"].add(word)
        if word not in names:
            continue
        if following in SHAPES or following in _SHAPE_NOUNS:
            found["colour"].add(names[word])
        elif following == "background" or _after_on(words, k):
            found["background"].add(names[word])
    if any(len(v) > 1 for v in found.values()) or not any(found.values()):
        return None
    return CaptionScene(*(next(iter(found[key]), None) for key in ("colour", "shape", "background")))


def _after_on(words: list[str], k: int) -> bool:
    before = words[max(0, k - 2):k]
    if before and before[-1] in _ARTICLES:
        before = before[:-1]
    return bool(before) and before[-1] in _ON


def judge_score(images: Sequence, captions: Sequence[str], extra_colours: Mapping[str, tuple[int, int, int]] = {}) -> float | None:
    """The fraction of pictures the demo judge reads as their caption asks (every part the
    caption names: shape colour, shape, background). `extra_colours` are colour words a LoRA
    taught (name -> RGB), added to the judge's palette. Captions that name no scene are left
    out; None when none can be read."""
    from modules.demo.judge import read_picture
    from modules.demo.shapes import PALETTE

    if len(images) != len(captions):
        raise ValueError(f"The judge needs one caption per picture (got {len(images)} pictures and {len(captions)} captions).")
    palette = {**PALETTE, **{name.lower(): tuple(rgb) for name, rgb in extra_colours.items()}}
    judged = right = 0
    for image, caption in zip(images, captions):
        wanted = parse_caption(caption, tuple(palette))
        if wanted is None:
            continue
        reading = read_picture(_rgb(image), palette=palette if extra_colours else None)
        judged += 1
        right += all(asked is None or asked == seen for asked, seen in
                     ((wanted.colour, reading.colour), (wanted.shape, reading.shape), (wanted.background, reading.background)))
    return right / judged if judged else None


# --------------------------------------------------------------------------- one evaluation

def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def _loaded(load):
    """(model, None), or (None, the reason) when a file in models/ is not what it should be:
    a bad file costs its score, not the finished training run."""
    try:
        return load(), None
    except ValueError as exc:
        return None, f"{exc} The score is left out."


def evaluate(generated: Sequence, captions: Sequence[str], reference: Sequence, *, models_dir: Path, step: int,
             device: str = "cpu", demo: bool = False, extra_colours: Mapping[str, tuple[int, int, int]] | None = None,
             models: ScoreModels | None = None) -> Scores:
    """Score `generated` (one picture per held-out caption) against the training pictures
    `reference`. Whatever cannot be computed (weights missing, too few pictures) is None with
    a note; `models` keeps the networks loaded between calls."""
    models = models or ScoreModels(Path(models_dir), device)
    notes: list[str] = []
    fid = kid = kid_std = clip = judge = None
    inception, problem = _loaded(models.inception)
    if problem:
        notes.append(problem)
    elif inception is None:
        notes.append(missing_inception_note(models.models_dir))
    elif min(len(generated), len(reference)) < 2:
        notes.append(f"FID and KID need at least 2 generated and 2 training pictures (got {len(generated)} and {len(reference)}).")
    else:
        fid, kid, kid_std = fid_kid(inception_features(inception, generated, models.device), models.reference_features(reference))
        if len(generated) < 50:
            notes.append(f"FID and KID from {len(generated)} pictures are rough: compare runs scored the same way, not published figures.")
    parts, problem = _loaded(models.clip)
    if problem:
        notes.append(problem)
    elif parts is None:
        notes.append(missing_clip_note(models.models_dir))
    elif generated:
        clip = clip_score(parts, generated, captions, models.device)
    if demo:
        judge = judge_score(generated, captions, extra_colours or {})
        if judge is None:
            notes.append("The demo judge found no caption naming a colour, shape or background to check.")
    values = {"fid": _finite(fid), "kid": _finite(kid), "kid_std": _finite(kid_std), "clip_score": _finite(clip)}
    if any(v is None and raw is not None for v, raw in zip(values.values(), (fid, kid, kid_std, clip))):
        notes.append("A score came out as NaN or infinity and was left out.")
    return Scores(step=step, **values, judge=judge, count=len(generated), notes=tuple(notes))


# --------------------------------------------------------------------------- scores.json

def read_scores(path: Path) -> list[Scores]:
    """The evaluations recorded in a scores.json (empty when there is none)."""
    return [Scores.from_json(item) for item in _read_list(Path(path))]


def append_scores(path: Path, scores: Scores) -> None:
    """Add one evaluation to the JSON list at `path`, replacing an earlier one of the same step
    (a resumed run scores its step again); written atomically, entries kept as they were."""
    path = Path(path)
    items = [item for item in _read_list(path) if not (isinstance(item, Mapping) and item.get("step") == scores.step)]
    items.append(scores.to_json())
    items.sort(key=lambda item: item.get("step", 0) if isinstance(item, Mapping) else 0)
    with atomic_path(path) as temp:
        temp.write_text(json.dumps(items, indent=1, allow_nan=False), encoding="utf-8")


def _read_list(path: Path) -> list:
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"The scores file {path} cannot be read ({exc}); move it aside to start a new one.") from None
    if not isinstance(data, list):
        raise ValueError(f"The scores file {path} is not a JSON list; move it aside to start a new one.")
    return data
