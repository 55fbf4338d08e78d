"""ControlNet files: the layouts users download load offline and give the same residuals as
the weights they hold, named and found as the A1111 ControlNet extension does, refused with a
sentence when they are for another architecture or are no ControlNet at all, and cached."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import pytest
import torch
from diffusers import ControlNetModel
from safetensors.torch import save_file

from modules.controlnet.models import (
    ControlNetLibrary,
    Signature,
    config_from_unet,
    controlnet_folders,
    diffusers_keys,
    layout_from_weights,
    legacy_model_hash,
)
from tests.controlnet.tiny import run_controlnet, tiny_controlnet, tiny_loaded_model, to_ldm, write_controlnet

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def max_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b)
    return max((x.float() - y.float()).abs().max().item() for x, y in zip(a, b))


@pytest.fixture(scope="module")
def sd1():
    """The tiny SD1-layout checkpoint's UNet and a ControlNet for it (fp16-exact weights)."""
    model = tiny_loaded_model("tiny-sd1", name="tiny-test-model")
    controlnet = tiny_controlnet(model.unet, seed=5).half().float()
    return model, controlnet


def library(*folders: Path, cache_size: int = 2) -> ControlNetLibrary:
    return ControlNetLibrary(folders, CONFIGS, cache_size=cache_size)


# ---------------------------------------------------------------------- loading


def test_ldm_single_file_equals_the_diffusers_model(tmp_path, sd1):
    model, controlnet = sd1
    path = write_controlnet(controlnet, tmp_path / "ControlNet" / "control_v11p_sd15_canny.safetensors", "ldm")
    folder = write_controlnet(controlnet, tmp_path / "diffusers" / "canny", "diffusers-folder")
    with open(path, "rb") as f:  # the real 1.1 layout, not diffusers keys
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert {"control_model.input_hint_block.0.weight", "control_model.zero_convs.0.0.weight",
            "control_model.middle_block_out.0.weight", "control_model.input_blocks.1.1.proj_in.weight"} <= set(header)
    assert not any(k.startswith("controlnet_") for k in header)

    loaded = library(tmp_path / "ControlNet").load("control_v11p_sd15_canny", model)
    reference = ControlNetModel.from_pretrained(folder, local_files_only=True).float()

    assert isinstance(loaded, ControlNetModel)
    residuals = run_controlnet(loaded)
    assert len(residuals) == 13  # 12 down residuals and the mid one, as SD 1.5's
    assert max_difference(residuals, run_controlnet(reference)) < 1e-5
    assert max(r.abs().max().item() for r in residuals) > 1e-2  # real outputs, not zero convs
    assert max_difference(residuals, run_controlnet(controlnet)) < 1e-5


def test_controlnet_1_0_pth_with_a_whole_model_inside(tmp_path, sd1):
    """ControlNet 1.0 .pth files hold the SD model beside `control_model.*`; only the latter counts."""
    model, controlnet = sd1
    state = {k: v.half() for k, v in to_ldm(controlnet).items()}
    state["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(8, 4, 3, 3)
    torch.save({"state_dict": state}, tmp_path / "control_sd15_canny.pth")

    loaded = library(tmp_path).load("control_sd15_canny", model)

    assert max_difference(run_controlnet(loaded), run_controlnet(controlnet)) < 1e-5


@pytest.mark.parametrize("arch", ["sd2", "sdxl", "demo-shapes"])
@pytest.mark.parametrize("layout", ["ldm", "diffusers-file", "diffusers-folder"])
def test_each_family_and_layout_loads(tmp_path, arch, layout):
    model = tiny_loaded_model(arch)
    controlnet = tiny_controlnet(model.unet, seed=2)
    name = f"{arch}-{layout}" + ("" if layout == "diffusers-folder" else ".safetensors")
    write_controlnet(controlnet, tmp_path / name, layout, dtype=torch.float32)
    lib = library(tmp_path)

    loaded = lib.load(f"{arch}-{layout}", model)

    assert lib.arch_of(f"{arch}-{layout}") == arch
    assert max_difference(run_controlnet(loaded), run_controlnet(controlnet)) < 1e-5
    if arch == "sdxl":
        assert loaded.config.addition_embed_type == "text_time"
        assert list(loaded.config.transformer_layers_per_block) == [1, 2]
    if arch == "sd2":
        assert loaded.config.use_linear_projection and loaded.config.cross_attention_dim == 64


@pytest.mark.parametrize("variant, down_types, depth, mid", [
    ("mid", ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], [0, 1], "UNetMidBlock2DCrossAttn"),  # attention shells without blocks
    ("small", ["DownBlock2D", "DownBlock2D"], [1, 1], "UNetMidBlock2D"),  # no attention at all
])
def test_sdxl_mid_and_small_variants_load(tmp_path, variant, down_types, depth, mid):
    """diffusers' controlnet-canny-sdxl-1.0-mid/-small layouts: fewer transformer blocks than
    the UNet, read off the weights."""
    from tests.controlnet.tiny import SDXL_UNET

    xl = tiny_loaded_model("sdxl")
    config = {k: v for k, v in SDXL_UNET.items() if k not in ("up_block_types", "sample_size")}
    torch.manual_seed(0)
    controlnet = ControlNetModel(**{**config, "down_block_types": down_types, "transformer_layers_per_block": depth,
                                    "mid_block_type": mid}).eval()
    with torch.no_grad():
        for param in controlnet.parameters():
            param.normal_(0, 0.05)
    write_controlnet(controlnet, tmp_path / f"diffusers_xl_canny_{variant}.safetensors", "diffusers-file", dtype=torch.float32)

    loaded = library(tmp_path).load(f"diffusers_xl_canny_{variant}", xl)

    assert list(loaded.config.down_block_types) == down_types and loaded.config.mid_block_type == mid
    assert max_difference(run_controlnet(loaded), run_controlnet(controlnet)) < 1e-5


def test_loads_in_the_checkpoints_dtype_and_device(tmp_path, sd1):
    model, controlnet = sd1
    write_controlnet(controlnet, tmp_path / "canny.safetensors", "ldm", dtype=torch.float32)
    half = tiny_loaded_model("tiny-sd1")
    half.dtype = torch.float16

    loaded = library(tmp_path).load("canny", half)

    assert {p.dtype for p in loaded.parameters()} == {torch.float16}
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}
    assert not any(p.requires_grad for p in loaded.parameters())
    assert torch.equal(loaded.controlnet_mid_block.weight, controlnet.controlnet_mid_block.weight.half())


def test_diffusers_folder_with_only_fp16_weights(tmp_path, sd1):
    model, controlnet = sd1
    folder = write_controlnet(controlnet, tmp_path / "canny-fp16", "diffusers-folder")
    (folder / "diffusion_pytorch_model.safetensors").rename(folder / "diffusion_pytorch_model.fp16.safetensors")

    loaded = library(tmp_path).load("canny-fp16", model)

    assert max_difference(run_controlnet(loaded), run_controlnet(controlnet)) < 1e-5


def test_shuffle_models_pool_their_conditions(tmp_path, sd1):
    """The extension's rule: a file named *shuffle* is a global-average-pooling ControlNet."""
    model, controlnet = sd1
    write_controlnet(controlnet, tmp_path / "control_v11e_sd15_shuffle.safetensors", "ldm")
    write_controlnet(controlnet, tmp_path / "control_v11p_sd15_canny.safetensors", "ldm")
    lib = library(tmp_path)

    assert lib.load("control_v11e_sd15_shuffle", model).config.global_pool_conditions is True
    assert lib.load("control_v11p_sd15_canny", model).config.global_pool_conditions is False


# ---------------------------------------------------------------------- full-size layouts, shapes only


@pytest.mark.parametrize("family, unet_folder", [("sd15", "sd1"), ("sd21", "sd2"), ("sdxl", "sdxl")])
def test_shipped_configs_read_real_size_ldm_layouts(family, unet_folder):
    """At full size, on the meta device: the shipped config is the UNet's encoder half, and an
    LDM file of it converts back to exactly its keys and layout (what a real download holds)."""
    shipped = json.loads((CONFIGS / "controlnet" / family / "config.json").read_text())
    unet = json.loads((CONFIGS / unet_folder / "unet" / "config.json").read_text())
    with torch.device("meta"):
        controlnet = ControlNetModel.from_config(shipped)
        derived = ControlNetModel.from_config(config_from_unet(unet))
    shapes = {k: tuple(v.shape) for k, v in controlnet.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in derived.state_dict().items()}

    ldm_shapes = {k: tuple(v.shape) for k, v in to_ldm(controlnet).items()}
    converted = diffusers_keys(ldm_shapes, Path(f"control_{family}.pth"))

    assert converted == shapes
    layout = layout_from_weights(converted)
    for key, value in layout.items():
        expected = shipped[key]
        if key == "transformer_layers_per_block" and isinstance(expected, int):
            expected = [expected] * len(shipped["down_block_types"])
        assert value == expected, key
    assert Signature.of_weights(converted).fits(Signature.of_config(unet))


def test_real_sd15_controlnet_is_for_sd1_not_for_the_demo_model():
    sig = Signature.of_config(json.loads((CONFIGS / "controlnet" / "sd15" / "config.json").read_text()))
    assert sig.fits(Signature.of_config(json.loads((CONFIGS / "sd1" / "unet" / "config.json").read_text())))
    assert not sig.fits(Signature.of_config(json.loads((CONFIGS / "demo-shapes" / "unet" / "config.json").read_text())))
    assert not sig.fits(Signature.of_config(json.loads((CONFIGS / "sd2" / "unet" / "config.json").read_text())))


# ---------------------------------------------------------------------- names and lookup


def a1111_legacy_hash(path: Path) -> str:
    data = path.read_bytes()[0x100000:0x110000]
    return hashlib.sha256(data).hexdigest()[:8]


def test_names_carry_a1111s_legacy_hash(tmp_path, sd1):
    model, controlnet = sd1
    main, extra = tmp_path / "models" / "ControlNet", tmp_path / "elsewhere"
    big = write_controlnet(controlnet, main / "sd15" / "control_v11p_sd15_canny.safetensors", "ldm", dtype=torch.float32)
    folder = write_controlnet(controlnet, main / "demo-shapes-canny", "diffusers-folder")
    (main / "control_v11p_sd15_canny.yaml").write_text("model: {}")  # the yaml the extension's downloads come with
    (main / "None.pth").write_bytes(b"")
    extra.mkdir()
    (extra / "t2i-small.pth").write_bytes(b"x" * 100)
    assert big.stat().st_size > 0x110000

    lib = library(*controlnet_folders(tmp_path / "models", [extra]))

    assert lib.names() == [
        f"control_v11p_sd15_canny [{a1111_legacy_hash(big)}]",
        f"demo-shapes-canny [{a1111_legacy_hash(folder / 'diffusion_pytorch_model.safetensors')}]",  # a folder: its weights' hash
        "t2i-small [e3b0c442]",  # under 1 MiB: A1111 hashes the empty string
    ]
    assert legacy_model_hash(big) == a1111_legacy_hash(big) != "e3b0c442"

    other = tmp_path / "setting-folder"
    write_controlnet(controlnet, other / "control_v11p_sd15_lineart.safetensors", "ldm")
    lib.use_settings({"control_net_models_path": str(other)})
    lineart = f"control_v11p_sd15_lineart [{a1111_legacy_hash(other / 'control_v11p_sd15_lineart.safetensors')}]"
    assert lineart in lib.names()
    lib.use_settings({"control_net_models_path": ""})
    assert lineart not in lib.names()


def test_find_by_name_stem_stale_hash_and_part(tmp_path, sd1):
    model, controlnet = sd1
    write_controlnet(controlnet, tmp_path / "control_v11p_sd15_canny.safetensors", "ldm")
    write_controlnet(controlnet, tmp_path / "control_v11p_sd15_canny_anime.safetensors", "ldm")
    lib = library(tmp_path)
    canny = tmp_path / "control_v11p_sd15_canny.safetensors"
    full_name = f"control_v11p_sd15_canny [{a1111_legacy_hash(canny)}]"

    for name in (full_name, "control_v11p_sd15_canny", "control_v11p_sd15_canny [d14c016b]",
                 "Control_V11P_SD15_Canny", "canny"):
        assert lib.find(name).path == canny, name
    assert lib.find("anime").path.name == "control_v11p_sd15_canny_anime.safetensors"
    assert lib.find("None") is None and lib.find("") is None and lib.find(None) is None

    with pytest.raises(ValueError) as err:
        lib.find("control_v11p_sd15_openpose [cab727d4]")
    message = str(err.value)
    assert "control_v11p_sd15_openpose [cab727d4]" in message
    assert f"Choices: {', '.join(lib.names())}." in message and full_name in message

    with pytest.raises(ValueError, match="models/ControlNet|put ControlNet models in"):
        library(tmp_path / "empty").find("canny")
    with pytest.raises(ValueError, match="No ControlNet model selected"):
        lib.load("None", model)


# ---------------------------------------------------------------------- refusals


def test_sdxl_controlnet_on_an_sd1_checkpoint_is_refused(tmp_path, sd1):
    model, _ = sd1
    xl = tiny_loaded_model("sdxl")
    write_controlnet(tiny_controlnet(xl.unet), tmp_path / "diffusers_xl_canny_full.safetensors", "diffusers-file")
    lib = library(tmp_path)

    with pytest.raises(ValueError) as err:
        lib.load("diffusers_xl_canny_full", model)

    assert str(err.value) == ("ControlNet 'diffusers_xl_canny_full' is for SDXL but the loaded checkpoint "
                              "'tiny-test-model.safetensors' is SD 1.x (the tiny test model, tiny-sd1).")
    assert lib.loaded() == 0
    assert lib.load("diffusers_xl_canny_full", xl) is not None  # fine on its own family


def test_same_family_other_size_names_the_values(tmp_path, sd1):
    model, controlnet = sd1
    write_controlnet(controlnet, tmp_path / "tiny-canny.safetensors", "ldm")
    demo = tiny_loaded_model("demo-shapes", name="demo-shapes")

    with pytest.raises(ValueError) as err:
        library(tmp_path).load("tiny-canny", demo)

    assert str(err.value) == (
        "ControlNet 'tiny-canny' is for SD 1.x (the tiny test model, tiny-sd1) with block widths [32, 64, 64, 64], "
        "cross-attention width 32 but the loaded checkpoint 'demo-shapes.safetensors' is SD 1.x (the demo model, "
        "demo-shapes) with block widths [64, 128], cross-attention width 64.")


def test_sd2_controlnet_on_the_demo_model_is_refused(tmp_path):
    sd2 = tiny_loaded_model("sd2")
    write_controlnet(tiny_controlnet(sd2.unet), tmp_path / "controlnet-sd21-depth.safetensors", "ldm")

    with pytest.raises(ValueError, match=r"'controlnet-sd21-depth' is for SD 2\.x but the loaded checkpoint 'demo\.safetensors' is "
                                         r"SD 1\.x \(the demo model"):
        library(tmp_path).load("controlnet-sd21-depth", tiny_loaded_model("demo-shapes", name="demo"))


def _lora_file(path: Path) -> None:
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, str(path))


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled",))


@pytest.mark.parametrize("name, write, expected", [
    ("garbage.safetensors", lambda p: p.write_bytes(b"\x00garbage" * 100), "garbage.safetensors cannot be read"),
    ("truncated.pth", lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 50), "truncated.pth cannot be read"),
    ("object.pth", lambda p: torch.save({"model": _Evil()}, p), "object.pth is not a plain weights file"),
    ("raw-pickle.pth", lambda p: p.write_bytes(pickle.dumps({"model": _Evil()})), "raw-pickle.pth cannot be read"),
    ("some-lora.safetensors", _lora_file, "some-lora.safetensors is not a ControlNet"),
    ("t2iadapter_canny.safetensors", lambda p: save_file({"adapter.body.0.resnets.0.block1.weight": torch.zeros(2)}, str(p)),
     "is a T2I-Adapter, which is not supported"),
    ("control-lora-canny.safetensors", lambda p: save_file({"lora_controlnet": torch.zeros(1)}, str(p)), "is a Control-LoRA"),
])
def test_files_that_are_no_controlnet_are_refused_with_a_sentence(tmp_path, sd1, capsys, name, write, expected):
    model, _ = sd1
    write(tmp_path / name)
    lib = library(tmp_path)
    stem = Path(name).stem

    with pytest.raises(ValueError, match=expected):
        lib.load(stem, model)
    with pytest.raises(ValueError, match=expected):
        lib.arch_of(stem)
    assert "unpickled" not in capsys.readouterr().out
    assert stem in " ".join(lib.names())  # still listed: the extension lists every file; loading says what is wrong


def test_a_file_whose_weights_do_not_fit_is_refused(tmp_path, sd1):
    model, controlnet = sd1
    state = to_ldm(controlnet)
    del state["control_model.zero_convs.3.0.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "broken.safetensors"))

    with pytest.raises(ValueError, match=r"ControlNet broken does not fit its ControlNet layout: missing controlnet_down_blocks\.3\.weight"):
        library(tmp_path).load("broken", model)


def test_an_empty_diffusers_folder_is_refused(tmp_path, sd1):
    model, controlnet = sd1
    folder = write_controlnet(controlnet, tmp_path / "half-copied", "diffusers-folder")
    (folder / "diffusion_pytorch_model.safetensors").unlink()

    with pytest.raises(ValueError, match="half-copied has a config.json but no weights"):
        library(tmp_path).load("half-copied", model)


# ---------------------------------------------------------------------- cache


def test_cache_keeps_the_last_models_and_evicts_the_oldest(tmp_path, sd1):
    model, controlnet = sd1
    for name in ("a", "b", "c"):
        write_controlnet(controlnet, tmp_path / f"{name}.safetensors", "ldm")
    lib = library(tmp_path, cache_size=2)

    a = lib.load("a", model)
    assert lib.load(lib.find("a").name, model) is a
    b = lib.load("b", model)
    assert lib.load("a", model) is a  # a is now the most recent
    lib.load("c", model)  # evicts b
    assert lib.loaded() == 2
    assert lib.load("a", model) is a
    assert lib.load("b", model) is not b

    lib.use_settings({"control_net_model_cache_size": 1})
    assert lib.loaded() == 1
    lib.use_settings({"control_net_model_cache_size": 0})
    assert lib.loaded() == 0
    assert lib.load("a", model) is not lib.load("a", model)


def test_cache_reloads_a_changed_file_and_another_dtype(tmp_path, sd1):
    model, controlnet = sd1
    path = write_controlnet(controlnet, tmp_path / "canny.safetensors", "ldm")
    lib = library(tmp_path)
    first = lib.load("canny", model)

    half = tiny_loaded_model("tiny-sd1")
    half.dtype = torch.float16
    assert lib.load("canny", half) is not first

    other = tiny_controlnet(model.unet, seed=9)
    write_controlnet(other, path, "ldm")
    reloaded = lib.load("canny", model)
    assert reloaded is not first
    assert max_difference(run_controlnet(reloaded), run_controlnet(other.half().float())) < 1e-5
    assert lib.loaded() == 1  # the changed file's old weights (fp32 and fp16) are dropped


def test_cached_model_is_still_checked_against_the_checkpoint(tmp_path, sd1):
    model, controlnet = sd1
    write_controlnet(controlnet, tmp_path / "canny.safetensors", "ldm")
    lib = library(tmp_path)
    lib.load("canny", model)

    with pytest.raises(ValueError, match="is for SD 1.x"):
        lib.load("canny", tiny_loaded_model("sdxl"))


# ---------------------------------------------------------------------- catalog


def test_catalog_controlnets_go_to_models_controlnet_and_fit_the_shipped_configs():
    """The catalog's pinned sizes agree with the shipped configs: an SD 1.5 ControlNet 1.1 .pth
    is its fp32 weights plus under 1 MB of pickle, the SDXL files their fp16 weights plus header."""
    from modules.models.downloadable import Catalog

    entries = [e for e in Catalog.load().entries if e.folder == "ControlNet"]
    assert {e.name for e in entries} >= {"controlnet-sd15-canny", "controlnet-sd15-depth", "controlnet-sdxl-canny"}
    for entry in entries:
        family, bytes_per_weight = {"sd1": ("sd15", 4), "sdxl": ("sdxl", 2)}[entry.architecture]
        with torch.device("meta"):
            model = ControlNetModel.from_config(json.loads((CONFIGS / "controlnet" / family / "config.json").read_text()))
        weights = sum(p.numel() for p in model.parameters()) * bytes_per_weight
        assert 0 < entry.size - weights < 1_000_000, entry.name
        assert entry.url.startswith("lllyasviel/") and entry.url.endswith(entry.filename)


def test_for_paths_scans_models_controlnet_and_the_controlnet_dir_flag(tmp_path, sd1):
    from modules.options import Paths, parse_args

    _, controlnet = sd1
    extra = tmp_path / "shared-controlnets"
    write_controlnet(controlnet, extra / "control_v11p_sd15_scribble.safetensors", "ldm")
    paths = Paths.from_args(parse_args(["--data-dir", str(tmp_path / "data"), "--controlnet-dir", str(extra)]))
    write_controlnet(controlnet, paths.models_dir / "ControlNet" / "control_v11p_sd15_canny.safetensors", "ldm")

    lib = ControlNetLibrary.for_paths(paths)

    assert [n.split(" [")[0] for n in lib.names()] == ["control_v11p_sd15_canny", "control_v11p_sd15_scribble"]
    assert lib.folders == (paths.models_dir / "ControlNet", extra.resolve())
