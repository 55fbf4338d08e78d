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
