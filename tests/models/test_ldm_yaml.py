"""A checkpoint with a non-standard UNet and VAE, loaded as A1111 loads it: through the
LDM-format `<checkpoint>.yaml` beside it that describes those shapes."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch

from modules.models.loader import load_checkpoint
from tests.conftest import CONFIGS

# An A1111 (LDM) config for a small model whose UNet has 3 levels (32/64/64 channels, attention
# at the first two, 4 heads) and whose VAE widens to 64 channels: neither matches configs/tiny-sd1.
LDM_YAML = textwrap.dedent("""\
    model:
      base_learning_rate: 1.0e-04
      target: ldm.models.diffusion.ddpm.LatentDiffusion
      params:
        linear_start: 0.00085
        linear_end: 0.0120
        num_timesteps_cond: 1
        timesteps: 1000
        first_stage_key: "jpg"
        cond_stage_key: "txt"
        image_size: 64
        channels: 4
        conditioning_key: crossattn
        scale_factor: 0.18215
        use_ema: False
        unet_config:
          target: ldm.modules.diffusionmodules.openaimodel.UNetModel
          params:
            image_size: 32
            in_channels: 4
            out_channels: 4
            model_channels: 32
            attention_resolutions: [ 1, 2 ]
            num_res_blocks: 1
            channel_mult: [ 1, 2, 2 ]
            num_heads: 4
            use_spatial_transformer: True
            transformer_depth: 1
            context_dim: 32
            legacy: False
        first_stage_config:
          target: ldm.models.autoencoder.AutoencoderKL
          params:
            embed_dim: 4
            ddconfig:
              double_z: true
              z_channels: 4
              resolution: 256
              in_channels: 3
              out_ch: 3
              ch: 32
              ch_mult: [ 1, 1, 2, 2 ]
              num_res_blocks: 1
              attn_resolutions: []
              dropout: 0.0
        cond_stage_config:
          target: ldm.modules.encoders.modules.FrozenCLIPEmbedder
    """)


@pytest.fixture(scope="module")
def odd_checkpoint(tmp_path_factory):
    """The model the yaml describes, built by diffusers from the same description and written
    in A1111's single-file layout; its text encoder is the tiny model's."""
    import yaml
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import create_unet_diffusers_config_from_ldm, create_vae_diffusers_config_from_ldm
    from safetensors.torch import save_file

    from modules.models.ldm_keys import to_ldm_state_dict
    from modules.models.tiny import build_components

    config = yaml.safe_load(LDM_YAML)
    torch.manual_seed(5)
    unet = UNet2DConditionModel.from_config(create_unet_diffusers_config_from_ldm(config, {}))
    vae = AutoencoderKL.from_config(create_vae_diffusers_config_from_ldm(config, {}))
    _, _, text_encoder = build_components(CONFIGS)
    folder = tmp_path_factory.mktemp("odd")
    path = folder / "odd-model.safetensors"
    save_file({k: v.contiguous() for k, v in to_ldm_state_dict("tiny-sd1", unet, vae, text_encoder).items()}, str(path))
    return path, unet, vae


def load(path):
    return load_checkpoint(path, configs_dir=CONFIGS, device=torch.device("cpu"), dtype=torch.float32, vae_dtype=torch.float32)


def test_without_its_yaml_the_checkpoint_does_not_fit_and_says_so(odd_checkpoint):
    path, _, _ = odd_checkpoint
    path.with_suffix(".yaml").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="does not fit the tiny-sd1 config"):
        load(path)


def test_its_ldm_yaml_shapes_the_model_and_it_generates(odd_checkpoint):
    from modules.generation.params import GenerationParams
    from modules.generation.runner import Runner

    path, unet, vae = odd_checkpoint
    path.with_suffix(".yaml").write_text(LDM_YAML)
    model = load(path)
    assert list(model.unet.config.block_out_channels) == [32, 64, 64] and model.unet.config.attention_head_dim == 4
    assert list(model.vae.config.block_out_channels) == [32, 32, 64, 64]
    assert model.extra["config_source"] == "yaml" and model.extra["config_folder"] == CONFIGS / "tiny-sd1"  # where its page hints live
    for ours, theirs in ((model.unet, unet), (model.vae, vae)):  # every weight where the yaml says it belongs
        mine = ours.state_dict()
        assert all(torch.equal(mine[k], v) for k, v in theirs.state_dict().items())
    params = GenerationParams.create(prompt="a red square", width=64, height=64, steps=4, seed=1, sampler_name="Euler a")
    [batch] = list(Runner(model).txt2img(params, 1))
    image = np.asarray(batch.images[0])
    assert image.shape == (64, 64, 3) and image.std() > 1


def test_an_ldm_yaml_with_v_parameterization_and_its_own_noise_schedule(odd_checkpoint):
    path, _, _ = odd_checkpoint
    path.with_suffix(".yaml").write_text(LDM_YAML.replace("linear_end: 0.0120", "linear_end: 0.0200\n    parameterization: \"v\""))
    model = load(path)
    assert model.prediction_type == "v_prediction" and model.scheduler_config["beta_end"] == 0.02


def test_a_broken_ldm_yaml_is_a_readable_error(odd_checkpoint):
    path, _, _ = odd_checkpoint
    path.with_suffix(".yaml").write_text(LDM_YAML.replace("channel_mult: [ 1, 2, 2 ]", "channel_mult: many"))
    with pytest.raises(ValueError, match="Could not load checkpoint .*odd-model.safetensors"):
        load(path)
