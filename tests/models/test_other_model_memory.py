"""The refiner beside its checkpoint on a memory plan that keeps models whole: both stay on the
GPU when the card holds them, else they take turns (the idle one in system RAM), and a job
that does not use the refiner parks it in RAM. The CUDA memory query is faked, so the choice
runs on the CPU with the tiny SDXL base and refiner of tests/generation/test_refiner.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from modules.generation.devices import GIB, DeviceSettings, MemoryPlan, device_settings
from modules.generation.offload import weight_bytes
from modules.generation.runner import Runner
from modules.jobs.generation_task import GenerationService
from modules.models.catalog import HashCache
from modules.models.manager import ModelManager
from tests.conftest import CONFIGS
from tests.generation.test_refiner import BASE_TITLE, REFINER_TITLE, files, params  # noqa: F401 (files: the fixture)

# Free VRAM once the SDXL base is on the card: a 12 GB card has ~5 GiB left, a 24 GB one ~17 GiB.
SMALL_CARD, BIG_CARD = 5 * GIB, 17 * GIB


def hooked(model) -> list[bool]:
    """Whether each part carries a turn-taking hook (parts without one sit whole on the device)."""
    return [hasattr(part, "_hf_hook") for part in (model.text_encoder, model.text_encoder_2, model.unet, model.vae) if part is not None]


@pytest.fixture
def manager(files, monkeypatch):  # noqa: F811
    models = ModelManager((files,), CONFIGS, lambda: device_settings(use_cpu=True), HashCache(None))
    models.ensure(BASE_TITLE)
    return models


def run_with_refiner(models: ModelManager) -> list[tuple[str, bool]]:
    """A txt2img job whose refiner takes over halfway; per model call: which UNet ran and whether
    the other model's UNet was on the GPU side of the turns then."""
    base = models.active.model
    runner = Runner(base)
    runner.checkpoints = lambda name: (name, Runner(models.ensure_other(name).model))
    seen = []

    def spy(name, other_unet):
        def record(module, args):
            turns = module_turns()
            seen.append((name, turns is not None and id(other_unet()) in turns.resident))
        return record

    def module_turns():
        return base.extra.get("offload_turns")

    handles = [base.unet.register_forward_pre_hook(spy("base", lambda: models.other.model.unet))]
    models.ensure_other(REFINER_TITLE)  # loaded before the job, as the service's check does
    refiner = models.other.model
    handles.append(refiner.unet.register_forward_pre_hook(spy("refiner", lambda: base.unet)))
    try:
        list(runner.txt2img(params(steps=4, sampler_name="Euler", scheduler="Uniform", refiner_checkpoint=REFINER_TITLE,
                                   refiner_switch_at=0.5), 5))
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_a_card_that_holds_both_keeps_both_whole(manager, monkeypatch):
    monkeypatch.setattr(manager, "_free_vram", lambda: BIG_CARD)
    seen = run_with_refiner(manager)
    assert manager.other_place == "gpu"
    assert [name for name, _ in seen] == ["base", "base", "refiner", "refiner"]
    assert not any(hooked(manager.active.model)) and not any(hooked(manager.other.model))
    assert "offload_turns" not in manager.active.model.extra and manager.other.model.device == manager.devices.device
    assert manager.held_on_gpu() == weight_bytes(manager.other.model) > 0  # what the tiled-VAE cap gives up


def test_a_refiner_held_on_the_gpu_lowers_the_tiled_vae_cap_by_its_size():
    """SDXL on a 16 GB card: untiled decodes up to 2.9 MP alone; a 6 GiB refiner beside it
    (fp16 VAE, 3 GiB per megapixel) leaves room for 0.9 MP."""
    devices = DeviceSettings(torch.device("cuda"), torch.float16, torch.float16, memory=MemoryPlan(tiling_sd=3.4, tiling_sdxl=2.9))
    service = SimpleNamespace(models=SimpleNamespace(devices=devices, held_on_gpu=lambda: 6 * GIB), vae_tiling_megapixels=0.0)
    assert GenerationService._vae_tiling(service, "sdxl").megapixels == pytest.approx(0.9)
    service.vae_tiling_megapixels = 0.5  # the user's own setting below the cap wins
    assert GenerationService._vae_tiling(service, "sdxl").megapixels == pytest.approx(0.5)
    service.models.held_on_gpu, service.vae_tiling_megapixels = lambda: 0, 0.0
    assert GenerationService._vae_tiling(service, "sdxl").megapixels == pytest.approx(2.9)


def test_a_card_too_small_for_both_makes_them_take_turns_and_a_job_without_the_refiner_parks_it(manager, monkeypatch):
    monkeypatch.setattr(manager, "_free_vram", lambda: SMALL_CARD)
    seen = run_with_refiner(manager)
    assert manager.other_place == "turns"
    # each model ran with the other's UNet sent home to system RAM
    assert seen == [("base", False), ("base", False), ("refiner", False), ("refiner", False)]
    base, refiner = manager.active.model, manager.other.model
    assert all(hooked(base)) and all(hooked(refiner)) and base.extra["offload_turns"] is refiner.extra["offload_turns"]

    # a later job that does not use it: the refiner waits in RAM, the base is whole on the GPU again
    GenerationService._park_unused(SimpleNamespace(models=manager), params())
    assert manager.other_place == "ram" and manager.other is not None
    assert not any(hooked(base)) and not any(hooked(refiner)) and "offload_turns" not in base.extra
    assert refiner.device == torch.device("cpu") and base.device == manager.devices.device
    assert manager.held_on_gpu() == 0

    # asked for again when the card has room: back on the GPU whole, not read from the file again
    monkeypatch.setattr(manager, "_free_vram", lambda: BIG_CARD)
    assert manager.ensure_other(REFINER_TITLE).model is refiner and manager.other_place == "gpu"


def test_a_job_that_names_the_refiner_keeps_it_and_cpu_changes_nothing(manager, monkeypatch):
    manager.ensure_other(REFINER_TITLE)
    assert manager.other_place is None  # off CUDA both simply stay
    assert not any(hooked(manager.active.model)) and not any(hooked(manager.other.model))
    monkeypatch.setattr(manager, "_free_vram", lambda: BIG_CARD)
    manager.drop_other()
    manager.ensure_other(REFINER_TITLE)
    GenerationService._park_unused(SimpleNamespace(models=manager), params(refiner_checkpoint=REFINER_TITLE, refiner_switch_at=0.5))
    assert manager.other_place == "gpu"
    GenerationService._park_unused(SimpleNamespace(models=manager), params())
    assert manager.other_place == "ram"


# -- a refiner and a different hires checkpoint in the same job (both held, by path) ---------

HIRES_TITLE = "xl-hires"


@pytest.fixture
def both(files):  # noqa: F811
    """The refiner's folder with a third SDXL file, the hires checkpoint (other weights than the
    base's: a copy would have its hash, by which "name [hash]" finds the base)."""
    from modules.models.ldm_keys import to_ldm_state_dict
    from tests.models.test_loader import build_models, save_single_file, write_config_folder

    if not (files / f"{HIRES_TITLE}.safetensors").exists():
        hires = build_models("sdxl", seed=4)
        save_single_file(files / f"{HIRES_TITLE}.safetensors", to_ldm_state_dict("sdxl", **hires))
        write_config_folder(files / HIRES_TITLE, "sdxl", hires)
    return files


def service_on(folder, tmp_path, monkeypatch, free_vram=None) -> tuple[GenerationService, list[str]]:
    """A service on the tiny SDXL base whose manager counts the files it loads."""
    from modules.options import OutputSettings

    models = ModelManager((folder,), CONFIGS, lambda: device_settings(use_cpu=True), HashCache(None))
    models.ensure(BASE_TITLE)
    if free_vram is not None:
        monkeypatch.setattr(models, "_free_vram", lambda: free_vram)
    loads, load = [], models._load
    monkeypatch.setattr(models, "_load", lambda info, beside=None: loads.append(info.path.stem) or load(info, beside))
    return GenerationService(models, OutputSettings(), tmp_path, console_progress=False), loads


def job_with_both(**values):
    return params(steps=4, sampler_name="Euler", scheduler="Uniform", refiner_checkpoint=REFINER_TITLE, refiner_switch_at=0.5,
                  hires_fix_refiner_pass="first pass", enable_hr=True, hr_scale=1.5, hr_second_pass_steps=2, denoising_strength=0.5,
                  hr_checkpoint_name=HIRES_TITLE, **values)


def run_job(service: GenerationService, p) -> list[tuple[str, bool]]:
    """Run a txt2img job; per model call: which UNet ran, and whether another model's UNet was on
    the GPU side of the base's turns as it ran (seen as it returns: its turn is taken inside
    the call, after the forward pre-hooks)."""
    from modules.jobs.queue import Job

    models = service.models
    unets = {"base": models.active.model.unet, **{m.info.path.stem: m.model.unet for m in models.others}}
    seen = []

    def record(name):
        def hook(module, args, output):
            turns = models.active.model.extra.get("offload_turns")
            seen.append((name, turns is not None and any(id(u) in turns.resident for n, u in unets.items() if n != name)))
        return hook

    handles = [unet.register_forward_hook(record(name)) for name, unet in unets.items()]
    try:
        result = service.run_txt2img(Job(id="task(both)", kind="test", task=lambda j: None), p, save=False)
    finally:
        for handle in handles:
            handle.remove()
    assert len(result.images) == 1 and result.images[0].size == (96, 96)
    return seen


def test_a_refiner_and_a_hires_checkpoint_load_once_and_both_run(both, tmp_path, monkeypatch):
    service, loads = service_on(both, tmp_path, monkeypatch)
    run_job(service, job_with_both())
    assert loads == [HIRES_TITLE, REFINER_TITLE]  # each read once, neither dropped for the other
    seen = run_job(service, job_with_both(seed=6))
    assert loads == [HIRES_TITLE, REFINER_TITLE]  # the second job reads no file
    assert [name for name, _ in seen] == ["base", "base", REFINER_TITLE, REFINER_TITLE, HIRES_TITLE, HIRES_TITLE], seen
    assert {m.info.path.stem for m in service.models.others} == {REFINER_TITLE, HIRES_TITLE}


def test_on_a_small_card_all_three_take_turns_and_a_plain_job_parks_both(both, tmp_path, monkeypatch):
    service, loads = service_on(both, tmp_path, monkeypatch, free_vram=SMALL_CARD)
    run_job(service, job_with_both())
    seen = run_job(service, job_with_both(seed=6))
    assert loads == [HIRES_TITLE, REFINER_TITLE]
    assert seen == [("base", False), ("base", False), (REFINER_TITLE, False), (REFINER_TITLE, False), (HIRES_TITLE, False),
                    (HIRES_TITLE, False)]
    models = service.models
    base, turns = models.active.model, models.active.model.extra["offload_turns"]
    assert all(m.model.extra["offload_turns"] is turns and all(hooked(m.model)) for m in models.others)
    assert [models.place_of(m.info.path) for m in models.others] == ["turns", "turns"]

    service.run_txt2img(__import__("modules.jobs.queue", fromlist=["Job"]).Job(id="task(plain)", kind="test", task=lambda j: None),
                        params(steps=2), save=False)
    assert [models.place_of(m.info.path) for m in models.others] == ["ram", "ram"] and loads == [HIRES_TITLE, REFINER_TITLE]
    assert not any(hooked(base)) and "offload_turns" not in base.extra and base.device == models.devices.device
    assert all(m.model.device == torch.device("cpu") and not any(hooked(m.model)) for m in models.others)


def test_one_fits_beside_the_base_the_next_does_not_so_all_take_turns(both, monkeypatch):
    models = ModelManager((both,), CONFIGS, lambda: device_settings(use_cpu=True), HashCache(None))
    models.ensure(BASE_TITLE)
    monkeypatch.setattr(models, "_free_vram", lambda: BIG_CARD)
    refiner = models.ensure_other(REFINER_TITLE)
    assert models.place_of(refiner.info.path) == "gpu" and not any(hooked(refiner.model))
    monkeypatch.setattr(models, "_free_vram", lambda: SMALL_CARD)  # what is left with the refiner on the card
    hires = models.ensure_other(HIRES_TITLE, keep=[refiner.info.path])
    assert [models.place_of(m.info.path) for m in (refiner, hires)] == ["turns", "turns"] and models.held_on_gpu() == 0
    assert refiner.model.extra["offload_turns"] is hires.model.extra["offload_turns"] is models.active.model.extra["offload_turns"]
    models.drop_other(hires.info.path)  # one still takes turns: the base keeps its hooks
    assert all(hooked(models.active.model)) and models.others == (refiner,)
    models.drop_other()
    assert not any(hooked(models.active.model)) and models.others == ()


def test_leaving_the_turns_sends_a_part_on_the_gpu_home_first():
    from modules.generation.offload import _Turns, leave

    class Part(torch.nn.Linear):
        def to(self, *args, **kwargs):
            moves.append((self.name, str(args[0])))
            return self

    moves: list[tuple[str, str]] = []
    turns = _Turns(torch.device("cpu"))
    model = SimpleNamespace(text_encoder=None, text_encoder_2=None, unet=Part(2, 2), vae=Part(2, 2), text_encoder_3=Part(2, 2),
                            extra={"offload_turns": turns})
    for name in ("unet", "vae", "text_encoder_3"):
        getattr(model, name).name = name
    other = Part(2, 2)
    other.name = "other"
    turns.parts = [other, model.unet, model.vae, model.text_encoder_3]
    turns.resident = {id(model.text_encoder_3)}  # T5 (SD 3's third encoder) was the last to run
    leave(model)
    assert moves == [("text_encoder_3", "cpu")]
    assert turns.parts == [other] and turns.resident == set()
