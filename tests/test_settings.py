"""config.json: defaults, hand-edited files with bad values, and settings that survive a restart."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient
from PIL import Image

import webui
from modules.options import parse_args
from modules.outputs.infotext import read_infotext
from modules.settings import SettingsStore
from tests.servers import data_dir_with_tiny_model


def test_no_file_means_a1111_defaults_and_a_change_is_saved_with_indent_4(tmp_path):
    store = SettingsStore.open(tmp_path / "config.json")
    assert store["samples_format"] == "png" and store["CLIP_stop_at_last_layers"] == 1 and store["save_to_dirs"] is True
    assert store.warnings == [] and not (tmp_path / "config.json").exists()
    assert store.update({"samples_format": "webp", "jpeg_quality": 90.0}) == {"samples_format": "webp", "jpeg_quality": 90}
    text = (tmp_path / "config.json").read_text()
    assert '\n    "samples_format": "webp"' in text
    again = SettingsStore.open(tmp_path / "config.json")
    assert again["samples_format"] == "webp" and again["jpeg_quality"] == 90 and again["grid_format"] == "png"


def test_a_hand_edited_bad_value_falls_back_to_its_default_with_a_warning(tmp_path, caplog):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"samples_format": "bmp", "jpeg_quality": "high", "CLIP_stop_at_last_layers": 2, "save_to_dirs": "yes",
                                "emphasis": "No norm", "some_extension_option": [1, 2]}))
    with caplog.at_level(logging.WARNING):
        store = SettingsStore.open(path)
    assert store["samples_format"] == "png" and store["jpeg_quality"] == 80 and store["save_to_dirs"] is True
    assert store["CLIP_stop_at_last_layers"] == 2 and store["emphasis"] == "No norm"  # the good ones apply
    assert store["some_extension_option"] == [1, 2]  # unknown keys are kept, as A1111 does
    joined = " ".join(store.warnings)
    assert "samples_format" in joined and "'bmp'" in joined and "jpeg_quality" in joined and "save_to_dirs" in joined
    assert "using the default" in caplog.text
    store.update({"grid_format": "jpg"})
    assert json.loads(path.read_text())["some_extension_option"] == [1, 2]


def test_a_corrupt_file_is_set_aside_and_defaults_used(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"samples_format": "jpg",')
    store = SettingsStore.open(path)
    assert store["samples_format"] == "png" and "could not be read" in store.warnings[0]
    assert (tmp_path / "config.json.bad").read_text() == '{"samples_format": "jpg",'


def test_one_bad_value_changes_nothing_and_a_listener_can_refuse(tmp_path):
    store = SettingsStore.open(tmp_path / "config.json")
    with pytest.raises(ValueError, match="jpeg_quality must be from 1 to 100"):
        store.update({"samples_format": "jpg", "jpeg_quality": 101})
    assert store["samples_format"] == "png" and not (tmp_path / "config.json").exists()

    def refuse(changed):
        if changed.get("sd_vae") == "gone.safetensors":
            raise ValueError("VAE 'gone.safetensors' not found")

    store.on_change(refuse)
    with pytest.raises(ValueError, match="not found"):
        store.update({"sd_vae": "gone.safetensors", "grid_save": False})
    assert store["sd_vae"] == "Automatic" and store["grid_save"] is True


def test_settings_set_through_the_api_survive_a_restart(tmp_path, tiny_checkpoint):
    """Format, quality, date folders, filename pattern, clip skip and the checkpoint: set once,
    saved to config.json, and in force after the app starts again."""
    data = data_dir_with_tiny_model(tmp_path, tiny_checkpoint)
    args = parse_args(["--data-dir", str(data), "--api", "--nowebui", "--disable-console-progressbars"])
    app = webui.App.create(args)
    app.start().wait(120)
    with TestClient(app.build_asgi(args)) as client:
        demo = next(m["title"] for m in client.get("/sdapi/v1/sd-models").json() if m["title"].startswith("demo-shapes-64px"))
        body = {"samples_format": "jpg", "jpeg_quality": 95, "save_to_dirs": False, "CLIP_stop_at_last_layers": 2,
                "samples_filename_pattern": "[seed]-[model_name]", "sd_model_checkpoint": demo}
        assert client.post("/sdapi/v1/options", json=body).status_code == 200
    app.queue.shutdown()
    saved = json.loads((data / "config.json").read_text())
    assert saved["samples_format"] == "jpg" and saved["sd_model_checkpoint"] == demo and saved["CLIP_stop_at_last_layers"] == 2

    again = webui.App.create(args)
    again.start().wait(120)
    with TestClient(again.build_asgi(args)) as client:
        options = client.get("/sdapi/v1/options").json()
        assert options["sd_model_checkpoint"] == demo and options["jpeg_quality"] == 95
        r = client.post("/sdapi/v1/txt2img", json={"prompt": "a red circle", "seed": 7, "steps": 2, "save_images": True})
        assert r.status_code == 200, r.text
    again.queue.shutdown()
    files = list((data / "outputs" / "txt2img-images").glob("*.jpg"))
    assert [f.name for f in files] == ["00000-7-demo-shapes-64px.jpg"]
    text = read_infotext(files[0])
    assert "Clip skip: 2" in text and "Model: demo-shapes-64px" in text
    with Image.open(files[0]) as image:
        assert image.format == "JPEG"
