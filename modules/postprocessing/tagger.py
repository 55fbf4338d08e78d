"""The anime tagger behind A1111's "Interrogate DeepBooru" (API model name `deepdanbooru`): a
WD14 tagger (SmilingWolf's wd-v1-4-*-tagger-v2 / wd-*-tagger-v3) run by onnxruntime.

A tagger is two files in models/deepbooru: `<name>.onnx` and its label table `<name>.csv`
(the repository's `selected_tags.csv`: tag_id, name, category, count; category 9 is a rating,
0 general, 4 character). The graph takes NHWC float32 BGR pictures, 0-255, padded to a white
square; it answers one sigmoid score per row of the table.

A1111's deepbooru settings shape the text: the score threshold, alphabetical order (else by
score), spaces for underscores, escaped brackets, tags filtered out, and ranks.
"""

from __future__ import annotations

import csv
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from modules.postprocessing.interrogate import InterrogateOptions, MissingModel, opaque_rgb, download_hint

RATING = 9  # selected_tags.csv's category of the rating rows (general, sensitive, ...): not tags of the picture
TAGGER_ENTRY = "wd14-moat-v2"  # the catalog's tagger (model) and its label table
TAGGER_LABELS_ENTRY = "wd14-moat-v2-tags"
# Emoticons whose underscores are part of the face, kept as they are when spaces replace underscores.
KAOMOJI = frozenset({"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o", "@_@", "^_^", "o_o",
                     "u_u", "x_x", "|_|", "||_||"})
_SPECIAL = re.compile(r"([\\()\[\]])")  # what the prompt parser reads as emphasis: escaped with a backslash


@dataclass(frozen=True)
class Labels:
    names: tuple[str, ...]
    categories: tuple[int, ...]


def read_labels(path: Path) -> Labels:
    """A WD14 selected_tags.csv; ValueError naming the file when it is not one."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return Labels(tuple(r["name"] for r in rows), tuple(int(r["category"]) for r in rows))
    except (OSError, KeyError, TypeError, ValueError, csv.Error) as exc:
        raise ValueError(f"{path.name} is not a tagger's label table (tag_id,name,category,count): {exc}") from None


def format_tags(scores: dict[str, float], options: InterrogateOptions) -> str:
    """The tags scoring at least the threshold, as A1111's deepbooru writes them."""
    threshold = options.interrogate_deepbooru_score_threshold
    unwanted = {t.strip().replace(" ", "_") for t in options.deepbooru_filter_tags.split(",") if t.strip()}
    chosen = [(tag, score) for tag, score in scores.items() if score >= threshold and tag not in unwanted]
    chosen.sort(key=(lambda item: item[0]) if options.deepbooru_sort_alpha else (lambda item: -item[1]))
    words = []
    for tag, score in chosen:
        text = tag.replace("_", " ") if options.deepbooru_use_spaces and tag not in KAOMOJI else tag
        if options.deepbooru_escape:
            text = _SPECIAL.sub(r"\\\1", text)
        words.append(f"({text}:{score:.3f})" if options.interrogate_return_ranks else text)
    return ", ".join(words)


class Tagger:
    """One WD14 tagger, loaded on first use and dropped after each picture unless
    `interrogate_keep_models_in_memory` is on."""

    def __init__(self, folder: Path, use_cpu: bool = False):
        """onnxruntime runs it on CUDA where its CUDA provider is installed, unless `use_cpu`."""
        self.folder = Path(folder)
        self.use_cpu = use_cpu
        self._lock = threading.Lock()
        self._session = None
        self._labels: Labels | None = None

    def files(self) -> tuple[Path, Path]:
        """(graph, label table): the first `<name>.onnx` with a `<name>.csv` beside it (a lone
        `selected_tags.csv` serves a lone graph too); MissingModel naming the catalog entries."""
        graphs = sorted(p for p in self.folder.glob("*.onnx") if p.is_file()) if self.folder.is_dir() else []
        for graph in graphs:
            labels = graph.with_suffix(".csv")
            if labels.is_file():
                return graph, labels
        if len(graphs) == 1 and (self.folder / "selected_tags.csv").is_file():
            return graphs[0], self.folder / "selected_tags.csv"
        lacking = "its label table (<name>.csv beside <name>.onnx)" if graphs else "a WD14 tagger (<name>.onnx and <name>.csv)"
        raise MissingModel(f"Interrogate DeepBooru needs {lacking} in {self.folder}: {download_hint(TAGGER_ENTRY, TAGGER_LABELS_ENTRY)}.")

    def available(self) -> bool:
        try:
            self.files()
            return True
        except MissingModel:
            return False

    def scores(self, image: Image.Image) -> dict[str, float]:
        """Every non-rating tag's score for `image`."""
        session, labels = self._session, self._labels
        source = session.get_inputs()[0]
        height, width = (source.shape[1], source.shape[2]) if isinstance(source.shape[1], int) else (448, 448)
        batch = _prepare(image, height, width)
        output = session.run([session.get_outputs()[0].name], {source.name: batch})[0][0]
        if len(output) != len(labels.names):
            raise ValueError(f"The tagger answers {len(output)} scores but its label table has {len(labels.names)} rows: they do not belong together.")
        return {name: float(score) for name, category, score in zip(labels.names, labels.categories, output) if category != RATING}

    def interrogate(self, image: Image.Image, options: InterrogateOptions = InterrogateOptions()) -> str:
        with self._lock:
            try:
                self._load()
                return format_tags(self.scores(image), options)
            finally:
                if not options.interrogate_keep_models_in_memory:
                    self._session = self._labels = None

    def unload(self) -> None:
        with self._lock:
            self._session = self._labels = None

    def _load(self) -> None:
        if self._session is not None:
            return
        import onnxruntime

        graph, table = self.files()
        labels = read_labels(table)
        providers = ["CPUExecutionProvider"]
        if not self.use_cpu and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            session = onnxruntime.InferenceSession(str(graph), providers=providers)
        except Exception as exc:  # onnxruntime's own errors: a broken or foreign file
            raise ValueError(f"Cannot load the tagger {graph.name}: {exc}") from None
        self._session, self._labels = session, labels


def _prepare(image: Image.Image, height: int, width: int) -> np.ndarray:
    """WD14's input: the picture on white, padded to a centred white square, resized (area
    filter down, bicubic up), as BGR float32 0-255 with a batch axis."""
    import cv2

    rgb = np.asarray(opaque_rgb(image))
    side = max(rgb.shape[:2])
    top, left = (side - rgb.shape[0]) // 2, (side - rgb.shape[1]) // 2
    square = cv2.copyMakeBorder(rgb, top, side - rgb.shape[0] - top, left, side - rgb.shape[1] - left, cv2.BORDER_CONSTANT, value=(255, 255, 255))
    interpolation = cv2.INTER_AREA if side > max(height, width) else cv2.INTER_CUBIC
    resized = cv2.resize(square, (width, height), interpolation=interpolation)
    return np.ascontiguousarray(resized[:, :, ::-1], dtype=np.float32)[None]
