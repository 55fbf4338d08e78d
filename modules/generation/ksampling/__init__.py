"""Samplers as functions over a sigma schedule: the formulation of Karras et al. (2022) that
k-diffusion and A1111 use, for what diffusers has no scheduler for.

diffusers' schedulers cover most of A1111's sampler menu, and the runner uses them where
they do the same arithmetic. What they cannot do lives here: samplers diffusers lacks
(DPM++ 2S a, DPM++ 3M SDE, DPM fast, DPM adaptive, Restart, LCM and DDIM CFG++ as A1111 runs
them), schedule types diffusers lacks or a scheduler refuses (Polyexponential, KL Optimal,
Align Your Steps, Normal, DDIM, Euler a with Karras...), A1111's sampler parameters (eta,
churn, sigma range, rho) and noise that diffusers cannot draw (the NV source).

- `model_sigmas`: the model's discrete noise levels and the sigma <-> timestep mapping.
- `schedules`: the twelve schedule types, each a function to a descending sigma array.
- `solvers`: the samplers, each `solver(denoise, x, sigmas, ctx) -> x`.
- `dpm_solver`: DPM fast and DPM adaptive (DPM-Solver over log-sigma time).

Nothing here knows the UNet, prompts or images: the runner hands in a `denoise(x, sigma)`
function that returns the model's estimate of the clean latents.
"""
