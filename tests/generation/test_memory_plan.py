"""The memory plan chosen at start from the card's VRAM (as Forge and SD.Next do): which model
family is offloaded how, above what size the VAE is tiled, what the console says, and that
every flag wins over the guess. Made-up card sizes, so it runs without a GPU."""

from __future__ import annotations

import pytest
import torch

from modules.generation.devices import GIB, DeviceSettings, MemoryFlags, MemoryPlan, auto_memory, memory_line
from modules.options import parse_args


def card(gib: float) -> int:
    return int(gib * GIB)


@pytest.mark.parametrize("gib, sd, sdxl", [
    (1.9, "blocks", "blocks"),   # 2 GB cards
    (3.8, "model", "blocks"),    # 4 GB: SD 1.5 with --medvram, SDXL streamed
    (5.8, "none", "blocks"),     # 6 GB: SD 1.5 whole
    (7.8, "none", "model"),      # 8 GB: SDXL with --medvram (A1111's --medvram-sdxl advice)
    (9.8, "none", "none"),       # 10-12 GB and up: everything whole
    (139.8, "none", "none"),
])
def test_the_card_size_picks_each_familys_offload(gib, sd, sdxl):
    plan = auto_memory(card(gib))
    assert (plan.offload_for("sd1"), plan.offload_for("sd2"), plan.offload_for("tiny-sd1"), plan.offload_for("sdxl")) == (sd, sd, sd, sdxl)
    assert plan.offloads == ("blocks" in (sd, sdxl, plan.flow) or "model" in (sd, sdxl, plan.flow))


def test_full_precision_weights_need_twice_the_room():
    assert auto_memory(card(5.8), fp32=True).offload_for("sd1") == "model"
    assert auto_memory(card(7.8), vae_fp32=True).tiling_sdxl < auto_memory(card(7.8)).tiling_sdxl


def test_the_tiled_vae_cap_is_what_an_untiled_decode_has_room_for():
    small, eight, twelve, big = (auto_memory(card(g)) for g in (3.8, 7.8, 11.7, 23.6))
    assert small.tiling_sd == small.tiling_sdxl == 0.9  # only the VAE is on the card while it decodes
    assert (eight.tiling_sd, eight.tiling_sdxl) == (1.4, 2.2)  # SD whole on the card; SDXL's UNet sent home
    assert (twelve.tiling_sd, twelve.tiling_sdxl) == (2.7, 1.4)  # SDXL whole: 1024x1024 untiled, 1536x1536 tiled
    # the effective threshold: the user's setting, lowered to the cap; 0 ("never") becomes the cap
    assert twelve.tiling_megapixels("sdxl", 2.0) == 1.4 and twelve.tiling_megapixels("sd1", 2.0) == 2.0
    assert twelve.tiling_megapixels("sdxl", 0.0) == 1.4 and big.tiling_megapixels("sd1", 1.0) == 1.0
    assert MemoryPlan().tiling_megapixels("sdxl", 0.0) == 0.0 and auto_memory(None).tiling_megapixels("sd1", 3.0) == 3.0


def test_every_flag_wins_over_the_guess():
    huge, tiny = card(79.1), card(3.8)
    assert auto_memory(huge, MemoryFlags(lowvram=True)) == auto_memory(huge, MemoryFlags(always_low_vram=True))
    assert (auto_memory(huge, MemoryFlags(lowvram=True)).sd, auto_memory(huge, MemoryFlags(lowvram=True, medvram=True)).sdxl) == ("blocks", "blocks")
    medium = auto_memory(huge, MemoryFlags(medvram=True))
    assert (medium.sd, medium.sdxl) == ("model", "model") and medium == auto_memory(huge, MemoryFlags(always_normal_vram=True))
    only_xl = auto_memory(huge, MemoryFlags(medvram_sdxl=True))
    assert (only_xl.sd, only_xl.sdxl) == ("none", "model")
    assert auto_memory(tiny, MemoryFlags(medvram_sdxl=True)).sdxl == "model"  # over the guess of "blocks"
    high = auto_memory(tiny, MemoryFlags(always_high_vram=True))
    assert high == MemoryPlan()  # nothing offloaded, no tiled-VAE cap
    assert auto_memory(tiny, MemoryFlags(always_high_vram=True, lowvram=True)) == MemoryPlan("blocks", "blocks", flow="blocks")
    assert auto_memory(None, MemoryFlags(medvram_sdxl=True)) == MemoryPlan("none", "model")  # unknown card: the flags alone


def test_the_console_says_the_card_the_plan_and_the_flags():
    plan = auto_memory(card(7.8))
    assert memory_line("NVIDIA GeForce RTX 3070", card(7.8), plan, MemoryFlags()) == (
        "GPU NVIDIA GeForce RTX 3070, 7.8 GiB VRAM: no offload (SDXL: --medvram, Flux/SD 3: --lowvram), "
        "tiled VAE above 1.4 MP (SDXL 2.2 MP, Flux/SD 3 2.2 MP) (flags: none)")
    flags = MemoryFlags(always_high_vram=True, lowvram=True)
    assert memory_line("NVIDIA H100", card(79.1), auto_memory(card(79.1), flags), flags) == (
        "GPU NVIDIA H100, 79.1 GiB VRAM: --lowvram, no tiled-VAE cap (flags: --lowvram --always-high-vram)")
    small = DeviceSettings(torch.device("cuda"), torch.float16, torch.float16, memory=auto_memory(card(3.8)))
    assert small.offloads and small.describe() == "cuda (float16, VAE float16, SDPA attention, --medvram (SDXL: --lowvram, Flux/SD 3: --lowvram))"


def test_the_flags_parse_with_forges_names():
    args = parse_args(["--always-high-vram", "--always-normal-vram", "--always-low-vram", "--medvram-sdxl"])
    assert (args.always_high_vram, args.always_normal_vram, args.always_low_vram, args.medvram_sdxl, args.lowvram) == (True, True, True, True, False)


@pytest.mark.parametrize("gib, flow", [(11.6, "blocks"), (23.6, "blocks"), (31.4, "model"), (39.4, "none"), (79.1, "none")])
def test_flux_and_sd3_are_planned_at_flux_devs_size(gib, flow):
    """Flux dev in bf16 is 31.5 GiB of parts with a 22.2 GiB transformer: a 24 GB card streams the
    transformer, a 32 GB one lets the parts take turns, a 40 GB one holds it all; SD 1.x/XL are not moved by it."""
    plan = auto_memory(card(gib))
    assert plan.offload_for("flux-dev") == plan.offload_for("sd35-large") == flow
    assert plan.offload_for("sdxl") == plan.offload_for("sdxl-refiner") == "none"
    assert plan.offloads == (flow != "none")  # a Flux file loads into RAM first, to be streamed or take turns
    assert auto_memory(card(gib), MemoryFlags(medvram=True)).offload_for("flux-schnell") == "model"
