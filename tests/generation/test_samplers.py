import pytest

from modules.generation import samplers
from tests.conftest import scheduler_config

# A1111 1.10's sampler menu, in its order, and its schedule types (label, API name).
A1111_SAMPLERS = [
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a", "Euler", "LMS", "Heun", "DPM2",
    "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM",
]
A1111_SCHEDULES = [
    ("Automatic", "automatic"), ("Uniform", "uniform"), ("Karras", "karras"), ("Exponential", "exponential"),
    ("Polyexponential", "polyexponential"), ("SGM Uniform", "sgm_uniform"), ("KL Optimal", "kl_optimal"),
    ("Align Your Steps", "align_your_steps"), ("Simple", "simple"), ("Normal", "normal"), ("DDIM", "ddim"), ("Beta", "beta"),
]


def test_every_a1111_sampler_and_schedule_type_in_a1111s_order():
    assert [s.name for s in samplers.SAMPLERS] == A1111_SAMPLERS
    assert [(s.label, s.name) for s in samplers.SCHEDULES] == A1111_SCHEDULES


@pytest.mark.parametrize(
    "given, sampler, schedule, infotext",
    [
        ("DPM++ 2M", "DPM++ 2M", "Automatic", "Karras"),
        ("DPM++ 2M Karras", "DPM++ 2M", "Automatic", "Karras"),
        ("DPM++ 2M SDE", "DPM++ 2M SDE", "Automatic", "Exponential"),
        ("DPM++ 2M SDE Karras", "DPM++ 2M SDE", "Karras", "Karras"),
        ("DPM++ 2M SDE Heun Exponential", "DPM++ 2M SDE Heun", "Automatic", "Exponential"),
        ("DPM++ 3M SDE Karras", "DPM++ 3M SDE", "Karras", "Karras"),
        ("DPM++ 2S a Karras", "DPM++ 2S a", "Automatic", "Karras"),
        ("Euler a", "Euler a", "Automatic", "Automatic"),
        ("k_euler_a", "Euler a", "Automatic", "Automatic"),
        ("Euler Karras", "Euler", "Karras", "Karras"),
        ("LMS Exponential", "LMS", "Exponential", "Exponential"),
        ("DPM2 a Karras", "DPM2 a", "Automatic", "Karras"),
        ("Euler a SGMUniform", "Euler a", "SGM Uniform", "SGM Uniform"),
        ("DPM fast", "DPM fast", "Automatic", "Automatic"),
        ("k_dpm_ad", "DPM adaptive", "Automatic", "Automatic"),
        ("Restart", "Restart", "Automatic", "Karras"),
        ("ddim_cfgpp", "DDIM CFG++", "Automatic", "Automatic"),
    ],
)
def test_legacy_and_alias_names_resolve_like_a1111(given, sampler, schedule, infotext):
    s, sc = samplers.resolve(given)
    assert (s.name, sc.label, samplers.infotext_schedule_label(s, sc)) == (sampler, schedule, infotext)


@pytest.mark.parametrize("sampler", ["Euler a", "DDIM", "PLMS", "LCM", "DPM fast"])
@pytest.mark.parametrize("schedule", ["karras", "exponential", "beta", "Align Your Steps", "kl_optimal"])
def test_any_sampler_takes_any_schedule_type(sampler, schedule):
    """A1111 accepts every pair; these were refused before (diffusers has no such option)."""
    s, sc = samplers.resolve(sampler, schedule)
    assert s.name == sampler and samplers.find_schedule(schedule) == sc


def test_unknown_names_give_readable_errors():
    with pytest.raises(ValueError, match="Sampler not found: 'Fancy'"):
        samplers.resolve("Fancy")
    with pytest.raises(ValueError, match="Unknown schedule type 'Wobbly'"):
        samplers.resolve("Euler", "Wobbly")


@pytest.mark.parametrize(
    "sampler, schedule, options, nv, engine",
    [
        ("DPM++ 2M", "Automatic", {}, False, "diffusers"),
        ("Euler", "Karras", {}, False, "diffusers"),
        ("Euler a", "Automatic", {}, False, "diffusers"),
        ("Euler a", "Automatic", {}, True, "sigmas"),  # its step noise must come from the NV generator
        ("Euler a", "Karras", {}, False, "sigmas"),  # diffusers' ancestral Euler has no Karras option
        ("Euler a", "Automatic", {"eta": 0.5}, False, "sigmas"),
        ("Euler", "Automatic", {"s_churn": 1.0}, False, "sigmas"),
        ("Euler", "SGM Uniform", {}, False, "sigmas"),  # diffusers' "trailing" is not A1111's SGM Uniform for every step count
        ("Euler", "Beta", {}, False, "diffusers"),
        ("Euler", "Beta", {"beta_alpha": 0.5}, False, "sigmas"),
        ("DPM++ 2M", "Automatic", {"rho": 5.0}, False, "sigmas"),
        ("DPM++ 2M SDE", "Automatic", {}, False, "sigmas"),  # A1111's draws Brownian-tree noise
        ("DPM2", "Automatic", {}, False, "sigmas"),  # A1111's drops the next-to-last sigma
        ("DDIM", "Karras", {}, False, "diffusers"),  # timestep samplers ignore the schedule type, as in A1111
        ("DDIM", "Automatic", {"eta": 0.3}, True, "timesteps"),
        ("DDIM CFG++", "Automatic", {}, False, "timesteps"),
        ("LCM", "Automatic", {}, False, "sigmas"),
    ],
)
def test_each_pair_runs_on_the_engine_that_does_a1111s_arithmetic(sampler, schedule, options, nv, engine):
    s, sc = samplers.resolve(sampler, schedule)
    assert samplers.engine(s, sc, samplers.SamplerOptions(**options), nv_noise=nv) == engine


@pytest.mark.parametrize(
    "sampler, schedule, cls, checks",
    [
        ("DPM++ 2M", "Automatic", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True, "algorithm_type": "dpmsolver++"}),
        ("DPM++ 2M", "Uniform", "DPMSolverMultistepScheduler", {"use_karras_sigmas": False}),
        ("Euler", "Karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True}),
        ("Euler", "Exponential", "EulerDiscreteScheduler", {"use_exponential_sigmas": True}),
        ("Euler a", "Automatic", "EulerAncestralDiscreteScheduler", {}),
        ("Heun", "Automatic", "HeunDiscreteScheduler", {"use_karras_sigmas": False}),
        ("DDIM", "Automatic", "DDIMScheduler", {"set_alpha_to_one": False, "steps_offset": 1}),
        ("DDIM", "Karras", "DDIMScheduler", {"set_alpha_to_one": False}),
        ("PLMS", "Automatic", "PNDMScheduler", {"skip_prk_steps": True}),
        ("UniPC", "Automatic", "UniPCMultistepScheduler", {}),
        ("DPM++ SDE", "Automatic", "DPMSolverSDEScheduler", {"use_karras_sigmas": True}),
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
        if s.scheduler_class is None:
            continue
        sch = samplers.build_scheduler(base, s, samplers.SCHEDULES[0], seeds=[1])
        assert sch.config.get("prediction_type", "v_prediction") == "v_prediction", s.name


@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "DPM++ SDE", "DPM++ 2M", "LMS", "Heun"])
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


@pytest.mark.parametrize(
    "sampler, options, eta",
    [("Euler a", {}, 1.0), ("DDIM", {}, 0.0), ("Euler a", {"eta_ancestral": 0.4}, 0.4), ("DDIM", {"eta_ddim": 0.2}, 0.2),
     ("DDIM", {"eta": 0.7, "eta_ddim": 0.2}, 0.7), ("DPM fast", {}, 1.0)],
)
def test_eta_comes_from_the_request_else_the_setting_for_the_samplers_kind(sampler, options, eta):
    assert samplers.SamplerOptions(**options).eta_for(samplers.find_sampler(sampler)) == eta
