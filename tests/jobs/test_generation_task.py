"""img2img and hires jobs as the worker runs them: where files go, what their infotext says,
and that the init images are never touched."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from modules.generation.params import GenerationParams, Img2ImgParams
from modules.generation.runner import InitImages
from modules.jobs.generation_task import GenerationService
from modules.jobs.queue import Job
from modules.models.catalog import HashCache
from modules.models.manager import ModelManager
from modules.options import OutputSettings
from modules.outputs.infotext import parse_infotext

DAY = datetime(2026, 11, 21, 12, 0)


def cpu_service(data: Path, tiny_checkpoint: Path, configs_dir: Path, day: datetime = DAY) -> GenerationService:
    """A generation service over `data` with the tiny model loaded on the CPU, its clock at `day`."""
    import torch

    from modules.generation.devices import device_settings

    ckpts = data / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True)
    (ckpts / tiny_checkpoint.name).write_bytes(tiny_checkpoint.read_bytes())
    models = ModelManager((ckpts,), configs_dir, lambda: device_settings(use_cpu=True), HashCache(data / "cache.json"))
    models.load()
    assert models.active.model.device == torch.device("cpu")
    return GenerationService(models, OutputSettings(), data, console_progress=False, clock=lambda: day)


@pytest.fixture(scope="module")
def service(tmp_path_factory, tiny_checkpoint, configs_dir):
    return cpu_service(tmp_path_factory.mktemp("data"), tiny_checkpoint, configs_dir)


def job() -> Job:
    return Job(id="task(test)", kind="test", task=lambda j: None)


def picture(colour=(200, 40, 40), size=(64, 64)) -> Image.Image:
    image = Image.new("RGB", size, (40, 80, 200))
    ImageDraw.Draw(image).ellipse((16, 16, 48, 48), fill=colour)
    return image


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_img2img_saves_to_its_own_folders_with_a1111_keys(service):
    params = Img2ImgParams.create(prompt="a red circle", width=64, height=64, steps=4, seed=5, batch_size=2, denoising_strength=0.5)
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((20, 20, 44, 44), fill=255)
    result = service.run_img2img(job(), params, InitImages((picture(),), mask))
    root = service.writers["img2img"][0].settings.directory
    assert root.name == "img2img-images"
    assert [p.relative_to(root).as_posix() for p in result.paths] == ["2026-11-21/00000-5.png", "2026-11-21/00001-6.png"]
    assert result.grid_path.relative_to(root.parent).as_posix() == "img2img-grids/2026-11-21/grid-0000.png"
    text = Image.open(result.paths[0]).info["parameters"]
    line = text.split("\n")[-1]
    assert line.startswith("Steps: 4, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 64x64, Model hash: ")
    assert ", Denoising strength: 0.5, Mask blur: 4, Version: " in line
    parsed = parse_infotext(text)
    assert (parsed["Denoising strength"], parsed["Mask blur"]) == ("0.5", "4")


def test_img2img_without_a_mask_writes_no_mask_keys(service):
    params = Img2ImgParams.create(prompt="x", width=64, height=64, steps=2, seed=9, inpaint_full_res=True)
    result = service.run_img2img(job(), params, InitImages((picture(),)))
    fields = parse_infotext(result.infotexts[0])
    assert fields["Denoising strength"] == "0.75"
    assert not {"Mask blur", "Inpaint area", "Masked area padding"} & set(fields)


def test_hires_infotext(service):
    params = GenerationParams.create(
        prompt="x", width=64, height=64, steps=3, seed=2, enable_hr=True, hr_scale=2, hr_second_pass_steps=4, hr_upscaler="Latent (nearest)",
        denoising_strength=0.55, hr_sampler_name="Euler",
    )
    result = service.run_txt2img(job(), params)
    image = Image.open(result.paths[0])
    assert image.size == (128, 128)
    fields = parse_infotext(image.info["parameters"])
    assert fields["Size"] == "64x64"  # A1111 records the first pass's size
    assert (fields["Hires upscale"], fields["Hires steps"], fields["Hires upscaler"], fields["Denoising strength"]) == ("2", "4", "Latent (nearest)", "0.55")
    assert fields["Hires sampler"] == "Euler"


def test_folder_batch_keeps_names_skips_non_images_and_never_overwrites_inits(service, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    picture().save(folder / "cat.png")
    picture((30, 200, 60), (96, 64)).save(folder / "dog.jpg")
    (folder / "notes.txt").write_text("not a picture")
    before = {p.name: digest(p) for p in folder.iterdir()}
    params = Img2ImgParams.create(prompt="x", width=64, height=64, steps=2, seed=3)
    # Output into the input folder itself: the inits survive, the results get a suffix.
    result = service.run_img2img_folder(job(), params, folder, folder)
    assert sorted(p.name for p in result.paths) == ["cat-1.png", "dog.png"]  # dog.jpg keeps its name as a PNG
    assert {p.name: digest(p) for p in folder.iterdir() if p.name in before} == before
    assert any("notes.txt" in n and "not an image" in n for n in result.notes)
    assert "Denoising strength: 0.75" in Image.open(folder / "cat-1.png").info["parameters"]

    inputs, out, masks = tmp_path / "in2", tmp_path / "out", tmp_path / "masks"
    inputs.mkdir()
    masks.mkdir()
    picture().save(inputs / "cat.png")
    picture().save(inputs / "dog.png")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    mask.save(masks / "cat.png")
    mask.save(masks / "bird.png")  # with several masks, each image needs its own by name
    result = service.run_img2img_folder(job(), params, inputs, out, masks)
    assert [p.name for p in result.paths] == ["cat.png"]  # dog has no mask of its name
    assert any("dog" in n and "no mask" in n for n in result.notes)
    assert "Mask blur: 4" in Image.open(out / "cat.png").info["parameters"]
    with pytest.raises(ValueError, match="Input directory not found"):
        service.run_img2img_folder(job(), params, tmp_path / "missing", None)


def test_logged_in_users_images_go_to_their_own_folder(service):
    """With log-ins on (--gradio-auth/--api-auth), a job's images and grid are saved under the
    user's folder; an anonymous lane ("ip:...") keeps the usual layout."""
    service.user_folders = True
    service.apply_settings(service.settings)
    try:
        params = GenerationParams.create(prompt="a red circle", width=64, height=64, steps=2, seed=11, batch_size=2)
        alice = Job(id="task(a)", kind="txt2img", task=lambda j: None, user="alice")
        result = service.run_txt2img(alice, params, save=True)
        root = service.writers["txt2img"][0].settings.directory
        assert [p.relative_to(root).parts[:2] for p in result.paths] == [("alice", "2026-11-21")] * 2
        assert result.grid_path.relative_to(service.writers["txt2img"][1].settings.directory).parts[:2] == ("alice", "2026-11-21")
        anonymous = Job(id="task(b)", kind="txt2img", task=lambda j: None, user="ip:127.0.0.1")
        (path,) = service.run_txt2img(anonymous, params.model_copy(update={"batch_size": 1}), save=True).paths
        assert path.relative_to(root).parts[0] == "2026-11-21"
    finally:
        service.user_folders = False
        service.apply_settings(service.settings)
