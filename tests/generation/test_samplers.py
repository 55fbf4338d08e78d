import pytest

from modules.generation import samplers
from tests.conftest import scheduler_config

REQUIRED = ["Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DDIM", "PLMS", "UniPC", "LCM"]


def test_required_samplers_exist_and_ui_default_is_first():
    names = [s.name for s in samplers.SAMPLERS]
    assert names[0] == "DPM++ 2M"
    for name in REQUIRED:
        assert name in names


@pytest.mark.parametrize(
    "given, sampler, schedule, infotext",
    [
        ("DPM++ 2M", "DPM++ 2M", "Automatic", "Karras"),
        ("DPM++ 2M Karras", "DPM++ 2M", "Automatic", "Karras"),
        ("DPM++ 2M SDE", "DPM++ 2M SDE", "Automatic", "Exponential"),
        ("DPM++ 2M SDE Karras", "DPM++ 2M SDE", "Karras", "Karras"),
        ("Euler a", "Euler a", "Automatic", "Automatic"),
        ("k_euler_a", "Euler a", "Automatic", "Automatic"),
        ("Euler Karras", "Euler", "Karras", "Karras"),
        ("LMS Exponential", "LMS", "Exponential", "Exponential"),
        ("DPM2 a Karras", "DPM2 a", "Automatic", "Karras"),
    ],
)
def test_legacy_and_alias_names_resolve_like_a1111(given, sampler, schedule, infotext):
    s, sc = samplers.resolve(given)
    assert (s.name, sc.label, samplers.infotext_schedule_label(s, sc)) == (sampler, schedule, infotext)


def test_unknown_names_give_readable_errors():
    with pytest.raises(ValueError, match="Sampler not found: 'Fancy'"):
        samplers.resolve("Fancy")
    with pytest.raises(ValueError, match="Unknown schedule type 'Wobbly'"):
        samplers.resolve("Euler", "Wobbly")
    with pytest.raises(ValueError, match="not available for sampler 'Euler a'"):
        samplers.resolve("Euler a", "Karras")


@pytest.mark.parametrize(
    "sampler, schedule, cls, checks",
    [
        ("DPM++ 2M", "Automatic", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++"}),
        ("DPM++ 2M", "Uniform", "DPMSolverMultistepScheduler", {"use_karras_sigmas": False}),
        ("DPM++ 2M SDE", "Automatic", "DPMSolverMultistepScheduler", {"use_exponential_sigmas": True, "algorithm_type": "sde-dpmsolver++"}),
        ("Euler", "Karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True}),
        ("Euler a", "Automatic", "EulerAncestralDiscreteScheduler", {}),
        ("Heun", "Automatic", "HeunDiscreteScheduler", {"use_karras_sigmas": False}),
        ("DPM2", "Automatic", "KDPM2DiscreteScheduler", {"use_karras_sigmas": True}),
        ("DDIM", "Automatic", "DDIMScheduler", {"set_alpha_to_one": False, "steps_offset": 1}),
        ("PLMS", "Automatic", "PNDMScheduler", {"skip_prk_steps": True}),
        ("UniPC", "Automatic", "UniPCMultistepScheduler", {}),
        ("LCM", "Automatic", "LCMScheduler", {}),
        ("DPM++ SDE", "Automatic", "DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
        ("Euler", "SGM Uniform", "EulerDiscreteScheduler", {"timestep_spacing": "trailing"}),
    ],
)
def test_schedulers_are_built_from_the_checkpoint_config(sampler, schedule, cls, checks):
    base = scheduler_config()
    sch = samplers.build_scheduler(base, *samplers.resolve(sampler, schedule), seeds=[1, 2])
    assert type(sch).__name__ == cls
    assert sch.config.beta_schedule == base["beta_schedule"] and sch.config.beta_start == base["beta_start"]
    for key, value in checks.items():
        assert sch.config[key] == value, key
    sch.set_timesteps(10)
    assert len(sch.timesteps) >= 10


def test_v_prediction_survives_from_the_checkpoint_config():
    base = {**scheduler_config(), "prediction_type": "v_prediction"}
    for s in samplers.SAMPLERS:
        sch = samplers.build_scheduler(base, s, samplers.SCHEDULES[0], seeds=[1])
        assert sch.config.get("prediction_type", "v_prediction") == "v_prediction", s.name


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "DPM2", "DPM++ SDE", "DPM++ 2M", "LMS", "Heun"])
def test_sdxl_leading_spacing_does_not_lower_the_starting_noise(sampler):
    """SDXL's config says 'leading'; A1111's k-diffusion samplers still start at the model's sigma max."""
    import json

    from tests.conftest import CONFIGS

    sdxl = json.loads((CONFIGS / "sdxl" / "scheduler" / "scheduler_config.json").read_text())
    sd1 = scheduler_config("sd1")
    starts = []
    for base in (sdxl, sd1):
        sch = samplers.build_scheduler(base, *samplers.resolve(sampler), seeds=[1])
        sch.set_timesteps(20)
        starts.append(float(sch.sigmas[0]))
    assert starts[0] == pytest.approx(starts[1], rel=1e-4) and starts[0] > 14


def test_legacy_name_with_stray_spaces():
    assert samplers.resolve("  DPM++ 2M Karras ")[0].name == "DPM++ 2M"
