"""The samplers, each a function `solver(denoise, x, sigmas, ctx) -> x`.

`denoise(x, sigma)` is the model's estimate of the clean latents from latents `x` at noise
level `sigma`; `sigmas` descends to 0; `x` starts as noise scaled to sigmas[0] (or a noised
init image). Each solver reports every step through `ctx.step_done` and draws step noise
from `ctx.noise()` (per-image generators, see modules.generation.noise) or, for the SDE
solvers, from a Brownian tree (`ctx.brownian`). The update rules are the published ones:
Euler/Heun/churn from Karras et al. 2022, DPM-Solver++ (2M, 2S, SDE, 3M SDE) from Lu et al.
2022, LMS from the linear multistep method, Restart from Xu et al. 2023, as k-diffusion and
A1111 apply them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from modules.generation.ksampling.schedules import karras_sigmas

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoisePair = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (sigma, sigma_next) -> unit noise


@dataclass
class SolverContext:
    """What a solver may use besides the model: step noise, options, progress."""

    noise: Callable[[], torch.Tensor]
    step_done: Callable[[int, torch.Tensor, torch.Tensor], None] = lambda i, x, denoised: None
    brownian: Callable[[torch.Tensor, torch.Tensor], NoisePair] | None = None  # (x, sigmas) -> noise sampler
    eta: float = 1.0
    s_churn: float = 0.0
    s_tmin: float = 0.0
    s_tmax: float = math.inf
    s_noise: float = 1.0
    extra: dict = field(default_factory=dict)  # solver-specific: solver_type ("heun"), steps shown (DPM adaptive)

    def pair_noise(self, x: torch.Tensor, sigmas: torch.Tensor) -> NoisePair:
        """Noise for the step sigma -> sigma_next: the Brownian tree where there is one
        (A1111 seeds it with the batch's seeds), else the per-image generators."""
        if self.brownian is not None:
            return self.brownian(x, sigmas)
        return lambda sigma, sigma_next: self.noise()


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The ODE's derivative dx/dsigma at (x, sigma)."""
    return (x - denoised) / sigma


def ancestral_step(sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma_down, sigma_up): step deterministically down to sigma_down, then add fresh noise
    of size sigma_up, so the result has noise level sigma_next. eta 0 is no fresh noise."""
    if not eta:
        return sigma_next, torch.zeros_like(sigma_next)
    sigma_up = torch.minimum(sigma_next, eta * (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5)
    sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _t(sigma: torch.Tensor) -> torch.Tensor:  # DPM-Solver's time: minus log sigma
    return -sigma.log()


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return (-t).exp()


def _churn(x: torch.Tensor, sigma: torch.Tensor, steps: int, ctx: SolverContext) -> tuple[torch.Tensor, torch.Tensor]:
    """Karras' stochastic churn: raise the noise level to sigma_hat by adding noise (off unless
    s_churn > 0 and sigma lies in [s_tmin, s_tmax]). The noise is drawn at every step even
    when unused, as the k-diffusion A1111 runs does, so the generators stay in step with it."""
    gamma = min(ctx.s_churn / steps, 2**0.5 - 1) if ctx.s_tmin <= float(sigma) <= ctx.s_tmax else 0.0
    eps = ctx.noise() * ctx.s_noise
    sigma_hat = sigma * (gamma + 1)
    if gamma > 0:
        x = x + eps * (sigma_hat**2 - sigma**2) ** 0.5
    return x, sigma_hat


def _churned_steps(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext, second_stage=None) -> torch.Tensor:
    """Karras et al.'s Algorithm 2, shared by Euler, Heun and DPM2: churn, the slope at the
    raised level, then `second_stage(x, d, sigma_hat, sigma_next)` for a second-order update
    (a plain Euler step without one, and always on the last step down to 0)."""
    steps = len(sigmas) - 1
    for i in range(steps):
        x, sigma_hat = _churn(x, sigmas[i], steps, ctx)
        denoised = denoise(x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        if second_stage is None or sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            x = second_stage(x, d, sigma_hat, sigmas[i + 1])
        ctx.step_done(i, x, denoised)
    return x


def euler(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext) -> torch.Tensor:
    return _churned_steps(denoise, x, sigmas, ctx)


def euler_ancestral(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], ctx.eta)
        x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + ctx.noise() * ctx.s_noise * sigma_up
        ctx.step_done(i, x, denoised)
    return x


def heun(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext) -> torch.Tensor:
    def trapezoid(x, d, sigma, sigma_next):  # average the slopes at both ends
        x_next = x + d * (sigma_next - sigma)
        d_next = to_d(x_next, sigma_next, denoise(x_next, sigma_next))
        return x + (d + d_next) / 2 * (sigma_next - sigma)

    return _churned_steps(denoise, x, sigmas, ctx, trapezoid)


def dpm_2(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext) -> torch.Tensor:
    """DPM-Solver-2 (midpoint in log sigma) with churn."""

    def midpoint(x, d, sigma, sigma_next):
        sigma_mid = sigma.log().lerp(sigma_next.log(), 0.5).exp()
        x_mid = x + d * (sigma_mid - sigma)
        return x + to_d(x_mid, sigma_mid, denoise(x_mid, sigma_mid)) * (sigma_next - sigma)

    return _churned_steps(denoise, x, sigmas, ctx, midpoint)


def dpm_2_ancestral(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext) -> torch.Tensor:
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], ctx.eta)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_mid = x + d * (sigma_mid - sigmas[i])
            d_mid = to_d(x_mid, sigma_mid, denoise(x_mid, sigma_mid))
            x = x + d_mid * (sigma_down - sigmas[i])
            x = x + ctx.noise() * ctx.s_noise * sigma_up
        ctx.step_done(i, x, denoised)
    return x


def _lms_coefficient(order: int, nodes: list[float], i: int, j: int) -> float:
    """Integral over [sigma_i, sigma_i+1] of the Lagrange basis polynomial of node i-j built on
    the last `order` nodes."""
    from scipy import integrate

    def basis(tau: float) -> float:
        value = 1.0
        for k in range(order):
            if k != j:
                value *= (tau - nodes[i - k]) / (nodes[i - j] - nodes[i - k])
        return value

    return integrate.quad(basis, nodes[i], nodes[i + 1], epsrel=1e-4)[0]


def lms(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext, order: int = 4) -> torch.Tensor:
    nodes = sigmas.detach().cpu().double().tolist()
    slopes: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        slopes = [*slopes, to_d(x, sigmas[i], denoised)][-order:]
        current = min(i + 1, order)
        coefficients = [_lms_coefficient(current, nodes, i, j) for j in range(current)]
        x = x + sum(c * d for c, d in zip(coefficients, reversed(slopes)))
        ctx.step_done(i, x, denoised)
    return x


def dpmpp_2s_ancestral(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext) -> torch.Tensor:
    """DPM-Solver++(2S), single-step second order with a midpoint, plus ancestral noise."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], ctx.eta)
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_mid = (_sigma(s) / _sigma(t)) * x - torch.expm1(-h / 2) * denoised
            denoised_mid = denoise(x_mid, _sigma(s))
            x = (_sigma(t_next) / _sigma(t)) * x - torch.expm1(-h) * denoised_mid
        if sigmas[i + 1] > 0:
            x = x + ctx.noise() * ctx.s_noise * sigma_up
        ctx.step_done(i, x, denoised)
    return x


def dpmpp_sde(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext, r: float = 0.5) -> torch.Tensor:
    """DPM-Solver++ (stochastic, second order, single step) with Brownian-tree noise."""
    noise = ctx.pair_noise(x, sigmas)
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
        else:
            t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
            h = t_next - t
            s = t + h * r
            weight = 1 / (2 * r)
            # to the intermediate point
            sigma_down, sigma_up = ancestral_step(_sigma(t), _sigma(s), ctx.eta)
            s_down = _t(sigma_down)
            x_mid = (_sigma(s_down) / _sigma(t)) * x - torch.expm1(t - s_down) * denoised
            x_mid = x_mid + noise(_sigma(t), _sigma(s)) * ctx.s_noise * sigma_up
            denoised_mid = denoise(x_mid, _sigma(s))
            # the full step, from a blend of both estimates
            sigma_down, sigma_up = ancestral_step(_sigma(t), _sigma(t_next), ctx.eta)
            t_down = _t(sigma_down)
            blended = (1 - weight) * denoised + weight * denoised_mid
            x = (_sigma(t_down) / _sigma(t)) * x - torch.expm1(t - t_down) * blended
            x = x + noise(_sigma(t), _sigma(t_next)) * ctx.s_noise * sigma_up
        ctx.step_done(i, x, denoised)
    return x


def dpmpp_2m(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext) -> torch.Tensor:
    previous = None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, t_next = _t(sigmas[i]), _t(sigmas[i + 1])
            h = t_next - t
            estimate = denoised
            if previous is not None:
                ratio = (t - _t(sigmas[i - 1])) / h
                estimate = (1 + 1 / (2 * ratio)) * denoised - (1 / (2 * ratio)) * previous
            x = (_sigma(t_next) / _sigma(t)) * x - torch.expm1(-h) * estimate
        previous = denoised
        ctx.step_done(i, x, denoised)
    return x


def dpmpp_2m_sde(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext) -> torch.Tensor:
    """DPM-Solver++(2M) SDE; `ctx.extra['solver_type']` is 'midpoint' (default) or 'heun'."""
    heun_correction = ctx.extra.get("solver_type") == "heun"
    noise = ctx.pair_noise(x, sigmas)
    previous, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            eta_h = ctx.eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-torch.expm1(-h - eta_h)) * denoised
            if previous is not None:
                ratio = h_last / h
                if heun_correction:
                    x = x + ((-torch.expm1(-h - eta_h)) / (-h - eta_h) + 1) * (1 / ratio) * (denoised - previous)
                else:
                    x = x + 0.5 * (-torch.expm1(-h - eta_h)) * (1 / ratio) * (denoised - previous)
            if ctx.eta:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-torch.expm1(-2 * eta_h)).sqrt() * ctx.s_noise
            h_last = h
        previous = denoised
        ctx.step_done(i, x, denoised)
    return x


def dpmpp_3m_sde(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext) -> torch.Tensor:
    """DPM-Solver++(3M) SDE: third order from the last three estimates."""
    noise = ctx.pair_noise(x, sigmas)
    previous, before_previous = None, None
    h_1, h_2 = None, None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t(sigmas[i + 1]) - _t(sigmas[i])
            h_eta = h * (ctx.eta + 1)
            x = (-h_eta).exp() * x + (-torch.expm1(-h_eta)) * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - previous) / r0
                d1_1 = (previous - before_previous) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = torch.expm1(-h_eta) / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                d = (denoised - previous) / (h_1 / h)
                x = x + (torch.expm1(-h_eta) / h_eta + 1) * d
            if ctx.eta:
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-torch.expm1(-2 * h * ctx.eta)).sqrt() * ctx.s_noise
            h_1, h_2 = h, h_1
        previous, before_previous = denoised, previous
        ctx.step_done(i, x, denoised)
    return x


def lcm(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext) -> torch.Tensor:
    """Latent consistency: jump to the estimate, then noise it to the next level."""
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * ctx.noise()
        ctx.step_done(i, x, denoised)
    return x


def restart(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, ctx: SolverContext) -> torch.Tensor:
    """Restart sampling (Xu et al. 2023) with Heun steps, as A1111 sets it up: from 20 steps
    on, part of the budget goes to jumping back up to a higher noise level (about sigma 2)
    around sigma 0.1 and descending again, once (twice from 36 steps)."""
    steps = len(sigmas) - 1
    restarts: dict[int, tuple[int, int, float]] = {}
    if steps >= 20:
        restart_steps, times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = karras_sigmas(steps - restart_steps * times, float(sigmas[-2]), float(sigmas[0])).to(sigmas.device)
        restarts = {int(torch.argmin((sigmas - 0.1).abs())): (restart_steps + 1, times, 2.0)}
    plan: list[tuple[torch.Tensor, torch.Tensor]] = []
    for i in range(len(sigmas) - 1):
        plan.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in restarts:
            count, times, top = restarts[i + 1]
            low_index, high_index = i + 1, int(torch.argmin((sigmas - top).abs()))
            if high_index < low_index:
                loop = karras_sigmas(count, float(sigmas[low_index]), float(sigmas[high_index]))[:-1].to(sigmas.device)
                plan.extend(list(zip(loop[:-1], loop[1:])) * times)
    last = None
    for step, (sigma, sigma_next) in enumerate(plan):
        if last is not None and last < sigma:  # a restart: noise back up to `sigma`
            x = x + ctx.noise() * ctx.s_noise * (sigma**2 - last**2) ** 0.5
        denoised = denoise(x, sigma)
        d = to_d(x, sigma, denoised)
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_next = x + d * dt
            d_next = to_d(x_next, sigma_next, denoise(x_next, sigma_next))
            x = x + (d + d_next) / 2 * dt
        last = sigma_next
        ctx.step_done(min(step * steps // len(plan), steps - 1), x, denoised)
    return x
