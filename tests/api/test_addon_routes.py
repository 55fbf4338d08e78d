"""The API's add-on routes and fields: LoRA, embedding, VAE and style listings that show what
is on disk, `styles` and `override_settings.sd_vae` in a request, and clear 400s for names
that do not exist."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from modules.models.ldm_keys import vae_to_ldm
from modules.models.tiny import build_components
from tests.servers import data_dir_with_tiny_model, in_process_app

SMALL = {"width": 64, "height": 64, "steps": 3, "seed": 4}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_checkpoint, configs_dir):
    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("addon-data"), tiny_checkpoint)
    models = data / "models"
    for sub in ("Lora", "embeddings", "VAE"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    save_file({"emb_params": torch.randn(3, 32)}, str(models / "embeddings" / "tinystyle.safetensors"))
    save_file({"emb_params": torch.randn(2, 768)}, str(models / "embeddings" / "sd15thing.safetensors"))
    _, vae, _ = build_components(configs_dir, seed=77)
    save_file({k: v.contiguous() for k, v in vae_to_ldm(vae.state_dict(), vae.config).items()}, str(models / "VAE" / "bright.safetensors"))
    (models / "Lora" / "glow.safetensors").write_bytes(b"")  # listed; loading it is another test's business
    (data / "styles.csv").write_text('name,prompt,negative_prompt\ncinema,"{prompt}, film grain",cartoon\n', encoding="utf-8")
    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars",
                        checkpoint=models / "Stable-diffusion" / tiny_checkpoint.name) as (_, client):
        yield client, data


def infotext(response) -> str:
    return json.loads(response.json()["info"])["infotexts"][0]


def test_listings_show_what_is_on_disk(server):
    client, data = server
    assert [s["name"] for s in client.get("/sdapi/v1/prompt-styles").json()] == ["cinema"]
    assert client.get("/sdapi/v1/prompt-styles").json()[0] == {"name": "cinema", "prompt": "{prompt}, film grain", "negative_prompt": "cartoon"}
    assert [v["model_name"] for v in client.get("/sdapi/v1/sd-vae").json()] == ["bright.safetensors"]
    assert [lora["name"] for lora in client.get("/sdapi/v1/loras").json()] == ["glow"]
    embeddings = client.get("/sdapi/v1/embeddings").json()
    assert list(embeddings["loaded"]) == ["tinystyle"] and embeddings["loaded"]["tinystyle"]["vectors"] == 3
    assert "sd15thing" in embeddings["skipped"]  # made for a 768-wide text encoder; the tiny model's is 32
    (data / "models" / "Lora" / "second.safetensors").write_bytes(b"")
    assert client.post("/sdapi/v1/refresh-loras").status_code == 200
    assert [lora["name"] for lora in client.get("/sdapi/v1/loras").json()] == ["glow", "second"]


def test_styles_and_vae_in_a_request(server):
    client, _ = server
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "styles": ["cinema"], **SMALL})
    assert r.status_code == 200, r.text
    text = infotext(r)
    assert text.startswith("a cat, film grain\nNegative prompt: cartoon\n")
    assert json.loads(r.json()["info"])["styles"] == ["cinema"]
    stale = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "styles": ["cinema", "gone"], **SMALL})
    assert stale.status_code == 200 and infotext(stale).startswith("a cat, film grain\n")  # A1111 skips unknown styles
    plain = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", **SMALL})
    bright = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "override_settings": {"sd_vae": "bright.safetensors"}, **SMALL})
    assert bright.status_code == 200, bright.text
    assert "VAE hash: " in infotext(bright) and ", VAE: bright.safetensors," in infotext(bright) and "VAE" not in infotext(plain)
    assert bright.json()["images"][0] != plain.json()["images"][0]
    info = json.loads(bright.json()["info"])
    assert info["sd_vae_name"] == "bright.safetensors" and len(info["sd_vae_hash"]) == 10
    assert client.get("/sdapi/v1/options").json()["sd_vae"] == "Automatic"  # the override was restored afterwards


@pytest.mark.parametrize(
    "body, message",
    [
        ({"override_settings": {"sd_vae": "missing.safetensors"}}, "VAE 'missing.safetensors' not found"),
        ({"override_settings": {"emphasis": "Loud"}}, "Emphasis mode: must be one of"),
    ],
)
def test_unknown_names_get_a_400_naming_them(server, body, message):
    client, _ = server
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, **body})
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]


def test_options_set_vae_and_emphasis(server):
    client, _ = server
    assert client.post("/sdapi/v1/options", json={"sd_vae": "bright.safetensors", "emphasis": "No norm"}).status_code == 200
    options = client.get("/sdapi/v1/options").json()
    assert (options["sd_vae"], options["emphasis"]) == ("bright.safetensors", "No norm")
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a (cat:1.4)", **SMALL})
    assert ", VAE: bright.safetensors," in infotext(r) and "Emphasis: No norm" in infotext(r)
    assert client.post("/sdapi/v1/options", json={"sd_vae": "nope"}).status_code == 400
    assert client.post("/sdapi/v1/options", json={"emphasis": "Loud"}).status_code == 400
    assert client.post("/sdapi/v1/options", json={"sd_vae": "Automatic", "emphasis": "Original"}).status_code == 200
    kept = {"override_settings": {"emphasis": "Ignore"}, "override_settings_restore_afterwards": False}
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "a (cat:1.4)", **SMALL, **kept}).status_code == 200
    assert client.get("/sdapi/v1/options").json()["emphasis"] == "Ignore"  # an override not restored afterwards stays, as in A1111
    assert client.post("/sdapi/v1/options", json={"emphasis": "Original"}).status_code == 200


def test_infotext_fills_what_the_request_does_not_set_and_reproduces_the_image(server):
    client, _ = server
    first = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a (cat:1.2), [sitting|standing]", "negative_prompt": "dog", "steps": 4, "seed": 9, "width": 64, "height": 64,
        "cfg_scale": 5.5, "sampler_name": "DPM++ 2M", "scheduler": "Karras", "override_settings": {"CLIP_stop_at_last_layers": 2},
    })
    text = infotext(first)
    assert "Clip skip: 2" in text and "Schedule type: Karras" in text
    again = client.post("/sdapi/v1/txt2img", json={"infotext": text})
    assert again.status_code == 200, again.text
    assert infotext(again) == text and again.json()["images"][0] == first.json()["images"][0]  # the same image, bit for bit
    explicit = client.post("/sdapi/v1/txt2img", json={"infotext": text, "seed": 10})
    assert "Seed: 10," in infotext(explicit) and "Steps: 4," in infotext(explicit)  # a field the request sets wins
    old_style = client.post("/sdapi/v1/txt2img", json={"infotext": "a cat\nSteps: 3, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 4, Size: 64x64"})
    assert "Sampler: DPM++ 2M, Schedule type: Karras," in infotext(old_style)  # A1111's old combined sampler name
