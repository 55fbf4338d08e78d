"""CLIP interrogation, A1111's "Interrogate CLIP": a BLIP caption of the picture, then the terms
of each list in `configs/interrogate/` (artists, mediums, movements, flavors) that CLIP ranks
closest to it, joined as A1111 joins them: "caption, by artist, medium, movement, flavor, ...".

The weights are single safetensors files from the catalog, in A1111's folders: the BLIP caption
model (with BERT's `vocab.txt`, its tokenizer) in models/BLIP, CLIP ViT-L/14 in models/CLIP. Their
transformers configs are read off the tensors' shapes (hidden sizes, layer counts, image and
patch sizes; 64-wide attention heads as every public BLIP and CLIP has), so a file alone is
enough and the tests' tiny random models take the same path as the real ones. CLIP's BPE
vocabulary is the project's shared one (`configs/clip-tokenizer/`).

No gradio, no FastAPI, no module-level state: the app owns one `ClipInterrogator`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from modules.models.weights_file import read_weights

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CONFIGS_DIR = Path(__file__).resolve().parent.parent.parent / "configs"
TERMS_DIR = CONFIGS_DIR / "interrogate"
CATEGORY_ORDER = ("artists", "mediums", "movements", "flavors")  # A1111's result reads "by artist, medium, movement, flavors"
HEAD_WIDTH = 64  # attention head size of every public BLIP and CLIP checkpoint
_TOPN = re.compile(r"\.top(\d+)$")

# The catalog entries (configs/checkpoints.json) a missing file is fetched with.
BLIP_ENTRY = "blip-caption-large"
BLIP_VOCAB_ENTRY = "blip-bert-vocab"
CLIP_ENTRY = "clip-vit-large-patch14"
BLIP_FILE = "blip-image-captioning-large.safetensors"
BLIP_VOCAB_FILE = "bert-base-uncased-vocab.txt"
CLIP_FILE = "clip-vit-large-patch14.safetensors"


class MissingModel(ValueError):
    """A model file the interrogator needs is not in its folder; the message says which catalog
    entry to download."""


# Where a file comes from when the catalog has no entry for it (no verified size and SHA-256 yet).
BY_HAND = {
    BLIP_ENTRY: f"Salesforce/blip-image-captioning-large's model.safetensors (Hugging Face), saved as {BLIP_FILE}",
    BLIP_VOCAB_ENTRY: f"bert-base-uncased's vocab.txt (Hugging Face), saved as {BLIP_VOCAB_FILE}",
    CLIP_ENTRY: f"openai/clip-vit-large-patch14's model.safetensors (Hugging Face), saved as {CLIP_FILE}",
}


def download_hint(*names: str) -> str:
    """How to get the named catalog entries: the Models tab or `launch.py --download`; for a
    file the catalog lacks, where to fetch it by hand."""
    from modules.models.downloadable import Catalog

    try:
        known = set(Catalog.load().names())
    except ValueError:
        known = set()
    listed = [n for n in names if n in known or n not in BY_HAND]
    hints = []
    if listed:
        quoted = " and ".join(f"'{n}'" for n in listed)
        hints.append(f"download {quoted} from the Models tab, or start with `launch.py {' '.join(f'--download {n}' for n in listed)}`")
    hints += [f"put {BY_HAND[n]} there" for n in names if n not in listed]
    return "; ".join(hints)


@dataclass(frozen=True)
class InterrogateOptions:
    """A1111's Interrogate settings, read from config.json at the time of the request."""

    interrogate_keep_models_in_memory: bool = False
    interrogate_return_ranks: bool = False
    interrogate_clip_num_beams: int = 1
    interrogate_clip_min_length: int = 24
    interrogate_clip_max_length: int = 48
    interrogate_clip_dict_limit: int = 1500
    interrogate_clip_skip_categories: tuple[str, ...] = ()
    interrogate_deepbooru_score_threshold: float = 0.5
    deepbooru_sort_alpha: bool = True
    deepbooru_use_spaces: bool = True
    deepbooru_escape: bool = True
    deepbooru_filter_tags: str = ""

    @classmethod
    def from_settings(cls, values: Mapping) -> "InterrogateOptions":
        chosen = {f.name: values[f.name] for f in fields(cls) if values.get(f.name) is not None}
        if "interrogate_clip_skip_categories" in chosen:
            chosen["interrogate_clip_skip_categories"] = tuple(chosen["interrogate_clip_skip_categories"])
        return cls(**chosen)


# --------------------------------------------------------------------------- term lists

@dataclass(frozen=True)
class Category:
    name: str
    topn: int
    terms: tuple[str, ...]


def _category_files(folder: Path) -> list[tuple[str, int, Path]]:
    found = []
    for path in Path(folder).glob("*.txt"):
        match = _TOPN.search(path.stem)
        name = path.stem[: match.start()] if match else path.stem
        found.append((name, int(match.group(1)) if match else 1, path))
    rank = {name: i for i, name in enumerate(CATEGORY_ORDER)}
    return sorted(found, key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def category_names(folder: Path = TERMS_DIR) -> tuple[str, ...]:
    """The categories the lists define, in result order (the skip setting's choices)."""
    return tuple(name for name, _, _ in _category_files(folder))


def load_categories(folder: Path = TERMS_DIR, dict_limit: int = 0, skip: tuple[str, ...] = ()) -> list[Category]:
    """Each list's terms, at most `dict_limit` lines of each (0: all), without the skipped ones.
    Artists are ranked and written as "by NAME"."""
    categories = []
    for name, topn, path in _category_files(folder):
        if name in skip:
            continue
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        terms = [line for line in lines if line]
        if dict_limit > 0:
            terms = terms[:dict_limit]
        if name == "artists":
            terms = [f"by {t}" for t in terms]
        if terms:
            categories.append(Category(name, min(topn, len(terms)), tuple(terms)))
    return categories


# --------------------------------------------------------------------------- configs from weights

def _layers(keys, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return 1 + max((int(m.group(1)) for k in keys if (m := pattern.match(k))), default=-1)


def _shape(tensors: Mapping, key: str, what: str) -> tuple[int, ...]:
    if key not in tensors:
        raise ValueError(f"{what} lacks the tensor {key}: it is not a {what} in transformers' layout.")
    return tuple(tensors[key].shape)


def blip_config(tensors: Mapping, tokenizer):
    """BlipConfig for BlipForConditionalGeneration weights (Salesforce/blip-image-captioning-*)."""
    from transformers import BlipConfig

    what = "BLIP caption model"
    hidden, _, patch, _ = _shape(tensors, "vision_model.embeddings.patch_embedding.weight", what)
    positions = _shape(tensors, "vision_model.embeddings.position_embedding", what)[-2]
    image_size = patch * round((positions - 1) ** 0.5)
    text = "text_decoder.bert."
    vocab, text_hidden = _shape(tensors, text + "embeddings.word_embeddings.weight", what)
    max_positions = _shape(tensors, text + "embeddings.position_embeddings.weight", what)[0]
    encoder_hidden = _shape(tensors, text + "encoder.layer.0.crossattention.self.key.weight", what)[1]
    vision = dict(hidden_size=hidden, intermediate_size=_shape(tensors, "vision_model.encoder.layers.0.mlp.fc1.weight", what)[0],
                  num_hidden_layers=_layers(tensors, "vision_model.encoder.layers."), num_attention_heads=max(1, hidden // HEAD_WIDTH),
                  image_size=image_size, patch_size=patch)
    text_config = dict(vocab_size=vocab, hidden_size=text_hidden, encoder_hidden_size=encoder_hidden,
                       intermediate_size=_shape(tensors, text + "encoder.layer.0.intermediate.dense.weight", what)[0],
                       num_hidden_layers=_layers(tensors, text + "encoder.layer."), num_attention_heads=max(1, text_hidden // HEAD_WIDTH),
                       max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.sep_token_id,
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id)
    return BlipConfig(vision_config=vision, text_config=text_config)


def clip_config(tensors: Mapping):
    """CLIPConfig for CLIPModel weights (openai/clip-vit-large-patch14 and its kin)."""
    from transformers import CLIPConfig

    what = "CLIP model"
    hidden, _, patch, _ = _shape(tensors, "vision_model.embeddings.patch_embedding.weight", what)
    positions = _shape(tensors, "vision_model.embeddings.position_embedding.weight", what)[0]
    vocab, text_hidden = _shape(tensors, "text_model.embeddings.token_embedding.weight", what)
    vision = dict(hidden_size=hidden, intermediate_size=_shape(tensors, "vision_model.encoder.layers.0.mlp.fc1.weight", what)[0],
                  num_hidden_layers=_layers(tensors, "vision_model.encoder.layers."), num_attention_heads=max(1, hidden // HEAD_WIDTH),
                  image_size=patch * round((positions - 1) ** 0.5), patch_size=patch, hidden_act="quick_gelu")
    text = dict(vocab_size=vocab, hidden_size=text_hidden,
                intermediate_size=_shape(tensors, "text_model.encoder.layers.0.mlp.fc1.weight", what)[0],
                num_hidden_layers=_layers(tensors, "text_model.encoder.layers."), num_attention_heads=max(1, text_hidden // HEAD_WIDTH),
                max_position_embeddings=_shape(tensors, "text_model.embeddings.position_embedding.weight", what)[0], hidden_act="quick_gelu")
    projection = _shape(tensors, "visual_projection.weight", what)[0]
    return CLIPConfig(vision_config=vision, text_config=text, projection_dim=projection)


def _from_weights(cls, config, tensors: dict, device, dtype):
    model = cls.from_pretrained(None, config=config, state_dict=tensors, dtype=dtype)
    return model.to(device).eval()


# --------------------------------------------------------------------------- the interrogator

@dataclass
class _Loaded:
    blip: object = None
    blip_tokenizer: object = None
    blip_processor: object = None
    clip: object = None
    clip_tokenizer: object = None
    clip_processor: object = None
    term_features: dict | None = None  # (category name, terms) -> normalized CLIP text features


class ClipInterrogator:
    """Caption with BLIP, rank the term lists with CLIP. Models load on first use and are
    dropped after each picture unless `interrogate_keep_models_in_memory` is on (A1111's
    "Keep models in VRAM"); one picture at a time."""

    def __init__(self, blip_dir: Path, clip_dir: Path, use_cpu: bool = False, half: bool = True, terms_dir: Path = TERMS_DIR,
                 configs_dir: Path = CONFIGS_DIR, device_id: int | None = None):
        """On CUDA the models run in fp16 when `half` (A1111: unless --no-half); `use_cpu` keeps
        them on the CPU (--use-cpu interrogate). The device is chosen at the first load."""
        self.blip_dir, self.clip_dir = Path(blip_dir), Path(clip_dir)
        self.use_cpu, self.half, self.device_id = use_cpu, half, device_id  # device_id: --device-id
        self.device: "torch.device | None" = None
        self.terms_dir, self.configs_dir = Path(terms_dir), Path(configs_dir)
        self._lock = threading.Lock()
        self._loaded = _Loaded()

    # -- files ------------------------------------------------------------------------

    def files(self) -> tuple[Path, Path, Path]:
        """(BLIP weights, BERT vocab, CLIP weights); MissingModel naming the catalog entries to
        download when any is absent. The catalog's file name wins; else any file of its kind."""
        blip = _pick(self.blip_dir, BLIP_FILE, "*.safetensors")
        vocab = _pick(self.blip_dir, BLIP_VOCAB_FILE, "*vocab*.txt")
        clip = _pick(self.clip_dir, CLIP_FILE, "*.safetensors")
        missing = [entry for entry, path in ((BLIP_ENTRY, blip), (BLIP_VOCAB_ENTRY, vocab), (CLIP_ENTRY, clip)) if path is None]
        if missing:
            where = []
            if blip is None or vocab is None:
                where.append(f"the BLIP caption model and its vocab.txt in {self.blip_dir}")
            if clip is None:
                where.append(f"CLIP ViT-L/14 in {self.clip_dir}")
            raise MissingModel(f"Interrogate CLIP needs {' and '.join(where)}: {download_hint(*missing)}.")
        return blip, vocab, clip

    def available(self) -> bool:
        try:
            self.files()
            return True
        except MissingModel:
            return False

    # -- work -------------------------------------------------------------------------

    def interrogate(self, image: Image.Image, options: InterrogateOptions = InterrogateOptions()) -> str:
        """A1111's CLIP interrogation text for `image`."""
        import torch

        picture = opaque_rgb(image)
        with self._lock:
            try:
                self._load()
                caption = self._caption(picture, options)
                with torch.inference_mode():
                    features = self._image_features(picture)
                    parts = [caption]
                    for category in load_categories(self.terms_dir, options.interrogate_clip_dict_limit, options.interrogate_clip_skip_categories):
                        for term, score in self._rank(features, category):
                            parts.append(f"({term}:{score:.3f})" if options.interrogate_return_ranks else term)
                return ", ".join(p for p in parts if p)
            finally:
                if not options.interrogate_keep_models_in_memory:
                    self._unload()

    def unload(self) -> None:
        with self._lock:
            self._unload()

    def _unload(self) -> None:
        if self._loaded.blip is None and self._loaded.clip is None:
            return
        self._loaded = _Loaded()
        if self.device is not None:
            from modules.generation.devices import free_memory

            free_memory(self.device)

    def _load(self) -> None:
        if self._loaded.blip is not None:
            return
        import torch
        from transformers import BertTokenizer, BlipForConditionalGeneration, BlipImageProcessor, CLIPImageProcessor, CLIPModel

        from modules.models.loader import build_tokenizer

        from modules.generation.devices import pick_device

        blip_path, vocab_path, clip_path = self.files()
        self.device = device = pick_device(self.use_cpu, self.device_id)
        dtype = torch.float16 if device.type == "cuda" and self.half else torch.float32
        tokenizer = BertTokenizer(vocab=str(vocab_path), do_lower_case=True)
        tokenizer.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})  # BLIP's decoder start and encoder tokens
        tensors = read_weights(blip_path, "BLIP caption model")
        config = blip_config(tensors, tokenizer)
        if config.text_config.vocab_size < len(tokenizer):
            raise ValueError(f"{vocab_path.name} has {len(tokenizer)} tokens but {blip_path.name} only {config.text_config.vocab_size}: "
                             "they are not a matching BLIP model and vocab.")
        blip = _from_weights(BlipForConditionalGeneration, config, tensors, device, dtype)
        size = config.vision_config.image_size
        blip_processor = BlipImageProcessor(size={"height": size, "width": size})  # BLIP's: bicubic, OpenAI CLIP mean and std
        del tensors
        tensors = read_weights(clip_path, "CLIP model")
        config = clip_config(tensors)
        clip = _from_weights(CLIPModel, config, tensors, device, dtype)
        size = config.vision_config.image_size
        clip_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        self._loaded = _Loaded(blip, tokenizer, blip_processor, clip, build_tokenizer(self.configs_dir), clip_processor, {})

    def _caption(self, image: Image.Image, options: InterrogateOptions) -> str:
        import torch

        loaded = self._loaded
        pixels = loaded.blip_processor(images=image, return_tensors="pt")["pixel_values"].to(self.device, loaded.blip.dtype)
        max_length = max(options.interrogate_clip_max_length, options.interrogate_clip_min_length)
        with torch.inference_mode():
            tokens = loaded.blip.generate(pixel_values=pixels, num_beams=max(1, options.interrogate_clip_num_beams), do_sample=False,
                                          min_length=options.interrogate_clip_min_length, max_length=max_length)
        return loaded.blip_tokenizer.decode(tokens[0], skip_special_tokens=True).strip()

    def _image_features(self, image: Image.Image):
        loaded = self._loaded
        pixels = loaded.clip_processor(images=image, return_tensors="pt")["pixel_values"].to(self.device, loaded.clip.dtype)
        features = _pooled(loaded.clip.get_image_features(pixel_values=pixels))
        return features / features.norm(dim=-1, keepdim=True)

    def _term_features(self, category: Category):
        """Each term's normalized CLIP text features, computed once per list while the model stays loaded."""
        import torch

        loaded = self._loaded
        key = (category.name, category.terms)
        if key not in loaded.term_features:
            chunks = []
            for start in range(0, len(category.terms), 256):
                batch = loaded.clip_tokenizer(list(category.terms[start:start + 256]), padding="max_length", truncation=True,
                                              max_length=loaded.clip.config.text_config.max_position_embeddings, return_tensors="pt")
                chunks.append(_pooled(loaded.clip.get_text_features(input_ids=batch["input_ids"].to(self.device),
                                                                    attention_mask=batch["attention_mask"].to(self.device))))
            features = torch.cat(chunks)
            loaded.term_features[key] = features / features.norm(dim=-1, keepdim=True)
        return loaded.term_features[key]

    def _rank(self, image_features, category: Category) -> list[tuple[str, float]]:
        """The category's `topn` terms closest to the picture, with A1111's score: the softmax of
        100 x cosine similarity over the category's terms."""
        similarity = (100.0 * image_features.float() @ self._term_features(category).float().T).softmax(dim=-1)[0]
        scores, indices = similarity.topk(category.topn)
        return [(category.terms[i], float(s)) for s, i in zip(scores.tolist(), indices.tolist())]


def _pooled(output):
    """transformers 5 returns the projected features as `pooler_output`; older versions a tensor."""
    return getattr(output, "pooler_output", output)


def _pick(folder: Path, preferred: str, pattern: str) -> Path | None:
    if (folder / preferred).is_file():
        return folder / preferred
    return next((p for p in sorted(folder.glob(pattern)) if p.is_file()), None) if folder.is_dir() else None


def opaque_rgb(image: Image.Image) -> Image.Image:
    """A transparent picture on white, as the models were trained on opaque ones."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")
