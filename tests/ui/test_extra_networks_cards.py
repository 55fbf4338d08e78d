"""The Extra networks cards without a browser: what a click does to the prompts (A1111 toggles),
the card HTML (escaped names, user data kept from translation), and the panel's handlers:
click, edit and save, replace preview, search."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules.jobs.generation_task import Libraries
from modules.models.catalog import HashCache
from modules.models.embeddings import EmbeddingLibrary
from modules.models.lora import LoraLibrary
from modules.models.manager import ModelManager
from modules.models.network_cards import NetworkCard
from modules.models.vae import VaeLibrary
from modules.ui.common import Quicksettings
from modules.ui.extra_networks import build_extra_networks, card_html, toggle_card

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _card(kind="lora", name="glow", **user) -> NetworkCard:
    return NetworkCard(kind, name, Path(f"/m/{name}.safetensors"), f"{name}.safetensors", user=user)


def test_a_lora_click_adds_its_tag_and_trigger_words_and_a_second_click_takes_them_out():
    card = _card(**{"activation text": "glowing", "negative text": "dull"})
    prompt, negative = toggle_card("a cat", "", card, 1.0)
    assert (prompt, negative) == ("a cat <lora:glow:1> glowing", "dull")
    prompt = prompt.replace(":1>", ":0.4>") + ", at night"  # the user changed the weight and wrote on
    assert toggle_card(prompt, negative, card, 1.0) == ("a cat, at night", "")
    # trigger words the user went on writing into are theirs: only the tag goes
    assert toggle_card("<lora:glow:1> glowings, beach", "", card, 1.0)[0] == "glowings, beach"


def test_a_lora_tag_lands_after_a_comment_on_a_new_line_and_uses_the_preferred_weight():
    card = _card(**{"preferred weight": 0.6})
    assert toggle_card("a cat # note", "", card, 1.0)[0] == "a cat # note\n<lora:glow:0.6>"
    assert toggle_card("", "", _card(), 0.75)[0] == "<lora:glow:0.75>"


def test_a_lora_is_found_by_its_alias_too():
    card = NetworkCard("lora", "glow_v1", Path("/m/glow_v1.safetensors"), "glow_v1.safetensors", alias="glow")
    assert toggle_card("", "", card, 1.0)[0] == "<lora:glow:1>"
    assert toggle_card("x <lora:glow_v1:1> y", "", card, 1.0)[0] == "x y"
    assert toggle_card("x <lora:glow:0.3>", "", card, 1.0)[0] == "x"


def test_an_embedding_toggles_as_a_whole_word_and_adds_its_negative_text():
    card = _card("textual_inversion", "fluffy", **{"negative text": "bad-hands"})
    assert toggle_card("a fluffyness", "ugly", card, 1.0) == ("a fluffyness fluffy", "ugly bad-hands")
    # inside a weight it is the user's own writing: a click adds the plain word (the negative text is there already)
    assert toggle_card("a (fluffy:1.2) cat", "ugly bad-hands", card, 1.0) == ("a (fluffy:1.2) cat fluffy", "ugly bad-hands")
    assert toggle_card("a fluffy, cat", "ugly, bad-hands", card, 1.0) == ("a, cat", "ugly")
    assert toggle_card("fluffy, a cat", "bad-hands, ugly", card, 1.0) == ("a cat", "ugly")


def test_card_html_escapes_names_and_marks_user_data_notranslate():
    evil = "<img src=x onerror=alert(1)>"
    card = NetworkCard("lora", evil, Path("/m/x.safetensors"), "x.safetensors", user={"description": "${value} {{x}} <b>hi</b>"})
    text = card_html(card)
    assert "<img src=x" not in text and "<b>hi</b>" not in text and "${" not in text and "{{" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "class='card-name notranslate'" in text and "class='card-description notranslate'" in text
    assert "card-placeholder" in text  # no preview: a plain box


@pytest.fixture
def studio(tmp_path):
    root = tmp_path / "models"
    for folder in ("Lora", "embeddings", "VAE", "Stable-diffusion"):
        (root / folder).mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(root / "Lora" / "glow.safetensors"), metadata={"ss_tag_frequency": json.dumps({"d": {"neon": 2}})})
    (root / "Lora" / "glow.json").write_text(json.dumps({"activation text": "glowing", "my own key": [1, 2]}), encoding="utf-8")
    (root / "VAE" / "clear.vae.pt").write_bytes(b"x")
    (root / "Stable-diffusion" / "sub").mkdir()
    (root / "Stable-diffusion" / "sub" / "mine.safetensors").write_bytes(b"x")
    hashes = HashCache(None, hashing=False)
    libraries = Libraries(LoraLibrary((root / "Lora",), hashes), EmbeddingLibrary((root / "embeddings",), hashes),
                          VaeLibrary((root / "VAE",), hashes))
    models = ModelManager((root / "Stable-diffusion",), CONFIGS, lambda: None, hashes)
    service = SimpleNamespace(libraries=libraries, models=models,
                              settings_values=lambda: {"extra_networks_default_multiplier": 0.8, "extra_networks_card_order": "Descending"})
    with gr.Blocks() as blocks:
        prompt, negative = gr.Textbox(), gr.Textbox()
        checkpoint = gr.Dropdown(models.titles(), value=None)
        vae = gr.Dropdown(libraries.vaes.choices(), value="Automatic")
        panel = build_extra_networks("t", service, prompt, negative, Quicksettings(checkpoint, vae))
        gallery, selected = gr.Gallery(), gr.State(0)
        panel.wire_output(gallery, selected)
    return SimpleNamespace(root=root, blocks=blocks, panel=panel, vae=vae)


def _handler(blocks, component, event: str):
    for fn in blocks.fns.values():
        if any(target[0] == component._id and target[1] == event for target in fn.targets):
            return fn.fn
    raise LookupError(event)


def test_the_panel_lists_the_cards_and_follows_the_settings(studio):
    panel = studio.panel
    assert list(panel.htmls) == ["textual_inversion", "checkpoints", "lora", "vae"]  # A1111's tabs, VAE last
    assert panel.order.value == "Descending" and panel.sort.value == "Path"
    lora = panel.render("lora")
    assert "data-name='glow'" in lora and "glowing" in lora
    assert "Nothing here. Add some content to the following directories:" in panel.render("textual_inversion")
    assert "No cards match the search." in panel.render("lora", "nothing-like-it")


def test_a_click_on_a_lora_card_edits_the_prompt_and_one_on_a_model_card_selects_it(studio):
    use = _handler(studio.blocks, studio.panel.htmls["lora"], "use")
    prompt, negative, checkpoint, vae = use("a cat", "", gr.EventData(None, {"kind": "lora", "name": "glow"}))
    assert prompt == "a cat <lora:glow:0.8> glowing" and negative == "" and checkpoint == vae == gr.update()
    assert use(prompt, "", gr.EventData(None, {"kind": "lora", "name": "glow"}))[0] == "a cat"
    picked = use("a cat", "", gr.EventData(None, {"kind": "vae", "name": "clear.vae.pt"}))
    assert picked[:3] == [gr.update()] * 3 and picked[3]["value"] == "clear.vae.pt"
    picked = use("a cat", "", gr.EventData(None, {"kind": "checkpoints", "name": "sub/mine.safetensors"}))
    assert picked[2]["value"] == "sub/mine.safetensors" and picked[2]["value"] in picked[2]["choices"] and picked[3] == gr.update()
    with pytest.warns(UserWarning, match="That file is gone"):
        assert use("a cat", "", gr.EventData(None, {"kind": "lora", "name": "../glow"})) == [gr.update()] * 4  # not a listed card


def test_edit_and_save_keep_other_keys_and_the_cards_show_the_change(studio):
    panel = studio.panel
    opened = _handler(studio.blocks, panel.htmls["lora"], "edit")(gr.EventData(None, {"kind": "lora", "name": "glow"}))
    assert opened[0]["visible"] is True and opened[3]["value"] == "glowing" and opened[-1] == ["lora", "glow"]
    save = next(fn.fn for fn in studio.blocks.fns.values() if fn.fn.__name__ == "save_metadata")
    result = save(["lora", "glow"], "Neon light", "neonstyle", 0.6, "dark", "my notes", "", "Path", "Ascending")
    saved = json.loads((studio.root / "Lora" / "glow.json").read_text(encoding="utf-8"))
    assert saved == {"activation text": "neonstyle", "my own key": [1, 2], "description": "Neon light", "preferred weight": 0.6,
                     "negative text": "dark", "notes": "my notes"}
    lora_html = result[list(panel.htmls).index("lora")]
    assert "Neon light" in lora_html and "neonstyle" in lora_html and result[-1]["visible"] is False


def test_replace_preview_writes_the_selected_output_and_the_card_shows_it(studio, tmp_path):
    panel = studio.panel
    replace = _handler(studio.blocks, panel.replace, "click")
    Image.new("RGB", (32, 32), "red").save(tmp_path / "first.png")
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "second.png")
    pictures = [(str(tmp_path / "first.png"), None), (str(tmp_path / "second.png"), None)]
    result = replace(["lora", "glow"], pictures, 1, "", "Path", "Ascending")
    preview = studio.root / "Lora" / "glow.preview.png"
    assert Image.open(preview).getpixel((3, 3)) == (0, 0, 255)
    assert "extra-networks/thumb?kind=lora&amp;name=glow&amp;v=" in result[list(panel.htmls).index("lora")]
    with pytest.warns(UserWarning, match="No output to use as the preview: generate a picture first."):
        assert replace(["lora", "glow"], None, 0, "", "Path", "Ascending") == [gr.update()] * 4  # no output yet: no change
    assert Image.open(preview).getpixel((3, 3)) == (0, 0, 255)


def test_search_and_refresh_render_every_tab(studio):
    panel = studio.panel
    search = _handler(studio.blocks, panel.search, "input")
    assert "data-name='glow'" in search("neon", "Path", "Ascending")[2]
    assert "No cards match the search." in search("zzz", "Path", "Ascending")[2]
    save_file({"w": torch.zeros(2)}, str(studio.root / "Lora" / "late.safetensors"))
    refresh = _handler(studio.blocks, panel.refresh, "click")
    assert "data-name='late'" in refresh("", "Path", "Ascending")[2]
