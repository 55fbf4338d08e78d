"""Prompt text to UNet conditioning, with A1111's CLIP skip.

We encode prompts ourselves and hand the UNet embeddings, rather than letting diffusers do
it, because diffusers' `clip_skip` breaks on transformers 5 (flattened CLIPTextModel) and
because A1111's prompt syntax (a later layer) needs its own encoder anyway. With clip skip 1
the result equals diffusers' `encode_prompt` exactly.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conditioning:
    embeds: torch.Tensor  # [1, 77, D]
    pooled: torch.Tensor | None = None  # SDXL: [1, D2]


class PromptEncoder:
    """Encodes prompts for one loaded model and remembers the last few results.

    Re-encoding the same prompt is pure waste (at 64 px it is a third of a diffusers call),
    so results are cached per (prompt, clip skip); the cache dies with the model.
    """

    def __init__(self, model, cache_size: int = 16):
        self.model = model
        self._cache: OrderedDict[tuple, Conditioning] = OrderedDict()
        self._cache_size = cache_size

    def encode(self, prompt: str, clip_skip: int = 1, *, negative: bool = False) -> Conditioning:
        if not self.model.honours_clip_skip:
            clip_skip = 1
        key = (prompt, clip_skip, negative)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        with torch.inference_mode():
            cond = self._encode_sdxl(prompt, clip_skip, negative) if self.model.is_sdxl else self._encode_sd(prompt, clip_skip)
        self._cache[key] = cond
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return cond

    def _token_ids(self, tokenizer, prompt: str) -> torch.Tensor:
        ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        full = tokenizer(prompt, padding="longest", return_tensors="pt").input_ids
        if full.shape[-1] > ids.shape[-1]:
            log.warning("Prompt is longer than %d tokens; the rest was cut off.", tokenizer.model_max_length - 2)
        return ids.to(self.model.device)

    def _encode_sd(self, prompt: str, clip_skip: int) -> Conditioning:
        te = self.model.text_encoder
        ids = self._token_ids(self.model.tokenizer, prompt)
        if clip_skip <= 1:
            embeds = te(ids)[0]
        else:
            hidden = te(ids, output_hidden_states=True).hidden_states[-clip_skip]
            embeds = te.final_layer_norm(hidden)
        return Conditioning(embeds.to(self.model.dtype))

    def _encode_sdxl(self, prompt: str, clip_skip: int, negative: bool) -> Conditioning:
        """SDXL: penultimate layers of both encoders side by side, pooled output of the second
        (`clip_skip` is 1 here, see `honours_clip_skip`). An empty negative prompt becomes
        zeros, as the SDXL base config asks."""
        m = self.model
        if negative and not prompt and m.extra.get("force_zeros_for_empty_prompt", True):
            width = m.text_encoder.config.hidden_size + m.text_encoder_2.config.hidden_size
            embeds = torch.zeros((1, m.tokenizer.model_max_length, width), dtype=m.dtype, device=m.device)
            pooled = torch.zeros((1, m.text_encoder_2.config.projection_dim), dtype=m.dtype, device=m.device)
            return Conditioning(embeds, pooled)
        parts, pooled = [], None
        for tokenizer, te in ((m.tokenizer, m.text_encoder), (m.tokenizer_2, m.text_encoder_2)):
            out = te(self._token_ids(tokenizer, prompt), output_hidden_states=True)
            pooled = out[0]
            parts.append(out.hidden_states[-(clip_skip + 1)])
        return Conditioning(torch.cat(parts, dim=-1).to(m.dtype), pooled.to(m.dtype))
