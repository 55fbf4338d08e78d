"""A diffusion model's own noise levels, and the map between a noise level (sigma) and the
timestep the UNet was trained with.

A DDPM-trained model knows 1000 discrete timesteps; timestep t has noise level
sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t). Sampling in sigma space asks for sigmas in
between, so timesteps are fractional: log sigma is interpolated linearly between the two
neighbouring table entries, both ways, as k-diffusion's discrete wrapper does (what A1111
passes to the UNet).
"""

from __future__ import annotations

import torch


class ModelSigmas:
    """The sigma table of a checkpoint's noise schedule (ascending, index = timestep)."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.alphas_cumprod = alphas_cumprod = alphas_cumprod.to(torch.float32)
        self.sigmas = ((1 - alphas_cumprod) / alphas_cumprod).sqrt()
        self.log_sigmas = self.sigmas.log()

    @classmethod
    def from_scheduler_config(cls, config: dict) -> "ModelSigmas":
        """From the checkpoint's diffusers scheduler config (its beta schedule), computed the
        way diffusers does so both sampling paths start from the same table."""
        import inspect

        from diffusers import DDPMScheduler

        accepted = inspect.signature(DDPMScheduler.__init__).parameters
        scheduler = DDPMScheduler.from_config({k: v for k, v in config.items() if k in accepted})
        return cls(scheduler.alphas_cumprod)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def __len__(self) -> int:
        return self.sigmas.shape[0]

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Fractional timesteps for sigmas (clamped to the table's range)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigma = sigma.log().reshape(-1)
        table = self.log_sigmas.to(log_sigma.device)
        # index of the last table entry at or below each log sigma, kept one short of the end
        low = torch.searchsorted(table, log_sigma, right=True).sub(1).clamp(0, table.shape[0] - 2)
        lo, hi = table[low], table[low + 1]
        weight = ((lo - log_sigma) / (lo - hi)).clamp(0, 1)
        return ((1 - weight) * low + weight * (low + 1)).reshape(sigma.shape)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Sigmas for (fractional) timesteps."""
        t = torch.as_tensor(t, dtype=torch.float32)
        table = self.log_sigmas.to(t.device)
        low, high = t.floor().long(), t.ceil().long()
        weight = t - low
        return ((1 - weight) * table[low] + weight * table[high]).exp()

    @property
    def t_max(self) -> float:
        """The timestep of the highest noise level."""
        return float(len(self) - 1)

    @property
    def t_min(self) -> float:
        return 0.0


class LcmSigmas(ModelSigmas):
    """A latent consistency model's levels, as A1111's LCM sampler uses them: only the 50
    "original" timesteps the model was distilled on (every 20th, ending at 999), a sigma
    mapped to the nearest of those, and timesteps between them interpolated."""

    def __init__(self, alphas_cumprod: torch.Tensor, original_steps: int = 50):
        total = alphas_cumprod.shape[0]
        self.skip = total // original_steps
        picked = torch.stack([alphas_cumprod[total - 1 - i * self.skip] for i in range(original_steps)]).flip(0)
        super().__init__(picked)

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        distances = (sigma.log().reshape(-1)[None, :] - self.log_sigmas[:, None]).abs()
        return (distances.argmin(dim=0) * self.skip + (self.skip - 1)).reshape(sigma.shape).float()

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        index = ((torch.as_tensor(t, dtype=torch.float32) - (self.skip - 1)) / self.skip).clamp(0, len(self) - 1)
        return super().t_to_sigma(index)

    @property
    def t_max(self) -> float:
        return float((len(self) - 1) * self.skip + self.skip - 1)

    @property
    def t_min(self) -> float:
        return float(self.skip - 1)
