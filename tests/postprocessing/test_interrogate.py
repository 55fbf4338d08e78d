"""Interrogate CLIP (BLIP caption + CLIP-ranked term lists) and the WD14 tagger behind
"Interrogate DeepBooru", on tiny random models in the real layouts and folders."""

from __future__ import annotations

import pytest
from PIL import Image

from modules.postprocessing.interrogate import (
    BLIP_ENTRY, BLIP_VOCAB_ENTRY, BY_HAND, CLIP_ENTRY, TERMS_DIR, ClipInterrogator, InterrogateOptions, MissingModel, load_categories,
)
from modules.postprocessing.tagger import TAGGER_ENTRY, TAGGER_LABELS_ENTRY, Tagger, format_tags
from tests.postprocessing.interrogate_models import TAGS, WORDS, write_blip, write_clip, write_tagger


def _lines(name: str) -> list[str]:
    return [line.strip() for line in next(TERMS_DIR.glob(f"{name}*.txt")).read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_blip(root / "BLIP")
    write_clip(root / "CLIP")
    return root


@pytest.fixture(scope="module")
def interrogator(models):
    return ClipInterrogator(models / "BLIP", models / "CLIP", use_cpu=True)


def test_clip_interrogation_is_a_blip_caption_then_one_artist_medium_movement_and_three_flavors(interrogator):
    text = interrogator.interrogate(Image.new("RGB", (48, 40), (200, 30, 30)), InterrogateOptions(interrogate_keep_models_in_memory=True))
    caption, *terms = text.split(", ")
    assert caption and set(caption.split()) <= set(WORDS)  # decoded by the BLIP model's own vocab
    assert len(caption.split()) >= 10  # interrogate_clip_min_length (24 tokens) held
    assert len(terms) == 6
    artist, medium, movement, *flavors = terms
    assert artist.startswith("by ") and artist[3:] in _lines("artists")
    assert medium in _lines("mediums") and movement in _lines("movements")
    assert len(set(flavors)) == 3 and set(flavors) <= set(_lines("flavors"))


def test_settings_shape_the_result_ranks_skipped_categories_and_dictionary_limit(interrogator):
    options = InterrogateOptions(interrogate_return_ranks=True, interrogate_clip_skip_categories=("mediums", "flavors"),
                                 interrogate_clip_dict_limit=2, interrogate_clip_min_length=3, interrogate_clip_max_length=5,
                                 interrogate_keep_models_in_memory=True)
    text = interrogator.interrogate(Image.new("RGBA", (30, 60), (0, 0, 255, 128)), options)
    caption, artist, movement = text.split(", ")
    assert 1 <= len(caption.split()) <= 5  # interrogate_clip_max_length
    name, score = artist.strip("()").rsplit(":", 1)
    assert name in {f"by {a}" for a in _lines("artists")[:2]}  # only the first interrogate_clip_dict_limit lines
    assert 0.0 < float(score) <= 1.0 and len(score) == 5  # (term:0.123)
    assert movement.strip("()").rsplit(":", 1)[0] in _lines("movements")[:2]


def test_same_picture_same_text_and_models_unloaded_after_use_unless_kept(interrogator):
    picture = Image.new("RGB", (32, 32), (10, 200, 10))
    first = interrogator.interrogate(picture, InterrogateOptions(interrogate_keep_models_in_memory=False))
    assert interrogator._loaded.blip is None  # interrogate_keep_models_in_memory off: dropped
    assert interrogator.interrogate(picture, InterrogateOptions(interrogate_keep_models_in_memory=True)) == first
    assert interrogator._loaded.blip is not None


def test_missing_weights_name_the_catalog_entries_to_download(tmp_path, models):
    with pytest.raises(MissingModel) as caught:
        ClipInterrogator(tmp_path / "BLIP", tmp_path / "CLIP").interrogate(Image.new("RGB", (8, 8)))
    message = str(caught.value)
    assert f"--download {CLIP_ENTRY}" in message and "Models tab" in message  # in the catalog
    for name in (BLIP_ENTRY, BLIP_VOCAB_ENTRY):  # a catalog entry once its size and SHA-256 are verified; until then, where to get it
        assert f"--download {name}" in message or BY_HAND[name] in message
    only_clip = ClipInterrogator(models / "BLIP", tmp_path / "CLIP")
    with pytest.raises(MissingModel, match=CLIP_ENTRY) as caught:
        only_clip.files()
    assert BLIP_ENTRY not in str(caught.value)


def test_a_file_that_is_not_a_blip_model_is_named(tmp_path, models):
    blip = tmp_path / "BLIP"
    write_clip(blip, "blip-image-captioning-large.safetensors")  # a CLIP model where BLIP belongs
    (blip / "bert-base-uncased-vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    with pytest.raises(ValueError, match="not a BLIP caption model"):
        ClipInterrogator(blip, models / "CLIP").interrogate(Image.new("RGB", (8, 8)))


def test_term_lists_are_the_categories_in_result_order():
    categories = load_categories()
    assert [c.name for c in categories] == ["artists", "mediums", "movements", "flavors"]
    assert [c.topn for c in categories] == [1, 1, 1, 3]
    assert all(len(c.terms) >= 50 for c in categories)


# --------------------------------------------------------------------------- tagger

SCORES = [0.9, 0.2, 0.95, 0.7, 0.55, 0.3, 0.8, 0.6, 0.65, 0.4]  # one per TAGS row


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "deepbooru"
    write_tagger(folder, SCORES)
    return Tagger(folder, use_cpu=True)


def test_tagger_gives_the_tags_over_the_threshold_with_a1111s_defaults(tagger):
    text = tagger.interrogate(Image.new("RGB", (64, 40), "white"), InterrogateOptions())
    # threshold 0.5, alphabetical, spaces, escaped brackets; rating rows (general 0.9) are not tags; ^_^ keeps its underscore
    assert text == "1girl, ^_^, hatsune miku, looking \\(at\\) viewer, red hair, smile"


def test_tagger_settings_sort_by_score_underscores_no_escape_filter_and_ranks(tagger):
    options = InterrogateOptions(interrogate_deepbooru_score_threshold=0.6, deepbooru_sort_alpha=False, deepbooru_use_spaces=False,
                                 deepbooru_escape=False, deepbooru_filter_tags="red hair, smile")
    assert tagger.interrogate(Image.new("RGBA", (20, 90)), options) == "1girl, hatsune_miku, looking_(at)_viewer, ^_^"
    ranked = tagger.interrogate(Image.new("RGB", (8, 8)), InterrogateOptions(interrogate_deepbooru_score_threshold=0.9, interrogate_return_ranks=True))
    assert ranked == "(1girl:0.950)"


def test_tagger_feeds_the_graph_its_input_size_in_bgr(tagger):
    import numpy as np

    from modules.postprocessing.tagger import _prepare

    batch = _prepare(Image.new("RGB", (64, 16), (255, 0, 0)), 32, 32)
    assert batch.shape == (1, 32, 32, 3) and batch.dtype == np.float32
    assert tuple(batch[0, 16, 16]) == (0.0, 0.0, 255.0)  # red, as BGR
    assert tuple(batch[0, 0, 16]) == (255.0, 255.0, 255.0)  # padded to a square with white


def test_missing_tagger_names_both_catalog_entries(tmp_path):
    with pytest.raises(MissingModel) as caught:
        Tagger(tmp_path / "deepbooru").interrogate(Image.new("RGB", (8, 8)))
    assert f"--download {TAGGER_ENTRY}" in str(caught.value) and f"--download {TAGGER_LABELS_ENTRY}" in str(caught.value)


def test_a_label_table_of_another_tagger_is_refused(tmp_path):
    folder = tmp_path / "deepbooru"
    write_tagger(folder, SCORES)
    (folder / "wd-v1-4-moat-tagger-v2.csv").write_text("tag_id,name,category,count\n1,one,0,5\n")
    with pytest.raises(ValueError, match="do not belong together"):
        Tagger(folder).interrogate(Image.new("RGB", (8, 8)))


def test_format_tags_by_itself():
    scores = {name: s for (name, category), s in zip(TAGS, SCORES) if category != 9}
    assert format_tags(scores, InterrogateOptions(interrogate_deepbooru_score_threshold=0.75)) == "1girl, hatsune miku"
