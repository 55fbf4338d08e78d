"""Model upscalers from A1111's folders: listed by their A1111 names without loading, loaded by
spandrel (weights only), tiled inference that matches the untiled result, interrupt between
tiles, clear messages for files that are not upscalers, and the app's routes and hires fix
using them. The models are random-weight networks in spandrel's real layouts, built here."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from modules.generation.control import RunControl
from modules.generation.upscaling import ExtrasParams, UpscaleInterrupted, UpscaleWatch, postprocess
from modules.postprocessing.upscalers import (
    ModelUpscaler, TileSettings, UpscalerLibrary, UpscalerModels, job_watch, read_upscaler, scale_from_name, tile_boxes, upscale_tiled,
)


def compact(scale: int = 4, seed: int = 0):
    """Real-ESRGAN's compact SRVGG layout, tiny (8 features, 2 convolutions)."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    return Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)


def rrdb(scale: int = 4, seed: int = 0):
    """ESRGAN's RRDBNet with one block of 8 filters."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(seed)
    return ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)


def save_pth(net, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def save_safetensors(net, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def picture(width: int = 40, height: int = 28, seed: int = 1) -> Image.Image:
    """Smooth colours with an edge: something an upscaler and Lanczos treat differently."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 4 + 1, width // 4 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(image).copy()
    pixels[:, width // 2:] = 255 - pixels[:, width // 2:]
    return Image.fromarray(pixels)


def difference(a: Image.Image, b: Image.Image) -> np.ndarray:
    return np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16))


@pytest.fixture
def folders(tmp_path) -> dict[str, Path]:
    names = ("ESRGAN", "RealESRGAN", "SwinIR", "DAT", "HAT")
    return {name: tmp_path / "models" / name for name in names}


def library(folders: dict[str, Path], **tiles) -> UpscalerLibrary:
    return UpscalerLibrary(list(folders.items()), UpscalerModels("cpu", tiles=TileSettings(**tiles) if tiles else TileSettings(), console=False),
                           reserved=("Latent",))


# ----------------------------------------------------------------------------- listing

def test_files_are_listed_by_their_a1111_names_without_loading_them(folders):
    save_pth(rrdb(), folders["ESRGAN"] / "4x-TinyRRDB.pth")
    save_safetensors(compact(2), folders["ESRGAN"] / "TinyCompact_x2.safetensors")
    save_pth(compact(), folders["RealESRGAN"] / "RealESRGAN_x4plus.pth")
    save_pth(compact(), folders["RealESRGAN"] / "RealESRGAN_x4plus_anime_6B.pth")
    save_pth(compact(), folders["ESRGAN"] / "Lanczos.pth")  # a built-in's name: the file gets its folder added
    save_pth(compact(), folders["SwinIR"] / "4x-TinyRRDB.pth")  # the same stem in another folder
    (folders["ESRGAN"] / "notes.txt").write_text("not a model")

    lib = library(folders)
    names = lib.registry.names
    assert names[:3] == ("None", "Lanczos", "Nearest")
    assert set(names[3:]) == {"4x-TinyRRDB", "TinyCompact_x2", "Lanczos (ESRGAN)", "R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B", "4x-TinyRRDB (SwinIR)"}
    assert lib.models.loaded == []  # listing reads names only
    described = {d["name"]: d for d in lib.registry.describe()}
    assert described["TinyCompact_x2"]["scale"] == 2 and described["R-ESRGAN 4x+"]["scale"] == 4
    assert described["R-ESRGAN 4x+"]["model_path"] == str(folders["RealESRGAN"] / "RealESRGAN_x4plus.pth")
    assert described["R-ESRGAN 4x+"]["model_name"] == "RealESRGAN"
    assert [m["name"] for m in lib.realesrgan_models()] == ["R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B"]


def test_a_file_added_later_joins_the_list(folders):
    lib = library(folders)
    assert lib.model_names == ()
    save_pth(compact(), folders["DAT"] / "DAT_x4.pth")
    assert lib.model_names == ("DAT x4",)


def test_scale_from_name():
    assert [scale_from_name(n) for n in ("4x-UltraSharp", "RealESRGAN_x2plus", "DAT_x3", "2xPSNR", "realesr-animevideov3", "s64w8")] == [4, 2, 3, 2, 4, 4]


# ----------------------------------------------------------------------------- inference

@pytest.mark.parametrize("save", [save_pth, save_safetensors])
def test_model_upscale_reaches_the_asked_size_with_the_models_pixels(folders, save):
    path = save(compact(), folders["ESRGAN"] / ("tiny.pth" if save is save_pth else "tiny.safetensors"))
    lib = library(folders)
    upscaler = lib.registry.get(path.stem)
    image = picture()

    four = upscaler.upscale(image, 4)
    assert four.size == (160, 112) and lib.models.loaded == [str(path)]
    lanczos = image.resize(four.size, Image.Resampling.LANCZOS)
    assert difference(four, lanczos).mean() > 2  # the network's picture, not a resize

    two = upscaler.upscale(image, 2)  # one 4x pass, then Lanczos down (as A1111)
    assert two.size == (80, 56)
    assert difference(two, four.resize((80, 56), Image.Resampling.LANCZOS)).max() <= 1


def test_a_2x_model_is_repeated_to_reach_4x(folders):
    save_pth(compact(scale=2), folders["ESRGAN"] / "2x-tiny.pth")
    upscaler = library(folders).registry.get("2x-tiny")
    image = picture(20, 12)
    assert upscaler.upscale(image, 4).size == (80, 48)
    assert upscaler.upscale(image, 3).size == (60, 36)


@pytest.mark.parametrize("net", [compact, rrdb])
def test_tiled_and_untiled_results_agree(tmp_path, net):
    model = read_upscaler(save_pth(net(), tmp_path / "m.pth"))
    image = picture(56, 44)
    whole = upscale_tiled(model, image, TileSettings(0, 0))
    assert len(tile_boxes(56, 44, TileSettings(24, 8))) == 9
    tiled = upscale_tiled(model, image, TileSettings(24, 8))
    assert whole.size == tiled.size == (224, 176)
    assert difference(whole, tiled).max() <= 4 and difference(whole, tiled).mean() < 0.5


def test_interrupt_stops_between_tiles(tmp_path):
    model = read_upscaler(save_pth(compact(), tmp_path / "m.pth"))
    control = RunControl()
    seen: list[tuple[int, int]] = []

    def on_tile(done: int, total: int) -> None:
        seen.append((done, total))
        if done == 2:
            control.interrupt()

    with pytest.raises(UpscaleInterrupted):
        upscale_tiled(model, picture(64, 48), TileSettings(16, 4), UpscaleWatch(on_tile, lambda: control.interrupted))
    assert seen == [(1, 20), (2, 20)]


def test_a_jobs_watch_counts_tiles_and_stops_on_interrupt(folders):
    from modules.jobs.queue import Progress

    save_pth(compact(), folders["ESRGAN"] / "tiny.pth")
    control, progress = RunControl(), Progress()
    upscalers = library(folders, tile=16, overlap=4).registry.watched(job_watch(control, progress))
    params = ExtrasParams.create(upscalers=upscalers, upscaler_1="tiny", upscaling_resize=2)
    assert postprocess(picture(32, 32), params, upscalers).image.size == (64, 64)
    assert (progress.step, progress.steps) == (9, 9)
    control.interrupt()
    with pytest.raises(UpscaleInterrupted):
        postprocess(picture(32, 32), params, upscalers)


# ----------------------------------------------------------------------------- bad files

def bad_files(folder: Path) -> dict[str, str]:
    """File name -> what its message must say."""
    from spandrel.architectures.DnCNN import DnCNN
    from spandrel.architectures.GFPGAN import GFPGAN

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corrupt.pth").write_bytes(b"\x80\x02 not a checkpoint" * 10)
    (folder / "corrupt.safetensors").write_bytes(b"\xff" * 64)
    torch.save({"encoder.weight": torch.zeros(4, 4)}, folder / "unknown.pth")
    torch.save({"net": torch.nn.Linear(2, 2)}, folder / "pickled.pth")  # a whole module: needs more than tensors
    save_pth(GFPGAN(out_size=32, num_style_feat=16, channel_multiplier=1, narrow=0.125), folder / "face.pth")
    save_pth(DnCNN(), folder / "denoise.pth")
    return {"corrupt.pth": "corrupt", "corrupt.safetensors": "corrupt", "unknown.pth": "unknown layout",
            "pickled.pth": "beyond tensors (torch.nn.modules.linear.Linear)", "face.pth": "face restoration model",
            "denoise.pth": "not an upscaler"}


def test_files_that_are_not_upscalers_get_clear_messages_and_the_list_stays_usable(folders):
    expected = bad_files(folders["ESRGAN"])
    save_pth(compact(), folders["ESRGAN"] / "good.pth")
    lib = library(folders)
    assert sorted(lib.model_names) == ["corrupt", "corrupt (ESRGAN)", "denoise", "face", "good", "pickled", "unknown"]
    for upscaler in lib.model_upscalers():
        if upscaler.path.name == "good.pth":
            continue
        with pytest.raises(ValueError) as caught:
            upscaler.upscale(picture(16, 16), 2)
        message = str(caught.value)
        assert upscaler.path.name in message and expected[upscaler.path.name] in message, message
    assert lib.registry.get("good").upscale(picture(16, 16), 2).size == (32, 32)  # the rest unaffected


def test_a_pickle_is_never_run(tmp_path):
    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "ran",))

    torch.save({"x": Boom()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="evil.pth is not a plain weights file"):
        read_upscaler(tmp_path / "evil.pth")
    assert not (tmp_path / "ran").exists()


# ----------------------------------------------------------------------------- the app

def b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def unb64(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text.split(",", 1)[-1])))


@pytest.fixture(scope="module")
def app_with_upscalers(tmp_path_factory, tiny_checkpoint):
    """The API on the tiny checkpoint, with a compact 4x model, a RealESRGAN-named one and a
    corrupt file in the models folders."""
    from tests.servers import data_dir_with_tiny_model, in_process_app

    data = data_dir_with_tiny_model(tmp_path_factory.mktemp("upscalers-app"), tiny_checkpoint)
    save_safetensors(compact(), data / "models" / "ESRGAN" / "4x-TinyCompact.safetensors")
    save_pth(compact(scale=2, seed=3), data / "models" / "RealESRGAN" / "RealESRGAN_x2plus.pth")
    (data / "models" / "ESRGAN" / "broken.pth").write_bytes(b"nonsense" * 8)
    with in_process_app(data, "--api", "--nowebui", "--disable-console-progressbars", checkpoint=tiny_checkpoint) as (app, client):
        yield app, client


def test_api_lists_the_model_upscalers(app_with_upscalers):
    app, client = app_with_upscalers
    listed = {u["name"]: u for u in client.get("/sdapi/v1/upscalers").json()}
    assert list(listed)[:3] == ["None", "Lanczos", "Nearest"]
    assert listed["4x-TinyCompact"] == {"name": "4x-TinyCompact", "model_name": "ESRGAN", "scale": 4, "model_url": None,
                                        "model_path": str(app.paths.model_dir("ESRGAN") / "4x-TinyCompact.safetensors")}
    assert "R-ESRGAN 2x+" in listed and "broken" in listed
    assert client.get("/sdapi/v1/realesrgan-models").json() == [
        {"name": "R-ESRGAN 2x+", "path": str(app.paths.model_dir("RealESRGAN") / "RealESRGAN_x2plus.pth"), "scale": 2}]


def test_extras_api_upscales_with_a_model_and_a_broken_file_is_a_400(app_with_upscalers):
    _, client = app_with_upscalers
    image = picture(24, 20)
    r = client.post("/sdapi/v1/extra-single-image", json={"image": b64(image), "upscaling_resize": 4, "upscaler_1": "4x-TinyCompact"})
    assert r.status_code == 200, r.text
    out = unb64(r.json()["image"]).convert("RGB")
    assert out.size == (96, 80)
    assert difference(out, image.resize((96, 80), Image.Resampling.LANCZOS)).mean() > 2
    assert "Postprocess upscaler: 4x-TinyCompact" in r.json()["html_info"]

    r = client.post("/sdapi/v1/extra-single-image", json={"image": b64(image), "upscaling_resize": 2, "upscaler_1": "broken"})
    assert r.status_code == 400, r.text
    assert "broken.pth" in r.text and "corrupt" in r.text
    r = client.post("/sdapi/v1/extra-single-image", json={"image": b64(image), "upscaling_resize": 2, "upscaler_1": "R-ESRGAN 2x+"})
    assert r.status_code == 200 and unb64(r.json()["image"]).size == (48, 40)


def test_tile_settings_reach_the_upscalers(app_with_upscalers):
    app, client = app_with_upscalers
    assert client.post("/sdapi/v1/options", json={"ESRGAN_tile": 16, "ESRGAN_tile_overlap": 4}).status_code == 200
    assert app.service.upscalers.models.tiles == TileSettings(16, 4)
    r = client.post("/sdapi/v1/options", json={"ESRGAN_tile": 192, "ESRGAN_tile_overlap": 8})
    assert r.status_code == 200 and app.service.upscalers.models.tiles == TileSettings(192, 8)


def test_hires_fix_with_a_model_upscaler(app_with_upscalers):
    _, client = app_with_upscalers
    body = {"prompt": "a red circle", "width": 64, "height": 64, "steps": 2, "seed": 5, "enable_hr": True, "hr_upscaler": "4x-TinyCompact",
            "hr_scale": 2, "hr_second_pass_steps": 1, "denoising_strength": 0.5}
    r = client.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    assert unb64(r.json()["images"][0]).size == (128, 128)
    assert "Hires upscaler: 4x-TinyCompact" in r.json()["info"]

    r = client.post("/sdapi/v1/txt2img", json={**body, "hr_upscaler": "Nope"})
    assert r.status_code == 400 and "Nope" in r.text and "4x-TinyCompact" in r.text  # the choices name the models too

    pasted = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "steps": 1, "width": 64, "height": 64, "infotext":
                                                    "x\nSteps: 1, Seed: 5, Size: 64x64, Hires upscale: 1.5, Hires upscaler: R-ESRGAN 2x+, Denoising strength: 0.5"})
    assert pasted.status_code == 200, pasted.text
    assert "Hires upscaler: R-ESRGAN 2x+" in pasted.json()["info"] and unb64(pasted.json()["images"][0]).size == (96, 96)


def test_a_checkpoint_unload_frees_the_upscaler_model(app_with_upscalers):
    """Runs after the app's other tests: it unloads the checkpoint."""
    app, client = app_with_upscalers
    r = client.post("/sdapi/v1/extra-single-image", json={"image": b64(picture(16, 16)), "upscaling_resize": 2, "upscaler_1": "4x-TinyCompact"})
    assert r.status_code == 200 and app.service.upscalers.models.loaded
    app.models.unload()
    assert app.service.upscalers.models.loaded == []


def test_model_upscaler_names_for_hires_fix_come_from_the_caller():
    from modules.generation.params import GenerationParams

    with pytest.raises(ValueError, match="Hires upscaler 'R-ESRGAN 4x\\+' not found"):
        GenerationParams.create(enable_hr=True, hr_upscaler="R-ESRGAN 4x+")
    assert GenerationParams.create(("R-ESRGAN 4x+",), enable_hr=True, hr_upscaler="R-ESRGAN 4x+").hr_upscaler == "R-ESRGAN 4x+"


def test_runner_hires_pass_uses_the_model_and_an_interrupt_falls_back(tiny_model, tmp_path):
    """The runner's pixel path: the model's picture cropped to the hires size; interrupted
    between tiles, a plain resize (the stopped pass returns it)."""
    from modules.generation.params import GenerationParams
    from modules.generation.runner import Runner
    from modules.generation.upscaling import UpscalerRegistry, builtin_upscalers

    models = UpscalerModels("cpu", tiles=TileSettings(16, 4), console=False)
    upscaler = ModelUpscaler("tiny", save_pth(compact(), tmp_path / "tiny.pth"), "ESRGAN", models)
    runner = Runner(tiny_model)
    runner.upscalers = UpscalerRegistry([*builtin_upscalers(), upscaler])
    params = GenerationParams.create(("tiny",), prompt="x", width=64, height=64, steps=1, enable_hr=True, hr_upscaler="tiny", hr_resize_x=96,
                                     hr_resize_y=80)
    image = picture(64, 64)
    made = runner._model_upscale(image, 96, 80, "tiny", None)
    assert made.size == (96, 80)
    expected = upscaler.upscale(image, 1.5)
    assert difference(made, expected.crop((0, 8, 96, 88))).max() <= 2
    control = RunControl()
    control.interrupt()
    stopped = runner._model_upscale(image, 96, 80, "tiny", control)
    assert difference(stopped, image.resize((96, 96), Image.Resampling.LANCZOS).crop((0, 8, 96, 88))).max() <= 2
    assert params.hr_upscaler == "tiny"


def test_catalog_upscalers_land_in_upscaler_folders_under_a1111_names(tmp_path):
    """What the Models tab downloads shows up in the lists under the name A1111 users know."""
    from modules.models.downloadable import CATALOG_FILE, Catalog
    from modules.options import UPSCALER_FOLDERS

    entries = [e for e in Catalog.load(CATALOG_FILE).entries if e.folder in UPSCALER_FOLDERS]
    assert {e.filename for e in entries} >= {"RealESRGAN_x4plus.pth", "RealESRGAN_x4plus_anime_6B.pth", "4x-UltraSharp.pth"}
    folders = {name: tmp_path / name for name in UPSCALER_FOLDERS}
    for entry in entries:
        folders[entry.folder].mkdir(exist_ok=True)
        (folders[entry.folder] / entry.filename).write_bytes(b"")  # listing reads names only
    names = set(library(folders).model_names)
    assert {"R-ESRGAN 4x+", "R-ESRGAN 4x+ Anime6B", "4x-UltraSharp"} <= names


def test_the_page_offers_the_model_upscalers_in_extras_and_hires_fix(tmp_path):
    """The gradio page's Upscaler 1/2 and Hires upscaler menus list the model files."""
    from tests.servers import in_process_app

    save_pth(compact(), tmp_path / "models" / "ESRGAN" / "4x-PageTest.pth")
    with in_process_app(tmp_path, "--api", "--disable-console-progressbars") as (_, client):
        components = client.get("/config").json()["components"]

    def choices(elem_id: str) -> list[str]:
        found = [c["props"]["choices"] for c in components if c.get("props", {}).get("elem_id") == elem_id]
        assert found, elem_id
        return [c[0] if isinstance(c, (list, tuple)) else c for c in found[0]]

    assert choices("txt2img_hr_upscaler")[-1] == "4x-PageTest" and "Latent" in choices("txt2img_hr_upscaler")
    assert "4x-PageTest" in choices("extras_upscaler_1") and "4x-PageTest" in choices("extras_upscaler_2")
