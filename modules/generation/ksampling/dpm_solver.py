"""DPM fast and DPM adaptive: DPM-Solver (Lu et al. 2022) in the time t = -log sigma.

Unlike the other samplers these do not follow a sigma schedule: they integrate from the
highest to the lowest noise level, DPM fast with a fixed budget of model evaluations spent
as third-order steps, DPM adaptive with steps sized by a PID controller on the difference
between a second- and a third-order solution.
"""

from __future__ import annotations

import math

import torch

from modules.generation.ksampling.solvers import Denoise, SolverContext, ancestral_step


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return (-t).exp()


def _t(sigma: torch.Tensor) -> torch.Tensor:
    return -sigma.log()


class _Solver:
    """DPM-Solver steps of order 1 to 3 over the noise prediction eps = (x - denoised) / sigma."""

    def __init__(self, denoise: Denoise):
        self.denoise = denoise

    def eps(self, cache: dict, key: str, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if key not in cache:
            cache[key] = (x - self.denoise(x, _sigma(t))) / _sigma(t)
        return cache[key]

    def step_1(self, x, t, t_next, cache):
        h = t_next - t
        return x - _sigma(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x, t, t_next, cache, r1: float = 0.5):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x, t, t_next, cache, r1: float = 1 / 3, r2: float = 2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - _sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = x - _sigma(s2) * (r2 * h).expm1() * eps - _sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)


def _noise_step(t: torch.Tensor, t_next: torch.Tensor, eta: float, t_end: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
    """Where the deterministic part of an ancestral step ends (as a time, never past the end of
    the integration), and the size of the noise that brings it back to t_next."""
    if not eta:
        return t_next, 0.0
    sigma_down, _ = ancestral_step(_sigma(t), _sigma(t_next), eta)
    t_down = torch.minimum(t_end, _t(sigma_down))
    return t_down, (_sigma(t_next) ** 2 - _sigma(t_down) ** 2) ** 0.5


def dpm_fast(denoise: Denoise, x: torch.Tensor, sigma_min: float, sigma_max: float, evaluations: int, ctx: SolverContext) -> torch.Tensor:
    """Spend `evaluations` model calls: third-order steps, the last one or two of lower order."""
    solver = _Solver(denoise)
    t_start, t_end = _t(torch.tensor(float(sigma_max))), _t(torch.tensor(float(sigma_min)))
    m = evaluations // 3 + 1
    times = torch.linspace(float(t_start), float(t_end), m + 1)
    if evaluations % 3 == 0:
        orders = [3] * (m - 2) + [2, 1]
    else:
        orders = [3] * (m - 1) + [evaluations % 3]
    for i, order in enumerate(orders):
        cache: dict = {}
        t, t_next = times[i], times[i + 1]
        t_target, sigma_up = _noise_step(t, t_next, ctx.eta, t_end)
        denoised = x - _sigma(t) * solver.eps(cache, "eps", x, t)
        step = {1: solver.step_1, 2: solver.step_2, 3: solver.step_3}[order]
        x = step(x, t, t_target, cache)
        if ctx.eta:
            x = x + sigma_up * ctx.s_noise * ctx.noise()
        ctx.step_done(i, x, denoised)
    return x


class _StepSizeController:
    """A PID controller on the error estimate: grows the step while the error is small,
    shrinks it (and rejects the step) when it is too large."""

    def __init__(self, h: float, order: float, pcoeff: float = 0.0, icoeff: float = 1.0, dcoeff: float = 0.0,
                 accept_safety: float = 0.81, eps: float = 1e-8):
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errors: list[float] = []

    def propose(self, error: float) -> bool:
        inverse = 1 / (error + self.eps)
        if not self.errors:
            self.errors = [inverse, inverse, inverse]
        self.errors[0] = inverse
        factor = self.errors[0] ** self.b1 * self.errors[1] ** self.b2 * self.errors[2] ** self.b3
        factor = 1 + math.atan(factor - 1)  # limit the change per step
        accept = factor >= self.accept_safety
        if accept:
            self.errors[2], self.errors[1] = self.errors[1], self.errors[0]
        self.h *= factor
        return accept


def dpm_adaptive(denoise: Denoise, x: torch.Tensor, sigma_min: float, sigma_max: float, ctx: SolverContext,
                 max_evaluations: int, order: int = 3, rtol: float = 0.05, atol: float = 0.0078, h_init: float = 0.05) -> torch.Tensor:
    """Integrate with error control until sigma_min, or until `max_evaluations` model calls
    are spent (then the last accepted state is finished with one step: a model that never
    gets accurate enough must not run for ever)."""
    solver = _Solver(denoise)
    t_start, t_end = _t(torch.tensor(float(sigma_max))), _t(torch.tensor(float(sigma_min)))
    controller = _StepSizeController(h_init, 1.5 if ctx.eta else order)
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    s, x_previous = t_start, x
    spent = 0
    shown_steps = max(int(ctx.extra.get("steps", 1)), 1)

    def progress(at: torch.Tensor) -> int:  # the step count shown: how far along the time axis it got
        return min(shown_steps - 1, int(float((at - t_start) / (t_end - t_start)) * shown_steps))

    while s < t_end - 1e-5:
        cache: dict = {}
        if spent + order > max_evaluations:  # out of budget: one last step to the end
            t_target, sigma_up = _noise_step(s, t_end, ctx.eta, t_end)
            denoised = x - _sigma(s) * solver.eps(cache, "eps", x, s)
            x = solver.step_2(x, s, t_target, cache, r1=1 / 3)
            ctx.extra["budget_exhausted"] = True
            ctx.step_done(shown_steps - 1, x, denoised)
            break
        t = torch.minimum(t_end, s + controller.h)
        t_target, sigma_up = _noise_step(s, t, ctx.eta, t_end)
        denoised = x - _sigma(s) * solver.eps(cache, "eps", x, s)
        if order == 2:
            x_low = solver.step_1(x, s, t_target, cache)
            x_high = solver.step_2(x, s, t_target, cache)
        else:
            x_low = solver.step_2(x, s, t_target, cache, r1=1 / 3)
            x_high = solver.step_3(x, s, t_target, cache)
        delta = torch.maximum(atol_t.to(x.device), rtol_t.to(x.device) * torch.maximum(x_low.abs(), x_previous.abs()))
        error = float(torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5)
        spent += order
        if controller.propose(error):
            x_previous = x_low
            x = x_high
            if ctx.eta:
                x = x + sigma_up * ctx.s_noise * ctx.noise()
            s = t
            ctx.step_done(progress(s), x, denoised)
    return x
