"""The Extra networks card data: previews beside the files, A1111's user metadata merged with a
LoRA's own header, search and the sort orders, atomic saves, and broken files that still get a card."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules.jobs.generation_task import Libraries
from modules.models.catalog import HashCache
from modules.models.embeddings import EmbeddingLibrary
from modules.models.lora import LoraLibrary
from modules.models.manager import ModelManager
from modules.models.network_cards import (
    BAD_METADATA, UNREADABLE, NetworkCards, find_preview, frequent_tags, save_preview, search, sort_cards, write_user_metadata,
)
from modules.models.vae import VaeLibrary

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _lora(path: Path, **metadata: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(path), metadata=metadata or None)
    return path


def _png(path: Path, colour: str = "red", size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


@pytest.fixture
def models(tmp_path):
    root = tmp_path / "models"
    for folder in ("Lora", "embeddings", "VAE", "Stable-diffusion"):
        (root / folder).mkdir(parents=True)
    return root


def _cards(models: Path) -> NetworkCards:
    hashes = HashCache(None)
    libraries = Libraries(LoraLibrary((models / "Lora",), hashes), EmbeddingLibrary((models / "embeddings",), hashes),
                          VaeLibrary((models / "VAE",), hashes))
    manager = ModelManager((models / "Stable-diffusion",), CONFIGS, lambda: None, HashCache(None, hashing=False))
    return NetworkCards(libraries, manager)


def test_previews_are_found_beside_each_kind_of_file_preview_png_first(models):
    lora = _lora(models / "Lora" / "style.safetensors")
    assert find_preview(lora) is None
    plain = _png(models / "Lora" / "style.jpg")
    assert find_preview(lora) == plain
    preview = _png(models / "Lora" / "style.preview.webp")
    assert find_preview(lora) == preview
    best = _png(models / "Lora" / "style.preview.png")
    assert find_preview(lora) == best
    vae = models / "VAE" / "clear.vae.pt"
    vae.write_bytes(b"x")
    _png(models / "VAE" / "clear.vae.preview.jpeg")
    checkpoint = models / "Stable-diffusion" / "sub" / "model.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"x")
    _png(models / "Stable-diffusion" / "sub" / "model.png")
    (models / "embeddings" / "fluffy.pt").write_bytes(b"x")
    _png(models / "embeddings" / "fluffy.preview.gif")

    cards = _cards(models)
    found = {kind: [(c.name, c.preview.name if c.preview else None) for c in cards.cards(kind)]
             for kind in ("lora", "vae", "checkpoints", "textual_inversion")}
    assert found == {"lora": [("style", "style.preview.png")], "vae": [("clear.vae.pt", "clear.vae.preview.jpeg")],
                     "checkpoints": [("sub/model.safetensors", "model.png")], "textual_inversion": [("fluffy", "fluffy.preview.gif")]}


def test_user_metadata_wins_over_the_loras_header_which_fills_the_rest(models):
    tags = json.dumps({"10_glow": {"glowing": 40, "neon": 12, "1girl": 3}, "5_more": {"neon": 30, "dark": 1}})
    _lora(models / "Lora" / "glow.safetensors", ss_output_name="glowstyle", ss_tag_frequency=tags, ss_base_model_version="sd_v1",
          **{"modelspec.description": "Neon glow.", "modelspec.trigger_phrase": "glowing neon"})
    _lora(models / "Lora" / "plain.safetensors", **{"modelspec.description": "From the header"})
    (models / "Lora" / "plain.json").write_text(json.dumps({
        "description": "My favourite", "activation text": "plainstyle", "preferred weight": 0.7, "negative text": "blurry",
        "notes": "n", "sd version": "SD1"}), encoding="utf-8")
    cards = {c.name: c for c in _cards(models).cards("lora")}

    glow, plain = cards["glow"], cards["plain"]
    assert glow.alias == "glowstyle" and glow.trained.base_model == "sd_v1"
    assert glow.trained.tags == ("neon", "glowing", "1girl", "dark")  # summed over both folders, most frequent first
    assert glow.description == "Neon glow." and glow.activation_text == "glowing neon"
    assert glow.prompt_text(1.0) == "<lora:glowstyle:1> glowing neon"
    assert glow.prompt_text(0.65) == "<lora:glowstyle:0.65> glowing neon"
    assert plain.description == "My favourite" and plain.negative_text == "blurry"
    assert plain.prompt_text(1.0) == "<lora:plain:0.7> plainstyle"  # the preferred weight beats the default multiplier


def test_an_alias_another_file_also_answers_to_is_not_used_in_the_tag(models):
    _lora(models / "Lora" / "a.safetensors", ss_output_name="b")
    _lora(models / "Lora" / "b.safetensors")
    cards = {c.name: c for c in _cards(models).cards("lora")}
    assert cards["a"].prompt_text(1) == "<lora:a:1>" and cards["b"].prompt_text(1) == "<lora:b:1>"


def test_broken_files_get_a_card_that_says_so(models):
    (models / "Lora" / "broken.safetensors").write_bytes(b"\x00" * 64)
    _lora(models / "Lora" / "badjson.safetensors")
    (models / "Lora" / "badjson.json").write_text("{not json", encoding="utf-8")
    (models / "Lora" / "list.pt").write_bytes(b"x")
    (models / "Lora" / "list.json").write_text("[1, 2]", encoding="utf-8")
    cards = {c.name: c for c in _cards(models).cards("lora")}
    assert cards["broken"].error == UNREADABLE
    assert cards["badjson"].error == BAD_METADATA and cards["badjson"].description == ""
    assert cards["list"].error == BAD_METADATA
    with pytest.raises(ValueError, match="badjson.json cannot be read, so it was left as it is: fix or delete it first."):
        write_user_metadata(cards["badjson"].path, {"description": "x"})
    assert (models / "Lora" / "badjson.json").read_text(encoding="utf-8") == "{not json"


def test_saving_keeps_unknown_keys_and_replaces_the_file_in_one_step(models, monkeypatch):
    lora = _lora(models / "Lora" / "keep.safetensors")
    target = models / "Lora" / "keep.json"
    target.write_text(json.dumps({"sd version": "SDXL", "civitai": {"id": 7}, "description": "old"}), encoding="utf-8")
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (replaced.append((Path(src).name, Path(dst))), real_replace(src, dst)))

    write_user_metadata(lora, {"description": "new ✨", "activation text": "kp", "preferred weight": 0.8})
    saved = json.loads(target.read_text(encoding="utf-8"))
    assert saved == {"sd version": "SDXL", "civitai": {"id": 7}, "description": "new ✨", "activation text": "kp", "preferred weight": 0.8}
    assert [dst for _, dst in replaced] == [target] and replaced[0][0].startswith(".keep.json")
    assert sorted(p.name for p in (models / "Lora").iterdir()) == ["keep.json", "keep.safetensors"]  # no temp file left


def test_a_file_that_cannot_be_written_is_a_sentence(models):
    lora = _lora(models / "Lora" / "x.safetensors")
    (models / "Lora" / "x.json").mkdir()  # in the way of the new file, for root too
    (models / "Lora" / "x.preview.png").mkdir()
    with pytest.raises(ValueError, match="x.json cannot be read, so it was left as it is"):
        write_user_metadata(lora, {"description": "x"})
    with pytest.raises(ValueError, match="Could not write x.preview.png"):
        save_preview(lora, Image.new("RGB", (8, 8)))
    assert sorted(p.name for p in lora.parent.iterdir()) == ["x.json", "x.preview.png", "x.safetensors"]  # no temp files left


def test_a_read_only_folder_is_a_sentence(models):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere (the test above covers it)")
    lora = _lora(models / "Lora" / "ro" / "x.safetensors")
    os.chmod(lora.parent, 0o555)
    try:
        with pytest.raises(ValueError, match="Could not write x.json"):
            write_user_metadata(lora, {"description": "x"})
        with pytest.raises(ValueError, match="Could not write x.preview.png"):
            save_preview(lora, Image.new("RGB", (8, 8)))
    finally:
        os.chmod(lora.parent, 0o755)


def test_replacing_the_preview_writes_a_png_that_wins_and_a_new_thumbnail(models):
    lora = _lora(models / "Lora" / "pic.safetensors")
    _png(models / "Lora" / "pic.png", "blue")
    cards = _cards(models)
    first = Image.open(io.BytesIO(cards.thumbnail("lora", "pic")))
    assert first.getpixel((5, 5))[2] > 200

    save_preview(lora, Image.new("RGB", (600, 300), "green"))
    assert (models / "Lora" / "pic.preview.png").exists()
    picture = Image.open(io.BytesIO(cards.thumbnail("lora", "pic")))
    assert picture.size == (256, 128)  # scaled to the card's size on the server
    red, green, blue = picture.getpixel((5, 5))
    assert green > 100 and red < 40 and blue < 40


def test_thumbnails_only_for_listed_items(models):
    _lora(models / "Lora" / "a.safetensors")
    _png(models / "Lora" / "a.preview.png")
    _png(models / "secret.png")
    cards = _cards(models)
    assert cards.thumbnail("lora", "a") is not None
    for name in ("../secret", "../../models/secret", str(models / "secret"), "a.preview", "A", ""):
        assert cards.thumbnail("lora", name) is None, name
    assert cards.thumbnail("vae", "a") is None


def test_search_matches_every_word_in_name_alias_path_description_and_trigger_words(models):
    _lora(models / "Lora" / "chars" / "hero.safetensors", ss_output_name="hero_v2", ss_tag_frequency=json.dumps({"x": {"red cape": 3}}))
    _lora(models / "Lora" / "styles" / "ink.safetensors")
    (models / "Lora" / "styles" / "ink.json").write_text(json.dumps({"description": "Sumi-e brush", "activation text": "inkwash"}))
    cards = _cards(models).cards("lora")
    names = lambda query: [c.name for c in search(cards, query)]  # noqa: E731
    assert names("") == ["hero", "ink"]
    assert names("HERO_v2") == ["hero"] and names("cape") == ["hero"] and names("chars/") == ["hero"]
    assert names("sumi brush") == ["ink"] and names("inkwash") == ["ink"] and names("styles") == ["ink"]
    assert names("ink hero") == []


def test_sort_orders(models):
    for i, name in enumerate(["b10", "a", "B2"]):
        path = _lora(models / "Lora" / name / f"{name}.safetensors")
        os.utime(path, (1_000_000 + (2 - i) * 100, 1_000_000 + (2 - i) * 100))  # b10 newest
    cards = _cards(models).cards("lora")
    order = lambda field, direction="Ascending": [c.name for c in sort_cards(cards, field, direction)]  # noqa: E731
    assert order("Path") == ["a", "B2", "b10"]  # natural order, as the folders list them
    assert order("Name") == ["a", "b10", "B2"]
    assert order("Name", "Descending") == ["B2", "b10", "a"]
    assert order("Date Modified") == ["B2", "a", "b10"]
    assert order("Date Modified", "Descending") == ["b10", "a", "B2"]
    assert order("Date Created") == sorted(order("Date Created"), key=lambda n: next(c.created for c in cards if c.name == n))


def test_rescan_finds_new_files_and_a_changed_header_is_read_again(models):
    cards = _cards(models)
    assert cards.cards("lora") == []
    path = _lora(models / "Lora" / "late.safetensors", ss_output_name="first")
    assert [c.name for c in cards.cards("lora", rescan=True)] == ["late"]
    assert cards.cards("lora")[0].trained.output_name == "first"
    _lora(path, ss_output_name="second-name")
    assert cards.cards("lora", rescan=True)[0].trained.output_name == "second-name"


def test_frequent_tags_of_odd_headers():
    assert frequent_tags(None) == () and frequent_tags("not json") == () and frequent_tags('{"a": 3}') == ()
    assert frequent_tags({"d": {"x": 1, "y": 5, " ": 9}}) == ("y", "x")
