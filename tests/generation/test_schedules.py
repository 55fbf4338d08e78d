"""A1111's twelve schedule types on SD 1.5's noise levels: the values A1111 1.10.1 computes
(read off its schedulers for 10 steps, see ../shared/reference), to 4 decimals."""

from __future__ import annotations

import pytest
import torch

from modules.generation.ksampling import schedules
from modules.generation.ksampling.model_sigmas import LcmSigmas, ModelSigmas
from tests.conftest import scheduler_config

A1111_SD15_10_STEPS = {
    "uniform": [14.6146, 7.8399, 4.6092, 2.9183, 1.9502, 1.3449, 0.9324, 0.6250, 0.3687, 0.0292, 0],
    "normal": [14.6146, 7.8399, 4.6092, 2.9183, 1.9502, 1.3449, 0.9324, 0.6250, 0.3687, 0.0292, 0],
    "karras": [14.6146, 9.1029, 5.4784, 3.1686, 1.7494, 0.9141, 0.4469, 0.2014, 0.0819, 0.0292, 0],
    "exponential": [14.6146, 7.3249, 3.6712, 1.8400, 0.9222, 0.4622, 0.2317, 0.1161, 0.0582, 0.0292, 0],
    "polyexponential": [14.6146, 7.3249, 3.6712, 1.8400, 0.9222, 0.4622, 0.2317, 0.1161, 0.0582, 0.0292, 0],
    "sgm_uniform": [14.6146, 8.3072, 5.0924, 3.3251, 2.2797, 1.6156, 1.1629, 0.8319, 0.5712, 0.3437, 0],
    "simple": [14.6146, 8.3028, 5.0878, 3.3211, 2.2765, 1.6129, 1.1606, 0.8299, 0.5693, 0.3417, 0],
    "kl_optimal": [14.6146, 4.5650, 2.6329, 1.7864, 1.2948, 0.9616, 0.7116, 0.5094, 0.3356, 0.1783, 0.0292],
    "ddim": [8.3907, 5.1344, 3.3478, 2.2929, 1.6237, 1.1682, 0.8357, 0.5741, 0.3462, 0.0413, 0],
    "beta": [14.6146, 13.9278, 12.4910, 10.5976, 8.4424, 6.2014, 4.0462, 2.1528, 0.7160, 0.0292, 0],
    "align_your_steps": [14.615, 6.1135, 3.5651, 2.3939, 1.6500, 1.1358, 0.7425, 0.4450, 0.1692, 0.029, 0],
}


@pytest.fixture(scope="module")
def sd15() -> ModelSigmas:
    return ModelSigmas.from_scheduler_config(scheduler_config("sd1"))


def span(table: ModelSigmas, **kw) -> schedules.Range:
    return schedules.Range(table, table.sigma_min, table.sigma_max, **kw)


@pytest.mark.parametrize("name", sorted(A1111_SD15_10_STEPS))
def test_schedules_give_a1111s_noise_levels(sd15, name):
    sigmas = schedules.sigmas_for(name, 10, span(sd15))
    assert [round(float(s), 4) for s in sigmas] == pytest.approx(A1111_SD15_10_STEPS[name], abs=1.5e-4)


def test_the_model_table_and_its_time_map(sd15):
    assert (round(sd15.sigma_min, 4), round(sd15.sigma_max, 4)) == (0.0292, 14.6146)
    assert float(sd15.sigma_to_t(torch.tensor(sd15.sigma_max))) == 999.0 and float(sd15.sigma_to_t(torch.tensor(sd15.sigma_min))) == 0.0
    t = torch.tensor([0.0, 17.25, 500.5, 998.9])
    assert torch.allclose(sd15.sigma_to_t(sd15.t_to_sigma(t)), t, atol=1e-3)  # log-linear both ways


def test_align_your_steps_uses_its_table_as_is_at_11_steps_and_sdxls_for_sdxl(sd15):
    sd1 = schedules.sigmas_for("align_your_steps", 11, span(sd15))
    assert [round(float(s), 3) for s in sd1] == [*schedules.AYS_SD1, 0.0]
    xl = schedules.sigmas_for("align_your_steps", 10, span(sd15, sdxl=True))
    assert [round(float(s), 4) for s in xl] == pytest.approx([14.615, 5.9634, 3.339, 1.855, 1.1023, 0.675, 0.4311, 0.2606, 0.1225, 0.029, 0], abs=1.5e-4)


def test_overrides_move_the_range_and_shape(sd15):
    narrowed = schedules.sigmas_for("karras", 5, span(sd15) if False else schedules.Range(sd15, 0.1, 10.0))
    assert float(narrowed[0]) == pytest.approx(10.0) and float(narrowed[-2]) == pytest.approx(0.1)
    steep = schedules.sigmas_for("karras", 10, span(sd15, rho=3.0))
    assert not torch.allclose(steep, schedules.sigmas_for("karras", 10, span(sd15)))
    wide = schedules.sigmas_for("beta", 10, span(sd15, beta_alpha=0.3))
    assert not torch.allclose(wide, schedules.sigmas_for("beta", 10, span(sd15)))
    assert torch.equal(schedules.sigmas_for("uniform", 10, schedules.Range(sd15, 0.1, 10.0)), schedules.sigmas_for("uniform", 10, span(sd15)))


def test_lcm_levels_are_the_50_original_timesteps(sd15):
    lcm = LcmSigmas(sd15.alphas_cumprod)
    assert len(lcm) == 50 and (lcm.t_min, lcm.t_max) == (19.0, 999.0)
    assert float(lcm.sigma_to_t(torch.tensor(5.0))) % 20 == 19  # always one of 19, 39, ... 999
    uniform = schedules.sigmas_for("uniform", 4, span(lcm))
    assert float(uniform[0]) == pytest.approx(float(sd15.sigmas[999])) and float(uniform[-2]) == pytest.approx(float(sd15.sigmas[19]))
